"""Secrets hold for any password: a correctly written DSN connects whatever characters its password has, and no
piece of the password ever shows in a description, an error, a traceback or a log line. Against a real PostgreSQL
that checks passwords (SCRAM), so a connection that succeeds proves the password arrived whole."""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote, urlparse

import psycopg2
import pytest
from psycopg2 import sql

from markdown_pricing.core.config import ConfigError
from markdown_pricing.erp import connection, embedded
from markdown_pricing.erp.connection import ErpUnavailableError, connect, describe_dsn
from servers import free_port

# Upper-case letters that no libpq message, socket path (temp names are lower-case), role or description contains,
# around each special character: any three characters of a password that show up anywhere are a leak, not chance.
PASSWORDS = [
    "ZQX/XJW/VK",
    "ZQX@XJW@VK",
    "ZQX%XJW%41VK",
    "ZQX:XJW:VK",
    "ZQX#XJW#VK",
    "ZQX?XJW?VK",
    "ZQX XJW VK",
    "ZQ/@%:#? XJ'\\VK%ZZ",
]
# libpq reads these whole even when they are not percent-encoded in a URI.
READ_WHOLE_UNENCODED = [password for password in PASSWORDS if not set(password) & set("/@%")]
SPLIT_UNENCODED = [password for password in PASSWORDS if set(password) & set("/@%")]
PIECE = 3


def pieces(password: str) -> set[str]:
    """Every run of PIECE or more characters of the password, as written and percent-encoded (one escape alone,
    such as the %40 a hint names, is one character of it, not a piece)."""
    forms = {password, quote(password, safe=""), quote(password)}
    runs = {form[i:j] for form in forms for i in range(len(form)) for j in range(i + PIECE, len(form) + 1)}
    return {run for run in runs if not re.fullmatch("%[0-9A-F]{2}", run)}


def assert_no_piece(text: str, password: str) -> None:
    leaked = sorted(piece for piece in pieces(password) if piece in text)
    assert not leaked, f"pieces of the password show: {leaked} in {text!r}"


def assert_error_hides(error: BaseException, password: str) -> None:
    assert_no_piece(str(error), password)
    assert_no_piece(repr(error), password)
    # The whole traceback, chained causes and contexts included.
    assert_no_piece("".join(traceback.format_exception(error)), password)


@dataclass(frozen=True)
class ScramServer:
    socket_dir: str
    port: str
    roles: dict[str, str]  # password -> role

    def uri(self, role: str, written_password: str) -> str:
        return (
            f"postgresql://{role}:{written_password}@/postgres?host={quote(self.socket_dir, safe='/')}&port={self.port}"
        )

    def key_value(self, role: str, written_password: str) -> str:
        return f"host='{self.socket_dir}' port={self.port} user={role} dbname=postgres password={written_password}"


def quoted(password: str) -> str:
    """A password as a single-quoted key=value value."""
    return "'" + password.replace("\\", "\\\\").replace("'", "\\'") + "'"


@pytest.fixture(autouse=True)
def no_password_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    empty = tmp_path / "pgpass"
    empty.write_text("")
    empty.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(empty))


@pytest.fixture(scope="module")
def scram_server() -> Iterator[ScramServer]:
    """An embedded server of this module's own whose roles other than postgres log in with a SCRAM password.

    The session's shared server trusts every local connection (initdb --auth=trust), so a password would never be
    checked there; its pg_hba.conf is left alone.
    """
    # Not under pytest's temp root, for the reason conftest's erp_dsn gives.
    folder = Path(tempfile.mkdtemp(prefix="markdown-tests-passwords-"))
    pgdata = folder / "pgdata"
    try:
        admin_uri = embedded.ensure_running(pgdata)
        query = parse_qs(urlparse(admin_uri).query)
        server = ScramServer(
            query["host"][0], query["port"][0], {password: f"pw_{i}" for i, password in enumerate(PASSWORDS)}
        )
        with closing(psycopg2.connect(admin_uri)) as admin:
            admin.autocommit = True
            with admin.cursor() as cur:
                cur.execute("SHOW hba_file")
                row = cur.fetchone()
                assert row is not None
                hba = Path(row[0])
                hba.write_text("local all postgres trust\nlocal all all scram-sha-256\n" + hba.read_text())
                for password, role in server.roles.items():
                    cur.execute(
                        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password))
                    )
                cur.execute("SELECT pg_reload_conf()")
        # The reload is a signal: wait until a role without its password is refused.
        passfile = folder / "pgpass"
        passfile.write_text("")
        passfile.chmod(0o600)
        deadline = time.monotonic() + 10
        while True:
            try:
                psycopg2.connect(server.key_value("pw_0", "''"), passfile=str(passfile), connect_timeout=2).close()
            except psycopg2.OperationalError:
                break
            assert time.monotonic() < deadline, "the server never started asking for passwords"
            time.sleep(0.05)
        yield server
    finally:
        embedded.stop(pgdata)
        shutil.rmtree(folder, ignore_errors=True)


def current_user(dsn: str) -> str:
    with closing(connect(dsn, 5)) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_user")
        row = cur.fetchone()
    assert row is not None
    return str(row[0])


@pytest.mark.parametrize("password", PASSWORDS)
def test_percent_encoded_uri_connects_and_is_described_without_password(
    scram_server: ScramServer, password: str
) -> None:
    role = scram_server.roles[password]
    dsn = scram_server.uri(role, quote(password, safe=""))

    assert current_user(dsn) == role
    described = describe_dsn(dsn)
    assert f"user={role}" in described
    assert "dbname=postgres" in described
    assert f"host={scram_server.socket_dir}" in described
    assert_no_piece(described, password)


@pytest.mark.parametrize("password", PASSWORDS)
def test_wrong_password_is_refused_without_showing_either(
    scram_server: ScramServer, password: str, caplog: pytest.LogCaptureFixture
) -> None:
    role = scram_server.roles[password]
    wrong = password + "Qw"
    dsn = scram_server.uri(role, quote(wrong, safe=""))

    with (
        caplog.at_level(logging.DEBUG),
        pytest.raises(ErpUnavailableError, match="password authentication failed") as raised,
    ):
        connect(dsn, 5, attempts=2)

    for shown in (password, wrong):
        assert_error_hides(raised.value, shown)
        assert_no_piece(caplog.text, shown)


@pytest.mark.parametrize("password", PASSWORDS)
def test_key_value_dsn_with_quoted_password_connects(scram_server: ScramServer, password: str) -> None:
    role = scram_server.roles[password]
    dsn = scram_server.key_value(role, quoted(password))

    assert current_user(dsn) == role
    assert_no_piece(describe_dsn(dsn), password)


@pytest.mark.parametrize("password", READ_WHOLE_UNENCODED)
def test_unencoded_uri_password_that_libpq_reads_whole_connects(scram_server: ScramServer, password: str) -> None:
    role = scram_server.roles[password]
    dsn = scram_server.uri(role, password)

    assert current_user(dsn) == role
    assert_no_piece(describe_dsn(dsn), password)


def _refused(dsn: str, password: str, caplog: pytest.LogCaptureFixture) -> ConfigError:
    with caplog.at_level(logging.DEBUG), pytest.raises(ConfigError, match="malformed") as raised:
        connect(dsn, 2, attempts=2)
    assert_error_hides(raised.value, password)
    assert_no_piece(caplog.text, password)
    assert describe_dsn(dsn) == "<malformed DSN>"
    return raised.value


@pytest.mark.parametrize("password", SPLIT_UNENCODED)
@pytest.mark.parametrize("host", ["socket", "tcp"])
def test_unencoded_uri_password_that_libpq_would_split_is_refused_without_showing_it(
    scram_server: ScramServer, password: str, host: str, caplog: pytest.LogCaptureFixture
) -> None:
    role = scram_server.roles[password]
    if host == "socket":
        dsn = scram_server.uri(role, password)
    else:
        dsn = f"postgresql://{role}:{password}@127.0.0.1:{closed_port(password)}/postgres"

    error = _refused(dsn, password, caplog)

    assert "%40" in str(error) and "%2F" in str(error) and "%25" in str(error)


@pytest.mark.parametrize(
    "password",
    [
        "ZQX%ZZXJW",  # not a percent escape
        "ZQX%CDXJW",  # an escape that decodes to a byte that is no UTF-8
        "ZQX%XJW",
        "ZQX%",
    ],
)
def test_uri_with_bad_percent_escape_in_password_is_refused_without_showing_it(
    scram_server: ScramServer, password: str, caplog: pytest.LogCaptureFixture
) -> None:
    _refused(scram_server.uri("pw_0", password), password, caplog)


@pytest.mark.parametrize("password", [password for password in PASSWORDS if " " in password])
def test_key_value_dsn_with_unquoted_spaced_password_is_refused_without_showing_it(
    scram_server: ScramServer, password: str, caplog: pytest.LogCaptureFixture
) -> None:
    _refused(scram_server.key_value(scram_server.roles[password], password), password, caplog)


def closed_port(password: str) -> int:
    """A TCP port on 127.0.0.1 nothing listens on (it was free a moment ago) whose number holds no piece of the
    password: the errors name the port, and "%41" percent-encoded is "%2541", which port 54197 would show by
    chance."""
    while True:
        port = free_port()
        if not any(piece in str(port) for piece in pieces(password)):
            return port


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize("form", ["uri", "key_value", "pgpassword", "pg_environment"])
def test_unreachable_erp_error_and_retry_warnings_hide_password(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, password: str, form: str
) -> None:
    port = closed_port(password)
    if form == "uri":
        dsn = f"postgresql://alice:{quote(password, safe='')}@127.0.0.1:{port}/erp"
    elif form == "key_value":
        dsn = f"host=127.0.0.1 port={port} user=alice dbname=erp password={quoted(password)}"
    elif form == "pgpassword":
        monkeypatch.setenv("PGPASSWORD", password)
        dsn = f"host=127.0.0.1 port={port} user=alice dbname=erp"
    else:
        for variable in ("PGSERVICE", "PGHOSTADDR", "PGDATABASE"):
            monkeypatch.delenv(variable, raising=False)
        monkeypatch.setenv("PGHOST", "127.0.0.1")
        monkeypatch.setenv("PGPORT", str(port))
        monkeypatch.setenv("PGUSER", "alice")
        monkeypatch.setenv("PGPASSWORD", password)
        dsn = ""

    with caplog.at_level(logging.DEBUG), pytest.raises(ErpUnavailableError) as raised:
        connect(dsn, 2, attempts=2, backoff_s=0.0)

    assert f"port={port}" in str(raised.value)
    assert_error_hides(raised.value, password)
    assert any("retrying" in record.getMessage() for record in caplog.records)
    assert_no_piece(caplog.text, password)
    assert_no_piece(describe_dsn(dsn), password)


def test_scrub_password_hides_every_form_of_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    password, from_environment = "ZQX XJW/VK", "WVK@YQJ"
    monkeypatch.setenv("PGPASSWORD", from_environment)
    text = f"a {password} b {quote(password, safe='')} c {quote(from_environment, safe='')} d {from_environment} e"

    scrubbed = connection.scrub_password(text, {"password": password})

    assert scrubbed == "a *** b *** c *** d *** e"


def test_check_dsn_reads_a_good_dsn_and_refuses_a_split_one() -> None:
    params = connection.check_dsn(f"postgresql://alice:{quote(PASSWORDS[-1], safe='')}@erp.example.com:5433/erp")

    assert params["password"] == PASSWORDS[-1]
    assert (params["host"], params["port"], params["dbname"]) == ("erp.example.com", "5433", "erp")
    assert connection.check_dsn("host=a,b port=5432,5433 dbname=erp")["port"] == "5432,5433"
    # A password that starts with digits: the port libpq reads from it is a number.
    split = "12/ZQXJW"
    with pytest.raises(ConfigError, match="malformed") as raised:
        connection.check_dsn(f"postgresql://alice:{split}@erp.example.com/erp")
    assert_error_hides(raised.value, split)
