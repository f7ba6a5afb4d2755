"""Helpers shared by the metrics tests: a clock the test moves, an event factory and sample lookups."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from logpipe.event import Event


class FakeClock:
    """Monotonic seconds that only move when the test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, secs: float) -> None:
        self.now += secs


def event(**fields: Any) -> Event:
    """An event from the `api` service at level info unless told otherwise."""
    fields.setdefault("service", "api")
    fields.setdefault("level", "info")
    return Event(ts_ns=1, text="line", **fields)


def dropped(registry: CollectorRegistry, metric: str) -> float | None:
    return registry.get_sample_value("logpipe_metric_series_dropped_total", {"metric": metric})


def series(registry: CollectorRegistry, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample called `name`, by its sorted labels."""
    return {
        tuple(sorted(s.labels.items())): s.value
        for metric in registry.collect()
        for s in metric.samples
        if s.name == name
    }


def buckets(registry: CollectorRegistry, name: str, labels: dict[str, str]) -> dict[str, float]:
    """A histogram's cumulative bucket counts, by `le`."""
    return {
        s.labels["le"]: s.value
        for metric in registry.collect()
        for s in metric.samples
        if s.name == f"{name}_bucket" and {k: v for k, v in s.labels.items() if k != "le"} == labels
    }
