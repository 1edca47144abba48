"""The Luigi module name of earlier releases, kept for crontabs that run `luigi --module markdown_pricing.tasks`.

The tasks live in markdown_pricing.orchestrate.tasks; use that name in new schedules.
"""

from markdown_pricing.orchestrate.tasks import WeeklyBackfill, WeeklyRun

__all__ = ["WeeklyBackfill", "WeeklyRun"]
