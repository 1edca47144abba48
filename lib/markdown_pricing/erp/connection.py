"""Connecting to the ERP: which database (the configured one, the PG* environment or the embedded server), with
retries, and one transaction at a time. Only password-free descriptions of a connection are ever shown: a DSN is
checked before any connect, a malformed one is refused without quoting it, and libpq's messages are scrubbed of the
password before they reach an error or a log line."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

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
_SECRET_KEYS = ("password", "sslpassword")
# What a description may show: an allow-list, so that a key libpq adds later can never print a secret.
_SHOWN_KEYS = ("service", "host", "hostaddr", "port", "dbname", "user", "sslmode", "target_session_attrs")
_URI_PREFIXES = ("postgresql://", "postgres://")
_PORTS = re.compile(r"\s*[0-9]*\s*(,\s*[0-9]*\s*)*")
_MALFORMED = (
    "the ERP DSN is malformed: {problem} (its text is not shown: it may hold a password). In a postgresql:// URI, "
    "percent-encode the special characters of the user name and password (%40 for @, %2F for /, %25 for %, "
    "%3A for :, %23 for #, %3F for ?, %20 for a space; urllib.parse.quote(password, safe='') does it), or use the "
    "key=value form with the password in single quotes (\\' and \\\\ inside them), or leave the password out and "
    "set PGPASSWORD or PGPASSFILE"
)
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


def _uri_splits_user_info(dsn: str) -> bool:
    """Whether libpq would cut a URI's user name or password short at an unencoded @ or / in it.

    libpq ends the user info at the first @ that comes before any /; after it, the host, port and database name
    hold no literal @ in a well-formed URI. An @ there is the rest of a password: libpq would read its pieces as
    host, port or database names and print them in its messages.
    """
    prefix = next((prefix for prefix in _URI_PREFIXES if dsn.startswith(prefix)), None)
    if prefix is None:
        return False
    rest = dsn[len(prefix) :]
    end = re.search("[@/]", rest)
    if end is not None and end.group() == "@":
        rest = rest[end.end() :]
    return "@" in rest.split("?", 1)[0]


def check_dsn(dsn: str) -> dict[str, Any]:
    """The parameters of a DSN that libpq reads as written, or ConfigError that shows no part of it.

    "" (the PG* environment) gives no parameters. Call it before any connect: libpq's own parse errors quote the
    token they stumble on, a piece of the password as often as not.
    """
    params: dict[str, Any] | None
    try:
        params = parse_dsn(dsn)
    except (psycopg2.Error, ValueError):
        # ValueError: psycopg2 cannot decode a %-escape that is no UTF-8. Not raised here, so that the error
        # carries no chained exception with libpq's text.
        params = None
    if params is None:
        problem = "libpq cannot parse it"
    elif _uri_splits_user_info(dsn):
        problem = "an unencoded @ or / in the URI (in its password, most likely) would make libpq misread it"
    elif not _PORTS.fullmatch(str(params.get("port", ""))):
        problem = "its port is not a number (an unencoded / in a URI's password makes one)"
    else:
        return params
    raise ConfigError(_MALFORMED.format(problem=problem))


def _conninfo_value(value: Any) -> str:
    """A value as key=value conninfo writes it: quoted when it is empty or holds a space, quote or backslash."""
    text = str(value)
    if text and not re.search(r"[\s'\\]", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def describe_dsn(dsn: str) -> str:
    """A printable, password-free description of where a DSN (or, when empty, the PG* environment) points.

    Only the keys in an allow-list show; a DSN check_dsn refuses shows as "<malformed DSN>", nothing of it.
    """
    if not dsn.strip():
        shown = [f"{key}={os.environ[var]}" for key, var in _SHOWN_VARIABLES if os.environ.get(var)]
        return f"PG* environment ({' '.join(shown)})" if shown else "PG* environment (libpq defaults)"
    try:
        params = check_dsn(dsn)
    except ConfigError:
        return "<malformed DSN>"
    shown = [f"{key}={_conninfo_value(params[key])}" for key in _SHOWN_KEYS if key in params]
    return " ".join(shown) or "libpq defaults"


def scrub_password(text: str, params: Mapping[str, Any]) -> str:
    """`text` with each password a connection may use (the DSN's and PGPASSWORD), as written, percent-encoded or
    percent-decoded, replaced by ***."""
    secrets = [str(params[key]) for key in _SECRET_KEYS if params.get(key)]
    if os.environ.get("PGPASSWORD"):
        secrets.append(os.environ["PGPASSWORD"])
    forms = {form for secret in secrets for form in (secret, quote(secret, safe=""), quote(secret), unquote(secret))}
    for form in sorted(forms, key=len, reverse=True):
        if form:
            text = text.replace(form, "***")
    return text


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
    unreachable after the last attempt raises ErpUnavailableError, a malformed DSN ConfigError before any attempt;
    only the password-free description of the DSN and libpq's message scrubbed of the password are ever logged or
    raised.
    """
    params = check_dsn(dsn)
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
            # libpq's messages name host, port, user and database, not the password; scrubbing it anyway costs
            # nothing. Before the whitespace is folded, or a password with a run of spaces would no longer match.
            reason = " ".join(scrub_password(str(err), params).split())
        # Raised outside the except clause: the error then chains no OperationalError with libpq's raw text.
        if attempt == attempts:
            raise ErpUnavailableError(
                f"cannot connect to the ERP database at {target} after {attempts} attempt(s) over "
                f"{time.monotonic() - started:.1f} s: {reason}"
            )
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


def connect_configured(dsn: str, settings: ErpSettings, *, writer: bool = False) -> Connection:
    """`connect` with the configured connect timeout and retries; a `writer` also gets the configured lock and
    statement timeouts, so that a reader holding a lock fails its country instead of stalling the run."""
    limits = {"lock_timeout_s": settings.lock_timeout_s, "statement_timeout_s": settings.statement_timeout_s}
    return connect(
        dsn,
        settings.connect_timeout_s,
        attempts=settings.connect_attempts,
        backoff_s=settings.connect_backoff_s,
        **(limits if writer else {}),
    )
