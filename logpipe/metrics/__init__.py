"""The metrics stage: Prometheus metrics derived from parsed log events, and the endpoint that serves them.

`LogMetrics` owns the built-in families (`derived`), the operator rules (`rules`) and their series (`store`), and
exposes them through one collector in the process registry. `MetricsServer` (`server`) serves that registry.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

from logpipe.config import MetricsConfig
from logpipe.event import Event
from logpipe.metrics.derived import Builtins, Prices
from logpipe.metrics.rules import Rule, build_rules
from logpipe.metrics.server import MetricsServer
from logpipe.metrics.store import Family

__all__ = ["LogMetrics", "MetricsServer"]


@dataclass(frozen=True, slots=True)
class _State:
    """Everything `reconfigure` replaces, swapped in one assignment so `observe` sees either old or new."""

    namespace: str
    idle_secs: float
    prices: Prices
    budget_usd: float
    rules: tuple[Rule, ...]


class LogMetrics:
    """Counts, sums and times parsed events into capped, expiring series, exported through `registry`.

    `observe` is meant for one pipeline thread and takes no lock; scrapes, `expire` and `reconfigure` may run on
    other threads (the latter two are serialised with each other). `clock` is monotonic seconds, for expiry.
    """

    def __init__(
        self, registry: CollectorRegistry, config: MetricsConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._dropped: dict[str, list[float]] = {}
        self._builtins = Builtins(config.namespace, config.series_limit)
        self._state = self._build(config, {})
        registry.register(_Collector(self))

    def _build(self, config: MetricsConfig, current: dict[str, Rule]) -> _State:
        prices = {model: (p.prompt_usd_per_1k, p.completion_usd_per_1k) for model, p in config.prices.items()}
        rules = build_rules(config.rules, current, config.series_limit, self._dropped)
        return _State(config.namespace, config.series_idle_secs, prices, config.llm_daily_budget_usd, rules)

    def reconfigure(self, config: MetricsConfig) -> None:
        """Apply a reloaded configuration without resetting any living series.

        A namespace change renames the built-in families and keeps their values; prices and the budget apply to
        future events; a rule kept with the same name and type keeps its series (new labels start new series
        beside the old ones, which expire); a removed rule's family disappears; a rule whose type changed starts
        empty. A lowered `series_limit` stops new series but removes none.
        """
        with self._lock:
            current = {rule.config.name: rule for rule in self._state.rules}
            state = self._build(config, current)
            self._builtins.reconfigure(config.namespace, config.series_limit)
            self._state = state

    def observe(self, event: Event) -> None:
        """Update every built-in metric and every matching rule from one event. Never raises on odd field values."""
        now = self._clock()
        state = self._state
        self._builtins.observe(event, now, state.prices)
        for rule in state.rules:
            rule.observe(event, now)

    def observe_all(self, events: list[Event]) -> None:
        """`observe` for each of `events`, in order (one clock reading for them all)."""
        now = self._clock()
        state = self._state
        builtin, prices, rules = self._builtins.observe, state.prices, state.rules
        for event in events:
            builtin(event, now, prices)
            for rule in rules:
                rule.observe(event, now)

    def expire(self) -> int:
        """Remove the series not updated for `series_idle_secs`; return how many were removed."""
        with self._lock:
            state = self._state
            cutoff = self._clock() - state.idle_secs
            return sum(family.expire(cutoff) for family in self._families(state))

    def _families(self, state: _State) -> list[Family]:
        return [*self._builtins.families.values(), *(rule.family for rule in state.rules)]

    def collect(self) -> Iterator[Metric]:
        """A snapshot of every family, the budget gauge and the folded/dropped counter (the scrape path)."""
        state = self._state
        families = self._families(state)
        for family in families:
            yield family.collect()
        yield GaugeMetricFamily(
            f"{state.namespace}_llm_cost_budget_usd",
            "Configured daily LLM budget in USD (metrics.llm_daily_budget_usd), for cost alerts.",
            value=state.budget_usd,
        )
        dropped = CounterMetricFamily(
            "logpipe_metric_series_dropped_total",
            "Observations folded into 'other' or dropped because a metric was over its series or label-value cap.",
            labels=["metric"],
        )
        for family in families:
            dropped.add_metric([family.name], family.dropped[0])
        yield dropped


class _Collector:
    """Registered in the registry: delegates to `LogMetrics.collect` without exposing the rest."""

    def __init__(self, metrics: LogMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics.collect()
