"""What `markdown-pricing gc` asks of the ERP: which runs and models its current rows come from, and pruning ledger and
metrics rows past their age."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg2 import sql
from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as Cursor

from markdown_pricing.core.config import ErpSettings
from markdown_pricing.erp import tables
from markdown_pricing.erp.connection import one_value, transaction


class ErpTablesMissingError(RuntimeError):
    """Raised when the ERP has no predictions table, so nothing can tell which runs its rows come from."""


@dataclass(frozen=True)
class CurrentRows:
    """The run ids and model versions ("<model run id>/<country>") the ERP's current rows come from."""

    run_ids: frozenset[str]
    model_versions: frozenset[str]


@dataclass(frozen=True)
class PrunedRows:
    """How many ledger and metrics rows were (or, on a dry run, would be) deleted."""

    ledger: int
    metrics: int


def _exists(cur: Cursor, table: sql.Composed) -> bool:
    cur.execute("SELECT to_regclass(%s)", (table.as_string(cur),))
    return one_value(cur) is not None


def _current_runs(cur: Cursor, settings: ErpSettings) -> sql.Composed:
    """The run ids of the current predictions and candidates, as a subquery (both are replaced in one transaction,
    so they agree; both are read all the same)."""
    parts = [sql.SQL("SELECT run_id FROM {}").format(tables.predictions(settings))]
    if _exists(cur, tables.candidates(settings)):
        parts.append(sql.SQL("SELECT run_id FROM {}").format(tables.candidates(settings)))
    return sql.SQL(" UNION ").join(parts)


def current_rows(conn: Connection, settings: ErpSettings) -> CurrentRows:
    """The runs and models the ERP's current predictions (and candidates) come from; reads only."""
    with conn.cursor() as cur:
        if not _exists(cur, tables.predictions(settings)):
            raise ErpTablesMissingError(
                f"the ERP has no table {settings.schema}.{settings.predictions_table}: nothing tells which runs "
                "its rows come from, so nothing is removed; check erp.schema and erp.predictions_table, or create "
                "the tables with `markdown-pricing erp migrate`"
            )
        cur.execute(_current_runs(cur, settings))
        run_ids = frozenset(run_id for (run_id,) in cur.fetchall())
        cur.execute(sql.SQL("SELECT DISTINCT model_version FROM {}").format(tables.predictions(settings)))
        versions = frozenset(version for (version,) in cur.fetchall() if version)
    return CurrentRows(run_ids, versions)


def _prune(cur: Cursor, settings: ErpSettings, table: sql.Composed, keep_days: int, *, dry_run: bool) -> int:
    """Deletes (or counts) one table's rows recorded more than keep_days ago that no current prediction comes from."""
    if not _exists(cur, table):
        return 0
    where = sql.SQL("WHERE recorded_at < now() - make_interval(days => %s) AND run_id NOT IN ({current})").format(
        current=_current_runs(cur, settings)
    )
    statement = sql.SQL("SELECT count(*) FROM {} " if dry_run else "DELETE FROM {} ").format(table) + where
    cur.execute(statement, (keep_days,))
    return int(one_value(cur)) if dry_run else cur.rowcount


def prune_history(conn: Connection, settings: ErpSettings, keep_days: int, *, dry_run: bool) -> PrunedRows:
    """Deletes the ledger and metrics rows recorded more than keep_days ago, except those of the runs the current
    predictions come from, in one transaction; a dry run counts them only. keep_days 0 prunes nothing."""
    if keep_days == 0:
        return PrunedRows(0, 0)
    with transaction(conn) as cur:
        return PrunedRows(
            ledger=_prune(cur, settings, tables.ledger(settings), keep_days, dry_run=dry_run),
            metrics=_prune(cur, settings, tables.metrics(settings), keep_days, dry_run=dry_run),
        )
