"""The daemon's lifecycle with a Docker engine in memory and a real Loki test server (or a real pipe for stdout):
crashed threads, shutdown under backpressure, and reading pushes back at startup while the rest starts."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from logpipe.config import Config, DockerConfig, LokiConfig, MetricsConfig, PipelineConfig, SpoolConfig, StateConfig
from logpipe.daemon import EXIT_OK, EXIT_SOFTWARE, Daemon
from logpipe.event import ContainerInfo
from logpipe.state import Intent, Probe, State
from tests.dockerkit import wait_until
from tests.support.fakedocker import FakeEngine
from tests.support.lokiserver import LokiServer

MiB = 1 << 20


def config_for(tmp_path: Path, loki_url: str = "http://127.0.0.1:9", **sections: Any) -> Config:
    config = Config(
        docker=DockerConfig(compose_project="p", read_coalesce_secs=0.0),
        loki=LokiConfig(url=loki_url, batch_wait_secs=0.1, min_backoff_secs=0.1, max_backoff_secs=0.5),
        metrics=MetricsConfig(addr="127.0.0.1:0"),
        state=StateConfig(dir=str(tmp_path / "state"), flush_interval_secs=0.1),
    )
    return dataclasses.replace(config, **sections)


class Running:
    """A daemon on a thread of its own (no signal handlers there: stop it with `request_stop`)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.code = self.daemon.run()

    def wait(self, timeout: float) -> int | None:
        self.thread.join(timeout)
        return self.code

    def metric(self, name: str, **labels: str) -> float | None:
        return self.daemon.registry.get_sample_value(name, labels)

    def healthz(self) -> int:
        assert self.daemon.server is not None
        host, port = self.daemon.server.address
        return httpx.get(f"http://{host}:{port}/healthz", timeout=5).status_code


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def loki() -> Iterator[LokiServer]:
    with LokiServer(visibility_delay_secs=0.0) as server:
        yield server


def follower_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("follow-p-") and t.is_alive()]


def test_a_crashed_stdout_sink_fails_health_and_the_daemon_exits(tmp_path: Path, engine: FakeEngine) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # whoever read logpipe's stdout went away: every write is EPIPE
    out = os.fdopen(write_end, "wb", 0)
    engine.add("a", "api")
    engine.write("a", "a line for a closed pipe")
    daemon = Daemon(config_for(tmp_path, sink="stdout"), stdout=out, engine_factory=lambda: engine)  # type: ignore[arg-type,return-value]
    running = Running(daemon)
    try:
        assert wait_until(daemon.threads.failed.is_set, 10), "the sink's death went unnoticed"
        assert daemon.server is not None and not daemon.server.alive()
        assert running.wait(10) == EXIT_SOFTWARE
        assert running.metric("logpipe_thread_crashes_total", thread="stdout_sink") == 1.0
        after = State(tmp_path / "state", spool_max_bytes=1 << 20)
        after.open()
        assert after.checkpoint.known() == ["a"], "the container was not recorded"
        assert after.checkpoint.position("a", "stdout") is None, "an unwritten line was acknowledged"
        after.close()
    finally:
        out.close()


def test_a_crashed_events_thread_is_counted_and_restarted(tmp_path: Path, engine: FakeEngine, loki: LokiServer) -> None:
    daemon = Daemon(config_for(tmp_path, loki.url), engine_factory=lambda: engine)  # type: ignore[arg-type,return-value]
    running = Running(daemon)
    try:
        assert wait_until(daemon.source.connected.is_set, 5)
        original = engine.inspect

        def broken_once(cid: str) -> ContainerInfo:
            engine.inspect = original  # type: ignore[method-assign]
            raise RuntimeError("a bug while handling an event")

        engine.inspect = broken_once  # type: ignore[method-assign]
        engine.add("w", "worker")
        engine.write("w", "after the crash")
        engine.publish("start", "w")
        assert wait_until(lambda: running.metric("logpipe_thread_crashes_total", thread="events") == 1.0, 10)
        assert wait_until(lambda: loki.lines(container="p-worker-1") == ["after the crash"], 15), (
            "the events thread did not come back"
        )
        assert running.healthz() == 200
    finally:
        daemon.request_stop()
        assert running.wait(15) == EXIT_OK


def test_shutdown_under_backpressure_releases_the_readers_at_once(
    tmp_path: Path, engine: FakeEngine, loki: LokiServer, caplog: pytest.LogCaptureFixture
) -> None:
    loki.fail(503)  # Loki refuses everything: the lanes fill, the pipeline blocks, the readers block on the queue
    config = config_for(
        tmp_path,
        loki.url,
        pipeline=PipelineConfig(memory_queue_max_bytes=MiB),
        spool=SpoolConfig(enabled=False),
    )
    for cid in ("a", "b"):
        engine.add(cid, cid)
        engine.write(cid, *[f"{cid} {i:06d} " + "x" * 200 for i in range(30_000)])
    daemon = Daemon(config, engine_factory=lambda: engine)  # type: ignore[arg-type,return-value]
    running = Running(daemon)
    assert wait_until(lambda: daemon.queue.bytes >= daemon.queue.max_bytes, 15), "the readers never blocked"
    assert len(follower_threads()) == 2
    asked = time.monotonic()
    daemon.request_stop()
    assert wait_until(lambda: not follower_threads(), 10)
    released_after = time.monotonic() - asked
    assert running.wait(15) == EXIT_OK
    assert "docker readers did not stop in time" not in caplog.text
    # Stopping the readers first left them blocked until the 1.5 s source budget ran out.
    assert released_after < 1.0, f"the readers were released {released_after:.2f} s after the stop request"


def test_startup_read_back_runs_beside_the_readers_and_a_stop_interrupts_it(
    tmp_path: Path, engine: FakeEngine, loki: LokiServer
) -> None:
    # The last run died with a push in flight for container a. Loki cannot be asked (queries fail) for the whole
    # test, so reading it back would take readback_max_wait_secs (60 s). Meanwhile b must ship, a must wait, and
    # a stop must not wait for the read-back.
    engine.add("a", "api")
    engine.add("b", "worker")
    engine.write("a", "a: read again only once the push in flight is settled")
    engine.write("b", "b: nothing in flight, ships at once")
    state = State(tmp_path / "state", spool_max_bytes=1 << 20)
    state.open()
    checkpoint = state.checkpoint
    checkpoint.follow("a", "p-api-1", 0)
    probe = Probe({"container": "p-api-1", "service": "api"}, time.time_ns(), "0" * 32)
    checkpoint.begin(Intent(7, time.time(), (("a", "stdout", (time.time_ns() - 1, 1)),), (probe,)))
    state.close()
    loki.fail_queries(120)
    config = config_for(tmp_path, loki.url)
    config = dataclasses.replace(config, loki=dataclasses.replace(config.loki, readback_max_wait_secs=60.0))
    daemon = Daemon(config, engine_factory=lambda: engine)  # type: ignore[arg-type,return-value]
    running = Running(daemon)
    assert wait_until(lambda: loki.lines(container="p-worker-1") == ["b: nothing in flight, ships at once"], 15)
    assert loki.lines(container="p-api-1") == [], "a was read before its push in flight was settled"
    assert running.metric("logpipe_readback_total", result="unresolved") is None
    daemon.request_stop()
    assert running.wait(12) == EXIT_OK, "the stop waited for the read-back"
    kept = State(tmp_path / "state", spool_max_bytes=1 << 20)
    kept.open()
    kept_ids = [i.id for i in kept.checkpoint.intents()]
    assert kept_ids == [7], "the unresolved push was forgotten: the next start cannot ask"
    kept.close()
