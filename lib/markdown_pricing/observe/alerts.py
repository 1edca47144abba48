"""Alerts: one message when a run (or a backfill) ends with anything not published, by e-mail and by webhook.

How a run ended is read back from what it left: the ledger's status of each country, the progress file of each stage
(a failed stage records what went wrong: its time limit, a stale input) and the raw datasets' _SUCCESS markers.
E-mail goes to Luigi's own notification settings ([email] and [smtp] in conf/luigi.cfg), sent here with smtplib so
that a failure is seen (Luigi's sender logs and swallows it); the webhook is a JSON POST whose "text" field chat tools
show. Secrets (the webhook URL, the SMTP password) come from the environment or a file, and no message or log line
names them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import smtplib
import urllib.error
import urllib.request
from collections.abc import Sequence
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from markdown_pricing.core.config import AlertSettings, ErpSettings
from markdown_pricing.core.context import RunContext
from markdown_pricing.core.contract import RAW_DATASET_NAMES
from markdown_pricing.core.storage import has_success_marker
from markdown_pricing.erp import ledger
from markdown_pricing.erp.connection import ErpUnavailableError, connect, running_dsn
from markdown_pricing.observe import logs
from markdown_pricing.observe.progress import FAILED, progress_uri, read_progress

log = logging.getLogger(__name__)

SUBJECTS_NAMED = 4


@dataclass(frozen=True)
class Problem:
    """Something a run did not do: a country not published, a stage that failed, an input that never came."""

    what: str
    status: str
    message: str


@dataclass(frozen=True)
class RunOutcome:
    """How one run ended: its exit code, the countries it published, those a later week superseded (done, nothing
    to fix) and what it left undone."""

    run_id: str
    run_date: dt.date
    env: str
    exit_code: int
    published: tuple[str, ...]
    problems: tuple[Problem, ...]
    report: str | None
    log_folder: str
    superseded: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether the run did all it had to: nothing for an alert under alerts.send = "problems"."""
        return self.exit_code == 0 and not self.problems


@dataclass(frozen=True)
class Alert:
    """One message: its subject, its text, and the webhook's JSON document (the text and each run's outcome)."""

    subject: str
    text: str
    payload: dict[str, Any]


def stage_problems(
    documents: dict[str, dict[str, Any] | None], since: dt.datetime, *, inputs_missing: Sequence[tuple[str, str]]
) -> list[Problem]:
    """The stages that failed since `since` (earlier attempts' failures are history), and the raw datasets that
    never arrived."""
    problems = [Problem(f"input {dataset}", "missing", message) for dataset, message in inputs_missing]
    for stage, document in documents.items():
        if not document or document.get("state") != FAILED:
            continue
        updated = dt.datetime.fromisoformat(str(document.get("updated_at")))
        if updated >= since:
            problems.append(Problem(f"stage {stage}", FAILED, str(document.get("problem") or document.get("message"))))
    return problems


def country_problems(messages: dict[str, tuple[str, str | None]]) -> list[Problem]:
    """Every country of the run's ledger left undone, with the ledger's reason: not published, and not superseded
    by a later week either (a backfill's expected outcome, done for the run as for its Luigi target)."""
    return [
        Problem(country, status, message or status)
        for country, (status, message) in sorted(messages.items())
        if status not in ledger.DONE_STATUSES
    ]


def not_started(ctx: RunContext, why: str) -> RunOutcome:
    """The outcome of a run that stopped before its first stage: a run id of another week, no release on HDFS, no
    scheduler to reach."""
    problem = Problem("run", "not started", why)
    return RunOutcome(ctx.run_id, ctx.run_date, ctx.env, 2, (), (problem,), None, str(logs.log_folder(ctx.layout)))


def run_outcome(
    ctx: RunContext,
    settings: ErpSettings,
    stages: Sequence[str],
    *,
    exit_code: int,
    since: dt.datetime,
    report: str | None,
) -> RunOutcome:
    """Reads how a run ended from its ledger rows, its stages' progress files and its raw markers; reads only."""
    layout = ctx.layout
    missing = [
        (dataset, f"no _SUCCESS marker at {layout.raw_dataset(dataset)}")
        for dataset in RAW_DATASET_NAMES
        if not has_success_marker(layout.weekly) and not has_success_marker(layout.raw_dataset(dataset))
    ]
    documents = {stage: read_progress(progress_uri(layout, stage)) for stage in stages}
    problems = stage_problems(documents, since, inputs_missing=missing)
    try:
        with closing(connect(running_dsn(settings, ctx.work), settings.connect_timeout_s)) as conn:
            conn.set_session(readonly=True)
            messages = ledger.run_messages(conn, settings, ctx.run_id)
    except ErpUnavailableError as err:
        messages = {}
        problems.append(Problem("ERP", "unreadable", f"the ledger could not be read: {err}"))
    problems += country_problems(messages)
    log_folder = str(logs.log_folder(layout))

    def having(wanted: str) -> tuple[str, ...]:
        return tuple(sorted(country for country, (status, _) in messages.items() if status == wanted))

    published, superseded = having(ledger.PUBLISHED), having(ledger.SUPERSEDED)
    done = bool(published or superseded) and not problems
    if exit_code != 0 and not problems and not done:
        problems.append(Problem("run", FAILED, f"exit code {exit_code} and no stage said why: see {log_folder}"))
    # A week of a backfill that did all it had to ended well, whatever the other weeks did to the command's code.
    code = 0 if done else exit_code
    return RunOutcome(
        ctx.run_id, ctx.run_date, ctx.env, code, published, tuple(problems), report, log_folder, superseded
    )


def _listed(names: Sequence[str], shown: int) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _section(outcome: RunOutcome) -> str:
    head = (
        f"Run {outcome.run_id} (run date {outcome.run_date}, {outcome.env}) ended with exit code {outcome.exit_code}: "
        f"{len(outcome.published)} countries published, {len(outcome.problems)} problems."
    )
    lines = [head]
    if outcome.problems:
        lines.append("Not done (a country not published keeps its previous ERP rows):")
        width = max(len(problem.what) for problem in outcome.problems)
        lines += [f"  {p.what:<{width}}  {p.status}: {p.message}" for p in outcome.problems]
    if outcome.published:
        lines.append(f"Published: {', '.join(outcome.published)}")
    if outcome.superseded:
        lines.append(f"Superseded (the ERP holds a later week, its rows kept): {', '.join(outcome.superseded)}")
    if outcome.report:
        lines.append(f"Report: {outcome.report}")
    lines.append(f"Logs: {outcome.log_folder}")
    return "\n".join(lines)


def _document(outcome: RunOutcome) -> dict[str, Any]:
    """The outcome in JSON's own types, for the webhook's receivers."""
    return {
        **asdict(outcome),
        "run_date": outcome.run_date.isoformat(),
        "published": list(outcome.published),
        "superseded": list(outcome.superseded),
        "problems": [asdict(problem) for problem in outcome.problems],
    }


def compose(outcomes: Sequence[RunOutcome], title: str) -> Alert:
    """One message for the runs of one command (a run, or every week of a backfill)."""
    problems = [f"{p.what} {p.status}" for outcome in outcomes for p in outcome.problems]
    ok = all(outcome.ok for outcome in outcomes)
    if problems:
        subject = f"markdown-pricing {title}: {_listed(problems, SUBJECTS_NAMED)}"
    else:
        published = sum(len(outcome.published) for outcome in outcomes)
        subject = f"markdown-pricing {title}: {published} countries published"
    text = subject + "\n\n" + "\n\n".join(_section(outcome) for outcome in outcomes)
    payload = {
        "text": text,
        "subject": subject,
        "ok": ok,
        "runs": [_document(outcome) for outcome in outcomes],
    }
    return Alert(subject, text, payload)


def wanted(outcomes: Sequence[RunOutcome], settings: AlertSettings) -> bool:
    """Whether these runs call for a message under alerts.send."""
    if settings.send == "never":
        return False
    return settings.send == "always" or not all(outcome.ok for outcome in outcomes)


def secret(env_name: str, file: str) -> str | None:
    """A secret from the environment variable, else from the file (its first line), else None."""
    if value := os.environ.get(env_name):
        return value
    if file:
        lines = Path(file).read_text().splitlines()
        return lines[0].strip() if lines else None
    return None


def _endpoint(url: str) -> str:
    """Where a URL points, without its path and query: a webhook's path holds its token."""
    parsed = urlparse(url)
    return f"{parsed.scheme}://{parsed.hostname or ''}"


def post_webhook(url: str, payload: dict[str, Any], timeout_s: float) -> None:
    """POSTs the payload as JSON; raises OSError (urllib's errors included) when the receiver does not take it."""
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode("utf-8"),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        response.read()


def send_email(alert: Alert, settings: AlertSettings) -> bool:
    """Mails the alert to [email] receiver through [smtp] (Luigi's settings); False when no receiver is configured.
    Raises what smtplib raises: Luigi's own sender would log a failure and carry on as if the mail had gone."""
    from luigi.notifications import email, generate_email, smtp

    mail, relay = email(), smtp()
    receivers = [address.strip() for address in mail.receiver.split(",") if address.strip()]
    if not receivers:
        return False
    password = secret(settings.smtp_password_env, settings.smtp_password_file) or relay.password
    message = generate_email(mail.sender, alert.subject, alert.text, receivers, None)
    connect = smtplib.SMTP_SSL if relay.ssl else smtplib.SMTP
    with connect(relay.host, relay.port, relay.local_hostname, timeout=relay.timeout) as server:
        server.ehlo_or_helo_if_needed()
        if server.has_extn("starttls") and not relay.no_tls:
            server.starttls()
            server.ehlo()
        if relay.username and password:
            server.login(relay.username, password)
        server.sendmail(mail.sender, receivers, message.as_string())
    return True


def send(alert: Alert, settings: AlertSettings) -> list[str]:
    """Sends the alert on every configured channel; returns those that took it. A channel that fails is logged,
    never raised, and never keeps the other from trying: the run's own outcome and exit code stand."""
    sent = []
    try:
        if send_email(alert, settings):
            sent.append("e-mail")
    except Exception as err:
        log.error("alert e-mail not sent: %s: %s", type(err).__name__, err)
    try:
        url = secret(settings.webhook_url_env, settings.webhook_url_file)
    except OSError as err:
        log.error("alert webhook not sent: alerts.webhook_url_file cannot be read: %s", err.strerror)
        url = None
    if url:
        try:
            post_webhook(url, alert.payload, settings.webhook_timeout_s)
            sent.append("webhook")
        except Exception as err:
            log.error("alert webhook to %s not sent: %s", _endpoint(url), _webhook_failure(err))
    return sent


def _webhook_failure(err: Exception) -> str:
    """Why a POST failed, in words that never repeat the URL (urllib's ValueError does)."""
    if isinstance(err, urllib.error.HTTPError):
        return f"the receiver answered HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    if isinstance(err, ValueError):
        return "the webhook URL is not an http(s) URL"
    return f"{type(err).__name__}: {err}" if isinstance(err, OSError) else type(err).__name__


def notify(outcomes: Sequence[RunOutcome], title: str, settings: AlertSettings) -> list[str]:
    """Sends one alert for these runs when alerts.send calls for it; returns the channels that took it."""
    if not wanted(outcomes, settings):
        return []
    return send(compose(outcomes, title), settings)
