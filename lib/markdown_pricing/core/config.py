"""The one config loader: conf/base.toml, overlaid by conf/<env>.toml, overlaid by MARKDOWN_* variables."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import tomllib

ENVIRONMENTS = ("local", "standalone", "yarn")
# A spark-defaults.conf style file whose settings a site adds to the yarn profile: `markdown-pricing hadoop start`
# writes one with the dev cluster's small container sizes, so the profile itself keeps production's.
YARN_SPARK_CONF_ENV = "MARKDOWN_YARN_SPARK_CONF"
# Where the driver runs ("client" or "cluster"), for runs and backfills as for `submit.sh --deploy-mode`.
DEPLOY_MODE_ENV = "MARKDOWN_DEPLOY_MODE"
# The Spark master of a run (a standalone cluster's spark://host:port), where a site's differs from its profile's.
SPARK_MASTER_ENV = "MARKDOWN_SPARK_MASTER"
# The project's image that YARN runs the containers in, instead of unpacking the shipped environment archive.
YARN_IMAGE_ENV = "MARKDOWN_YARN_IMAGE"


class ConfigError(ValueError):
    """Raised when a configuration file or value is missing or invalid."""


@dataclass(frozen=True)
class Paths:
    raw: str
    work: str


@dataclass(frozen=True)
class RunRules:
    ladder: tuple[float, ...]
    salvage_value_share: float
    max_rejected_share: float
    max_recommendation_drop_share: float
    min_lost_articles: int
    # The publish gate's limit on the markdown-event backtest's mean absolute log lift error; 0 is no limit.
    max_markdown_lift_error: float
    wait_for_inputs_s: float
    input_poll_s: float
    max_sales_lag_days: int
    # Run-level pricing rules: 0 means no limit.
    max_markdown_steps: int
    min_weeks_between_markdowns: int
    # Country -> the ending of a new markdown's price in euros (0.99, 0.95; 0.0 for whole euros). A plain dict: the
    # rules travel to the executors pickled, and a read-only mapping proxy does not pickle.
    price_endings: Mapping[str, float]

    def __post_init__(self) -> None:
        # Checked here, at load: in a country's task a bad value would fail every country of the run.
        if self.max_markdown_steps < 0 or self.min_weeks_between_markdowns < 0 or self.max_markdown_lift_error < 0:
            raise ConfigError(
                "run.max_markdown_steps, run.min_weeks_between_markdowns and run.max_markdown_lift_error must not be "
                "negative"
            )
        wrong = sorted(country for country, ending in self.price_endings.items() if not 0.0 <= ending < 1.0)
        if wrong:
            raise ConfigError(f"run.price_endings of {', '.join(wrong)}: an ending is a share of a euro in [0, 1)")


@dataclass(frozen=True)
class PriceResponseSettings:
    # Weeks of steady price before and after a past price change for it to count as a markdown event.
    event_window_weeks: int
    # The highest elasticity an estimate may reach.
    max_elasticity: float
    # A deeper markdown must beat holding today's price by this x the level's backtest WAPE x the holding revenue.
    margin_per_wape: float
    # The lift stops growing this far past the deepest discount a category was seen at.
    beyond_deepest: float
    # The events are counted on whole articles sampled from every country's history, at most this many weekly rows.
    max_rows: int

    def __post_init__(self) -> None:
        if (
            self.event_window_weeks < 1
            or self.max_elasticity <= 0
            or min(self.margin_per_wape, self.beyond_deepest) < 0
            or self.max_rows < 1
        ):
            raise ConfigError(
                "model.price_response needs event_window_weeks >= 1, max_elasticity > 0, margin_per_wape >= 0, "
                f"beyond_deepest >= 0 and max_rows >= 1, got {self.event_window_weeks}, {self.max_elasticity}, "
                f"{self.margin_per_wape}, {self.beyond_deepest} and {self.max_rows}"
            )


@dataclass(frozen=True)
class TuningSettings:
    enabled: bool
    folds: int
    early_stopping_rounds: int
    # Each candidate overrides some of ModelParams' LightGBM settings (num_leaves, min_data_in_leaf, ...).
    candidates: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True)
class ModelParams:
    objective: str
    num_boost_round: int
    learning_rate: float
    num_leaves: int
    min_data_in_leaf: int
    feature_fraction: float
    seed: int
    backtest_origins: int
    backtest_horizon_weeks: int
    recent_average_weeks: int
    min_history_weeks: int
    pooled_max_rows: int
    tuning: TuningSettings
    price_response: PriceResponseSettings

    def __post_init__(self) -> None:
        backtested = self.backtest_origins * self.backtest_horizon_weeks
        if self.min_history_weeks <= backtested:
            raise ConfigError(
                f"model.min_history_weeks ({self.min_history_weeks}) must exceed the backtested weeks "
                f"(backtest_origins x backtest_horizon_weeks = {backtested}): the first origin needs weeks to train on"
            )
        if self.pooled_max_rows < 1:
            raise ConfigError(f"model.pooled_max_rows must be at least 1, not {self.pooled_max_rows}")


@dataclass(frozen=True)
class ErpSettings:
    dsn: str
    schema: str
    predictions_table: str
    ledger_table: str
    metrics_table: str
    connect_timeout_s: int
    connect_attempts: int
    connect_backoff_s: float
    # How long a publishing statement may wait for a lock, and run, before its country fails (0: no limit).
    lock_timeout_s: float = 60.0
    statement_timeout_s: float = 900.0
    # Every candidate discount behind each published recommendation, replaced with the country's predictions.
    candidates_table: str = "candidates"
    # The buyers' rules, owned by the ERP team and filled in through its screens: the run only reads them.
    rules_table: str = "article_rules"


@dataclass(frozen=True)
class SparkSettings:
    app_name_prefix: str
    master: str
    deploy_mode: str
    conf: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


GPU_MODES = ("off", "auto", "required")


@dataclass(frozen=True)
class GpuSettings:
    mode: str
    executor_amount: int
    task_amount: float
    discovery_script: str

    def __post_init__(self) -> None:
        if self.mode not in GPU_MODES:
            raise ConfigError(f"gpu mode {self.mode!r} is not one of {', '.join(GPU_MODES)}")


START_ORDERS = ("largest_first", "name")


@dataclass(frozen=True)
class ScheduleSettings:
    """How the train stage orders its per-country tasks (one country per task either way), and how long each stage
    may run before it is stopped with its Spark application (seconds; a stage not named, or 0, has no limit)."""

    start_order: str = "largest_first"
    stage_timeout_s: Mapping[str, float] = field(default_factory=dict)
    # How often a run that the central scheduler keeps waiting (a resource cap is full) asks again, and for how long.
    resource_poll_s: float = 30.0
    resource_wait_s: float = 21600.0

    def __post_init__(self) -> None:
        if self.start_order not in START_ORDERS:
            raise ConfigError(f"schedule start_order {self.start_order!r} is not one of {', '.join(START_ORDERS)}")
        negative = sorted(stage for stage, seconds in self.stage_timeout_s.items() if seconds < 0)
        if negative:
            raise ConfigError(f"schedule stage_timeout_s of {', '.join(negative)} must not be negative")

    def timeout_s(self, stage: str) -> float | None:
        """The wall-clock limit of a stage, or None."""
        return self.stage_timeout_s.get(stage) or None


ALERT_WHEN = ("problems", "always", "never")


@dataclass(frozen=True)
class AlertSettings:
    """Who hears how a run ended. E-mail goes through Luigi's [email]/[smtp] settings in conf/luigi.cfg; the webhook
    URL and the SMTP password are secrets, read from the environment variable or the file named here."""

    send: str = "problems"
    webhook_url_env: str = "MARKDOWN_ALERT_WEBHOOK_URL"
    webhook_url_file: str = ""
    webhook_timeout_s: float = 10.0
    smtp_password_env: str = "MARKDOWN_SMTP_PASSWORD"
    smtp_password_file: str = ""

    def __post_init__(self) -> None:
        if self.send not in ALERT_WHEN:
            raise ConfigError(f"alerts.send {self.send!r} is not one of {', '.join(ALERT_WHEN)}")
        if self.webhook_timeout_s <= 0:
            raise ConfigError("alerts.webhook_timeout_s must be positive")


@dataclass(frozen=True)
class RetentionSettings:
    """What `markdown-pricing gc` keeps: the run folders of the keep_weeks most recent run dates, and ledger and
    metrics rows younger than ledger_keep_days (0: every row)."""

    keep_weeks: int = 8
    ledger_keep_days: int = 730

    def __post_init__(self) -> None:
        if self.keep_weeks < 1:
            raise ConfigError(f"retention.keep_weeks must be at least 1, not {self.keep_weeks}")
        if self.ledger_keep_days < 0:
            raise ConfigError(
                f"retention.ledger_keep_days must not be negative (0: never prune), not {self.ledger_keep_days}"
            )


@dataclass(frozen=True)
class EtlSettings:
    """The ETL shuffles its input into one partition per raw_bytes_per_shuffle_partition bytes of raw Parquet, and
    into no fewer than the session's spark.sql.shuffle.partitions."""

    raw_bytes_per_shuffle_partition: int = 8 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.raw_bytes_per_shuffle_partition <= 0:
            raise ConfigError(
                f"etl.raw_bytes_per_shuffle_partition must be positive, not {self.raw_bytes_per_shuffle_partition}"
            )


@dataclass(frozen=True)
class DriftLimits:
    """How far each measure of a country's input may move against the previous run before the ETL says so: a
    relative change for weekly units, active articles and the price level, share points for the share on markdown
    (0.25: 25 points); 0 turns the check off."""

    weekly_units: float = 0.0
    active_articles: float = 0.0
    price_level: float = 0.0
    markdown_share: float = 0.0


@dataclass(frozen=True)
class DriftSettings:
    """Input drift: a change beyond a warning limit is logged and reported; beyond a block limit, the publish gate
    blocks the country (an operator may override it)."""

    warn: DriftLimits = DriftLimits(weekly_units=0.5, active_articles=0.3, price_level=0.2, markdown_share=0.25)
    block: DriftLimits = DriftLimits()

    def __post_init__(self) -> None:
        for level, limits in (("warn", self.warn), ("block", self.block)):
            negative = sorted(measure for measure, limit in vars(limits).items() if limit < 0)
            if negative:
                raise ConfigError(f"drift.{level} limits of {', '.join(negative)} must not be negative (0: off)")
        for measure, block in vars(self.block).items():
            warn = getattr(self.warn, measure)
            if 0 < block < warn:
                raise ConfigError(
                    f"drift.block.{measure} = {block:g} is below drift.warn.{measure} = {warn:g}: a block limit must "
                    "be at least its warning limit, or 0 (off)"
                )


# A Docker image reference, [host[:port]/]name[/name...][:tag][@digest]: it reaches YARN inside a comma-separated
# environment list and the NodeManager's `docker run`, so nothing else (no space, no shell character) may pass.
_NAME_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_REFERENCE = re.compile(
    rf"(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?{_NAME_COMPONENT}(?:/{_NAME_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@[a-z0-9]+:[0-9a-f]{32,})?"
)
# An absolute path, and a bind mount as YARN_CONTAINER_RUNTIME_DOCKER_MOUNTS takes it (source:destination:mode).
ABSOLUTE_PATH = r"/[A-Za-z0-9_.@+/-]*"
DOCKER_MOUNT = re.compile(rf"{ABSOLUTE_PATH}:{ABSOLUTE_PATH}:r[ow](?:\+r?(?:shared|slave|private))?")


@dataclass(frozen=True)
class YarnSettings:
    """How YARN runs the containers: in container_image under its Docker runtime, with these host folders mounted
    and that image's Java, when an image is named; else as plain processes that unpack the environment archive."""

    container_image: str = ""
    container_mounts: tuple[str, ...] = (
        "/etc/passwd:/etc/passwd:ro",
        "/etc/group:/etc/group:ro",
        "/etc/hadoop/conf:/etc/hadoop/conf:ro",
    )
    container_java_home: str = "/usr/lib/jvm/java-17-openjdk-amd64"

    def __post_init__(self) -> None:
        if self.container_image and not IMAGE_REFERENCE.fullmatch(self.container_image):
            raise ConfigError(
                f"yarn.container_image (or {YARN_IMAGE_ENV}) {self.container_image!r} is not a Docker image "
                "reference such as registry.example.com/markdown-pricing:0.1.0"
            )
        wrong = [mount for mount in self.container_mounts if not DOCKER_MOUNT.fullmatch(mount)]
        if wrong:
            raise ConfigError(
                f"yarn.container_mounts {', '.join(map(repr, wrong))}: a mount is /source:/destination:ro (or :rw)"
            )
        if not re.fullmatch(ABSOLUTE_PATH, self.container_java_home):
            raise ConfigError(f"yarn.container_java_home {self.container_java_home!r} is not an absolute path")


@dataclass(frozen=True)
class Config:
    env: str
    project_root: Path
    paths: Paths
    run: RunRules
    model: ModelParams
    erp: ErpSettings
    spark: SparkSettings
    gpu: GpuSettings
    schedule: ScheduleSettings = ScheduleSettings()
    retention: RetentionSettings = RetentionSettings()
    alerts: AlertSettings = AlertSettings()
    drift: DriftSettings = DriftSettings()
    etl: EtlSettings = EtlSettings()
    yarn: YarnSettings = YarnSettings()


def project_root() -> Path:
    """The folder that holds conf/ and jobs/: MARKDOWN_HOME, else the checkout this package lives in."""
    if home := os.environ.get("MARKDOWN_HOME"):
        return Path(home).resolve()
    for candidate in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (candidate / "conf" / "base.toml").is_file():
            return candidate
    raise ConfigError("cannot find conf/base.toml: set MARKDOWN_HOME to the project folder")


def site_spark_conf(path: str | None) -> dict[str, str]:
    """The settings of a spark-defaults.conf style file (`key value` or `key=value` lines, # comments)."""
    if not path:
        return {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as err:
        raise ConfigError(f"{YARN_SPARK_CONF_ENV} names {path}, which cannot be read: {err}") from err
    settings = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        first = line.split(None, 1)[0]
        key, value = line.split("=", 1) if "=" in first else (first, line[len(first) :])
        key = key.strip()
        if not value.strip():
            raise ConfigError(f"{path}:{number}: expected `key value`, found {line!r}")
        settings[key] = value.strip()
    return settings


def _yarn_settings(table: Mapping[str, Any]) -> YarnSettings:
    """The [yarn] table, its image overridden by MARKDOWN_YARN_IMAGE (set and empty: no image)."""
    yarn = {**table, "container_image": os.environ.get(YARN_IMAGE_ENV, table.get("container_image", ""))}
    if "container_mounts" in yarn:
        yarn["container_mounts"] = tuple(yarn["container_mounts"])
    return YarnSettings(**yarn)


def _merge(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError as err:
        raise ConfigError(f"config file not found: {path}") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from err


def _resolve_path(value: str, root: Path) -> str:
    """Keeps URIs as they are and makes a bare path a file:// URI, absolute against `root` when relative: Spark would
    resolve a bare path against Hadoop's default filesystem, which is HDFS wherever HADOOP_CONF_DIR names one."""
    if "://" in value:
        return value
    return (root / value).resolve().as_uri()


def load_config(env: str = "local", *, root: Path | None = None) -> Config:
    """Loads the configuration of one environment."""
    if env not in ENVIRONMENTS:
        raise ConfigError(f"unknown environment {env!r}: expected one of {', '.join(ENVIRONMENTS)}")
    root = root or project_root()
    raw = _merge(_read_toml(root / "conf" / "base.toml"), _read_toml(root / "conf" / f"{env}.toml"))
    try:
        paths, run, model, erp, spark = raw["paths"], raw["run"], raw["model"], raw["erp"], raw["spark"]
        tuning = model["tuning"]
        return Config(
            env=env,
            project_root=root,
            paths=Paths(
                raw=_resolve_path(os.environ.get("MARKDOWN_RAW", paths["raw"]), root),
                work=_resolve_path(os.environ.get("MARKDOWN_WORK", paths["work"]), root),
            ),
            run=RunRules(
                ladder=tuple(sorted(float(step) for step in run["ladder"])),
                salvage_value_share=float(run["salvage_value_share"]),
                max_rejected_share=float(run["max_rejected_share"]),
                max_recommendation_drop_share=float(run["max_recommendation_drop_share"]),
                min_lost_articles=int(run["min_lost_articles"]),
                max_markdown_lift_error=float(run["max_markdown_lift_error"]),
                wait_for_inputs_s=float(run["wait_for_inputs_s"]),
                input_poll_s=float(run["input_poll_s"]),
                max_sales_lag_days=int(run["max_sales_lag_days"]),
                max_markdown_steps=int(run["max_markdown_steps"]),
                min_weeks_between_markdowns=int(run["min_weeks_between_markdowns"]),
                price_endings={str(c): float(e) for c, e in run.get("price_endings", {}).items()},
            ),
            model=ModelParams(
                **{key: value for key, value in model.items() if key not in ("tuning", "price_response")},
                tuning=TuningSettings(**{**tuning, "candidates": tuple(dict(c) for c in tuning["candidates"])}),
                price_response=PriceResponseSettings(**model["price_response"]),
            ),
            erp=ErpSettings(**{**erp, "dsn": os.environ.get("MARKDOWN_ERP_DSN", erp["dsn"])}),
            spark=SparkSettings(
                app_name_prefix=spark["app_name_prefix"],
                master=os.environ.get(SPARK_MASTER_ENV, spark["master"]),
                deploy_mode=os.environ.get(DEPLOY_MODE_ENV, spark["deploy_mode"]),
                conf=MappingProxyType(
                    {
                        **{key: str(value) for key, value in spark.get("conf", {}).items()},
                        **(site_spark_conf(os.environ.get(YARN_SPARK_CONF_ENV)) if env == "yarn" else {}),
                    }
                ),
            ),
            gpu=GpuSettings(**{**raw["gpu"], "mode": os.environ.get("MARKDOWN_GPU_MODE", raw["gpu"]["mode"])}),
            schedule=ScheduleSettings(**raw.get("schedule", {})),
            retention=RetentionSettings(**raw.get("retention", {})),
            alerts=AlertSettings(**raw.get("alerts", {})),
            drift=DriftSettings(**{level: DriftLimits(**limits) for level, limits in raw.get("drift", {}).items()}),
            etl=EtlSettings(**raw.get("etl", {})),
            yarn=_yarn_settings(raw.get("yarn", {})),
        )
    except (KeyError, TypeError) as err:
        raise ConfigError(f"configuration for {env!r} is incomplete or has an unknown key: {err}") from err


def with_paths(cfg: Config, *, raw: str | None = None, work: str | None = None) -> Config:
    """Returns the config with the raw root and/or work folder replaced (command-line overrides)."""
    return replace(
        cfg,
        paths=Paths(
            raw=_resolve_path(raw, Path.cwd()) if raw else cfg.paths.raw,
            work=_resolve_path(work, Path.cwd()) if work else cfg.paths.work,
        ),
    )
