"""Advisory locks: one process per run folder, one publisher per run date, one writer per country, and who holds a
lock when it is taken."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

import psycopg2
from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as Cursor

from markdown_pricing.core.config import ErpSettings
from markdown_pricing.erp.connection import APPLICATION_NAME, one_value, transaction

log = logging.getLogger(__name__)


class LockedError(RuntimeError):
    """Raised when another session holds a lock this one needs."""


class PublishLockedError(LockedError):
    """Raised when another session holds the publish lock of a run date."""


def lock(cur: Cursor, *key: str) -> None:
    """Takes a transaction-scoped advisory lock named by key (a hash collision only costs some waiting)."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("/".join((APPLICATION_NAME, *key)),))


def stage_holder(stage: str, run_id: str) -> str:
    """How a stage's session shows itself in pg_stat_activity.application_name: stage and run, then pid@host."""
    # PostgreSQL keeps 63 bytes of it, so the likeliest to be cut (a long host name) comes last.
    return f"{APPLICATION_NAME} {stage} run={run_id} {os.getpid()}@{socket.gethostname()}"


def _run_lock_keys(settings: ErpSettings, run_date: date) -> tuple[str, int]:
    """The two keys of a run date's advisory lock: a hash of the schema's namespace and the date's ordinal."""
    # The date as its own key: two run dates can never collide, only two schemas can (and then merely wait).
    return "/".join((APPLICATION_NAME, "run", settings.schema)), run_date.toordinal()


def _lock_holders(cur: Cursor, keys: tuple[str, int]) -> list[str]:
    """Who holds a session lock, from pg_locks and pg_stat_activity (application_name is visible to every role)."""
    cur.execute(
        """
        SELECT a.pid, a.application_name, a.client_addr, a.backend_start, a.state
        FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND l.classid = hashtext(%s)::oid AND l.objid = %s::oid
        """,
        keys,
    )
    holders = []
    for pid, name, client, started, state in cur.fetchall():
        since = f" connected since {started.isoformat(sep=' ', timespec='seconds')}" if started else ""
        holders.append(f"backend pid {pid} '{name}' from {client or 'a local socket'}{since} ({state})")
    return holders


@contextmanager
def publish_run_lock(conn: Connection, settings: ErpSettings, run_date: date, holder: str) -> Iterator[None]:
    """Holds the session advisory lock of (schema, run date) for the block; PublishLockedError names another holder.

    A session lock, not a transaction one, so it spans the per-country transactions; it goes with the session,
    so a killed publisher or a restarted database never leaves it behind.
    """
    with _session_lock(conn, _run_lock_keys(settings, run_date), holder) as holders:
        if holders is not None:
            raise PublishLockedError(
                f"another publisher holds the publish lock of run date {run_date} in schema {settings.schema}: "
                f"{holders}. Wait for it to finish; if it hangs, end that backend with "
                "SELECT pg_terminate_backend(<pid>)"
            )
        yield


@contextmanager
def run_folder_lock(conn: Connection, run_id: str, run_dir: str, holder: str) -> Iterator[None]:
    """Holds a session advisory lock on a run's folder for the block, so that two processes of one run id never write
    it at once; LockedError names the other holder. Like the publish lock, it goes with its session."""
    with _session_lock(conn, ("/".join((APPLICATION_NAME, "run-folder", run_dir)), 0), holder) as holders:
        if holders is not None:
            raise LockedError(
                f"another process is running a stage of run {run_id}, writing {run_dir}: {holders}. "
                "Wait for it to finish; run again to carry on from where it stopped"
            )
        yield


@contextmanager
def _session_lock(conn: Connection, keys: tuple[str, int], holder: str) -> Iterator[str | None]:
    """Tries a session advisory lock: yields None while holding it, or, when another session holds it, who does."""
    with transaction(conn) as cur:
        # Named before trying, so whoever finds the lock taken can read who holds it.
        cur.execute("SELECT set_config('application_name', %s, false)", (holder,))
        cur.execute("SELECT pg_try_advisory_lock(hashtext(%s), %s)", keys)
        acquired = bool(one_value(cur))
        if not acquired:
            holders = _lock_holders(cur, keys)
            cur.execute("SELECT set_config('application_name', %s, false)", (APPLICATION_NAME,))
    if not acquired:
        yield "; ".join(holders) or "a session that has just finished, so try again"
        return
    try:
        yield None
    finally:
        _release_session_lock(conn, keys)


def _release_session_lock(conn: Connection, keys: tuple[str, int]) -> None:
    """Releases a session lock; on a lost connection the lock has already gone with its session."""
    if conn.closed:
        return
    try:
        with transaction(conn) as cur:
            cur.execute("SELECT pg_advisory_unlock(hashtext(%s), %s)", keys)
            cur.execute("SELECT set_config('application_name', %s, false)", (APPLICATION_NAME,))
    except psycopg2.Error as err:
        # Raising here would hide the error that ended the block; the lock ends with the session anyway.
        log.warning("could not release an advisory lock (%s); it is released when the connection closes", err)
