"""`markdown-pricing gc`: removes old run folders, models and Spark event logs, and prunes old ledger and metrics rows.

First everything is read: the work folder's runs, models and event logs, and what the ERP's current rows point at.
A pure plan then says what goes and why; only after that, and only when not a dry run, does anything change. The
embedded ERP under <work>/erp is never looked at: gc reads runs/, models/ and the event log folder only.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from contextlib import ExitStack, closing
from dataclasses import dataclass
from typing import Any

import psycopg2
from hdfs.util import HdfsError

from markdown_pricing.core.application import EVENT_LOG_FOLDER
from markdown_pricing.core.config import Config
from markdown_pricing.core.results import MODEL_VERSION
from markdown_pricing.core.storage import RunLayout, filesystem, join, read_json
from markdown_pricing.erp import locks
from markdown_pricing.erp.connection import ErpUnavailableError, connect_configured, running_dsn
from markdown_pricing.erp.retention import CurrentRows, ErpTablesMissingError, PrunedRows, current_rows, prune_history

RUN, MODELS, EVENT_LOG = "run", "models", "event log"
# A Spark event log is named after its application: a file (with a codec suffix, `.inprogress` while it runs) or a
# rolling `eventlog_v2_` folder; a YARN cluster-mode driver adds its attempt (`application_1_0001_1`). Anything else in
# the folder is not ours to judge and stays.
_EVENT_LOG_NAME = re.compile(
    r"(?:eventlog_v2_)?(?P<app>local-\d+|app-\d+-\d+|application_\d+_\d+|spark-[0-9a-f]+)(?:_\d+)?(?:\.[a-z0-9]+)*"
)
# What gc can meet besides its own questions: an unreachable or unprepared ERP, a filesystem that fails.
GC_ERRORS = (ErpUnavailableError, ErpTablesMissingError, psycopg2.Error, HdfsError, OSError, ValueError)


@dataclass(frozen=True)
class FoundRun:
    """A folder under runs/: its run date (None when its run.json cannot be read), the model runs it uses, and the
    Spark applications its stage records name."""

    run_id: str
    run_date: dt.date | None
    model_runs: frozenset[str] = frozenset()
    application_ids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class EventLog:
    """An entry of the event log folder, the application it logs, and when it last changed."""

    name: str
    application_id: str
    modified: dt.datetime


@dataclass(frozen=True)
class WorkFolder:
    """What gc found: the runs, the run ids under models/, the event logs."""

    runs: tuple[FoundRun, ...]
    model_runs: tuple[str, ...]
    event_logs: tuple[EventLog, ...]


@dataclass(frozen=True)
class Removal:
    """One thing to remove: a run folder, a models/<run_id> folder or an event log, and why."""

    kind: str
    name: str
    reason: str


@dataclass(frozen=True)
class Plan:
    """What goes, in the order it is printed, and the run folders left alone because they cannot be dated."""

    removals: tuple[Removal, ...]
    unknown_runs: tuple[str, ...]


def model_run(model_version: str) -> str:
    """The run that saved a model: a model version is "<model run id>/<country>"."""
    return model_version.rsplit("/", 1)[0]


def event_log_application(name: str) -> str | None:
    """The Spark application id an event log's name carries, or None for a name that is no event log's."""
    found = _EVENT_LOG_NAME.fullmatch(name)
    return found.group("app") if found else None


def _run(run_id: str, run_date: dt.date) -> str:
    """A run as reasons name it: by its date, and its id too when that is not the date."""
    return f"run {run_date}" if run_id == run_date.isoformat() else f"run {run_id} of {run_date}"


def _weeks(count: int) -> str:
    return f"{count} week" if count == 1 else f"{count} weeks"


def plan_removals(
    found: WorkFolder, current: CurrentRows, keep_weeks: int, now: dt.datetime, *, own_event_logs: bool = True
) -> Plan:
    """What to remove and why: the runs of older weeks that the ERP's current rows do not come from, the models no
    kept run and no current row uses, and the event logs of removed runs. Event logs no run names go too once older
    than keep_weeks, but only from a folder of our own (`own_event_logs`): a configured spark.eventLog.dir is usually
    the cluster's shared history folder, other teams' applications included."""
    dates = {run.run_id: run.run_date for run in found.runs if run.run_date is not None}
    recent = set(sorted(set(dates.values()), reverse=True)[:keep_weeks])
    removed = {run_id for run_id, date in dates.items() if date not in recent and run_id not in current.run_ids}
    kept = [run for run in found.runs if run.run_id not in removed]
    used_models = (
        {run.run_id for run in kept}
        | {model for run in kept for model in run.model_runs}
        | {model_run(version) for version in current.model_versions}
    )
    most_recent = f"the {keep_weeks} most recent weeks" if keep_weeks > 1 else "the most recent week"
    removals = [
        Removal(RUN, run_id, f"{_run(run_id, dates[run_id])}: older than {most_recent}")
        for run_id in sorted(removed, key=lambda run_id: (dates[run_id], run_id))
    ]
    unused = "no kept run and no current ERP row uses them"
    removals += [
        Removal(
            MODELS,
            name,
            f"models of {_run(name, dates[name])}: {unused}" if name in dates else f"no run folder, {unused}",
        )
        for name in sorted(found.model_runs)
        if name not in used_models
    ]
    owners = {application: run.run_id for run in found.runs for application in run.application_ids}
    too_old = now - dt.timedelta(weeks=keep_weeks)
    for log in sorted(found.event_logs, key=lambda log: log.name):
        owner = owners.get(log.application_id)
        if owner in removed:
            removals.append(Removal(EVENT_LOG, log.name, f"event log of removed {_run(owner, dates[owner])}"))
        elif owner is None and own_event_logs and log.modified < too_old:
            removals.append(Removal(EVENT_LOG, log.name, f"no run names it, and it is older than {_weeks(keep_weeks)}"))
    unknown = tuple(sorted(run.run_id for run in found.runs if run.run_id not in dates))
    return Plan(tuple(removals), unknown)


def event_log_folder(cfg: Config) -> str:
    """Where the runs' Spark applications log their events: the configured folder, else <work>/spark-events."""
    return cfg.spark.conf.get("spark.eventLog.dir") or join(cfg.paths.work, EVENT_LOG_FOLDER)


def _read_document(uri: str) -> Any:
    """A small JSON document, or None when it is missing or unreadable as JSON."""
    if not filesystem(uri).exists(uri):
        return None
    try:
        return read_json(uri)
    except (ValueError, UnicodeDecodeError):
        return None


def _run_date(record: Any) -> dt.date | None:
    try:
        return dt.date.fromisoformat(record["run_date"])
    except (KeyError, TypeError, ValueError):
        return None


def _model_runs(record: Any, results: Any) -> frozenset[str]:
    """The model runs a run uses: a rescore's, named in run.json from its start, and each country's model version."""
    named = [record.get("model_run")] if isinstance(record, dict) else []
    if isinstance(results, dict):
        named += [result.get(MODEL_VERSION) and model_run(result[MODEL_VERSION]) for result in results.values()]
    return frozenset(name for name in named if isinstance(name, str) and name)


def read_run(work: str, run_id: str) -> FoundRun:
    """One run folder as gc sees it; reads only."""
    layout = RunLayout(raw="", work=work, run_id=run_id)
    record = _read_document(layout.run_record)
    stages = join(layout.run_dir, "stages")
    records = [_read_document(join(stages, name)) for name in filesystem(stages).list(stages) if name.endswith(".json")]
    applications = {stage.get("application_id") for stage in records if isinstance(stage, dict)}
    return FoundRun(
        run_id=run_id,
        run_date=_run_date(record),
        model_runs=_model_runs(record, _read_document(layout.country_results)),
        application_ids=frozenset(app for app in applications if isinstance(app, str) and app),
    )


def _folders(uri: str) -> list[str]:
    fs = filesystem(uri)
    return [name for name in fs.list(uri) if fs.is_dir(join(uri, name))]


def find_event_logs(folder: str) -> tuple[EventLog, ...]:
    """The event logs in a folder; entries not named like one are left out."""
    fs = filesystem(folder)
    logs = []
    for name in fs.list(folder):
        if (application := event_log_application(name)) is not None:
            modified = dt.datetime.fromtimestamp(fs.modified(join(folder, name)), tz=dt.timezone.utc)
            logs.append(EventLog(name, application, modified))
    return tuple(logs)


def scan(cfg: Config) -> WorkFolder:
    """The runs, models and event logs of the configured work folder; reads only."""
    work = cfg.paths.work
    return WorkFolder(
        runs=tuple(read_run(work, run_id) for run_id in _folders(join(work, "runs"))),
        model_runs=tuple(_folders(join(work, "models"))),
        event_logs=find_event_logs(event_log_folder(cfg)),
    )


def removal_uri(removal: Removal, cfg: Config) -> str:
    """Where a removal's folder or file is."""
    if removal.kind == EVENT_LOG:
        return join(event_log_folder(cfg), removal.name)
    return join(cfg.paths.work, "runs" if removal.kind == RUN else "models", removal.name)


def human_size(size: int) -> str:
    """Bytes as people read them: 512 B, 12.3 MiB."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _rows_line(pruned: PrunedRows, keep_days: int, *, dry_run: bool) -> str:
    if keep_days == 0:
        return "ledger and metrics rows: all kept (retention.ledger_keep_days is 0)"
    verb = "would prune" if dry_run else "pruned"
    return (
        f"{verb}  {pruned.ledger} ledger rows and {pruned.metrics} metrics rows recorded more than {keep_days} days "
        "ago (the runs of the ERP's current predictions keep theirs)"
    )


def _locked(held: ExitStack, conn: Any, cfg: Config, removal: Removal) -> bool:
    """Takes the run folder's lock (the one each stage holds while it runs) into `held`; False when a stage holds it."""
    run_dir = RunLayout(raw="", work=cfg.paths.work, run_id=removal.name).run_dir
    try:
        held.enter_context(locks.run_folder_lock(conn, removal.name, run_dir, locks.stage_holder("gc", removal.name)))
    except locks.LockedError:
        return False
    return True


def collect_garbage(cfg: Config, *, keep_weeks: int, dry_run: bool, say: Callable[[str], None]) -> None:
    """Plans from the work folder and the ERP, then removes and prunes (a dry run only says what it would), saying
    each item with its size and reason, the rows pruned and the space freed. The ERP is asked before anything goes:
    one that cannot be reached stops gc with nothing removed."""
    found = scan(cfg)
    keep_days = cfg.retention.ledger_keep_days
    with closing(connect_configured(running_dsn(cfg.erp, cfg.paths.work), cfg.erp, writer=True)) as conn:
        if dry_run:
            conn.set_session(readonly=True)
        current = current_rows(conn, cfg.erp)
        # No transaction stays open while files go.
        conn.rollback()
        now = dt.datetime.now(dt.timezone.utc)
        own_event_logs = "spark.eventLog.dir" not in cfg.spark.conf
        plan = plan_removals(found, current, keep_weeks, now, own_event_logs=own_event_logs)
        with ExitStack() as held:
            # A run whose stage is running now (a backfill of an old week) keeps its folder, models and event logs:
            # the folders of the runs to remove stay locked against a stage starting on them until they are gone.
            busy = frozenset(
                removal.name
                for removal in plan.removals
                if removal.kind == RUN and not _locked(held, conn, cfg, removal)
            )
            if busy:
                running = CurrentRows(current.run_ids | busy, current.model_versions)
                plan = plan_removals(found, running, keep_weeks, now, own_event_logs=own_event_logs)
            items = [(removal_uri(removal, cfg), removal.reason) for removal in plan.removals]
            sized = [(uri, filesystem(uri).size(uri), reason) for uri, reason in items]
            if not sized:
                say(f"nothing to remove under {cfg.paths.work}")
            for uri, size, reason in sized:
                if not dry_run:
                    filesystem(uri).delete(uri)
                say(f"{'would remove' if dry_run else 'remove'}  {uri}  {human_size(size)}  {reason}")
        for run_id in sorted(busy):
            say(f"skipped  {join(cfg.paths.work, 'runs', run_id)}  busy: a process is running a stage of it")
        for run_id in plan.unknown_runs:
            say(f"skipped  {join(cfg.paths.work, 'runs', run_id)}  unknown: no readable run.json gives its run date")
        pruned = prune_history(conn, cfg.erp, keep_days, dry_run=dry_run)
    say(_rows_line(pruned, keep_days, dry_run=dry_run))
    say(f"{'would free' if dry_run else 'freed'} {human_size(sum(size for _, size, _ in sized))}")
