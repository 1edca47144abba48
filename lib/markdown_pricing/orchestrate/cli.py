"""`markdown-pricing`: generate sample data, run the weekly pipeline or a backfill, manage the ERP, summarise a run."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from markdown_pricing.core.config import ENVIRONMENTS, Config, load_config, project_root, with_paths
from markdown_pricing.core.context import RunContext, add_place_arguments, add_run_arguments, load_run_config, monday

if TYPE_CHECKING:
    from luigi.execution_summary import LuigiRunResult

    from markdown_pricing.observe.alerts import RunOutcome
    from markdown_pricing.orchestrate.tasks import WeeklyRun


def this_monday(today: dt.date | None = None) -> dt.date:
    """The Monday of the current week."""
    today = today or dt.date.today()
    return today - dt.timedelta(days=today.weekday())


def configured(args: argparse.Namespace) -> Config:
    """The configuration of a command that names no run: its environment's, with its --raw and --work."""
    return with_paths(load_config(args.env), raw=getattr(args, "raw", None), work=getattr(args, "work", None))


def generate_sample_command(args: argparse.Namespace) -> int:
    from markdown_pricing.synthetic.sample import TINY_COUNTRY_WEEKS, WorldShape, generate_sample

    tiny_country_weeks = TINY_COUNTRY_WEEKS if args.tiny_country_weeks is None else args.tiny_country_weeks
    from markdown_pricing.core.storage import filesystem, local_path

    try:
        flags = {name: getattr(args, name) for name in SHAPE_FLAGS}
        # argparse gives a pair (--stock-cover) as a list; WorldShape takes a tuple.
        given = {name: tuple(flag) if isinstance(flag, list) else flag for name, flag in flags.items()}
        shape = WorldShape(**{name: value for name, value in given.items() if value is not None})
        shape.check_countries(args.countries)
    except ValueError as err:
        print(f"markdown-pricing generate-sample: {err}", file=sys.stderr)
        return 2
    remote = urlparse(args.out).scheme not in ("", "file")
    # A raw root on HDFS is written here first, then uploaded, as an upstream export would deliver it.
    local_out = Path(tempfile.mkdtemp(prefix="markdown-sample-")) / "raw" if remote else local_path(args.out)
    summary = generate_sample(
        local_out,
        countries=args.countries,
        articles=args.articles,
        weeks=args.weeks,
        seed=args.seed,
        run_date=args.run_date,
        tiny_country_weeks=tiny_country_weeks,
        truth_dir=Path(args.truth) if args.truth else None,
        largest_to_median=args.largest_to_median,
        shape=shape,
    )
    if remote:
        filesystem(args.out).upload(args.out, local_out)
        shutil.rmtree(local_out.parent)
    print(
        f"wrote {summary.sales_rows} sales rows for {len(summary.countries)} countries "
        f"({', '.join(summary.countries)}) and {summary.articles} articles to {args.out}, "
        f"{summary.first_day} .. {summary.run_date - dt.timedelta(days=1)}"
    )
    if summary.tiny_country:
        print(f"{summary.tiny_country} is the tiny country: its shop opened {tiny_country_weeks} weeks ago")
    if args.truth:
        print(f"wrote the true outcomes of {summary.truth_rows} (article, candidate discount) pairs to {args.truth}")
    return 0


def evaluate_command(args: argparse.Namespace) -> int:
    import pandas as pd

    from markdown_pricing.core.results import read_country_results
    from markdown_pricing.core.storage import RunLayout, local_path
    from markdown_pricing.synthetic import evaluation

    cfg = configured(args)
    layout = RunLayout(raw=cfg.paths.raw, work=cfg.paths.work, run_id=args.run_id)
    try:
        truth = pd.read_parquet(args.truth)
        predictions = pd.read_parquet(local_path(layout.predictions))
        results = read_country_results(layout.country_results)
    except (OSError, ValueError) as err:
        print(f"markdown-pricing evaluate: {err}", file=sys.stderr)
        return 1
    # Read back from country= folders, the country is a categorical: the joins want plain strings.
    predictions["country"] = predictions["country"].astype(str)
    revenues = evaluation.policy_revenues(truth, predictions)
    table = evaluation.evaluation_table(evaluation.accuracy_table(results), evaluation.regret_table(revenues))
    title = args.title or f"run {args.run_id}"
    markdown = evaluation.to_markdown(table, title)
    print(markdown)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(markdown)
        out.with_suffix(".json").write_text(json.dumps(evaluation.to_document(table, title, args.role), indent=2))
        print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


def evaluation_summary_command(args: argparse.Namespace) -> int:
    """docs/evaluation.md from the worlds' `evaluate --out` parts: the family's table, then each world's."""
    from markdown_pricing.synthetic import evaluation

    parts = [Path(part) for part in args.parts]
    try:
        worlds = [
            (json.loads(part.with_suffix(".json").read_text()), part.with_suffix(".md").read_text()) for part in parts
        ]
    except (OSError, ValueError, KeyError) as err:
        print(f"markdown-pricing evaluation-summary: {err!r}", file=sys.stderr)
        return 1
    # Development worlds first: "development" sorts before "validation".
    documents, sections = zip(*sorted(worlds, key=lambda world: world[0]["role"] or ""), strict=True)
    Path(args.out).write_text(
        "\n".join(
            [
                "# Evaluation against the known truth",
                "",
                "Written by `make evaluate`; the measures are defined in"
                " `lib/markdown_pricing/synthetic/evaluation.py`, the worlds in the Makefile (`EVALUATION_WORLDS`)."
                " Methods were chosen on the development worlds; the validation worlds are only reported.",
                "",
                "## The family of worlds",
                "",
                evaluation.family_markdown(list(documents)),
                *sections,
            ]
        )
    )
    print(f"wrote {args.out}")
    return 0


def missing_release_message(cfg: Config) -> str | None:
    """What a run on YARN would lack on HDFS, and the command that uploads it; None when nothing is missing."""
    from markdown_pricing.orchestrate.deploy import DeployError, missing_release

    try:
        missing = missing_release(cfg)
    except DeployError as err:
        return str(err)
    if not missing:
        return None
    return (
        f"the release this {cfg.env} run ships is not on HDFS ({', '.join(missing)}): "
        f"run `markdown-pricing deploy --env {cfg.env}` first"
    )


def hadoop_command(args: argparse.Namespace) -> int:
    from markdown_pricing.hadoop.minicluster import HadoopError, start, stop

    folder = Path(args.dir) if args.dir else project_root() / ".hadoop"
    try:
        if args.action == "start":
            for key, value in start(folder).items():
                print(f"{key}={value}")
        else:
            print("stopped" if stop(folder) else "not running")
    except HadoopError as err:
        print(f"markdown-pricing hadoop {args.action}: {err}", file=sys.stderr)
        return 1
    return 0


def deploy_command(args: argparse.Namespace) -> int:
    from markdown_pricing.orchestrate.deploy import DeployError, deploy

    try:
        done = deploy(configured(args))
    except (DeployError, OSError, ValueError) as err:
        print(f"markdown-pricing deploy: {err}", file=sys.stderr)
        return 1
    for uri, what in done.items():
        print(f"{uri}: {what}")
    return 0


def scheduler(args: argparse.Namespace) -> dict[str, Any]:
    """luigi.build's scheduler arguments: the central luigid that --scheduler-url, MARKDOWN_SCHEDULER_URL or
    luigi.cfg's default_scheduler_url names, else a local scheduler."""
    import luigi.configuration

    url = args.scheduler_url or luigi.configuration.get_config().get("core", "default_scheduler_url", None)
    return {"scheduler_url": url} if url else {"local_scheduler": True}


def scheduler_unreachable(scheduling: dict[str, Any]) -> str | None:
    """Why the central scheduler cannot be used, or None (also for a local scheduler): checked before the build,
    since Luigi's worker would retry for a minute, then fail with pages of traceback."""
    import urllib.error
    import urllib.request

    url = scheduling.get("scheduler_url")
    if not url:
        return None
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            response.read(0)
    except urllib.error.HTTPError:
        return None  # it answered; what it said is for Luigi's worker to judge
    except (OSError, ValueError) as err:
        reason = err.reason if isinstance(err, urllib.error.URLError) else err
        return (
            f"the central scheduler at {url} does not answer ({reason}): start luigid "
            "(conf/systemd/luigid.service), or run without --scheduler-url for a local scheduler"
        )
    return None


def weekly_run(args: argparse.Namespace) -> WeeklyRun:
    """The Luigi task `run` and `score` build from their arguments."""
    from markdown_pricing.orchestrate.tasks import WeeklyRun

    wait = -1.0 if args.wait_for_inputs is None else args.wait_for_inputs
    return WeeklyRun.from_context(RunContext.from_namespace(args), wait)


def exit_code(result: LuigiRunResult) -> int:
    """0 when everything ran: scheduling_succeeded stays true when an input is missing, the status tells."""
    from luigi.execution_summary import LuigiStatusCode

    return 0 if result.status in (LuigiStatusCode.SUCCESS, LuigiStatusCode.SUCCESS_WITH_RETRY) else 1


def alert(cfg: Config, title: str, outcomes: Callable[[], Sequence[RunOutcome]]) -> None:
    """Sends the alert of runs that ended, where alerts.send calls for one; never changes the exit code."""
    from markdown_pricing.observe import alerts

    try:
        if sent := alerts.notify(outcomes(), title, cfg.alerts):
            print(f"alert sent by {' and '.join(sent)}")
    except Exception as err:
        logging.getLogger(__name__).error("alert not sent: %s", err)


def not_run(args: argparse.Namespace, cfg: Config, title: str, contexts: Sequence[RunContext], why: str) -> int:
    """Stops a run or backfill that cannot start (a run id of another week, no release, a scheduler that refuses),
    saying why on stderr and in the alert; exit code 2."""
    from markdown_pricing.observe import alerts

    print(f"markdown-pricing {args.command}: {why}", file=sys.stderr)
    alert(cfg, title, lambda: [alerts.not_started(ctx, why) for ctx in contexts])
    return 2


def run_command(args: argparse.Namespace) -> int:
    from markdown_pricing.observe import alerts, progress
    from markdown_pricing.observe.display import following_run
    from markdown_pricing.observe.run_report import write_report
    from markdown_pricing.observe.summary import print_run_summary
    from markdown_pricing.orchestrate.submit import JOBS
    from markdown_pricing.orchestrate.tasks import (
        RunIdTakenError,
        SchedulerRefusedError,
        build_waiting_for_resources,
        check_run_id,
    )

    task = weekly_run(args)
    ctx, cfg = task.ctx, task.cfg
    title = f"run {ctx.run_id}"
    try:
        check_run_id(ctx)
    except RunIdTakenError as err:
        return not_run(args, cfg, title, [ctx], str(err))
    if missing := missing_release_message(cfg):
        return not_run(args, cfg, title, [ctx], missing)
    if unreachable := scheduler_unreachable(scheduler(args)):
        return not_run(args, cfg, title, [ctx], unreachable)
    started = progress.now()
    try:
        with following_run(ctx.layout, JOBS, verbose=args.verbose):
            result = build_waiting_for_resources(
                [task],
                poll_s=cfg.schedule.resource_poll_s,
                max_wait_s=cfg.schedule.resource_wait_s,
                **scheduler(args),
            )
    except SchedulerRefusedError as err:
        return not_run(args, cfg, title, [ctx], str(err))
    code = exit_code(result)
    print_run_summary(ctx, cfg.erp)
    report = None
    try:
        report = write_report(ctx.work, ctx.run_id, run_date=ctx.run_date)
        print(f"\nrun report: {report}")
    except Exception as err:
        # The report is for people: failing to write it must not change the run's exit code.
        logging.getLogger(__name__).warning("run report not written: %s", err)
    alert(cfg, title, lambda: [alerts.run_outcome(ctx, cfg.erp, JOBS, exit_code=code, since=started, report=report)])
    return code


def score_command(args: argparse.Namespace) -> int:
    """A run that rescores with saved models; its own run id keeps the model run's outputs apart."""
    if not args.model_run:
        print("markdown-pricing score: --model-run RUN_ID is required", file=sys.stderr)
        return 2
    args.run_id = args.run_id or f"{args.run_date.isoformat()}-score-{args.model_run}"
    return run_command(args)


def backfill_command(args: argparse.Namespace) -> int:
    import luigi.configuration

    from markdown_pricing.core.context import mondays
    from markdown_pricing.observe import alerts, logs, progress
    from markdown_pricing.observe.summary import print_run_summary
    from markdown_pricing.orchestrate.submit import JOBS
    from markdown_pricing.orchestrate.tasks import SchedulerRefusedError, WeeklyBackfill, build_waiting_for_resources

    try:
        mondays(args.start, args.end)
    except ValueError as err:
        print(f"markdown-pricing backfill: {err}", file=sys.stderr)
        return 2
    cfg = configured(args)
    backfill = WeeklyBackfill(
        start=args.start,
        end=args.end,
        raw_uri=cfg.paths.raw,
        work_uri=cfg.paths.work,
        env=args.env,
        override_gate=args.override_gate,
        wait_for_inputs=-1.0 if args.wait_for_inputs is None else args.wait_for_inputs,
    )
    # Luigi's own log setup would print every INFO line of every week; ours follows --verbose, as `run` does.
    luigi.configuration.get_config().set("core", "no_configure_logging", "true")
    level = logging.INFO if args.verbose else logging.WARNING
    logs.configure(f"backfill-{args.start}..{args.end}", "backfill", sys.stderr, level)
    if args.verbose:
        os.environ[logs.VERBOSE_ENV] = "1"
    title, contexts = f"backfill {args.start}..{args.end}", backfill.contexts()
    if missing := missing_release_message(cfg):
        return not_run(args, cfg, title, contexts, missing)
    if unreachable := scheduler_unreachable(scheduler(args)):
        return not_run(args, cfg, title, contexts, unreachable)
    started = progress.now()
    try:
        result = build_waiting_for_resources(
            [backfill],
            poll_s=cfg.schedule.resource_poll_s,
            max_wait_s=cfg.schedule.resource_wait_s,
            **scheduler(args),
            # One worker runs the weeks oldest first (task priority), so the ERP ends with the newest week's rows.
            workers=1,
        )
    except SchedulerRefusedError as err:
        return not_run(args, cfg, title, contexts, str(err))
    code = exit_code(result)
    for ctx in contexts:
        print_run_summary(ctx, cfg.erp)

    def outcomes() -> list[alerts.RunOutcome]:
        return [alerts.run_outcome(ctx, cfg.erp, JOBS, exit_code=code, since=started, report=None) for ctx in contexts]

    alert(cfg, title, outcomes)
    return code


def erp_command(args: argparse.Namespace) -> int:
    from contextlib import closing

    from markdown_pricing.erp import connection, embedded, schema

    cfg = configured(args)
    if args.action == "migrate":
        dsn = connection.start_dsn(cfg.erp, cfg.paths.work)
        with closing(connection.connect(dsn, cfg.erp.connect_timeout_s)) as conn:
            try:
                done = schema.migrate(conn, cfg.erp)
            except schema.ErpNotReadyError as err:
                print(f"markdown-pricing erp migrate: {err}", file=sys.stderr)
                return 1
        for step in done:
            print(f"applied {step}")
        state = "are current" if done else "were already current"
        print(f"ERP tables in schema {cfg.erp.schema} at {connection.describe_dsn(dsn)} {state}")
        return 0
    if connection.configured_dsn(cfg.erp) is not None and args.action != "dsn":
        print(f"markdown-pricing erp {args.action}: an ERP is configured, no embedded server is used", file=sys.stderr)
        return 1
    pgdata = Path(connection.embedded_pgdata(cfg.paths.work))
    if args.action == "start":
        print(embedded.ensure_running(pgdata))
    elif args.action == "stop":
        print("stopped" if embedded.stop(pgdata) else "not running")
    else:
        try:
            print(connection.describe_dsn(connection.running_dsn(cfg.erp, cfg.paths.work)))
        except connection.ErpUnavailableError as err:
            print(f"markdown-pricing erp dsn: {err}", file=sys.stderr)
            return 1
    return 0


def seed_rules_command(args: argparse.Namespace) -> int:
    """Demo buyer rules for a generated raw root, written into the embedded ERP's article_rules and printed."""
    from contextlib import closing

    import pandas as pd

    from markdown_pricing.core.storage import local_path
    from markdown_pricing.erp import connection, schema
    from markdown_pricing.erp.rules import replace_rules_noted
    from markdown_pricing.synthetic.rules import SEED_NOTE, sample_rules

    cfg = configured(args)
    if connection.configured_dsn(cfg.erp) is not None:
        # The buyers own the real table: a demo writes only where nobody else does.
        print(
            "markdown-pricing seed-rules: an ERP is configured; demo rules go into the embedded one only",
            file=sys.stderr,
        )
        return 1
    rules = sample_rules(local_path(cfg.paths.raw), args.run_date, args.seed)
    with closing(connection.connect(connection.start_dsn(cfg.erp, cfg.paths.work), cfg.erp.connect_timeout_s)) as conn:
        schema.prepare(conn, cfg.erp)
        replace_rules_noted(conn, cfg.erp, rules, SEED_NOTE)
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(f"buyer rules written to {cfg.erp.schema}.{cfg.erp.rules_table} (the run honours those in force):")
        print(rules.fillna("").to_string(index=False))
    return 0


def summary_command(args: argparse.Namespace) -> int:
    from markdown_pricing.observe.summary import print_run_summary

    ctx = RunContext.from_namespace(args)
    print_run_summary(ctx, load_run_config(ctx).erp)
    return 0


def report_command(args: argparse.Namespace) -> int:
    from markdown_pricing.observe.run_report import ReportError, write_report

    cfg = configured(args)
    try:
        print(write_report(cfg.paths.work, args.run_id))
    except ReportError as err:
        print(f"markdown-pricing report: {err}", file=sys.stderr)
        return 1
    return 0


def status_command(args: argparse.Namespace) -> int:
    from markdown_pricing.erp.connection import ErpUnavailableError
    from markdown_pricing.observe.status import show_runs, show_status

    cfg = configured(args)
    show = show_runs if args.command == "runs" else show_status
    try:
        print(show(cfg.erp, cfg.paths.work, limit=args.limit, as_json=args.json))
    except (ErpUnavailableError, ValueError) as err:
        # An unreachable ERP, a bad --limit or an unusable configuration: a message, not a stack trace.
        print(f"markdown-pricing {args.command}: {err}", file=sys.stderr)
        return 1
    return 0


def explain_command(args: argparse.Namespace) -> int:
    from markdown_pricing.erp.connection import ErpUnavailableError
    from markdown_pricing.observe.explain import ExplainError, show_explanation

    cfg = configured(args)
    try:
        print(
            show_explanation(
                cfg.erp,
                cfg.paths.work,
                country=args.country,
                article=args.article,
                run_id=args.run_id,
                as_json=args.json,
            )
        )
    except (ExplainError, ErpUnavailableError, ValueError) as err:
        # No such article or run, an unreachable ERP, an unusable configuration: a message, not a stack trace.
        print(f"markdown-pricing explain: {err}", file=sys.stderr)
        return 1
    return 0


def gc_command(args: argparse.Namespace) -> int:
    from markdown_pricing.orchestrate.retention import GC_ERRORS, collect_garbage

    if args.keep_weeks is not None and args.keep_weeks < 1:
        print(f"markdown-pricing gc: --keep-weeks must be at least 1, not {args.keep_weeks}", file=sys.stderr)
        return 2
    try:
        cfg = configured(args)
        keep_weeks = cfg.retention.keep_weeks if args.keep_weeks is None else args.keep_weeks
        collect_garbage(cfg, keep_weeks=keep_weeks, dry_run=args.dry_run, say=print)
    except GC_ERRORS as err:
        # An unreachable ERP stops gc before anything goes: it alone knows which models buyers' rows come from.
        print(f"markdown-pricing gc: {err}", file=sys.stderr)
        return 1
    return 0


def add_scheduling_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the commands that drive Luigi: `run` and `backfill`."""
    parser.add_argument(
        "--wait-for-inputs",
        type=float,
        metavar="SECONDS",
        help="how long to wait for raw _SUCCESS markers (0: do not wait; default: configured)",
    )
    parser.add_argument(
        "--scheduler-url",
        default=os.environ.get("MARKDOWN_SCHEDULER_URL"),
        metavar="URL",
        help="schedule through this central luigid, e.g. http://127.0.0.1:8082/ (default: MARKDOWN_SCHEDULER_URL, "
        "else luigi.cfg's default_scheduler_url, else a local scheduler)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show INFO logs: Luigi's, Spark's and everything each stage prints (default: warnings and errors)",
    )


# generate-sample's flags for synthetic.sample.WorldShape, by field: (type, metavar, help). Defaults are WorldShape's.
SHAPE_FLAGS: dict[str, tuple[Callable[[str], Any], str, str]] = {
    "response": (str, "CURVE", "the demand curve of the discount: power (constant elasticity), exponential or linear"),
    "elasticity_shift": (float, "E", "added to every article's price elasticity"),
    "elasticity_spread": (float, "X", "stretches the elasticities' spread around their center"),
    "noise": (float, "VAR", "variance of a day-to-day demand shock (0: Poisson alone)"),
    "affinity": (float, "SD", "log-sd of a demand multiplier per (country, article)"),
    "country_elasticity": (float, "SD", "sd of a shift per country of every article's price elasticity"),
    "volume": (float, "X", "multiplies every country's demand"),
    "markdown_chance": (float, "P", "weekly chance of a markdown in the history"),
    "deepest_markdown": (float, "D", "the deepest discount the history reaches"),
    "stock_cover": (float, "LOW HIGH", "an article's stock as a share of its season demand, drawn in this range"),
    "tiny_carries_older": (bool, "", "the tiny country carries articles launched before its shop opened too"),
    "southern": (int, "N", "how many of the smallest regular countries have their yearly peak half a year later"),
}


def add_shape_arguments(group: argparse._ArgumentGroup) -> None:
    """generate-sample's SHAPE_FLAGS; each left out takes WorldShape's default."""
    for name, (kind, metavar, text) in SHAPE_FLAGS.items():
        flag = f"--{name.replace('_', '-')}"
        if kind is bool:
            group.add_argument(flag, action="store_const", const=True, help=text)
            continue
        pair = " " in metavar
        group.add_argument(
            flag,
            type=kind,
            nargs=2 if pair else None,
            metavar=tuple(metavar.split()) if pair else metavar,
            help=f"{text} (default: the demo world's)",
        )


def parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    main = argparse.ArgumentParser(prog="markdown-pricing", description=__doc__)
    commands = main.add_subparsers(dest="command", required=True)

    sample = commands.add_parser("generate-sample", help="write a synthetic raw root in the contract's shape")
    sample.add_argument("--out", required=True)
    sample.add_argument("--countries", type=int, default=10)
    sample.add_argument("--articles", type=int, default=300)
    sample.add_argument("--weeks", type=int, default=60)
    sample.add_argument("--seed", type=int, default=7)
    sample.add_argument("--run-date", type=monday, default=this_monday())
    sample.add_argument(
        "--tiny-country-weeks",
        type=int,
        metavar="N",
        help="weeks since the tiny country's shop opened (default: the generator's; 0: no tiny country)",
    )
    sample.add_argument(
        "--largest-to-median",
        type=float,
        metavar="RATIO",
        help="the largest country carries RATIO times the median country's assortment (default: 95 %% to 50 %%)",
    )
    add_shape_arguments(sample.add_argument_group("the world's structure (synthetic.sample.WorldShape)"))
    sample.add_argument("--truth", metavar="DIR", help="also write the true outcomes per candidate discount here")
    sample.set_defaults(handler=generate_sample_command)

    evaluate = commands.add_parser(
        "evaluate", help="a run's forecast errors and revenue regret against the truth of a generated sample"
    )
    evaluate.add_argument("--run-id", required=True)
    evaluate.add_argument("--truth", required=True, metavar="DIR", help="what generate-sample --truth wrote")
    evaluate.add_argument("--work", help="work folder (default: configured); must be local or mounted here")
    evaluate.add_argument("--env", choices=ENVIRONMENTS, default="local")
    evaluate.add_argument("--title", help="heading of the Markdown section (default: the run id)")
    evaluate.add_argument("--out", metavar="FILE.md", help="also write the Markdown here, and JSON beside it")
    evaluate.add_argument(
        "--role",
        choices=("development", "validation"),
        help="the world's part in the family: methods are chosen on development worlds",
    )
    evaluate.set_defaults(handler=evaluate_command)

    summary = commands.add_parser(
        "evaluation-summary", help="one document from several worlds' `evaluate --out` parts, the family's table first"
    )
    summary.add_argument("parts", nargs="+", metavar="PART", help="what `evaluate --out` wrote (.md, JSON beside it)")
    summary.add_argument("--out", required=True, metavar="FILE.md")
    summary.set_defaults(handler=evaluation_summary_command)

    run = commands.add_parser("run", help="run the weekly pipeline for one run date through Luigi")
    add_run_arguments(run)
    add_scheduling_arguments(run)
    run.set_defaults(handler=run_command)

    score = commands.add_parser(
        "score", help="like run, but rescore with the models an earlier run saved (no training)"
    )
    add_run_arguments(score)
    add_scheduling_arguments(score)
    score.set_defaults(handler=score_command)

    backfill = commands.add_parser(
        "backfill", help="run the weekly pipeline for every Monday of a range through Luigi, oldest first"
    )
    backfill.add_argument("--from", dest="start", type=monday, required=True, metavar="D", help="first Monday")
    backfill.add_argument("--to", dest="end", type=monday, required=True, metavar="D", help="last Monday, included")
    add_place_arguments(backfill)
    add_scheduling_arguments(backfill)
    backfill.set_defaults(handler=backfill_command)

    seed_rules = commands.add_parser(
        "seed-rules", help="demo: write a few buyer rules of each kind for a generated raw root into the embedded ERP"
    )
    seed_rules.add_argument("--raw", required=True, help="the generated raw root (local)")
    seed_rules.add_argument("--run-date", type=monday, required=True)
    seed_rules.add_argument("--seed", type=int, default=7)
    seed_rules.add_argument("--work", help="work folder, for the embedded ERP (default: configured)")
    seed_rules.add_argument("--env", choices=ENVIRONMENTS, default="local")
    seed_rules.set_defaults(handler=seed_rules_command)

    summary = commands.add_parser("summary", help="per-country summary of a run: ERP rows, error, discount mix")
    add_run_arguments(summary)
    summary.set_defaults(handler=summary_command)

    report = commands.add_parser("report", help="write a run's HTML report with plots and print its path")
    report.add_argument("--run-id", help="default: the run whose train-and-score results were written last")
    report.add_argument("--work", help="work folder (default: configured); must be local or mounted here")
    report.add_argument("--env", choices=ENVIRONMENTS, default="local")
    report.set_defaults(handler=report_command)

    for name, what in (
        ("status", "the last runs in the ERP ledger, per country"),
        ("runs", "the last runs' backtest error per country: model against both baselines"),
    ):
        status = commands.add_parser(name, help=what)
        status.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")
        status.add_argument("--limit", type=int, default=5, metavar="N", help="how many runs (default 5)")
        status.add_argument("--work", help="work folder URI, for the embedded ERP (default: configured)")
        status.add_argument("--env", choices=ENVIRONMENTS, default="local")
        status.set_defaults(handler=status_command)

    explain = commands.add_parser(
        "explain", help="why an article's recommendation is what it is: its candidate curve and what drove it"
    )
    explain.add_argument("--country", required=True)
    explain.add_argument("--article", required=True, metavar="ARTICLE_ID")
    explain.add_argument(
        "--run-id", help="a run's recommendation: the ERP's where it holds that run's row, else the run's own outputs"
    )
    explain.add_argument("--work", help="work folder URI, for the embedded ERP and runs' outputs (default: configured)")
    explain.add_argument("--env", choices=ENVIRONMENTS, default="local")
    explain.add_argument("--json", action="store_true", help="print JSON for scripts, numbers unrounded")
    explain.set_defaults(handler=explain_command)

    hadoop = commands.add_parser(
        "hadoop", help="a single-node HDFS and YARN on 127.0.0.1 for development (start prints what to export)"
    )
    hadoop.add_argument("action", choices=("start", "stop"))
    hadoop.add_argument("--dir", help="its data, logs and HADOOP_CONF_DIR (default: .hadoop in the project)")
    hadoop.set_defaults(handler=hadoop_command)

    deploy = commands.add_parser(
        "deploy",
        help="build the release (wheel, environment archive) where missing and upload it and Spark's jars to HDFS",
    )
    deploy.add_argument("--env", choices=ENVIRONMENTS, default="yarn")
    deploy.set_defaults(handler=deploy_command)

    erp_parser = commands.add_parser(
        "erp", help="the ERP tables (migrate) and the embedded PostgreSQL used when no ERP is configured"
    )
    erp_parser.add_argument(
        "action",
        choices=("migrate", "start", "stop", "dsn"),
        help="migrate: create or upgrade the tables; start/stop: the embedded server; dsn: where the ERP is",
    )
    erp_parser.add_argument("--work", help="work folder URI (default: configured)")
    erp_parser.add_argument("--env", choices=ENVIRONMENTS, default="local")
    erp_parser.set_defaults(handler=erp_command)

    gc = commands.add_parser(
        "gc",
        help="remove old run folders, models and Spark event logs, and prune old ledger and metrics rows "
        "(never what the ERP's current rows or the kept weeks use)",
    )
    gc.add_argument(
        "--keep-weeks", type=int, metavar="N", help="keep the runs of the N most recent run dates (default: configured)"
    )
    gc.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    gc.add_argument("--work", help="work folder URI (default: configured)")
    gc.add_argument("--env", choices=ENVIRONMENTS, default="local")
    gc.set_defaults(handler=gc_command)
    return main


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    os.environ.setdefault("LUIGI_CONFIG_PATH", str(project_root() / "conf" / "luigi.cfg"))
    args = parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
