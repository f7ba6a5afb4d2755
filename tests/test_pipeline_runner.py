"""The pipeline thread swaps pipelines between chunks on reload, and a swap it did not take is withdrawn."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry

from logpipe.config import Config
from logpipe.pipeline import Pipeline
from logpipe.runner import ChunkQueue, PipelineRunner
from logpipe.sinks.lanes import Lanes
from logpipe.telemetry import Telemetry
from tests.dockerkit import wait_until


def pipeline() -> Pipeline:
    return Pipeline(Config(), Lanes(1 << 20), None, Telemetry(CollectorRegistry()), lambda: "host")


class _Watched:
    """A pipeline that counts the pipeline thread's idle ticks (each tick is also where a swap is taken), and
    whose flush_all may wait, as `lanes.put` does while the lanes are over budget."""

    def __init__(self, release: threading.Event | None = None) -> None:
        self.release = release
        self.ticks = 0
        self.flushed = threading.Event()

    def process(self, chunk: object, now: float) -> None:
        pass

    def flush_idle(self, now: float) -> None:
        self.ticks += 1

    def flush_all(self) -> None:
        if self.release is not None:
            self.release.wait(10)
        self.flushed.set()


def test_a_swap_the_thread_did_not_take_is_withdrawn() -> None:
    old, refused, accepted = _Watched(), pipeline(), pipeline()
    runner = PipelineRunner(ChunkQueue(1 << 20), old, idle_tick_secs=0.01)  # type: ignore[arg-type]
    assert runner.swap(refused, timeout=0.05) is False  # the thread is not running yet: nobody takes it
    runner.start()
    assert wait_until(lambda: old.ticks >= 3, 5)  # the thread passed the point where it takes swaps, twice
    assert runner.pipeline is old, "a refused reload must not be applied later"
    assert runner.swap(accepted, timeout=2.0) is True
    assert runner.pipeline is accepted
    runner.stop(2.0)


def test_a_swap_times_out_even_while_the_old_pipeline_cannot_flush() -> None:
    release = threading.Event()
    old = _Watched(release)
    runner = PipelineRunner(ChunkQueue(1 << 20), old, idle_tick_secs=0.01)  # type: ignore[arg-type]
    runner.start()
    # The swap must give up on its own, without waiting for the blocked flush (which only ends when released).
    assert runner.swap(pipeline(), timeout=0.3) is False
    assert not old.flushed.is_set(), "the reload waited for the blocked flush"
    release.set()
    assert old.flushed.wait(5)
    ticks = old.ticks
    assert wait_until(lambda: old.ticks >= ticks + 2, 5)  # the thread went on, past two more swap points
    assert runner.pipeline is old, "the withdrawn pipeline was installed after all"
    runner.stop(2.0)
