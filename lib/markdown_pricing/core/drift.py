"""Input drift: each country's input measures of a run (input_profile.json) and how far they moved against the
previous run's (drift.json).

The contract between the ETL, which writes both, and the publish stage and the report, which read them. Writers go
through `write_input_profile` and `write_drift_check`, readers through `read_input_profile` and `read_drift_check`,
which check every record against its fields.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from markdown_pricing.core.config import DriftSettings
from markdown_pricing.core.storage import RunLayout, filesystem, join, read_json, write_json

# Measure -> the type of its value, in the order reports list them (None is always allowed: a country without
# active articles has no price level).
PROFILE_FIELDS: dict[str, type] = {
    "weekly_units": int,
    "active_articles": int,
    "price_level": float,
    "markdown_share": float,
}
MEASURE_NAMES = {
    "weekly_units": "weekly units",
    "active_articles": "active articles",
    "price_level": "price level",
    "markdown_share": "share on markdown",
}
# A share moves in points: from 1% to 2% of the articles on markdown is no drift, though it doubles.
ABSOLUTE_MEASURES = frozenset({"markdown_share"})
WARNING, BLOCK = "warning", "block"
# A change that equals its limit up to float noise (0.55 - 0.25 against 0.3) is not beyond it.
_NOISE = 1e-9

Measures = Mapping[str, float | None]

log = logging.getLogger(__name__)


class DriftContractError(ValueError):
    """Raised when input_profile.json or drift.json does not match its fields."""


@dataclass(frozen=True)
class InputProfile:
    """One run's input per country: its measures of the week before the run date."""

    run_id: str
    run_date: dt.date
    countries: Mapping[str, Measures]


@dataclass(frozen=True)
class Finding:
    """One measure of one country that moved beyond a limit against the run `against`."""

    country: str
    measure: str
    previous: float
    current: float
    # Relative (|current / previous - 1|), or in share points for ABSOLUTE_MEASURES.
    change: float
    limit: float
    level: str
    against: str


@dataclass(frozen=True)
class DriftCheck:
    """What a run's input was compared with and what moved beyond the limits; no previous run: nothing compared."""

    previous_run_id: str | None
    previous_run_date: dt.date | None
    findings: tuple[Finding, ...] = ()

    def of_country(self, country: str) -> tuple[Finding, ...]:
        """The findings of one country."""
        return tuple(finding for finding in self.findings if finding.country == country)


# --- comparing (pure) ----------------------------------------------------------------------------------------------


def _change(measure: str, previous: float, current: float) -> float | None:
    if measure in ABSOLUTE_MEASURES:
        return abs(current - previous)
    # Nothing to measure a relative change against: a country that sold nothing last time.
    if previous <= 0:
        return None
    return abs(current / previous - 1)


def _level(change: float, warn: float, block: float) -> tuple[str, float] | None:
    for level, limit in ((BLOCK, block), (WARNING, warn)):
        if limit > 0 and change - limit > _NOISE:
            return level, limit
    return None


def drift_findings(current: InputProfile, previous: InputProfile, limits: DriftSettings) -> list[Finding]:
    """Every measure of every country in both profiles that moved beyond its warning or block limit (0: off);
    a country new in this run has nothing to compare with."""
    findings = []
    for country, now in sorted(current.countries.items()):
        before = previous.countries.get(country)
        if before is None:
            continue
        for measure in PROFILE_FIELDS:
            old, new = before.get(measure), now.get(measure)
            if old is None or new is None:
                continue
            change = _change(measure, old, new)
            if change is None:
                continue
            found = _level(change, getattr(limits.warn, measure), getattr(limits.block, measure))
            if found is None:
                continue
            level, limit = found
            findings.append(Finding(country, measure, old, new, change, limit, level, previous.run_id))
    return findings


def format_value(measure: str, value: float | None) -> str:
    """A measure's value as people read it."""
    if value is None:
        return "n/a"
    if measure == "price_level":
        return f"{value:,.2f} EUR"
    if measure in ABSOLUTE_MEASURES:
        return f"{value:.1%}"
    return f"{value:,.0f}"


def format_change(finding: Finding) -> str:
    """The change of a finding with its direction: "fell 62.0%", "rose 30.0 points"."""
    direction = "fell" if finding.current < finding.previous else "rose"
    if finding.measure in ABSOLUTE_MEASURES:
        return f"{direction} {finding.change * 100:.1f} points"
    return f"{direction} {finding.change:.1%}"


def format_limit(measure: str, limit: float) -> str:
    """A limit as configured under [drift]: 0.5 is 50% (relative) or 50 points (a share)."""
    return f"{limit * 100:g} points" if measure in ABSOLUTE_MEASURES else f"{limit * 100:g}%"


def describe(finding: Finding) -> str:
    """One finding with its figures, e.g. "weekly units fell 62.0% against run 2026-11-16 (12,345 -> 4,690), beyond
    the warning limit of 50%"."""
    measure = finding.measure
    return (
        f"{MEASURE_NAMES[measure]} {format_change(finding)} against run {finding.against} "
        f"({format_value(measure, finding.previous)} -> {format_value(measure, finding.current)}), "
        f"beyond the {finding.level} limit of {format_limit(measure, finding.limit)}"
    )


# --- reading and writing -------------------------------------------------------------------------------------------


def _date(value: Any, where: str, what: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        raise DriftContractError(f"{where}: {what} {value!r} is not an ISO date") from None


def _measures(country: str, record: Any, where: str) -> dict[str, float | None]:
    """A country's measures checked; runs of other releases wrote other fields: a missing one reads as None, one the
    contract does not know is left out."""
    if not isinstance(record, Mapping):
        raise DriftContractError(f"{where}: the profile of {country} is not an object")
    measures: dict[str, float | None] = {}
    for measure, kind in PROFILE_FIELDS.items():
        value = record.get(measure)
        # JSON has one number type: a whole float is an int, any int is a float; a bool is neither.
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if value is not None and not (number and (kind is float or float(value).is_integer())):
            raise DriftContractError(f"{where}: {country}.{measure} is {value!r}, not a {kind.__name__}")
        measures[measure] = value
    return measures


def write_input_profile(uri: str, profile: InputProfile) -> None:
    """Writes a run's input profile after checking it."""
    countries = {country: _measures(country, measures, uri) for country, measures in profile.countries.items()}
    write_json(
        uri,
        {
            "run_id": profile.run_id,
            "run_date": profile.run_date.isoformat(),
            "countries": dict(sorted(countries.items())),
        },
    )


def read_input_profile(uri: str) -> InputProfile:
    """Reads a run's input profile, checked: a record that breaks the contract is a named error."""
    document = read_json(uri)
    if not isinstance(document, Mapping) or not isinstance(document.get("countries"), Mapping):
        raise DriftContractError(f"{uri}: expected an object with run_id, run_date and countries")
    return InputProfile(
        run_id=str(document.get("run_id")),
        run_date=_date(document.get("run_date"), uri, "run_date"),
        countries={str(c): _measures(str(c), record, uri) for c, record in document["countries"].items()},
    )


def write_drift_check(uri: str, check: DriftCheck) -> None:
    """Writes a run's drift check."""
    write_json(
        uri,
        {
            "previous_run_id": check.previous_run_id,
            "previous_run_date": check.previous_run_date.isoformat() if check.previous_run_date else None,
            "findings": [dataclasses.asdict(finding) for finding in check.findings],
        },
    )


def _finding(record: Any, where: str) -> Finding:
    try:
        finding = Finding(**record)
    except TypeError:
        raise DriftContractError(
            f"{where}: {record!r} is not a finding of {', '.join(Finding.__annotations__)}"
        ) from None
    if finding.level not in (WARNING, BLOCK) or finding.measure not in PROFILE_FIELDS:
        raise DriftContractError(f"{where}: finding {record!r} has an unknown level or measure")
    return finding


def read_drift_check(uri: str) -> DriftCheck | None:
    """Reads a run's drift check, checked; None for a run whose ETL wrote none (from before drift checks)."""
    if not filesystem(uri).exists(uri):
        return None
    document = read_json(uri)
    if not isinstance(document, Mapping) or not isinstance(document.get("findings"), Sequence):
        raise DriftContractError(f"{uri}: expected an object with previous_run_id, previous_run_date and findings")
    previous_date = document.get("previous_run_date")
    return DriftCheck(
        previous_run_id=document.get("previous_run_id"),
        previous_run_date=None if previous_date is None else _date(previous_date, uri, "previous_run_date"),
        findings=tuple(_finding(record, uri) for record in document["findings"]),
    )


def checked_now(layout: RunLayout, limits: DriftSettings) -> DriftCheck | None:
    """A run's drift check under the limits in force now: its findings again, from the run's input profile and that
    of the run its ETL compared with, so that a [drift] limit changed before a rerun of publish applies. Where either
    profile is gone (gc), what the ETL found; None when the ETL wrote no check."""
    check = read_drift_check(layout.drift)
    if check is None or check.previous_run_id is None:
        return check
    previous = RunLayout(raw="", work=layout.work, run_id=check.previous_run_id).input_profile
    if not (filesystem(previous).exists(previous) and filesystem(layout.input_profile).exists(layout.input_profile)):
        return check
    findings = drift_findings(read_input_profile(layout.input_profile), read_input_profile(previous), limits)
    return dataclasses.replace(check, findings=tuple(findings))


def _recorded_run_date(layout: RunLayout) -> dt.date | None:
    record = layout.run_record
    if not filesystem(record).exists(record):
        return None
    document = read_json(record)
    found = document.get("run_date") if isinstance(document, Mapping) else None
    return None if found is None else _date(found, record, "run_date")


def previous_profile(work: str, run_id: str, run_date: dt.date) -> InputProfile | None:
    """The input profile of the run under <work>/runs with the latest run date before `run_date` (of several runs of
    that date, the profile written last); None when no earlier run has one."""
    runs = join(work, "runs")
    fs = filesystem(runs)
    candidates: list[tuple[dt.date, float, str]] = []
    for other in fs.list(runs):
        layout = RunLayout(raw="", work=work, run_id=other)
        if other == run_id or not fs.exists(layout.input_profile):
            continue
        try:
            # run.json binds a run id to its date; a job submitted by hand may have left none, its profile says it.
            other_date = _recorded_run_date(layout) or read_input_profile(layout.input_profile).run_date
        except (OSError, ValueError) as err:
            # One damaged run folder must not stop every later week's ETL: that run is not compared with.
            log.warning("input drift: run %s left out of the comparison, its records cannot be read: %s", other, err)
            continue
        if other_date < run_date:
            candidates.append((other_date, fs.modified(layout.input_profile), other))
    for *_, latest in sorted(candidates, reverse=True):
        try:
            return read_input_profile(RunLayout(raw="", work=work, run_id=latest).input_profile)
        except (OSError, ValueError) as err:
            log.warning("input drift: run %s left out of the comparison, its profile cannot be read: %s", latest, err)
    return None
