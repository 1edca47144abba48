"""One run, described once. The CLI, backfills, the Luigi tasks, spark-submit and the jobs all pass a RunContext,
and there is one way to write it as command-line arguments (`to_args`) and one way to read it back (`from_args`)."""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from markdown_pricing.core.config import ENVIRONMENTS, Config, load_config, with_paths
from markdown_pricing.core.storage import RunLayout


def check_monday(day: dt.date, what: str = "run date") -> dt.date:
    """The day itself when it is a Monday: the contract's run dates are the Mondays recommendations apply from."""
    if day.weekday() != 0:
        raise ValueError(f"{what} {day} is a {day:%A}, not a Monday")
    return day


def monday(text: str) -> dt.date:
    """Parses a run date on a command line."""
    try:
        return check_monday(dt.date.fromisoformat(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def mondays(start: dt.date, end: dt.date) -> list[dt.date]:
    """The Mondays from start to end, both included, oldest first."""
    check_monday(start, "backfill start")
    check_monday(end, "backfill end")
    if end < start:
        raise ValueError(f"backfill end {end} is before its start {start}")
    return [start + dt.timedelta(weeks=week) for week in range((end - start).days // 7 + 1)]


def countries(names: Iterable[str]) -> tuple[str, ...]:
    """Country codes as a run holds them: stripped, each once, sorted."""
    return tuple(sorted({name.strip() for name in names if name.strip()}))


@dataclass(frozen=True)
class RunContext:
    """What one weekly run is: its date and id, where it reads and writes, its environment and operator choices.

    Paths are always explicit (`create` fills in the configured ones), so every process of a run, the Luigi worker
    and the spark-submit children alike, works on the same folders.
    """

    run_date: dt.date
    run_id: str
    raw: str
    work: str
    env: str = "local"
    # Countries whose publish quality gate an operator explicitly overrides for this run.
    gate_overrides: tuple[str, ...] = ()
    # Rescore with the models this earlier run saved instead of training (`score --model-run`).
    model_run: str | None = None
    # Publish even where the ERP holds a later week: an operator's deliberate rollback, recorded in the ledger.
    rollback: bool = False

    def __post_init__(self) -> None:
        check_monday(self.run_date)
        if self.env not in ENVIRONMENTS:
            raise ValueError(f"unknown environment {self.env!r}: expected one of {', '.join(ENVIRONMENTS)}")
        if not self.run_id:
            raise ValueError("a run needs a run id")

    @classmethod
    def create(
        cls,
        run_date: dt.date,
        *,
        run_id: str | None = None,
        raw: str | None = None,
        work: str | None = None,
        env: str = "local",
        gate_overrides: Iterable[str] = (),
        model_run: str | None = None,
        rollback: bool = False,
    ) -> RunContext:
        """A run with the defaults filled in: the run date as run id, the environment's configured paths."""
        paths = with_paths(load_config(env), raw=raw, work=work).paths
        return cls(
            run_date=run_date,
            run_id=run_id or run_date.isoformat(),
            raw=paths.raw,
            work=paths.work,
            env=env,
            gate_overrides=countries(gate_overrides),
            model_run=model_run or None,
            rollback=rollback,
        )

    @property
    def layout(self) -> RunLayout:
        return RunLayout(raw=self.raw, work=self.work, run_id=self.run_id)

    def to_args(self) -> list[str]:
        """The command-line form of this run: what `from_args` reads back."""
        return [
            "--run-date",
            self.run_date.isoformat(),
            "--run-id",
            self.run_id,
            "--raw",
            self.raw,
            "--work",
            self.work,
            "--env",
            self.env,
            *(part for country in self.gate_overrides for part in ("--override-gate", country)),
            *(("--model-run", self.model_run) if self.model_run else ()),
            *(("--rollback",) if self.rollback else ()),
        ]

    @classmethod
    def from_args(cls, argv: Sequence[str]) -> RunContext:
        """The run that command-line arguments name (the form `to_args` writes; optional ones take defaults)."""
        parser = argparse.ArgumentParser(prog="run arguments", add_help=False)
        add_run_arguments(parser)
        return cls.from_namespace(parser.parse_args(argv))

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> RunContext:
        """The run named by arguments parsed with `add_run_arguments`."""
        return cls.create(
            args.run_date,
            run_id=args.run_id,
            raw=args.raw,
            work=args.work,
            env=args.env,
            gate_overrides=args.override_gate,
            model_run=args.model_run,
            rollback=args.rollback,
        )


def load_run_config(ctx: RunContext) -> Config:
    """The one way to load the configuration a run works with: its environment's, with its paths."""
    return with_paths(load_config(ctx.env), raw=ctx.raw, work=ctx.work)


def add_place_arguments(parser: argparse.ArgumentParser) -> None:
    """Where runs read and write, their environment and gate overrides: shared by runs and backfills."""
    parser.add_argument("--raw", help="raw root URI (default: configured)")
    parser.add_argument("--work", help="work folder URI (default: configured)")
    parser.add_argument("--env", choices=ENVIRONMENTS, default="local")
    parser.add_argument(
        "--override-gate",
        action="append",
        default=[],
        metavar="COUNTRY",
        help="publish this country even if its quality gate blocks it (recorded in the ledger); repeatable",
    )


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of one run: what `RunContext.to_args` writes."""
    parser.add_argument("--run-date", type=monday, required=True, help="the Monday recommendations apply from")
    parser.add_argument("--run-id", help="defaults to the run date; a new id republishes the same week")
    parser.add_argument(
        "--model-run", metavar="RUN_ID", help="rescore with the models saved by this earlier run instead of training"
    )
    parser.add_argument(
        "--rollback",
        action="store_true",
        help="publish even where the ERP holds a later week: a deliberate rollback, recorded in the ledger",
    )
    add_place_arguments(parser)
