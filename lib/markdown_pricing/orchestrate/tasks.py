"""Luigi tasks for one weekly run. They know stages only as spark-submit command lines and targets.

    luigi --module markdown_pricing.orchestrate.tasks WeeklyRun --run-date 2026-11-23 --local-scheduler
    luigi --module markdown_pricing.orchestrate.tasks WeeklyBackfill --start 2026-11-02 --end 2026-11-23 \\
        --local-scheduler

Every task names its run by the same parameters; `ctx` turns them into the one RunContext that the jobs receive.
Checking a target reads only: it starts no server and creates no table.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from functools import cached_property
from typing import Any

import luigi
from luigi.execution_summary import LuigiRunResult, LuigiStatusCode

from markdown_pricing.core.config import ENVIRONMENTS, Config
from markdown_pricing.core.context import RunContext, countries, load_run_config, mondays
from markdown_pricing.core.contract import RAW_DATASET_NAMES
from markdown_pricing.core.errors import StaleInputError
from markdown_pricing.core.results import read_country_results
from markdown_pricing.core.storage import SUCCESS_MARKER, filesystem, join, read_json, write_json
from markdown_pricing.erp import ledger, locks, schema
from markdown_pricing.erp.connection import ErpUnavailableError, connect, connect_configured, running_dsn, start_dsn
from markdown_pricing.observe import logs, progress
from markdown_pricing.orchestrate.launcher import TIMED_OUT_EXIT_CODE, LaunchedApplication, run_job
from markdown_pricing.orchestrate.submit import job_command, submit_environment

log = logging.getLogger("luigi-interface")

# The status message and percentage last sent to the scheduler.
Shown = tuple[str, int | None]


class SchedulerRefusedError(RuntimeError):
    """Raised when the central scheduler will not run a stage of the run: it disabled the stage after repeated
    failures, or a resource cap stayed full past the configured wait."""


def disabled_tasks(result: LuigiRunResult) -> list[str]:
    """The tasks of this build that the scheduler has disabled (retry_count failures within disable_window)."""
    scheduled = result.worker._scheduled_tasks
    disabled = result.worker._scheduler.task_list(status="DISABLED", upstream_status="")
    return sorted(str(disabled[task_id].get("display_name", task_id)) for task_id in set(disabled) & set(scheduled))


def build_waiting_for_resources(
    tasks: list[luigi.Task], *, poll_s: float, max_wait_s: float, **scheduler: Any
) -> LuigiRunResult:
    """luigi.build, again every `poll_s` while the scheduler grants a task no run permission because a [resources]
    cap is full: a worker that does not keep alive would otherwise give up at once, and one that keeps alive would
    also wait forever on a missing input. A stage the scheduler disabled, or a cap full for `max_wait_s`, ends the
    wait with SchedulerRefusedError."""
    deadline = time.monotonic() + max_wait_s
    waited = False
    while True:
        result = luigi.build(tasks, detailed_summary=True, **scheduler)
        if result.status != LuigiStatusCode.NOT_RUN:
            return result
        if disabled := disabled_tasks(result):
            raise SchedulerRefusedError(
                f"the scheduler disabled {', '.join(disabled)} after repeated failures (luigi.cfg [scheduler] "
                "retry_count within disable_window): re-enable it on luigid's page, then run again"
            )
        if time.monotonic() >= deadline:
            raise SchedulerRefusedError(
                f"a resource cap of luigi.cfg [resources] stayed full for schedule.resource_wait_s = {max_wait_s:.0f} "
                "s: another run holds it (luigid's page shows which)"
            )
        # The first wait is a warning: a quiet terminal would otherwise look stuck.
        log.log(
            logging.INFO if waited else logging.WARNING,
            "waiting for the scheduler: a resource cap of luigi.cfg [resources] is full; asking again every %.0f s",
            poll_s,
        )
        waited = True
        time.sleep(poll_s)


class RunIdTakenError(ValueError):
    """Raised when a run id that belongs to one run date is given for another."""


def check_run_id(ctx: RunContext) -> None:
    """Refuses a run id that an earlier run of another run date used: its finished stages would be taken as this
    week's. Reads only."""
    uri = ctx.layout.run_record
    if not filesystem(uri).exists(uri):
        return
    owner = read_json(uri).get("run_date")
    if owner != ctx.run_date.isoformat():
        raise RunIdTakenError(
            f"run id {ctx.run_id!r} belongs to run date {owner}, not {ctx.run_date}: give this run another --run-id"
        )


def claim_run_id(ctx: RunContext) -> None:
    """Binds the run id to its run date, the first time a stage of the run starts."""
    check_run_id(ctx)
    uri = ctx.layout.run_record
    if not filesystem(uri).exists(uri):
        # A rescore names its model run from its start: `markdown-pricing gc` keeps those models while it runs.
        model_run = {"model_run": ctx.model_run} if ctx.model_run else {}
        write_json(uri, {"run_id": ctx.run_id, "run_date": ctx.run_date.isoformat(), **model_run})


class CountriesParameter(luigi.Parameter):
    """Country codes, comma-separated on the command line, a sorted tuple in the task (as in RunContext)."""

    def parse(self, x: str) -> tuple[str, ...]:
        return countries(x.split(","))

    def normalize(self, x: Any) -> tuple[str, ...]:
        return countries(x.split(",") if isinstance(x, str) else x)

    def serialize(self, x: Iterable[str]) -> str:
        return ",".join(x)


class FileTarget(luigi.Target):
    """One file (a stage's JSON record) on any filesystem core/storage.py serves."""

    def __init__(self, uri: str) -> None:
        self.path = uri

    def exists(self) -> bool:
        return filesystem(self.path).exists(self.path)


class MarkerTarget(FileTarget):
    """A dataset folder's _SUCCESS marker."""

    def __init__(self, folder: str) -> None:
        super().__init__(join(folder, SUCCESS_MARKER))


class AllTargets(luigi.Target):
    """Complete when each of its targets is: a stage that writes several outputs is done only after its last, so a
    job stopped half-way runs again."""

    def __init__(self, *targets: luigi.Target) -> None:
        self.targets = targets

    def exists(self) -> bool:
        return all(target.exists() for target in self.targets)


class LedgerTarget(luigi.Target):
    """Complete when the ERP ledger shows every country of the run published (or superseded by a later week) and no
    country the ERP holds missing from the run's input. Reads only: an ERP that is not running or has no ledger yet
    means not complete."""

    def __init__(self, ctx: RunContext, cfg: Config) -> None:
        self.ctx, self.cfg = ctx, cfg

    def exists(self) -> bool:
        results_uri = self.ctx.layout.country_results
        if not filesystem(results_uri).exists(results_uri):
            return False
        expected = set(read_country_results(results_uri))
        settings = self.cfg.erp
        try:
            with closing(connect(running_dsn(settings, self.ctx.work), settings.connect_timeout_s)) as conn:
                conn.set_session(readonly=True)
                statuses = ledger.run_statuses(conn, settings, self.ctx.run_id)
        except ErpUnavailableError:
            return False
        # Every country of the run done, and none the run found missing from its input.
        done = all(status in ledger.DONE_STATUSES for status in statuses.values())
        return bool(expected) and expected <= set(statuses) and done


class PipelineParameters:
    """Where a run reads and writes and how it treats its inputs and gates: shared by runs and backfills."""

    # Not `raw`/`work`: the luigi command line would read `--work` as an abbreviation of `--worker-*`.
    raw_uri = luigi.Parameter(default="")
    work_uri = luigi.Parameter(default="")
    env = luigi.ChoiceParameter(choices=ENVIRONMENTS, default="local")
    override_gate = CountriesParameter(default=(), description="comma-separated countries whose gate is overridden")
    wait_for_inputs = luigi.FloatParameter(
        default=-1.0, significant=False, description="seconds to wait for raw _SUCCESS markers; -1: configured"
    )


class RunParameters(PipelineParameters):
    """Parameters every task of a weekly run shares: the fields of its RunContext."""

    run_date = luigi.DateParameter()
    run_id = luigi.Parameter(default="")
    model_run = luigi.Parameter(default="", description="rescore with this earlier run's saved models; empty: train")
    rollback = luigi.BoolParameter(default=False, description="publish even where the ERP holds a later week")

    @classmethod
    def from_context(cls, ctx: RunContext, wait_for_inputs: float = -1.0) -> Any:
        """The task of this class for a run."""
        return cls(
            run_date=ctx.run_date,
            run_id=ctx.run_id,
            raw_uri=ctx.raw,
            work_uri=ctx.work,
            env=ctx.env,
            override_gate=ctx.gate_overrides,
            model_run=ctx.model_run or "",
            rollback=ctx.rollback,
            wait_for_inputs=wait_for_inputs,
        )

    @property
    def priority(self) -> int:
        # Older weeks first, so in a backfill an older week never replaces a newer week's ERP rows. Positive:
        # Luigi raises a task's priority to its dependents', and a WrapperTask's default is 0.
        return dt.date.max.toordinal() - self.run_date.toordinal()

    @cached_property
    def ctx(self) -> RunContext:
        return RunContext.create(
            self.run_date,
            run_id=self.run_id or None,
            raw=self.raw_uri or None,
            work=self.work_uri or None,
            env=self.env,
            gate_overrides=self.override_gate,
            model_run=self.model_run or None,
            rollback=self.rollback,
        )

    @cached_property
    def cfg(self) -> Config:
        return load_run_config(self.ctx)


class RawDataset(luigi.ExternalTask):
    """An upstream export, complete once its _SUCCESS marker is there; waits for it like an HDFS sensor."""

    dataset = luigi.ChoiceParameter(choices=RAW_DATASET_NAMES)
    raw_uri = luigi.Parameter()
    wait_s = luigi.FloatParameter(default=0.0, significant=False)
    poll_s = luigi.FloatParameter(default=60.0, significant=False)

    def output(self) -> MarkerTarget:
        return MarkerTarget(join(self.raw_uri, self.dataset))

    def complete(self) -> bool:
        deadline = time.monotonic() + self.wait_s
        # The first wait is a warning: a quiet terminal would otherwise look stuck for up to an hour.
        level = logging.WARNING
        while not self.output().exists():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.error(
                    "input dataset %r is missing: no %s after waiting %.0f s",
                    self.dataset,
                    self.output().path,
                    self.wait_s,
                )
                return False
            log.log(level, "waiting for %s (%.0f s left)", self.output().path, remaining)
            level = logging.INFO
            time.sleep(min(self.poll_s, remaining))
        return True


class SparkStage(RunParameters, luigi.Task):
    """Runs one job through spark-submit with the environment's settings from conf/.

    While the job runs, the task shows the job's progress file on luigid (status message, progress percentage) and
    its YARN tracking URL; the launcher supervises the process (log file, interrupts, YARN kill).
    """

    job: str = ""
    # How often the progress file is read while the job runs.
    poll_s: float = progress.POLL_S
    # Capped in conf/luigi.cfg [resources]: how many Spark applications run at once (the role of an Airflow pool).
    resources = {"spark_applications": 1}

    def command(self) -> list[str]:
        return job_command(self.cfg, self.job, self.ctx)

    def run(self) -> None:
        with self.exclusive_run():
            code = self.submit()
        if code != 0:
            raise self.failure(code)

    @contextmanager
    def exclusive_run(self) -> Iterator[None]:
        """Before any Spark work: the ERP's tables current and this role's privileges checked; then, for the block,
        this process alone writes the run's folder, and the run id is bound to its run date."""
        settings = self.cfg.erp
        with closing(connect_configured(start_dsn(settings, self.ctx.work), settings)) as conn:
            schema.prepare(conn, settings)
            with locks.run_folder_lock(
                conn, self.ctx.run_id, self.ctx.layout.run_dir, locks.stage_holder(self.job, self.ctx.run_id)
            ):
                claim_run_id(self.ctx)
                yield

    def input_problem(self, code: int) -> str | None:
        """What was wrong with the input, as the job that just exited with `code` recorded it."""
        record_uri = self.ctx.layout.stage_record(self.job)
        record = read_json(record_uri) if filesystem(record_uri).exists(record_uri) else {}
        return record.get("input_error") if record.get("exit_code") == code else None

    def problem(self, code: int) -> str | None:
        """What went wrong with a job that exited with `code`, where known: its time limit, or its input."""
        if code == TIMED_OUT_EXIT_CODE:
            return (
                f"timed out: it ran past schedule.stage_timeout_s.{self.job} = "
                f"{self.cfg.schedule.timeout_s(self.job):.0f} s and was stopped with its Spark application"
            )
        return self.input_problem(code)

    def failure(self, code: int) -> RuntimeError:
        """The error a failed job ends its task with, naming what went wrong where known."""
        problem = self.problem(code)
        log_path = logs.stage_log_path(self.ctx.layout, self.job)
        return RuntimeError(
            f"{self.job} for run {self.ctx.run_id} failed with exit code {code}"
            f"{f': {problem}' if problem else ''}; its output is in {log_path}"
        )

    def submit(self) -> int:
        """Runs the job once through spark-submit, showing its progress; returns its exit code."""
        command = self.command()
        log.info("submitting %s", " ".join(command))
        channel = progress.progress_uri(self.ctx.layout, self.job)
        log_path = logs.stage_log_path(self.ctx.layout, self.job)
        progress.stage_started(channel, self.job)
        shown = self._show(progress.read_progress(channel), ("", None))
        tracking_url = None

        def poll(launched: LaunchedApplication) -> None:
            nonlocal shown, tracking_url
            shown = self._show(progress.read_progress(channel), shown)
            if launched.tracking_url != tracking_url and self.set_tracking_url is not None:
                tracking_url = launched.tracking_url
                self.set_tracking_url(tracking_url)

        # The environment (it may hold PGPASSWORD) is never logged.
        code = run_job(
            command,
            submit_environment(self.cfg),
            log_path,
            name=f"{self.job} for run {self.ctx.run_id}",
            poll_s=self.poll_s,
            on_poll=poll,
            timeout_s=self.cfg.schedule.timeout_s(self.job),
        )
        problem = self.problem(code) if code != 0 else None
        self._show(progress.stage_finished(channel, self.job, code, str(log_path), problem), shown)
        return code

    def _show(self, document: progress.Document | None, shown: Shown) -> Shown:
        """Sends the document's status message and percentage to the scheduler where they changed."""
        if document is None:
            return shown
        message, percent = progress.status_message(document), progress.percentage(document)
        # Each call is a request to luigid. Both setters are None when the task runs outside a Luigi worker.
        if message != shown[0] and self.set_status_message is not None:
            self.set_status_message(message)
        if percent is not None and percent != shown[1] and self.set_progress_percentage is not None:
            self.set_progress_percentage(percent)
        return message, percent if percent is not None else shown[1]


class Etl(SparkStage):
    job = "etl"

    @property
    def input_wait_s(self) -> float:
        return self.cfg.run.wait_for_inputs_s if self.wait_for_inputs < 0 else self.wait_for_inputs

    def requires(self) -> list[RawDataset]:
        return [
            RawDataset(dataset=name, raw_uri=self.ctx.raw, wait_s=self.input_wait_s, poll_s=self.cfg.run.input_poll_s)
            for name in RAW_DATASET_NAMES
        ]

    def run(self) -> None:
        """Submits the ETL again while the feed is stale (marked complete over last week's data) and the wait for
        inputs lasts: the job checks freshness before writing anything, so a stale attempt leaves nothing behind.
        The wait counts from the first stale answer, so a slow submission does not use it up."""
        deadline: float | None = None
        with self.exclusive_run():
            while (code := self.submit()) == StaleInputError.exit_code:
                now = time.monotonic()
                deadline = deadline if deadline is not None else now + self.input_wait_s
                remaining = deadline - now
                if remaining <= 0:
                    break
                log.warning("%s; waiting for fresh data (%.0f s left)", self.input_problem(code), remaining)
                time.sleep(min(self.cfg.run.input_poll_s, remaining))
        if code != 0:
            raise self.failure(code)

    def output(self) -> AllTargets:
        # drift.json is the job's last write: the curated data and article states are all there once it is.
        layout = self.ctx.layout
        return AllTargets(MarkerTarget(layout.weekly), MarkerTarget(layout.article_states), FileTarget(layout.drift))


class TrainScore(SparkStage):
    job = "train_score"

    def requires(self) -> Etl:
        return self.clone(Etl)

    def output(self) -> MarkerTarget:
        return MarkerTarget(self.ctx.layout.predictions)


class Publish(SparkStage):
    job = "publish"
    # One publisher at a time talks to the ERP, whatever the scheduler runs besides.
    resources = {"spark_applications": 1, "erp_connections": 1}

    def requires(self) -> TrainScore:
        return self.clone(TrainScore)

    def output(self) -> LedgerTarget:
        return LedgerTarget(self.ctx, self.cfg)


class WeeklyRun(RunParameters, luigi.WrapperTask):
    """One weekly markdown run: ETL, train and score per country, publish to the ERP."""

    def requires(self) -> Publish:
        check_run_id(self.ctx)
        return self.clone(Publish)


class WeeklyBackfill(PipelineParameters, luigi.WrapperTask):
    """The weekly runs of a range of Mondays, each with its run date as run id; older weeks publish first."""

    start = luigi.DateParameter(description="first Monday")
    end = luigi.DateParameter(description="last Monday, included")

    def contexts(self) -> list[RunContext]:
        """The run of each Monday of the range, oldest first."""
        return [
            RunContext.create(
                day,
                raw=self.raw_uri or None,
                work=self.work_uri or None,
                env=self.env,
                gate_overrides=self.override_gate,
            )
            for day in mondays(self.start, self.end)
        ]

    def requires(self) -> list[WeeklyRun]:
        return [WeeklyRun.from_context(ctx, self.wait_for_inputs) for ctx in self.contexts()]
