"""Following one container against an engine in memory: one reader at a time, exact resume, restarts, crashes."""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from logpipe.event import Chunk, Position
from logpipe.sources.follower import Follower, FollowerCallbacks, FollowSettings
from tests.dockerkit import wait_until
from tests.support.fakedocker import FakeEngine

SETTINGS = FollowSettings(max_line_bytes=64 * 1024, read_coalesce_secs=0.0, max_backoff_secs=0.05)


class Harness:
    """A follower's callbacks, recording what it handed on."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.chunks: list[Chunk] = []
        self.ended = 0
        self.crashes: list[BaseException] = []
        self.reconnects = 0

    def callbacks(self, **overrides: Any) -> FollowerCallbacks:
        cb = FollowerCallbacks(
            self.emit, lambda *_counts: None, self.reconnected, self.on_end, crashed=self.crashes.append
        )
        for name, value in overrides.items():
            setattr(cb, name, value)
        return cb

    def emit(self, chunk: Chunk) -> bool:
        with self.lock:
            self.chunks.append(chunk)
        return True

    def reconnected(self) -> None:
        self.reconnects += 1

    def on_end(self, _follower: Follower) -> None:
        with self.lock:
            self.ended += 1

    def lines(self) -> list[str]:
        with self.lock:
            return [content.decode() for chunk in self.chunks for _ts, _n, content, _cut in chunk.lines]

    def positions(self) -> list[Position]:
        with self.lock:
            return [(ts, n) for chunk in self.chunks for ts, n, _content, _cut in chunk.lines]


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def harness() -> Harness:
    return Harness()


@pytest.fixture
def fast_switching() -> Iterator[None]:
    # Switch threads every 10 µs instead of 5 ms: races that need a switch at one exact point happen often.
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(before)


def follower_for(engine: FakeEngine, harness: Harness, cid: str = "c1", **cb: Any) -> Follower:
    info = engine.inspect(cid)
    return Follower(engine, info, {}, 0, SETTINGS, harness.callbacks(**cb))  # type: ignore[arg-type]


def finished(follower: Follower) -> bool:
    """No reader thread of this follower is left."""
    readers = [t for t in threading.enumerate() if t.name == f"follow-{follower.info.name}" and t.is_alive()]
    return not follower.alive and not readers


class _HandoverHook:
    """Stands in for the follower's lock and forces one interleaving: right after the reader thread releases the
    lock having given up being the reader, `hook` runs (on the reader's own thread) before the reader goes on."""

    def __init__(self, follower: Follower, hook: Any) -> None:
        self._lock = threading.Lock()
        self._follower = follower
        self._hook = hook
        self._armed = True
        self.fired = threading.Event()  # set once the hook has run

    def __enter__(self) -> _HandoverHook:
        self._lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()
        reader = threading.current_thread().name.startswith("follow-")
        if reader and self._armed and not self._follower._alive:
            self._armed = False
            self._hook()
            self.fired.set()


def test_a_wake_in_the_handover_window_never_starts_a_second_reader(engine: FakeEngine, harness: Harness) -> None:
    engine.add("c1", "api")
    engine.write("c1", "one", "two")
    follower = follower_for(engine, harness)

    def container_restarts_now() -> None:
        # The events thread sees the restart while the old reader is on its way out.
        engine.start("c1")
        follower.wake(engine.inspect("c1"))
        assert wait_until(lambda: engine.readers.get("c1") == 1, 5), "the restart did not start a reader"

    hook = _HandoverHook(follower, container_restarts_now)
    follower._lock = hook  # type: ignore[assignment]
    follower.wake()
    assert wait_until(lambda: harness.lines() == ["one", "two"], 5)
    engine.stop("c1")
    assert hook.fired.wait(5), "the reader never handed over"
    follower.wake()  # a reconcile (reload, reconnect) right after: the running reader must just read again
    engine.write("c1", "three")
    assert wait_until(lambda: "three" in harness.lines(), 5)
    engine.stop("c1")
    assert wait_until(lambda: finished(follower), 5)
    assert engine.max_readers["c1"] == 1, "two readers followed one container at once"
    assert harness.lines() == ["one", "two", "three"]


def test_restarts_in_a_loop_keep_one_reader_and_every_line_once(
    engine: FakeEngine, harness: Harness, fast_switching: None
) -> None:
    engine.add("c1", "api")
    follower = follower_for(engine, harness)
    follower.wake()
    stop = threading.Event()

    def reconcile_all_the_time() -> None:
        while not stop.is_set():
            follower.wake()

    hammer = threading.Thread(target=reconcile_all_the_time, daemon=True)
    hammer.start()
    try:
        for i in range(150):
            engine.write("c1", f"line {i}")
            engine.stop("c1")
            engine.start("c1")
            follower.wake(engine.inspect("c1"))
    finally:
        stop.set()
        hammer.join(5)
    engine.write("c1", "last")
    assert wait_until(lambda: "last" in harness.lines(), 10)
    engine.stop("c1")
    assert wait_until(lambda: finished(follower), 10)
    assert engine.max_readers["c1"] == 1
    assert Counter(harness.lines()) == Counter([f"line {i}" for i in range(150)] + ["last"])


def test_resumes_after_the_last_position_even_within_one_timestamp(engine: FakeEngine, harness: Harness) -> None:
    engine.add("c1", "api")
    engine.write("c1", "a", "b", "c", same_ts=True)  # three lines with one Docker timestamp
    ts = engine.containers["c1"].lines[0][0]
    info = engine.inspect("c1")
    follower = Follower(engine, info, {"stdout": (ts, 2)}, 0, SETTINGS, harness.callbacks())  # type: ignore[arg-type]
    follower.wake()
    assert wait_until(lambda: harness.lines() == ["c"], 5)
    assert harness.positions() == [(ts, 3)]
    engine.stop("c1")
    assert wait_until(lambda: finished(follower), 5)


def test_a_broken_stream_reopens_from_the_last_line_handed_on(engine: FakeEngine, harness: Harness) -> None:
    engine.add("c1", "api")
    engine.lines_per_read = 2
    engine.write("c1", *[f"l{i}" for i in range(6)])
    follower = follower_for(engine, harness)
    follower.wake()
    assert wait_until(lambda: len(harness.lines()) == 6, 5)
    engine.broken = 1
    engine.write("c1", "after the break")
    assert wait_until(lambda: harness.reconnects == 1 and "after the break" in harness.lines(), 5)
    engine.stop("c1")
    assert wait_until(lambda: finished(follower), 5)
    assert harness.lines() == [*(f"l{i}" for i in range(6)), "after the break"]
    assert len([cid for cid, _since, follow in engine.opened if follow]) == 2


def test_an_unexpected_error_is_reported_and_the_follower_reads_on(engine: FakeEngine, harness: Harness) -> None:
    engine.add("c1", "api")
    engine.write("c1", "first")
    calls = {"n": 0}

    def emit(chunk: Chunk) -> bool:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a bug in the pipeline hand-off")
        return harness.emit(chunk)

    follower = follower_for(engine, harness, emit=emit)
    follower.wake()
    assert wait_until(lambda: harness.lines() == ["first"], 5), "the follower died with the exception"
    assert [type(e) for e in harness.crashes] == [RuntimeError]
    engine.stop("c1")
    assert wait_until(lambda: finished(follower), 5)


def test_waits_for_its_cursors_to_settle_before_reading(engine: FakeEngine, harness: Harness) -> None:
    engine.add("c1", "api")
    engine.write("c1", "a", "b", "c")
    ts_b = engine.containers["c1"].lines[1][0]
    asked, release = threading.Event(), threading.Event()

    def settled(cid: str, stop: threading.Event) -> dict[str, Position] | None:
        # The push that carried "a" and "b" is being read back; it turns out to have arrived.
        asked.set()
        assert release.wait(5)
        return {"stdout": (ts_b, 1)}

    info = engine.inspect("c1")
    follower = Follower(engine, info, {}, 0, SETTINGS, harness.callbacks(settled=settled), wait_settled=True)  # type: ignore[arg-type]
    follower.wake()
    assert asked.wait(5)
    assert engine.opened == [], "the follower read before its cursors were settled"
    release.set()
    assert wait_until(lambda: harness.lines() == ["c"], 5)
    engine.stop("c1")
    assert wait_until(lambda: finished(follower), 5)
