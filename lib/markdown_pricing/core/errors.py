"""The errors every stage raises for input an operator must fix: the job reports them without a stack trace, and its
exit code tells the scheduler which kind it was."""

from __future__ import annotations


class InputError(ValueError):
    """Raw input the run cannot go on with; the message says which dataset and what is wrong."""

    exit_code = 2


class StaleInputError(InputError):
    """A complete dataset that does not reach the run's week yet: last week's delivery, worth waiting for."""

    exit_code = 4
