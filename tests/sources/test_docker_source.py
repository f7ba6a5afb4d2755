"""Discovery and resume against an engine in memory (the real-dockerd versions are in tests/integration)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from logpipe.config import DockerConfig
from logpipe.sources.docker import DockerSource
from logpipe.state import Resume
from tests.dockerkit import wait_until
from tests.support.fakedocker import FakeEngine
from tests.support.sourcekit import Recorder


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def source_for(engine: FakeEngine) -> Iterator[Any]:
    started: list[DockerSource] = []

    def make(recorder: Recorder, clock: Any = time.time, **overrides: Any) -> DockerSource:
        config = DockerConfig(compose_project="p", read_coalesce_secs=0.0, **overrides)
        source = DockerSource(lambda: engine, config, recorder, recorder.emit, recorder, clock=clock)  # type: ignore[arg-type,return-value]
        source.start()
        assert source.connected.wait(5)
        started.append(source)
        return source

    yield make
    for source in started:
        source.stop(5)


def test_reconciles_running_containers_and_follows_started_ones(engine: FakeEngine, source_for: Any) -> None:
    engine.add("a", "api")
    engine.write("a", "already running")
    rec = Recorder()
    source_for(rec)
    assert wait_until(lambda: rec.texts("p-api-1") == ["already running"], 5)
    engine.add("w", "worker", running=False)
    engine.write("w", "started later")
    engine.start("w")
    assert wait_until(lambda: rec.texts("p-worker-1") == ["started later"], 5)


def test_exited_before_logpipe_looked_is_read_only_within_the_lookback(engine: FakeEngine, source_for: Any) -> None:
    engine.add("old", "old")
    engine.write("old", "long ago")
    engine.stop("old")
    engine.advance(600)
    engine.add("new", "new")
    engine.write("new", "just now")
    engine.stop("new")
    now = engine.containers["new"].finished_ns / 1e9 + 60
    rec = Recorder()
    source = source_for(rec, clock=lambda: now, initial_lookback_secs=300)  # `old` exited 11 minutes ago
    assert wait_until(lambda: rec.texts("p-new-1") == ["just now"], 5)
    assert {info.id for info in source.followed()} <= {"new"}
    assert "old" not in rec.followed, "a container that exited before the look-back was read"


def test_resumes_each_stream_after_its_checkpoint_position(engine: FakeEngine, source_for: Any) -> None:
    engine.add("a", "api")
    engine.write("a", "o1", "o2", "o3")
    engine.write("a", "e1", "e2", stream="stderr")
    lines = engine.containers["a"].lines
    resume = Resume(0, {"stdout": (lines[1][0], 1), "stderr": (lines[3][0], 1)})
    rec = Recorder({"a": resume})
    source = source_for(rec)
    assert wait_until(lambda: sorted(rec.texts("p-api-1")) == ["e2", "o3"], 5)
    engine.stop("a")
    assert source.stop(5)
    assert sorted(rec.texts("p-api-1")) == ["e2", "o3"]


def test_destroyed_container_is_forgotten_after_its_stream_ends(engine: FakeEngine, source_for: Any) -> None:
    engine.add("a", "api")
    engine.write("a", "bye")
    rec = Recorder()
    source_for(rec)
    assert wait_until(lambda: rec.texts("p-api-1") == ["bye"], 5)
    engine.stop("a")
    engine.destroy("a")
    assert wait_until(lambda: rec.gone == ["a"], 5)


def test_stop_returns_true_once_every_reader_ended(engine: FakeEngine, source_for: Any) -> None:
    engine.add("a", "api")
    engine.add("b", "worker")
    rec = Recorder()
    source = source_for(rec)
    assert wait_until(lambda: len(source.followed()) == 2, 5)
    assert source.stop(5) is True
    assert not [t for t in threading.enumerate() if t.name.startswith("follow-p-") and t.is_alive()]


def test_a_reload_applies_the_reconnect_backoff_to_running_followers(engine: FakeEngine, source_for: Any) -> None:
    engine.add("a", "api")
    rec = Recorder()
    source = source_for(rec, reconnect_max_backoff_secs=60.0)
    assert wait_until(lambda: len(source.followed()) == 1, 5)
    source.reconfigure(DockerConfig(compose_project="p", read_coalesce_secs=0.0, reconnect_max_backoff_secs=0.5))
    # Six breaks in a row: capped at 0.5 s they take under 3 s; with the old 60 s cap they take 31 s or more.
    engine.broken = 6
    engine.write("a", "after the breaks")
    assert wait_until(lambda: rec.texts("p-api-1") == ["after the breaks"], 10), "the reloaded cap was ignored"
