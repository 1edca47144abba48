"""Reading the run ledger: what each run did with each country, and what the ERP holds now."""

from __future__ import annotations

from datetime import date

from psycopg2 import sql
from psycopg2.extensions import connection as Connection

from markdown_pricing.core.config import ErpSettings
from markdown_pricing.erp import tables
from markdown_pricing.erp.connection import one_value, transaction

PUBLISHED = "published"
# A rerun found the country already published by the same run: nothing written.
ALREADY_PUBLISHED = "already_published"
FAILED = "failed"
# Not published because the quality gate stopped it; its previous rows stay.
BLOCKED = "blocked"
# Not published because the ERP already holds a later week for the country: the newest week wins.
SUPERSEDED = "superseded"
# Not in the run's input although the ERP holds its rows of an earlier week: they stay, and the run fails.
MISSING_INPUT = "missing_input"
LEDGER_STATUSES = (PUBLISHED, FAILED, BLOCKED, SUPERSEDED, MISSING_INPUT)
# Statuses after which a run has nothing left to do for a country.
DONE_STATUSES = (PUBLISHED, SUPERSEDED)


def run_statuses(conn: Connection, settings: ErpSettings, run_id: str) -> dict[str, str]:
    """Country -> ledger status (one of LEDGER_STATUSES) for one run; none before the first migrate."""
    return {country: status for country, (status, _) in run_messages(conn, settings, run_id).items()}


def run_messages(conn: Connection, settings: ErpSettings, run_id: str) -> dict[str, tuple[str, str | None]]:
    """Country -> (status, message) for one run, as the ledger records them; none before the first migrate."""
    ledger_table = tables.ledger(settings)
    with transaction(conn) as cur:
        cur.execute("SELECT to_regclass(%s)", (ledger_table.as_string(cur),))
        if one_value(cur) is None:
            return {}
        cur.execute(
            sql.SQL("SELECT country, status, message FROM {} WHERE run_id = %s").format(ledger_table), (run_id,)
        )
        return {str(country): (str(status), message) for country, status, message in cur.fetchall()}


def held_articles(conn: Connection, settings: ErpSettings) -> dict[str, set[str]]:
    """Country -> the articles the ERP table recommends for it now."""
    with transaction(conn) as cur:
        cur.execute(sql.SQL("SELECT country, article_id FROM {}").format(tables.predictions(settings)))
        held: dict[str, set[str]] = {}
        for country, article_id in cur.fetchall():
            held.setdefault(str(country), set()).add(str(article_id))
        return held


def missing_published_rows(conn: Connection, settings: ErpSettings, run_id: str) -> dict[str, tuple[int, int]]:
    """Country -> (rows the table holds, rows the ledger says) for each country this run published whose rows are
    gone from the table behind the ledger's back: none left, or fewer of this run's than it wrote. A country whose
    rows another run replaced since (a later week, a new run id) is not missing anything."""
    with transaction(conn) as cur:
        cur.execute(
            sql.SQL(
                """
                SELECT l.country, l.rows, count(p.country) FILTER (WHERE p.run_id = l.run_id), count(p.country)
                FROM {} AS l LEFT JOIN {} AS p ON p.country = l.country
                WHERE l.run_id = %s AND l.status = %s
                GROUP BY l.country, l.rows
                """
            ).format(tables.ledger(settings), tables.predictions(settings)),
            (run_id, PUBLISHED),
        )
        return {
            str(country): (int(own), int(expected))
            for country, expected, own, held in cur.fetchall()
            if held == 0 or (own and own != expected)
        }


def held_weeks(conn: Connection, settings: ErpSettings) -> dict[str, date]:
    """Country -> the week (valid_from) of the rows the ERP table holds for it now."""
    with transaction(conn) as cur:
        cur.execute(
            sql.SQL("SELECT country, max(valid_from) FROM {} GROUP BY country").format(tables.predictions(settings))
        )
        return {str(country): week for country, week in cur.fetchall()}
