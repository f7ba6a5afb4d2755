"""Long-lived threads are watched: a crash is logged once, counted, and restarted or reported as unhealthy."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import CollectorRegistry

from logpipe.config import Config
from logpipe.event import Chunk, ContainerInfo
from logpipe.pipeline import Pipeline
from logpipe.runner import ChunkQueue, PipelineRunner
from logpipe.sinks.lanes import Lanes
from logpipe.telemetry import Telemetry
from logpipe.threads import Threads
from tests.dockerkit import wait_until


def crashes(telemetry: Telemetry, kind: str) -> float | None:
    return telemetry.registry.get_sample_value("logpipe_thread_crashes_total", {"thread": kind})


@pytest.fixture
def telemetry() -> Telemetry:
    return Telemetry(CollectorRegistry())


def test_every_thread_kind_is_exported_at_zero(telemetry: Telemetry) -> None:
    for kind in ("pipeline", "dispatcher", "push", "events", "follower", "metrics_server", "stdout_sink"):
        assert crashes(telemetry, kind) == 0.0


def test_a_crash_that_cannot_be_restarted_fails_health(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    threads = Threads(telemetry.thread_crashed)
    assert threads.healthy()

    def broken() -> None:
        raise ValueError("a bug")

    threads.start("dispatcher", broken)
    assert threads.failed.wait(5)
    assert not threads.healthy()
    assert threads.failure == "dispatcher"
    assert crashes(telemetry, "dispatcher") == 1.0
    logged = [r for r in caplog.records if r.getMessage() == "thread crashed"]
    assert len(logged) == 1 and logged[0].exc_info is not None, "the crash was not logged once with its traceback"


def test_a_restartable_thread_runs_again_after_a_crash(telemetry: Telemetry) -> None:
    threads = Threads(telemetry.thread_crashed, max_backoff_secs=0.05)
    runs: list[int] = []
    done = threading.Event()

    def flaky() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError("transient")
        done.set()

    threads.start("events", flaky, restart=True)
    assert done.wait(10)
    assert crashes(telemetry, "events") == 2.0
    assert threads.healthy(), "a thread that restarts itself must not fail health"


def test_a_restartable_thread_stops_restarting_when_asked(telemetry: Telemetry) -> None:
    threads = Threads(telemetry.thread_crashed, max_backoff_secs=60)
    stop = threading.Event()
    crashed = threading.Event()

    def always_broken() -> None:
        crashed.set()
        raise RuntimeError("again")

    thread = threads.start("config_watcher", always_broken, restart=True, stop=stop)
    assert crashed.wait(5)
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    assert threads.healthy()


def test_a_crash_in_a_pool_task_is_reported_and_fails_health(telemetry: Telemetry) -> None:
    threads = Threads(telemetry.thread_crashed)

    def task() -> None:
        raise KeyError("lost batch")

    worker = threading.Thread(target=threads.guard, args=("push", task))
    worker.start()
    worker.join(5)
    assert crashes(telemetry, "push") == 1.0
    assert not threads.healthy()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the point of the test
def test_a_thread_that_died_without_an_exception_fails_health(telemetry: Telemetry) -> None:
    threads = Threads(telemetry.thread_crashed)

    def exits_the_thread() -> None:
        raise SystemExit  # not an Exception: the thread ends without the watcher seeing a crash

    thread = threads.start("pipeline", exits_the_thread)
    thread.join(5)
    assert not threads.healthy()


def test_repeated_crashes_are_logged_at_most_once_per_interval(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    threads = Threads(telemetry.thread_crashed)
    for _ in range(5):
        threads.report("follower", RuntimeError("same bug"))
    assert crashes(telemetry, "follower") == 5.0
    assert len([r for r in caplog.records if r.getMessage() == "thread crashed"]) == 1


def test_the_pipeline_thread_crashing_fails_health(telemetry: Telemetry) -> None:
    threads = Threads(telemetry.thread_crashed)
    queue = ChunkQueue(1 << 20)
    pipeline = Pipeline(Config(), Lanes(1 << 20), None, telemetry, lambda: "host")
    runner = PipelineRunner(queue, pipeline, idle_tick_secs=0.01, threads=threads)
    runner.start()
    info = ContainerInfo("c", "c", "api", "p", False, True, {})
    # A line that is not bytes: the kind of bug that must end the process, not hang it.
    queue.put(Chunk(info, "stdout", [(1, 1, "not bytes", 0)], 1))  # type: ignore[list-item]
    assert wait_until(lambda: not threads.healthy(), 5)
    assert crashes(telemetry, "pipeline") == 1.0

