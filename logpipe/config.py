"""The configuration schema: every setting logpipe has, its default and its constraints.

Settings come from built-in defaults, then a TOML file, then environment variables (see `configload`). Every
class here is a frozen dataclass; unknown keys are rejected and every problem is reported at once with its
dotted path. Units are spelled out in key names (`_secs`, `_bytes`).
"""

from __future__ import annotations

import os
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path

from logpipe.event import EVENT_FIELDS, MAPPABLE_FIELDS

MiB = 1024 * 1024
HOUR = 3600.0
DAY = 24 * HOUR
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")

Problems = list[str]

#: Field metadata of a setting held by a process-lifetime part: a reload that changes it is told to restart.
RESTART = {"restart": True}


def _positive(
    problems: Problems, path: str, value: float, allow_zero: bool = False, maximum: float | None = None
) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        problems.append(f"{path}: must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    elif maximum is not None and value > maximum:
        problems.append(f"{path}: must be <= {maximum:g}, got {value}")


def _regex(problems: Problems, path: str, pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        problems.append(f"{path}: invalid regex {pattern!r}: {exc}")


def _one_of(problems: Problems, path: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        problems.append(f"{path}: must be one of {', '.join(allowed)}, got {value!r}")


@dataclass(frozen=True)
class DockerConfig:
    host: str = field(default="", metadata=RESTART)
    compose_project: str = ""
    require_compose_labels: bool = True
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    host_label: str = ""
    initial_lookback_secs: float = 3600.0
    max_line_bytes: int = field(default=256 * 1024, metadata=RESTART)
    api_timeout_secs: float = field(default=30.0, metadata=RESTART)
    reconnect_max_backoff_secs: float = 30.0
    read_coalesce_secs: float = field(default=0.005, metadata=RESTART)
    self_container_id: str = ""

    def check(self, path: str, problems: Problems) -> None:
        for i, pattern in enumerate(self.include):
            _regex(problems, f"{path}include[{i}]", pattern)
        for i, pattern in enumerate(self.exclude):
            _regex(problems, f"{path}exclude[{i}]", pattern)
        _positive(problems, f"{path}initial_lookback_secs", self.initial_lookback_secs, allow_zero=True)
        if self.max_line_bytes < 1024:
            problems.append(f"{path}max_line_bytes: must be >= 1024, got {self.max_line_bytes}")
        _positive(problems, f"{path}api_timeout_secs", self.api_timeout_secs, maximum=HOUR)
        _positive(problems, f"{path}reconnect_max_backoff_secs", self.reconnect_max_backoff_secs, maximum=HOUR)
        _positive(problems, f"{path}read_coalesce_secs", self.read_coalesce_secs, allow_zero=True, maximum=1.0)


@dataclass(frozen=True)
class LokiConfig:
    url: str = field(default="http://localhost:3100", metadata=RESTART)
    tenant: str = field(default="", metadata=RESTART)
    username: str = field(default="", metadata=RESTART)
    password: str = field(default="", repr=False, metadata=RESTART)
    password_file: str = field(default="", metadata=RESTART)
    bearer_token: str = field(default="", repr=False, metadata=RESTART)
    bearer_token_file: str = field(default="", metadata=RESTART)
    ca_file: str = field(default="", metadata=RESTART)
    cert_file: str = field(default="", metadata=RESTART)
    key_file: str = field(default="", metadata=RESTART)
    tls_insecure_skip_verify: bool = field(default=False, metadata=RESTART)
    timeout_secs: float = field(default=10.0, metadata=RESTART)
    batch_max_bytes: int = 1 * MiB
    batch_max_entries: int = 20_000
    batch_wait_secs: float = 1.0
    max_concurrent_pushes: int = field(default=2, metadata=RESTART)
    min_backoff_secs: float = 0.5
    max_backoff_secs: float = 60.0
    gzip_level: int = 1
    max_line_bytes: int = 256 * 1024
    labels: Mapping[str, str] = field(default_factory=dict)
    structured_metadata: bool = True
    max_entry_age_secs: float = 3300.0
    too_old: str = "retimestamp"
    readback: bool = True
    readback_max_wait_secs: float = 30.0

    def check(self, path: str, problems: Problems) -> None:
        if not re.match(r"^https?://[^/\s]+", self.url):
            problems.append(f"{path}url: must be an http:// or https:// URL, got {self.url!r}")
        if self.password and self.password_file:
            problems.append(f"{path}password_file: set either password or password_file, not both")
        if self.bearer_token and self.bearer_token_file:
            problems.append(f"{path}bearer_token_file: set either bearer_token or bearer_token_file, not both")
        if (self.password or self.password_file) and not self.username:
            problems.append(f"{path}username: required when a password is set")
        if self.username and (self.bearer_token or self.bearer_token_file):
            problems.append(f"{path}bearer_token: use either basic auth or a bearer token, not both")
        if bool(self.cert_file) != bool(self.key_file):
            problems.append(f"{path}key_file: cert_file and key_file go together")
        for key in ("password_file", "bearer_token_file", "ca_file", "cert_file", "key_file"):
            value = getattr(self, key)
            if value and not Path(value).is_file():
                problems.append(f"{path}{key}: no such file: {value}")
        _positive(problems, f"{path}timeout_secs", self.timeout_secs, maximum=HOUR)
        _positive(problems, f"{path}batch_max_bytes", self.batch_max_bytes)
        _positive(problems, f"{path}batch_max_entries", self.batch_max_entries)
        _positive(problems, f"{path}batch_wait_secs", self.batch_wait_secs, maximum=300.0)
        _positive(problems, f"{path}max_concurrent_pushes", self.max_concurrent_pushes)
        _positive(problems, f"{path}min_backoff_secs", self.min_backoff_secs, maximum=HOUR)
        _positive(problems, f"{path}max_backoff_secs", self.max_backoff_secs, maximum=HOUR)
        if self.max_backoff_secs < self.min_backoff_secs:
            problems.append(f"{path}max_backoff_secs: must be >= min_backoff_secs ({self.min_backoff_secs})")
        if not 0 <= self.gzip_level <= 9:
            problems.append(f"{path}gzip_level: must be between 0 and 9, got {self.gzip_level}")
        if self.max_line_bytes < 1024:
            problems.append(f"{path}max_line_bytes: must be >= 1024, got {self.max_line_bytes}")
        for name in self.labels:
            if not _LABEL_NAME.match(name):
                problems.append(f"{path}labels.{name}: not a valid label name")
        _positive(problems, f"{path}max_entry_age_secs", self.max_entry_age_secs, maximum=7 * DAY)
        _one_of(problems, f"{path}too_old", self.too_old, ("retimestamp", "drop"))
        _positive(problems, f"{path}readback_max_wait_secs", self.readback_max_wait_secs, allow_zero=True, maximum=HOUR)


@dataclass(frozen=True)
class JsonMapping:
    """Maps fields of an operator's own JSON lines (dotted paths) onto event fields."""

    fields: Mapping[str, str] = field(default_factory=dict)
    match: Mapping[str, str] = field(default_factory=dict)
    services: tuple[str, ...] = ()

    def check(self, path: str, problems: Problems) -> None:
        if not self.fields:
            problems.append(f"{path}fields: must map at least one event field")
        for name, source in self.fields.items():
            if name not in MAPPABLE_FIELDS:
                problems.append(f"{path}fields.{name}: not a mappable event field")
            if not source or any(not part for part in source.split(".")):
                problems.append(f"{path}fields.{name}: not a dotted path: {source!r}")


@dataclass(frozen=True)
class PipelineConfig:
    group_idle_secs: float = 0.5
    group_max_lines: int = 500
    group_max_bytes: int = 256 * 1024
    strip_ansi: bool = True
    memory_queue_max_bytes: int = field(default=64 * MiB, metadata=RESTART)
    shutdown_timeout_secs: float = 8.0
    json_mappings: tuple[JsonMapping, ...] = ()

    def check(self, path: str, problems: Problems) -> None:
        _positive(problems, f"{path}group_idle_secs", self.group_idle_secs, maximum=60.0)
        _positive(problems, f"{path}group_max_lines", self.group_max_lines)
        _positive(problems, f"{path}group_max_bytes", self.group_max_bytes)
        if self.memory_queue_max_bytes < MiB:
            problems.append(f"{path}memory_queue_max_bytes: must be >= {MiB}, got {self.memory_queue_max_bytes}")
        if not 0 < self.shutdown_timeout_secs < 10:
            problems.append(
                f"{path}shutdown_timeout_secs: must be > 0 and below Docker's 10 s stop grace period, "
                f"got {self.shutdown_timeout_secs}"
            )


@dataclass(frozen=True)
class RuleMatch:
    equals: Mapping[str, str] = field(default_factory=dict)
    regex: Mapping[str, str] = field(default_factory=dict)
    present: tuple[str, ...] = ()

    def check(self, path: str, problems: Problems) -> None:
        for kind, names in (("equals", self.equals), ("regex", self.regex), ("present", self.present)):
            for name in names:
                if name not in EVENT_FIELDS:
                    problems.append(f"{path}{kind}.{name}: unknown event field")
        for name, pattern in self.regex.items():
            _regex(problems, f"{path}regex.{name}", pattern)


@dataclass(frozen=True)
class MetricRule:
    """An operator-defined metric computed from events."""

    name: str = ""
    type: str = "counter"
    help: str = ""
    value_field: str = ""
    buckets: tuple[float, ...] = ()
    services: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    label_value_limit: int = 100
    match: RuleMatch = field(default_factory=RuleMatch)

    def check(self, path: str, problems: Problems) -> None:
        if not _METRIC_NAME.match(self.name):
            problems.append(f"{path}name: not a valid metric name: {self.name!r}")
        _one_of(problems, f"{path}type", self.type, ("counter", "gauge", "histogram"))
        if self.value_field and self.value_field not in EVENT_FIELDS:
            problems.append(f"{path}value_field: unknown event field {self.value_field!r}")
        if self.type in ("gauge", "histogram") and not self.value_field:
            problems.append(f"{path}value_field: required for a {self.type}")
        if self.type == "histogram" and list(self.buckets) != sorted(set(self.buckets)):
            problems.append(f"{path}buckets: must be strictly increasing")
        if self.type != "histogram" and self.buckets:
            problems.append(f"{path}buckets: only a histogram has buckets")
        for label, source in self.labels.items():
            if not _LABEL_NAME.match(label) or label.startswith("__"):
                problems.append(f"{path}labels.{label}: not a valid label name")
            if source not in EVENT_FIELDS:
                problems.append(f"{path}labels.{label}: unknown event field {source!r}")
        _positive(problems, f"{path}label_value_limit", self.label_value_limit)
        self.match.check(f"{path}match.", problems)


@dataclass(frozen=True)
class ModelPrice:
    prompt_usd_per_1k: float = 0.0
    completion_usd_per_1k: float = 0.0

    def check(self, path: str, problems: Problems) -> None:
        _positive(problems, f"{path}prompt_usd_per_1k", self.prompt_usd_per_1k, allow_zero=True)
        _positive(problems, f"{path}completion_usd_per_1k", self.completion_usd_per_1k, allow_zero=True)


@dataclass(frozen=True)
class MetricsConfig:
    addr: str = field(default="0.0.0.0:9108", metadata=RESTART)
    namespace: str = "dify"
    series_limit: int = 500
    series_idle_secs: float = 900.0
    basic_auth_username: str = field(default="", metadata=RESTART)
    basic_auth_password: str = field(default="", repr=False, metadata=RESTART)
    basic_auth_password_file: str = field(default="", metadata=RESTART)
    prices: Mapping[str, ModelPrice] = field(default_factory=dict)
    llm_daily_budget_usd: float = 100.0
    rules: tuple[MetricRule, ...] = ()

    def check(self, path: str, problems: Problems) -> None:
        if self.addr and not re.match(r"^(\[[0-9a-fA-F:]+\]|[^:\s]*):\d{1,5}$", self.addr):
            problems.append(f"{path}addr: must be host:port (or empty to disable), got {self.addr!r}")
        if not _METRIC_NAME.match(self.namespace):
            problems.append(f"{path}namespace: not a valid metric name prefix: {self.namespace!r}")
        _positive(problems, f"{path}series_limit", self.series_limit)
        _positive(problems, f"{path}series_idle_secs", self.series_idle_secs, maximum=30 * DAY)
        _positive(problems, f"{path}llm_daily_budget_usd", self.llm_daily_budget_usd, allow_zero=True)
        if (self.basic_auth_password or self.basic_auth_password_file) and not self.basic_auth_username:
            problems.append(f"{path}basic_auth_username: required when a password is set")
        if self.basic_auth_password_file and not Path(self.basic_auth_password_file).is_file():
            problems.append(f"{path}basic_auth_password_file: no such file: {self.basic_auth_password_file}")
        seen: set[str] = set()
        for i, rule in enumerate(self.rules):
            if rule.name in seen:
                problems.append(f"{path}rules[{i}].name: duplicate metric name {rule.name!r}")
            seen.add(rule.name)
            if rule.name.startswith((f"{self.namespace}_", "logpipe_")):
                problems.append(f"{path}rules[{i}].name: {rule.name!r} collides with a built-in metric prefix")


def default_state_dir() -> str:
    """`/var/lib/logpipe` inside a container, else the user's XDG state directory."""
    if Path("/.dockerenv").exists():
        return "/var/lib/logpipe"
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(base) / "logpipe")


@dataclass(frozen=True)
class StateConfig:
    dir: str = field(default_factory=default_state_dir)
    flush_interval_secs: float = 1.0

    def check(self, path: str, problems: Problems) -> None:
        if not self.dir:
            problems.append(f"{path}dir: must not be empty")
        _positive(problems, f"{path}flush_interval_secs", self.flush_interval_secs, maximum=60.0)


@dataclass(frozen=True)
class SpoolConfig:
    enabled: bool = True
    max_bytes: int = 1024 * MiB
    segment_bytes: int = 64 * MiB
    full_policy: str = "block"
    fsync: str = "always"

    def check(self, path: str, problems: Problems) -> None:
        # segment_bytes is no longer used (the spool lives in the state database): accepted, not checked.
        if self.max_bytes < 1 << 20:
            problems.append(f"{path}max_bytes: must be >= 1048576, got {self.max_bytes}")
        _one_of(problems, f"{path}full_policy", self.full_policy, ("block", "drop_oldest"))
        _one_of(problems, f"{path}fsync", self.fsync, ("always", "never"))


@dataclass(frozen=True)
class RedactRule:
    name: str = ""
    pattern: str = ""
    replacement: str = "[REDACTED]"

    def check(self, path: str, problems: Problems) -> None:
        if not _LABEL_NAME.match(self.name):
            problems.append(f"{path}name: must be a short identifier, got {self.name!r}")
        if not self.pattern:
            problems.append(f"{path}pattern: must not be empty")
        else:
            _regex(problems, f"{path}pattern", self.pattern)


@dataclass(frozen=True)
class RedactConfig:
    enabled: bool = True
    builtin_rules: bool = True
    rules: tuple[RedactRule, ...] = ()
    json_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"

    def check(self, path: str, problems: Problems) -> None:
        _one_of(problems, f"{path}level", self.level, ("debug", "info", "warning", "error"))


@dataclass(frozen=True)
class Config:
    sink: str = field(default="loki", metadata=RESTART)
    docker: DockerConfig = field(default_factory=DockerConfig)
    loki: LokiConfig = field(default_factory=LokiConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    state: StateConfig = field(default_factory=StateConfig, metadata=RESTART)
    spool: SpoolConfig = field(default_factory=SpoolConfig, metadata=RESTART)
    redact: RedactConfig = field(default_factory=RedactConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def check(self, path: str, problems: Problems) -> None:
        _one_of(problems, f"{path}sink", self.sink, ("loki", "stdout"))


def restart_only(cls: type = Config, prefix: str = "") -> tuple[str, ...]:
    """Dotted paths of the settings marked `RESTART` (a marked section counts as one path)."""
    found: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        path = f"{prefix}{f.name}"
        if f.metadata.get("restart"):
            found.append(path)
        elif is_dataclass(hints[f.name]):
            found.extend(restart_only(hints[f.name], f"{path}."))
    return tuple(found)
