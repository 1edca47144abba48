"""Alerts: one message per run that left anything not published, by e-mail and by webhook.

The e-mail goes through Luigi's own notification code to a real SMTP server (aiosmtpd, with a login) on 127.0.0.1;
the webhook is POSTed to a real HTTP server on 127.0.0.1. The runs are `markdown-pricing run` in this process under a
real Luigi scheduler and the session's PostgreSQL, with stand-ins for the three Spark jobs (their spark-submit
command lines are replaced): one hangs past its time limit, one publishes a country and records another blocked.
"""

from __future__ import annotations

import configparser
import dataclasses
import datetime as dt
import email
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import luigi.configuration
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from markdown_pricing.core.config import AlertSettings, ErpSettings, ScheduleSettings, project_root
from markdown_pricing.core.contract import RAW_DATASET_NAMES
from markdown_pricing.observe import alerts
from markdown_pricing.observe.alerts import Problem, RunOutcome
from markdown_pricing.orchestrate import cli, tasks
from servers import Webhook, free_port, receiving_webhooks

RUN_DATE = dt.date(2026, 11, 23)
SMTP_LOGIN, SMTP_PASSWORD = "markdown", "s3cret%pass"
WEBHOOK_TOKEN = "T0KEN-abc123"
SINCE = dt.datetime(2026, 11, 23, 8, tzinfo=dt.timezone.utc)


# --- a real SMTP server and a real webhook receiver on 127.0.0.1 ----------------------------------------------------


class Mailbox:
    """aiosmtpd's handler: keeps every message it accepts, and who logged in to send it."""

    def __init__(self) -> None:
        self.messages: list[tuple[str | None, email.message.Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's name)
        login = session.auth_data if session.authenticated else None
        self.messages.append((login, email.message_from_bytes(envelope.content)))
        return "250 OK"


def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        SMTP_LOGIN.encode(),
        SMTP_PASSWORD.encode(),
    )
    return AuthResult(success=ok, auth_data=SMTP_LOGIN if ok else None)


@pytest.fixture
def mailbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Mailbox]:
    """A real SMTP server that wants a login, and Luigi's [email]/[smtp] settings pointed at it; the password
    comes from MARKDOWN_SMTP_PASSWORD, as in production."""
    box = Mailbox()
    port = free_port()
    server = Controller(
        box,
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticate,
        auth_require_tls=False,
        auth_exclude_mechanism=[],
    )
    server.start()
    # The project's own [worker], [email] and [smtp] settings (this process read its Luigi configuration before any
    # command could point it at conf/luigi.cfg), with the test's server and receivers.
    project = configparser.ConfigParser(interpolation=None)
    project.read(project_root() / "conf" / "luigi.cfg")
    settings = {
        **{
            (section, option): value
            for section in ("worker", "email", "smtp")
            for option, value in project[section].items()
        },
        ("email", "receiver"): "buyers@example.com,ops@example.com",
        ("email", "sender"): "markdown-pricing@example.com",
        ("smtp", "host"): "127.0.0.1",
        ("smtp", "port"): str(port),
        ("smtp", "username"): SMTP_LOGIN,
    }
    config = luigi.configuration.get_config()
    for (section, option), value in settings.items():
        config.set(section, option, value)
    monkeypatch.setenv("MARKDOWN_SMTP_PASSWORD", SMTP_PASSWORD)
    try:
        yield box
    finally:
        server.stop()
        for section, option in [*settings, ("smtp", "password")]:
            config.remove_option(section, option)


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Webhook]:
    """The receiver, its URL (with a token in its path) in MARKDOWN_ALERT_WEBHOOK_URL."""
    with receiving_webhooks(f"/hooks/{WEBHOOK_TOKEN}") as hook:
        monkeypatch.setenv("MARKDOWN_ALERT_WEBHOOK_URL", hook.url)
        yield hook


# --- what a message says ---------------------------------------------------------------------------------------------


def outcome(**changes: Any) -> RunOutcome:
    fields: dict[str, Any] = {
        "run_id": "2026-11-23",
        "run_date": RUN_DATE,
        "env": "yarn",
        "exit_code": 1,
        "published": ("AUT", "FRA"),
        "problems": (
            Problem("stage publish", "failed", "exit code 1, output in /logs/publish.log"),
            Problem("DEU", "blocked", "blocked by the quality gate: 4 of 20 articles are missing"),
        ),
        "report": "file:///work/runs/2026-11-23/report.html",
        "log_folder": "/work/runs/2026-11-23/logs",
    }
    return RunOutcome(**{**fields, **changes})


def test_compose_names_each_country_and_stage_not_done_with_why_and_the_report() -> None:
    alert = alerts.compose([outcome()], "run 2026-11-23")
    assert alert.subject == "markdown-pricing run 2026-11-23: stage publish failed, DEU blocked"
    assert "  DEU            blocked: blocked by the quality gate: 4 of 20 articles are missing" in alert.text
    assert "  stage publish  failed: exit code 1, output in /logs/publish.log" in alert.text
    assert "Published: AUT, FRA" in alert.text
    assert "Report: file:///work/runs/2026-11-23/report.html" in alert.text
    assert alert.payload["text"] == alert.text and alert.payload["ok"] is False
    assert alert.payload["runs"][0]["problems"][1] == {
        "what": "DEU",
        "status": "blocked",
        "message": "blocked by the quality gate: 4 of 20 articles are missing",
    }


def test_compose_of_a_good_run_says_how_many_countries_were_published() -> None:
    alert = alerts.compose([outcome(exit_code=0, problems=())], "run 2026-11-23")
    assert alert.subject == "markdown-pricing run 2026-11-23: 2 countries published"
    assert alert.payload["ok"] is True


def test_compose_of_a_backfill_lists_each_week_and_shortens_a_long_subject() -> None:
    weeks = [
        outcome(run_id=f"2026-11-{day}", problems=(Problem(country, "failed", "x"),))
        for day, country in (("02", "AUT"), ("09", "BEL"), ("16", "CHE"), ("23", "DEU"), ("30", "ESP"))
    ]
    alert = alerts.compose(weeks, "backfill 2026-11-02..2026-11-30")
    assert alert.subject.endswith(": AUT failed, BEL failed, CHE failed, DEU failed and 1 more")
    assert all(f"Run 2026-11-{day} " in alert.text for day in ("02", "09", "16", "23", "30"))


@pytest.mark.parametrize(
    ("send", "ok", "expected"),
    [("problems", False, True), ("problems", True, False), ("always", True, True), ("never", False, False)],
)
def test_wanted_follows_alerts_send(send: str, ok: bool, expected: bool) -> None:
    run = outcome(exit_code=0, problems=()) if ok else outcome()
    assert alerts.wanted([run], AlertSettings(send=send)) is expected


def test_stage_problems_name_the_failures_of_this_attempt_and_missing_inputs_only() -> None:
    earlier, now = (SINCE - dt.timedelta(hours=1)).isoformat(), (SINCE + dt.timedelta(minutes=5)).isoformat()
    documents = {
        "etl": {"state": "done", "updated_at": now},
        "train_score": {"state": "failed", "updated_at": earlier, "problem": "boom last week"},
        "publish": {"state": "failed", "updated_at": now, "problem": None, "message": "exit code 1, output in x"},
        "never": None,
    }
    problems = alerts.stage_problems(documents, SINCE, inputs_missing=[("sales", "no _SUCCESS marker at /raw/sales")])
    assert problems == [
        Problem("input sales", "missing", "no _SUCCESS marker at /raw/sales"),
        Problem("stage publish", "failed", "exit code 1, output in x"),
    ]


def test_country_problems_are_every_ledger_status_but_published_and_superseded() -> None:
    messages = {
        "AUT": ("published", None),
        "DEU": ("blocked", "blocked by the quality gate: x"),
        # A later week in the ERP: done for the run, as for its Luigi target (a backfill's expected outcome).
        "CHE": ("superseded", "the ERP holds the newer week 2026-11-30: its rows kept"),
        "FRA": ("failed", None),
        "GBR": ("missing_input", "missing from this run's input"),
    }
    assert alerts.country_problems(messages) == [
        Problem("DEU", "blocked", "blocked by the quality gate: x"),
        Problem("FRA", "failed", "failed"),
        Problem("GBR", "missing_input", "missing from this run's input"),
    ]


def test_secret_comes_from_the_environment_then_from_the_files_first_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "secret").write_text("from-file\nignored\n")
    monkeypatch.delenv("MARKDOWN_TEST_SECRET", raising=False)
    assert alerts.secret("MARKDOWN_TEST_SECRET", "") is None
    assert alerts.secret("MARKDOWN_TEST_SECRET", str(tmp_path / "secret")) == "from-file"
    monkeypatch.setenv("MARKDOWN_TEST_SECRET", "from-env")
    assert alerts.secret("MARKDOWN_TEST_SECRET", str(tmp_path / "secret")) == "from-env"


# --- sending, for real -----------------------------------------------------------------------------------------------


def test_send_delivers_one_e_mail_through_luigis_settings_and_one_webhook_post(
    mailbox: Mailbox, webhook: Webhook
) -> None:
    alert = alerts.compose([outcome()], "run 2026-11-23")
    assert alerts.send(alert, AlertSettings()) == ["e-mail", "webhook"]
    [(login, message)] = mailbox.messages
    # Logged in with the password from MARKDOWN_SMTP_PASSWORD (a % in it included).
    assert login == SMTP_LOGIN
    assert message["Subject"] == alert.subject
    assert message["To"] == "buyers@example.com,ops@example.com"
    assert alert.text in message.get_payload()[0].get_payload(decode=True).decode()
    assert webhook.bodies == [alert.payload]


def test_an_smtp_relay_that_cannot_be_reached_is_logged_and_the_webhook_still_goes(
    mailbox: Mailbox, webhook: Webhook, caplog: pytest.LogCaptureFixture
) -> None:
    # Luigi's own sender would log this at its level and carry on as if the mail had gone.
    luigi.configuration.get_config().set("smtp", "port", str(free_port()))
    assert alerts.send(alerts.compose([outcome()], "run 2026-11-23"), AlertSettings()) == ["webhook"]
    assert mailbox.messages == []
    assert "alert e-mail not sent: ConnectionRefusedError" in caplog.text
    assert len(webhook.bodies) == 1


def test_a_webhook_that_refuses_is_logged_without_its_token_and_the_e_mail_still_goes(
    mailbox: Mailbox, webhook: Webhook, caplog: pytest.LogCaptureFixture
) -> None:
    webhook.status = 500
    assert alerts.send(alerts.compose([outcome()], "run 2026-11-23"), AlertSettings()) == ["e-mail"]
    assert "alert webhook to http://127.0.0.1 not sent: the receiver answered HTTP 500" in caplog.text
    assert WEBHOOK_TOKEN not in caplog.text


# --- whole runs: a blocked country, a hung stage -------------------------------------------------------------------

# Stands in for the three Spark jobs: writes what each would (markers, results, ledger rows) or hangs.
FAKE_STAGE = textwrap.dedent(
    """
    import datetime as dt, json, os, sys, time
    from contextlib import closing
    from pathlib import Path
    import pandas as pd
    from markdown_pricing.core.config import ErpSettings
    from markdown_pricing.erp import connection, writer

    job, run_dir, schema, hang = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]
    if job == hang:
        time.sleep(600)
    if job == "etl":
        for dataset in ("weekly", "article_states"):
            (run_dir / "curated" / dataset).mkdir(parents=True)
            (run_dir / "curated" / dataset / "_SUCCESS").touch()
        (run_dir / "drift.json").write_text("{}")
    elif job == "train_score":
        (run_dir / "predictions").mkdir(parents=True)
        (run_dir / "predictions" / "_SUCCESS").touch()
        (run_dir / "country_results.json").write_text(
            json.dumps({"DEU": {"status": "trained"}, "FRA": {"status": "trained"}})
        )
    else:
        settings = ErpSettings(**{**json.loads(sys.argv[5]), "schema": schema})
        run = dict(run_id="2026-11-23", run_date=dt.date(2026, 11, 23))
        frame = pd.DataFrame(
            {
                "country": ["FRA"], "article_id": ["A1"], "current_price": [50.0], "recommended_discount": [0.1],
                "recommended_price": [45.0], "predicted_units_next_week": [3.0], "expected_revenue": [120.0],
                "expected_sell_through": [0.8],
            }
        )
        with closing(connection.connect(os.environ["MARKDOWN_ERP_DSN"], 5)) as conn:
            writer.publish_country(
                conn, settings, **run, country="FRA", predictions=frame, model_version="2026-11-23/FRA", metrics={}
            )
            writer.record_not_published(
                conn, settings, **run, country="DEU", metrics={}, status="blocked",
                message="blocked by the quality gate: 4 of 20 articles recommended last time are missing now",
            )
        sys.exit(1)
    """
)


def run_with_stand_ins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, erp_settings: ErpSettings, *, hang: str = "", timeout_s: int = 0
) -> int:
    """`markdown-pricing run` in this process, its Spark jobs replaced by FAKE_STAGE."""
    raw = tmp_path / "raw"
    for dataset in RAW_DATASET_NAMES:
        (raw / dataset).mkdir(parents=True)
        (raw / dataset / "_SUCCESS").touch()
    (tmp_path / "stage.py").write_text(FAKE_STAGE)
    settings = json.dumps({field.name: getattr(erp_settings, field.name) for field in dataclasses.fields(erp_settings)})
    monkeypatch.setattr(
        tasks,
        "job_command",
        lambda cfg, job, ctx: [
            sys.executable,
            str(tmp_path / "stage.py"),
            job,
            str(Path(ctx.layout.run_dir.removeprefix("file://"))),
            erp_settings.schema,
            hang,
            settings,
        ],
    )
    load_run_config = tasks.load_run_config
    monkeypatch.setattr(
        tasks,
        "load_run_config",
        lambda ctx: dataclasses.replace(
            load_run_config(ctx),
            erp=erp_settings,
            schedule=ScheduleSettings(stage_timeout_s={hang: timeout_s} if hang else {}),
        ),
    )
    monkeypatch.setenv("MARKDOWN_ERP_DSN", erp_settings.dsn)
    return cli.main(["run", "--run-date", RUN_DATE.isoformat(), "--raw", str(raw), "--work", str(tmp_path / "work")])


@pytest.mark.slow
def test_a_run_with_a_blocked_country_exits_non_zero_and_sends_one_alert_on_each_channel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, erp_settings: ErpSettings, mailbox: Mailbox, webhook: Webhook
) -> None:
    assert run_with_stand_ins(tmp_path, monkeypatch, erp_settings) == 1
    [(_, message)] = mailbox.messages
    [body] = webhook.bodies
    assert message["Subject"] == body["subject"]
    assert "DEU blocked" in body["subject"]
    text = body["text"]
    assert "DEU" in text and "blocked: blocked by the quality gate: 4 of 20 articles" in text
    assert "Published: FRA" in text
    assert f"Logs: {tmp_path / 'work' / 'runs' / '2026-11-23' / 'logs'}" in text
    assert text in message.get_payload()[0].get_payload(decode=True).decode()


@pytest.mark.slow
def test_a_hung_stage_is_stopped_at_its_limit_and_sends_one_alert_on_each_channel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, erp_settings: ErpSettings, mailbox: Mailbox, webhook: Webhook
) -> None:
    assert run_with_stand_ins(tmp_path, monkeypatch, erp_settings, hang="train_score", timeout_s=2) == 1
    assert len(mailbox.messages) == 1
    [body] = webhook.bodies
    assert body["subject"] == "markdown-pricing run 2026-11-23: stage train_score failed"
    [run] = body["runs"]
    assert run["problems"] == [
        {
            "what": "stage train_score",
            "status": "failed",
            "message": "timed out: it ran past schedule.stage_timeout_s.train_score = 2 s and was stopped with its "
            "Spark application",
        }
    ]
    assert run["published"] == [] and run["exit_code"] == 1


def test_a_run_that_cannot_start_exits_2_and_sends_one_alert_saying_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, erp_settings: ErpSettings, webhook: Webhook
) -> None:
    # The run id was bound to another week by an earlier run.
    (tmp_path / "work" / "runs" / "weekly").mkdir(parents=True)
    (tmp_path / "work" / "runs" / "weekly" / "run.json").write_text('{"run_id": "weekly", "run_date": "2026-11-16"}')
    monkeypatch.setenv("MARKDOWN_ERP_DSN", erp_settings.dsn)
    code = cli.main(["run", "--run-date", RUN_DATE.isoformat(), "--run-id", "weekly", "--work", str(tmp_path / "work")])
    assert code == 2
    [body] = webhook.bodies
    assert body["subject"] == "markdown-pricing run weekly: run not started"
    [run] = body["runs"]
    assert run["problems"] == [
        {
            "what": "run",
            "status": "not started",
            "message": "run id 'weekly' belongs to run date 2026-11-16, not 2026-11-23: give this run another --run-id",
        }
    ]


def test_a_run_whose_central_scheduler_does_not_answer_exits_2_at_once_with_one_alert(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, erp_settings: ErpSettings, webhook: Webhook
) -> None:
    monkeypatch.setenv("MARKDOWN_ERP_DSN", erp_settings.dsn)
    url = f"http://127.0.0.1:{free_port()}/"
    code = cli.main(
        ["run", "--run-date", RUN_DATE.isoformat(), "--work", str(tmp_path / "work"), "--scheduler-url", url]
    )
    assert code == 2
    [body] = webhook.bodies
    [problem] = body["runs"][0]["problems"]
    assert (problem["what"], problem["status"]) == ("run", "not started")
    assert problem["message"].startswith(f"the central scheduler at {url} does not answer (")
    assert not (tmp_path / "work" / "runs").exists()
