"""Properties: counters never go backwards while their series lives, whatever the events, expiries and reloads;
scrapes on another thread see consistent values."""

from __future__ import annotations

import math
import sys
import threading
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from logpipe.config import MetricRule, MetricsConfig, ModelPrice, RuleMatch
from logpipe.event import LEVELS, TASK_STATES, TIMEOUT_KINDS
from logpipe.metrics import LogMetrics

from .support import FakeClock, event

NAMESPACES = ("dify", "acme")
MONOTONIC_SUFFIXES = ("_total", "_bucket", "_count")

numbers = st.one_of(st.none(), st.integers(-10, 200_000), st.floats(allow_nan=True, allow_infinity=True))
durations = st.one_of(st.none(), st.floats(-1, 5000), st.just(math.nan))
events = st.builds(
    event,
    service=st.sampled_from(["api", "worker", "plugin_daemon", ""]),
    level=st.sampled_from(LEVELS),
    error_type=st.sampled_from([None, "ValueError", "KeyError", "X" * 300]),
    timeout_kind=st.sampled_from([None, *TIMEOUT_KINDS]),
    http_method=st.sampled_from([None, "GET", "POST", "BREW"]),
    http_status=st.sampled_from([None, 200, 404, 500]),
    duration_seconds=durations,
    model=st.sampled_from([None, "gpt-4o", "qwen", "m" * 200]),
    model_type=st.sampled_from([None, "llm"]),
    prompt_tokens=numbers,
    completion_tokens=numbers,
    total_tokens=numbers,
    cost=st.one_of(st.none(), st.floats(-1, 10), st.just(math.nan)),
    currency=st.sampled_from([None, "USD", "EUR"]),
    llm_latency_seconds=durations,
    task_name=st.sampled_from([None, "tasks.a", "tasks.b"]),
    task_state=st.sampled_from([None, *TASK_STATES]),
    task_runtime_seconds=durations,
)

# Rules sharing names across variants, so reloads keep, relabel, retype and remove them.
RULE_VARIANTS = (
    MetricRule(name="app_lines", labels={"svc": "service"}),
    MetricRule(name="app_lines", labels={"svc": "service", "lvl": "level"}, label_value_limit=2),
    MetricRule(name="app_lines", type="gauge", value_field="total_tokens"),
    MetricRule(name="app_tokens", value_field="total_tokens", labels={"model": "model"}, label_value_limit=1),
    MetricRule(name="app_tokens", type="histogram", value_field="total_tokens", buckets=(10.0, 1000.0)),
    MetricRule(name="app_5xx", match=RuleMatch(regex={"http_status": "^5"}), services=("api",)),
)
configs = st.builds(
    MetricsConfig,
    namespace=st.sampled_from(NAMESPACES),
    series_limit=st.integers(1, 6),
    series_idle_secs=st.sampled_from([5.0, 50.0]),
    prices=st.sampled_from([{}, {"gpt-4o": ModelPrice(0.005, 0.015)}, {"qwen": ModelPrice(1.0, 0.0)}]),
    rules=st.lists(st.sampled_from(RULE_VARIANTS), max_size=3, unique_by=lambda r: r.name).map(tuple),
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("observe"), events),
        st.tuples(st.just("advance"), st.floats(0, 30)),
        st.tuples(st.just("expire"), st.none()),
        st.tuples(st.just("reconfigure"), configs),
    ),
    max_size=40,
)


def normalized(name: str) -> str:
    for ns in NAMESPACES:
        if name.startswith(f"{ns}_"):
            return "NS_" + name.removeprefix(f"{ns}_")
    return name


def monotonic_samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Counter-like samples (counters, histogram buckets and counts) keyed independently of the namespace."""
    out = {}
    for metric in registry.collect():
        for s in metric.samples:
            if s.name.endswith(MONOTONIC_SUFFIXES):
                labels = tuple(sorted((k, normalized(v)) for k, v in s.labels.items()))
                out[(normalized(s.name), labels)] = s.value
    return out


@settings(max_examples=300, deadline=None)
@given(initial=configs, ops=operations)
def test_counters_never_decrease_while_their_series_lives(initial: MetricsConfig, ops: list[tuple[str, Any]]):
    registry, clock = CollectorRegistry(), FakeClock()
    metrics = LogMetrics(registry, initial, clock=clock)
    before = monotonic_samples(registry)
    for op, arg in ops:
        if op == "observe":
            metrics.observe(arg)
        elif op == "advance":
            clock.advance(arg)
        elif op == "expire":
            metrics.expire()
        else:
            metrics.reconfigure(arg)
        after = monotonic_samples(registry)
        for key, value in after.items():
            assert value >= 0 and not math.isnan(value), key
            if key in before:
                assert value >= before[key], (op, key, before[key], value)
        before = after
    generate_latest(registry)  # and the whole lot still renders


def test_scrapes_while_observing_see_monotonic_consistent_values():
    registry = CollectorRegistry()
    metrics = LogMetrics(registry, MetricsConfig(rules=(MetricRule(name="app_lines", labels={"svc": "service"}),)))
    n = 30_000
    stream = [
        event(
            service=f"svc{i % 7}",
            level="error" if i % 5 == 0 else "info",
            error_type=f"E{i % 11}",
            http_status=200,
            http_method="GET",
            duration_seconds=(i % 100) / 10,
        )
        for i in range(n)
    ]
    done = threading.Event()
    failures: list[BaseException] = []

    def observe() -> None:
        try:
            for ev in stream:
                metrics.observe(ev)
        except BaseException as exc:  # surfaced by the main thread
            failures.append(exc)
        finally:
            done.set()

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible to provoke torn reads
    try:
        worker = threading.Thread(target=observe)
        worker.start()
        previous: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        scrapes = 0
        while not done.is_set() or scrapes < 3:
            generate_latest(registry)
            metrics.expire()  # nothing is idle: must remove nothing while the pipeline writes
            current = monotonic_samples(registry)
            for key, value in current.items():
                assert value >= previous.get(key, 0.0), key
            for metric in registry.collect():
                if metric.type == "histogram":
                    by_series: dict[tuple[tuple[str, str], ...], float] = {}
                    for s in metric.samples:
                        labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
                        if s.name.endswith("_bucket") and s.labels["le"] == "+Inf":
                            by_series[labels] = s.value
                        elif s.name.endswith("_count"):
                            assert by_series[labels] == s.value
            previous = current
            scrapes += 1
        worker.join()
    finally:
        sys.setswitchinterval(old_interval)
    assert not failures
    total = sum(v for (name, _), v in monotonic_samples(registry).items() if name == "NS_log_entries_total")
    assert total == n
    assert registry.get_sample_value("app_lines_total", {"svc": "svc0"}) == len(stream[::7])
