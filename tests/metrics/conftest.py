"""Fixtures for the metrics stage: a fresh registry, a clock the test moves, a `LogMetrics` builder."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from logpipe.config import MetricsConfig
from logpipe.metrics import LogMetrics

from .support import FakeClock


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make(registry: CollectorRegistry, clock: FakeClock) -> Callable[..., LogMetrics]:
    """Build a `LogMetrics` on the test's registry and clock from `MetricsConfig` keyword arguments."""

    def build(**config: Any) -> LogMetrics:
        return LogMetrics(registry, MetricsConfig(**config), clock=clock)

    return build
