"""The metrics section of the configuration: the derived metrics and the operator's own metric rules."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from logpipe.config.checks import DAY, LABEL_NAME, METRIC_NAME, RESTART, Problems, one_of, positive, regex
from logpipe.event import EVENT_FIELDS


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
            regex(problems, f"{path}regex.{name}", pattern)


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
        if not METRIC_NAME.match(self.name):
            problems.append(f"{path}name: not a valid metric name: {self.name!r}")
        one_of(problems, f"{path}type", self.type, ("counter", "gauge", "histogram"))
        if self.value_field and self.value_field not in EVENT_FIELDS:
            problems.append(f"{path}value_field: unknown event field {self.value_field!r}")
        if self.type in ("gauge", "histogram") and not self.value_field:
            problems.append(f"{path}value_field: required for a {self.type}")
        if self.type == "histogram" and list(self.buckets) != sorted(set(self.buckets)):
            problems.append(f"{path}buckets: must be strictly increasing")
        if self.type != "histogram" and self.buckets:
            problems.append(f"{path}buckets: only a histogram has buckets")
        for label, source in self.labels.items():
            if not LABEL_NAME.match(label) or label.startswith("__"):
                problems.append(f"{path}labels.{label}: not a valid label name")
            if source not in EVENT_FIELDS:
                problems.append(f"{path}labels.{label}: unknown event field {source!r}")
        positive(problems, f"{path}label_value_limit", self.label_value_limit)
        self.match.check(f"{path}match.", problems)


@dataclass(frozen=True)
class ModelPrice:
    prompt_usd_per_1k: float = 0.0
    completion_usd_per_1k: float = 0.0

    def check(self, path: str, problems: Problems) -> None:
        positive(problems, f"{path}prompt_usd_per_1k", self.prompt_usd_per_1k, allow_zero=True)
        positive(problems, f"{path}completion_usd_per_1k", self.completion_usd_per_1k, allow_zero=True)


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
        if not METRIC_NAME.match(self.namespace):
            problems.append(f"{path}namespace: not a valid metric name prefix: {self.namespace!r}")
        positive(problems, f"{path}series_limit", self.series_limit)
        positive(problems, f"{path}series_idle_secs", self.series_idle_secs, maximum=30 * DAY)
        positive(problems, f"{path}llm_daily_budget_usd", self.llm_daily_budget_usd, allow_zero=True)
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
