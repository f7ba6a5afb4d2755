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

from logpipe.config.checks import DAY, HOUR, LABEL_NAME, RESTART, MiB, Problems, one_of, positive, regex
from logpipe.config.metrics import MetricRule, MetricsConfig, ModelPrice, RuleMatch
from logpipe.config.ship import ShipConfig, ShipMatch, ShipRule
from logpipe.event import MAPPABLE_FIELDS

__all__ = [
    "RESTART",
    "Config",
    "DockerConfig",
    "JsonMapping",
    "LogConfig",
    "LokiConfig",
    "MetricRule",
    "MetricsConfig",
    "MiB",
    "ModelPrice",
    "PipelineConfig",
    "RedactConfig",
    "RedactRule",
    "RuleMatch",
    "ShipConfig",
    "ShipMatch",
    "ShipRule",
    "SpoolConfig",
    "StateConfig",
    "restart_only",
]


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
            regex(problems, f"{path}include[{i}]", pattern)
        for i, pattern in enumerate(self.exclude):
            regex(problems, f"{path}exclude[{i}]", pattern)
        positive(problems, f"{path}initial_lookback_secs", self.initial_lookback_secs, allow_zero=True)
        if self.max_line_bytes < 1024:
            problems.append(f"{path}max_line_bytes: must be >= 1024, got {self.max_line_bytes}")
        positive(problems, f"{path}api_timeout_secs", self.api_timeout_secs, maximum=HOUR)
        positive(problems, f"{path}reconnect_max_backoff_secs", self.reconnect_max_backoff_secs, maximum=HOUR)
        positive(problems, f"{path}read_coalesce_secs", self.read_coalesce_secs, allow_zero=True, maximum=1.0)


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
        positive(problems, f"{path}timeout_secs", self.timeout_secs, maximum=HOUR)
        positive(problems, f"{path}batch_max_bytes", self.batch_max_bytes)
        positive(problems, f"{path}batch_max_entries", self.batch_max_entries)
        positive(problems, f"{path}batch_wait_secs", self.batch_wait_secs, maximum=300.0)
        positive(problems, f"{path}max_concurrent_pushes", self.max_concurrent_pushes)
        positive(problems, f"{path}min_backoff_secs", self.min_backoff_secs, maximum=HOUR)
        positive(problems, f"{path}max_backoff_secs", self.max_backoff_secs, maximum=HOUR)
        if self.max_backoff_secs < self.min_backoff_secs:
            problems.append(f"{path}max_backoff_secs: must be >= min_backoff_secs ({self.min_backoff_secs})")
        if not 0 <= self.gzip_level <= 9:
            problems.append(f"{path}gzip_level: must be between 0 and 9, got {self.gzip_level}")
        if self.max_line_bytes < 1024:
            problems.append(f"{path}max_line_bytes: must be >= 1024, got {self.max_line_bytes}")
        for name in self.labels:
            if not LABEL_NAME.match(name):
                problems.append(f"{path}labels.{name}: not a valid label name")
        positive(problems, f"{path}max_entry_age_secs", self.max_entry_age_secs, maximum=7 * DAY)
        one_of(problems, f"{path}too_old", self.too_old, ("retimestamp", "drop"))
        positive(problems, f"{path}readback_max_wait_secs", self.readback_max_wait_secs, allow_zero=True, maximum=HOUR)


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
        positive(problems, f"{path}group_idle_secs", self.group_idle_secs, maximum=60.0)
        positive(problems, f"{path}group_max_lines", self.group_max_lines)
        positive(problems, f"{path}group_max_bytes", self.group_max_bytes)
        if self.memory_queue_max_bytes < MiB:
            problems.append(f"{path}memory_queue_max_bytes: must be >= {MiB}, got {self.memory_queue_max_bytes}")
        if not 0 < self.shutdown_timeout_secs < 10:
            problems.append(
                f"{path}shutdown_timeout_secs: must be > 0 and below Docker's 10 s stop grace period, "
                f"got {self.shutdown_timeout_secs}"
            )


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
        positive(problems, f"{path}flush_interval_secs", self.flush_interval_secs, maximum=60.0)


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
        one_of(problems, f"{path}full_policy", self.full_policy, ("block", "drop_oldest"))
        one_of(problems, f"{path}fsync", self.fsync, ("always", "never"))


@dataclass(frozen=True)
class RedactRule:
    name: str = ""
    pattern: str = ""
    replacement: str = "[REDACTED]"

    def check(self, path: str, problems: Problems) -> None:
        if not LABEL_NAME.match(self.name):
            problems.append(f"{path}name: must be a short identifier, got {self.name!r}")
        if not self.pattern:
            problems.append(f"{path}pattern: must not be empty")
        else:
            regex(problems, f"{path}pattern", self.pattern)


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
        one_of(problems, f"{path}level", self.level, ("debug", "info", "warning", "error"))


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
    ship: ShipConfig = field(default_factory=ShipConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def check(self, path: str, problems: Problems) -> None:
        one_of(problems, f"{path}sink", self.sink, ("loki", "stdout"))


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
