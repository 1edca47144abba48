"""Reading the buyers' rules (`markdown.article_rules`, owned by the ERP team and filled in through its screens): the
run only reads the rules in force at its run date, and never creates or changes anything. Only the demo writes
rules, and only its own."""

from __future__ import annotations

from datetime import date

import pandas as pd
from psycopg2 import sql
from psycopg2.extensions import connection as Connection

from markdown_pricing.core.config import ErpSettings
from markdown_pricing.erp import tables
from markdown_pricing.erp.connection import transaction

# The buyer rules frame: what the model side honours, in this order.
RULE_COLUMNS = ("country", "article_id", "category", "rule", "value", "valid_from", "valid_to", "note")


def empty_rules() -> pd.DataFrame:
    """A buyer rules frame without rules."""
    return _frame([])


def _frame(rows: list[tuple[object, ...]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(RULE_COLUMNS), dtype=object)
    # NULL values (rules that need none: exclude, hold) become NaN.
    return frame.astype({"value": "float64"})


def rules_in_force(conn: Connection, settings: ErpSettings, run_date: date) -> pd.DataFrame:
    """The buyer rules in force at `run_date` (valid_from, valid_to inclusive, either open when null), ordered by
    country, article_id, category and rule; none before the table's first migrate. Reads only."""
    rules_table = tables.rules(settings)
    with transaction(conn) as cur:
        # From the catalog, which any role may read: a missing schema or table means no rules yet.
        cur.execute(
            "SELECT 1 FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = %s",
            (settings.schema, settings.rules_table),
        )
        if cur.fetchone() is None:
            return empty_rules()
        cur.execute(
            sql.SQL(
                """
                SELECT country, article_id, category, rule, value::double precision, valid_from, valid_to, note
                FROM {}
                WHERE (valid_from IS NULL OR valid_from <= %(day)s) AND (valid_to IS NULL OR valid_to >= %(day)s)
                ORDER BY country, article_id, category, rule, value, valid_from, valid_to, note
                """
            ).format(rules_table),
            {"day": run_date},
        )
        return _frame(cur.fetchall())


def replace_rules_noted(conn: Connection, settings: ErpSettings, rules: pd.DataFrame, note_prefix: str) -> None:
    """Replaces the rules whose note starts with `note_prefix` by `rules` (whose notes start so), in one transaction:
    what a demo seeds, leaving every rule a buyer entered alone."""
    if not rules["note"].fillna("").str.startswith(note_prefix).all():
        raise ValueError(f"every rule to write must have a note starting with {note_prefix!r}")
    rows = [
        tuple(None if pd.isna(value) else value for value in row)
        for row in rules.loc[:, list(RULE_COLUMNS)].itertuples(index=False)
    ]
    with transaction(conn) as cur:
        cur.execute(
            sql.SQL("DELETE FROM {} WHERE starts_with(note, %s)").format(tables.rules(settings)), (note_prefix,)
        )
        cur.executemany(
            sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                tables.rules(settings),
                sql.SQL(", ").join(map(sql.Identifier, RULE_COLUMNS)),
                sql.SQL(", ").join(sql.Placeholder() * len(RULE_COLUMNS)),
            ),
            rows,
        )
