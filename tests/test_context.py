"""One run context and one wire format: what the CLI, Luigi, submit.sh and the jobs all pass around."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shlex
import subprocess
from pathlib import Path

import luigi
import pytest
from luigi.cmdline_parser import CmdlineParser

from markdown_pricing.core.config import ErpSettings, load_config, project_root
from markdown_pricing.core.context import RunContext, load_run_config, mondays
from markdown_pricing.core.storage import read_json
from markdown_pricing.erp.locks import LockedError
from markdown_pricing.orchestrate import cli
from markdown_pricing.orchestrate.submit import JOBS
from markdown_pricing.orchestrate.tasks import (
    Publish,
    RunIdTakenError,
    SparkStage,
    TrainScore,
    WeeklyRun,
    claim_run_id,
)

RUN_DATE = dt.date(2026, 11, 23)


def test_run_context_to_args_and_from_args_round_trip(tmp_path: Path) -> None:
    ctx = RunContext(
        RUN_DATE,
        "rerun-2",
        raw=(tmp_path / "raw").as_uri(),
        work=(tmp_path / "w").as_uri(),
        env="yarn",
        gate_overrides=("DEU", "FRA"),
        model_run="2026-11-16",
    )

    assert RunContext.from_args(ctx.to_args()) == ctx


def test_run_context_create_fills_in_run_id_and_configured_paths() -> None:
    ctx = RunContext.create(RUN_DATE, gate_overrides=[" FRA", "DEU", "FRA", ""])

    paths = load_config("local").paths
    assert (ctx.run_id, ctx.raw, ctx.work, ctx.env) == ("2026-11-23", paths.raw, paths.work, "local")
    assert ctx.gate_overrides == ("DEU", "FRA")
    assert load_run_config(ctx).paths == paths


def test_run_context_refuses_a_day_that_is_not_a_monday() -> None:
    with pytest.raises(ValueError, match="2026-11-24 is a Tuesday, not a Monday"):
        RunContext(dt.date(2026, 11, 24), "x", raw="/r", work="/w")
    with pytest.raises(SystemExit):
        RunContext.from_args(["--run-date", "2026-11-24"])


def test_mondays_lists_a_backfill_range_and_refuses_bad_ends() -> None:
    assert mondays(dt.date(2026, 11, 9), RUN_DATE) == [dt.date(2026, 11, d) for d in (9, 16, 23)]
    with pytest.raises(ValueError, match="backfill end 2026-11-25 is a Wednesday"):
        mondays(RUN_DATE, dt.date(2026, 11, 25))
    with pytest.raises(ValueError, match="before its start"):
        mondays(RUN_DATE, dt.date(2026, 11, 16))


def _stage_commands(task: luigi.Task) -> dict[str, list[str]]:
    """The spark-submit command of every stage a task requires, by job."""
    commands: dict[str, list[str]] = {}
    pending = [task]
    while pending:
        current = pending.pop()
        if isinstance(current, SparkStage):
            commands[current.job] = current.command()
        pending += luigi.task.flatten(current.requires())
    return commands


def test_cli_luigi_and_submit_sh_give_the_same_spark_submit_commands(tmp_path: Path) -> None:
    raw, work = str(tmp_path / "raw"), str(tmp_path / "work")
    run = ["--run-date", "2026-11-23", "--run-id", "week-48", "--raw", raw, "--work", work]

    from_cli = cli.weekly_run(
        cli.parser().parse_args(["run", *run, "--override-gate", "FRA", "--override-gate", "DEU"])
    )
    luigi_args = [
        "--module",
        "markdown_pricing.orchestrate.tasks",
        "WeeklyRun",
        "--run-date",
        "2026-11-23",
        "--run-id",
        "week-48",
        "--raw-uri",
        raw,
        "--work-uri",
        work,
        "--override-gate",
        "DEU,FRA",
    ]
    with CmdlineParser.global_instance(luigi_args) as parsed:
        from_luigi = parsed.get_task_obj()
    submit = project_root() / "spark-submit" / "submit.sh"
    from_submit = {
        job: shlex.split(
            subprocess.run(
                [str(submit), job, "--dry-run", *run, "--override-gate", "DEU", "--override-gate", "FRA"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        for job in JOBS
    }

    assert isinstance(from_luigi, WeeklyRun) and from_luigi.ctx == from_cli.ctx
    assert _stage_commands(from_cli) == _stage_commands(from_luigi) == from_submit
    assert from_submit["publish"][-len(from_cli.ctx.to_args()) :] == from_cli.ctx.to_args()


def test_the_earlier_luigi_module_name_still_schedules_the_weekly_run() -> None:
    args = ["--module", "markdown_pricing.tasks", "WeeklyRun", "--run-date", "2026-11-23"]
    with CmdlineParser.global_instance(args) as parsed:
        task = parsed.get_task_obj()

    assert isinstance(task, WeeklyRun) and task.ctx == RunContext.create(RUN_DATE)


def test_a_run_id_of_another_run_date_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    week_47 = RunContext.create(
        dt.date(2026, 11, 16), run_id="weekly", raw=str(tmp_path / "raw"), work=str(tmp_path / "w")
    )
    claim_run_id(week_47)
    run = [
        "--run-id",
        "weekly",
        "--raw",
        str(tmp_path / "raw"),
        "--work",
        str(tmp_path / "w"),
        "--wait-for-inputs",
        "0",
    ]

    assert cli.main(["run", "--run-date", "2026-11-23", *run]) == 2

    assert "run id 'weekly' belongs to run date 2026-11-16, not 2026-11-23" in capsys.readouterr().err
    luigi_args = [
        "--module",
        "markdown_pricing.orchestrate.tasks",
        "WeeklyRun",
        "--run-date",
        "2026-11-23",
        "--run-id",
        "weekly",
        "--raw-uri",
        str(tmp_path / "raw"),
        "--work-uri",
        str(tmp_path / "w"),
    ]
    with CmdlineParser.global_instance(luigi_args) as parsed, pytest.raises(RunIdTakenError, match="2026-11-16"):
        parsed.get_task_obj().requires()
    claim_run_id(week_47)


def test_two_processes_of_one_run_id_never_run_stages_at_once(tmp_path: Path, erp_settings: ErpSettings) -> None:
    ctx = RunContext.create(RUN_DATE, run_id="weekly", raw=str(tmp_path / "raw"), work=str(tmp_path / "w"))
    first, second = (TrainScore.from_context(ctx), Publish.from_context(ctx))
    for task in (first, second):
        task.cfg = dataclasses.replace(task.cfg, erp=erp_settings)

    with first.exclusive_run():
        holder = r"'markdown-pricing train_score run=weekly \d+@"
        message = rf"another process is running a stage of run weekly, writing .*/w/runs/weekly: .*{holder}"
        with pytest.raises(LockedError, match=message):
            second.run()
        assert not (tmp_path / "w" / "runs" / "weekly" / "stages").exists()

    # Once the first has finished, the second carries on.
    with second.exclusive_run():
        assert read_json(ctx.layout.run_record)["run_date"] == RUN_DATE.isoformat()
