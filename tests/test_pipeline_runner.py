"""The pipeline thread swaps pipelines between chunks on reload, and a swap it did not take is withdrawn."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry

from logpipe.config import Config
from logpipe.pipeline import ChunkQueue, Pipeline, PipelineRunner
from logpipe.sinks.lanes import Lanes
from logpipe.telemetry import Telemetry


def pipeline() -> Pipeline:
    return Pipeline(Config(), Lanes(1 << 20), None, Telemetry(CollectorRegistry()), lambda: "host")


def test_a_swap_the_thread_did_not_take_is_withdrawn() -> None:
    old, refused, accepted = pipeline(), pipeline(), pipeline()
    runner = PipelineRunner(ChunkQueue(1 << 20), old, idle_tick_secs=0.01)
    assert runner.swap(refused, timeout=0.05) is False  # the thread is not running yet: nobody takes it
    runner.start()
    time.sleep(0.1)
    assert runner.pipeline is old, "a refused reload must not be applied later"
    assert runner.swap(accepted, timeout=2.0) is True
    assert runner.pipeline is accepted
    runner.stop(2.0)
