"""The pipeline thread swaps pipelines between chunks on reload, and a swap it did not take is withdrawn."""

from __future__ import annotations

import threading
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


class _BlockingFlush:
    """A pipeline whose flush_all waits, as `lanes.put` does while the lanes are over budget."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release

    def process(self, chunk: object, now: float) -> None:
        pass

    def flush_idle(self, now: float) -> None:
        pass

    def flush_all(self) -> None:
        self.release.wait(10)


def test_a_swap_times_out_even_while_the_old_pipeline_cannot_flush() -> None:
    release = threading.Event()
    old = _BlockingFlush(release)
    runner = PipelineRunner(ChunkQueue(1 << 20), old, idle_tick_secs=0.01)  # type: ignore[arg-type]
    runner.start()
    started = time.monotonic()
    assert runner.swap(pipeline(), timeout=0.3) is False
    assert time.monotonic() - started < 1.0, "the reload hung behind the blocked flush"
    release.set()
    time.sleep(0.1)
    assert runner.pipeline is old, "the withdrawn pipeline was installed after all"
    runner.stop(2.0)
