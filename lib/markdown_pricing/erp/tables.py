"""The ERP's table names, always qualified by the schema and checked as plain identifiers before any SQL uses them."""

from __future__ import annotations

import re

from psycopg2 import sql

from markdown_pricing.core.config import ConfigError, ErpSettings

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def identifier(value: str, what: str) -> sql.Identifier:
    """A configured name as an SQL identifier, or ConfigError when it is not a plain lower-case identifier."""
    if not _IDENTIFIER.fullmatch(value):
        raise ConfigError(f"erp.{what} {value!r} is not a valid identifier: expected {_IDENTIFIER.pattern}")
    return sql.Identifier(value)


def schema(settings: ErpSettings) -> sql.Identifier:
    return identifier(settings.schema, "schema")


def _qualified(settings: ErpSettings, setting: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(schema(settings), identifier(getattr(settings, setting), setting))


def predictions(settings: ErpSettings) -> sql.Composed:
    """The predictions table buyers read."""
    return _qualified(settings, "predictions_table")


def ledger(settings: ErpSettings) -> sql.Composed:
    """The run ledger: which run published which country."""
    return _qualified(settings, "ledger_table")


def metrics(settings: ErpSettings) -> sql.Composed:
    """Every run's backtest errors per country and forecaster."""
    return _qualified(settings, "metrics_table")


def candidates(settings: ErpSettings) -> sql.Composed:
    """Every candidate discount behind each published recommendation."""
    return _qualified(settings, "candidates_table")


def rules(settings: ErpSettings) -> sql.Composed:
    """The buyers' rules, which the run only reads."""
    return _qualified(settings, "rules_table")
