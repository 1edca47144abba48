"""The error every stage raises for input an operator must fix: the job reports it without a stack trace."""

from __future__ import annotations


class InputError(ValueError):
    """Raw input the run cannot go on with; the message says which dataset and what is wrong."""
