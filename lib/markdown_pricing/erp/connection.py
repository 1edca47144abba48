"""Connecting to the ERP: which database (the configured one, the PG* environment or the embedded server), with
retries, and one transaction at a time. Only password-free descriptions of a connection are ever shown."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as Cursor
from psycopg2.extensions import parse_dsn

from markdown_pricing.core.config import ConfigError, ErpSettings
from markdown_pricing.core.storage import embedded_erp_data, local_path
from markdown_pricing.erp import embedded

log = logging.getLogger(__name__)

APPLICATION_NAME = "markdown-pricing"
# Any of these makes libpq connect somewhere other than the embedded server, so their presence means "ERP configured".
_LIBPQ_TARGET_VARIABLES = ("PGHOST", "PGHOSTADDR", "PGSERVICE")
_SECRET_KEYS = frozenset({"password", "sslpassword"})
_SHOWN_VARIABLES = (
    ("service", "PGSERVICE"),
    ("host", "PGHOST"),
    ("hostaddr", "PGHOSTADDR"),
    ("port", "PGPORT"),
    ("dbname", "PGDATABASE"),
    ("user", "PGUSER"),
)


class ErpUnavailableError(RuntimeError):
    """Raised when the ERP database cannot be reached."""


def configured_dsn(settings: ErpSettings) -> str | None:
    """The configured DSN, "" for the PG* environment, or None when no ERP is configured (the embedded one)."""
    if settings.dsn:
        return settings.dsn
    if any(os.environ.get(variable) for variable in _LIBPQ_TARGET_VARIABLES):
        return ""
    return None


def embedded_pgdata(work: str) -> str:
    """Where the embedded PostgreSQL keeps its data: under a local work folder, or a clear error."""
    try:
        return str(local_path(embedded_erp_data(work)))
    except ValueError as err:
        raise ConfigError(
            f"no ERP is configured and the work folder {work} is not local, so no embedded PostgreSQL can run "
            "there: configure the ERP with MARKDOWN_ERP_DSN or the PG* variables (PGHOST, PGPORT, PGDATABASE, "
            "PGUSER, PGPASSWORD or PGPASSFILE)"
        ) from err


def start_dsn(settings: ErpSettings, work: str) -> str:
    """The DSN a run publishes to; with no ERP configured, starts the embedded server under `work` first."""
    dsn = configured_dsn(settings)
    if dsn is not None:
        return dsn
    return embedded.ensure_running(Path(embedded_pgdata(work)))


def running_dsn(settings: ErpSettings, work: str) -> str:
    """The DSN to read from, starting nothing: ErpUnavailableError when the embedded server is not running."""
    dsn = configured_dsn(settings)
    if dsn is not None:
        return dsn
    pgdata = Path(embedded_pgdata(work))
    uri = embedded.running_uri(pgdata)
    if uri is None:
        raise ErpUnavailableError(
            f"no ERP is configured and the embedded PostgreSQL in {pgdata} is not running: "
            "start it with `markdown-pricing erp start` (a run starts it by itself)"
        )
    return uri


def describe_dsn(dsn: str) -> str:
    """A printable, password-free description of where a DSN (or, when empty, the PG* environment) points."""
    if not dsn.strip():
        shown = [f"{key}={os.environ[var]}" for key, var in _SHOWN_VARIABLES if os.environ.get(var)]
        return f"PG* environment ({' '.join(shown)})" if shown else "PG* environment (libpq defaults)"
    try:
        params = parse_dsn(dsn)
    except psycopg2.ProgrammingError:
        return "<unparseable DSN>"
    shown = [f"{key}={value}" for key, value in params.items() if key not in _SECRET_KEYS]
    return " ".join(shown) or "libpq defaults"


@contextmanager
def transaction(conn: Connection) -> Iterator[Cursor]:
    """A cursor inside one transaction: committed when the block ends, rolled back when it raises."""
    if conn.autocommit:
        raise ValueError("the ERP connection is in autocommit mode: each country must be one transaction")
    try:
        with conn.cursor() as cur:
            yield cur
        conn.commit()
    except BaseException:
        # A lost connection has already rolled back on the server; rolling back here would hide why.
        if not conn.closed:
            conn.rollback()
        raise


def one_value(cur: Cursor) -> Any:
    """The first column of the one row a query returns."""
    row = cur.fetchone()
    if row is None:
        raise ValueError("the query returned no row")
    return row[0]


def connect(
    dsn: str,
    timeout_s: int,
    *,
    attempts: int = 1,
    backoff_s: float = 0.0,
    lock_timeout_s: float | None = None,
    statement_timeout_s: float | None = None,
) -> Connection:
    """Opens a connection to the ERP (the caller closes it), trying `attempts` times with exponential backoff.

    TCP keepalives let a half-open connection die within a minute or two instead of holding its locks for hours;
    `lock_timeout_s` and `statement_timeout_s` bound how long one statement may wait or run. An ERP still
    unreachable after the last attempt raises ErpUnavailableError; only the password-free description of the
    DSN is ever logged or raised.
    """
    target = describe_dsn(dsn)
    timeouts = {"lock_timeout": lock_timeout_s, "statement_timeout": statement_timeout_s}
    options = " ".join(f"-c {name}={int(seconds * 1000)}" for name, seconds in timeouts.items() if seconds)
    parameters: dict[str, Any] = {
        "connect_timeout": timeout_s,
        "application_name": APPLICATION_NAME,
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        **({"options": options} if options else {}),
    }
    started = time.monotonic()
    for attempt in range(1, attempts + 1):
        try:
            connection: Connection = psycopg2.connect(dsn, **parameters)
            return connection
        except psycopg2.OperationalError as err:
            # libpq messages name host and port, never the password.
            reason = " ".join(str(err).split())
            if attempt == attempts:
                raise ErpUnavailableError(
                    f"cannot connect to the ERP database at {target} after {attempts} attempt(s) over "
                    f"{time.monotonic() - started:.1f} s: {reason}"
                ) from err
            delay = backoff_s * 2 ** (attempt - 1)
            log.warning(
                "ERP at %s unreachable (attempt %d of %d): %s; retrying in %.1f s",
                target,
                attempt,
                attempts,
                reason,
                delay,
            )
            time.sleep(delay)
    # Reached only when the loop never ran.
    raise ValueError(f"connect attempts must be at least 1, not {attempts}")
