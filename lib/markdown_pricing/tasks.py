"""Luigi tasks for one weekly run. They know stages only as spark-submit command lines and targets.

    luigi --module markdown_pricing.tasks WeeklyRun --run-date 2026-11-23 --local-scheduler
"""
from __future__ import annotations

import logging
import subprocess
from contextlib import closing
from functools import cached_property

import luigi

from markdown_pricing import erp
from markdown_pricing.config import ENVIRONMENTS, load_config, with_paths
from markdown_pricing.embedded_erp import resolve_dsn
from markdown_pricing.schemas import RAW_DATASETS
from markdown_pricing.stages import RunContext
from markdown_pricing.storage import SUCCESS_MARKER, filesystem, join, read_json
from markdown_pricing.submit import spark_submit_command, submit_environment

log = logging.getLogger("luigi-interface")


class MarkerTarget(luigi.Target):
    """A dataset folder's _SUCCESS marker, on any filesystem storage.py serves."""

    def __init__(self, folder: str) -> None:
        self.path = join(folder, SUCCESS_MARKER)

    def exists(self) -> bool:
        return filesystem(self.path).exists(self.path)


class LedgerTarget(luigi.Target):
    """Complete when the ERP ledger shows every country of the run published."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def exists(self) -> bool:
        results_uri = self.ctx.layout.country_results
        if not filesystem(results_uri).exists(results_uri):
            return False
        expected = set(read_json(results_uri))
        settings = self.ctx.cfg.erp
        try:
            with closing(erp.connect(resolve_dsn(settings, self.ctx.cfg.paths.work), settings.connect_timeout_s)) as conn:
                erp.ensure_schema(conn, settings)
                statuses = erp.ledger(conn, settings, self.ctx.run_id)
        except erp.ErpUnavailableError:
            return False
        return bool(expected) and all(statuses.get(country) == "published" for country in expected)


class RunParameters:
    """Parameters every task of a weekly run shares."""

    run_date = luigi.DateParameter()
    run_id = luigi.Parameter(default="")
    # Not `raw`/`work`: the luigi command line would read `--work` as an abbreviation of `--worker-*`.
    raw_uri = luigi.Parameter(default="")
    work_uri = luigi.Parameter(default="")
    env = luigi.ChoiceParameter(choices=ENVIRONMENTS, default="local")
    override_gate = luigi.Parameter(default="", description="comma-separated countries whose quality gate is overridden")

    @cached_property
    def ctx(self) -> RunContext:
        cfg = with_paths(load_config(self.env), raw=self.raw_uri or None, work=self.work_uri or None)
        overrides = tuple(sorted({c.strip() for c in self.override_gate.split(",") if c.strip()}))
        return RunContext(
            cfg=cfg, run_date=self.run_date, run_id=self.run_id or self.run_date.isoformat(), gate_overrides=overrides
        )

    def run_arguments(self) -> list[str]:
        """The command-line form of this run, for the job entry points."""
        paths = self.ctx.cfg.paths
        return [
            "--run-date", self.run_date.isoformat(), "--run-id", self.ctx.run_id,
            "--raw", paths.raw, "--work", paths.work, "--env", self.env,
            *(part for country in self.ctx.gate_overrides for part in ("--override-gate", country)),
        ]  # fmt: skip


class RawDataset(luigi.ExternalTask):
    """An upstream export, complete once its _SUCCESS marker is there."""

    dataset = luigi.ChoiceParameter(choices=tuple(RAW_DATASETS))
    raw_uri = luigi.Parameter()

    def output(self) -> MarkerTarget:
        return MarkerTarget(join(self.raw_uri, self.dataset))


class SparkStage(RunParameters, luigi.Task):
    """Runs one job through spark-submit with the environment's settings from conf/."""

    job: str = ""

    def command(self) -> list[str]:
        return spark_submit_command(self.ctx.cfg, self.job, self.run_arguments(), self.run_date.isoformat())

    def run(self) -> None:
        command = self.command()
        log.info("submitting %s", " ".join(command))
        # Output streams straight through; the environment (it may hold PGPASSWORD) is never logged.
        process = subprocess.Popen(command, env=submit_environment(self.ctx.cfg))
        try:
            code = process.wait()
        finally:
            if process.poll() is None:
                process.terminate()
        if code != 0:
            raise RuntimeError(f"{self.job} for run {self.ctx.run_id} failed with exit code {code}")


class Etl(SparkStage):
    job = "etl"

    def requires(self) -> list[RawDataset]:
        return [RawDataset(dataset=name, raw_uri=self.ctx.cfg.paths.raw) for name in RAW_DATASETS]

    def output(self) -> MarkerTarget:
        return MarkerTarget(self.ctx.layout.weekly)


class TrainScore(SparkStage):
    job = "train_score"

    def requires(self) -> Etl:
        return self.clone(Etl)

    def output(self) -> MarkerTarget:
        return MarkerTarget(self.ctx.layout.predictions)


class Publish(SparkStage):
    job = "publish"

    def requires(self) -> TrainScore:
        return self.clone(TrainScore)

    def output(self) -> LedgerTarget:
        return LedgerTarget(self.ctx)


class WeeklyRun(RunParameters, luigi.WrapperTask):
    """One weekly markdown run: ETL, train and score per country, publish to the ERP."""

    def requires(self) -> Publish:
        return self.clone(Publish)
