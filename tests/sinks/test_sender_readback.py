"""A push whose answer was lost while Loki cannot be queried: the sender neither re-sends it blindly nor stalls.

The sender talks HTTP to the strict Loki test server, which stores a push and drops the connection
(`accept_then_drop`) and refuses queries (`fail_queries`, as Loki without a ready querier).
"""

from __future__ import annotations

import gzip
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from logpipe.config import LokiConfig
from logpipe.sinks.lanes import Entry, Lanes
from logpipe.sinks.loki import LokiClient, PushResult
from logpipe.sinks.replay import pack
from logpipe.sinks.sender import LokiSender
from logpipe.state import Checkpoint, State
from logpipe.telemetry import Telemetry
from tests.dockerkit import wait_until
from tests.support.lokiserver import LokiServer

MiB = 1 << 20


@pytest.fixture
def loki() -> Iterator[LokiServer]:
    with LokiServer(visibility_delay_secs=0.0) as server:
        yield server


def entries(container: str, start: int, n: int, size: int = 100) -> list[Entry]:
    labels = (("container", container), ("service", "api"))
    now = time.time_ns()
    return [
        (now + i, f"{container} {start + i:06d} " + "x" * size, None, labels, (now + i, 1), size + 64) for i in range(n)
    ]


@pytest.fixture
def clients() -> Iterator[list[LokiClient]]:
    made: list[LokiClient] = []
    yield made
    for client in made:
        client.close()


def state_in(directory: Path, containers: tuple[str, ...] | list[str] = ()) -> State:
    state = State(directory, spool_max_bytes=64 * MiB, fsync=False)
    state.open()
    for name in containers:
        state.checkpoint.follow(name, name, 0)
    return state


def spill(state: State, batch: list[Entry]) -> int:
    """A batch in the spool, as the sink spills one when Loki is down."""
    return state.spill(pack(batch), len(batch), [])


def sender_for(
    loki: LokiServer, tmp_path: Path, budget: int, containers: list[str], clients: list[LokiClient]
) -> tuple[LokiSender, Lanes, Checkpoint]:
    state = state_in(tmp_path / "state", containers)
    lanes = Lanes(budget)
    telemetry = Telemetry(CollectorRegistry())
    config = LokiConfig(url=loki.url, batch_wait_secs=0.1, min_backoff_secs=0.1, max_backoff_secs=0.5, timeout_secs=2)
    client = LokiClient(config)
    clients.append(client)
    sender = LokiSender(client, lanes, state, config, telemetry, spool_policy="block")
    sender.state = state  # type: ignore[attr-defined]  # for the tests below
    return sender, lanes, state.checkpoint


def two_pushes_awaiting_read_back(loki: LokiServer, lanes: Lanes) -> None:
    """Two pushes (streams a and b) stored by Loki and never answered: both wait to be read back."""
    lanes.put(("a", "stdout"), "a", entries("a", 0, 1), 164)
    assert wait_until(lambda: len(loki.fault_replies) == 1, 10)
    lanes.put(("b", "stdout"), "b", entries("b", 0, 1), 164)
    assert wait_until(lambda: len(loki.fault_replies) == 2, 10)


def pushes(loki: LokiServer) -> int:
    return sum(1 for r in loki.pushes() if r.entries)


def test_stopping_during_the_read_back_keeps_the_intent_and_sends_nothing_again(
    loki: LokiServer, tmp_path: Path, clients: list[LokiClient]
) -> None:
    sender, lanes, checkpoint = sender_for(loki, tmp_path, 64 * MiB, ["a"], clients)
    loki.fail_queries(60)
    loki.accept_then_drop(1)
    lanes.put(("a", "stdout"), "a", entries("a", 0, 5), 5 * 164)
    sender.start()
    assert wait_until(lambda: len(loki.fault_replies) == 1, 10)
    assert wait_until(lambda: len(loki.queries()) >= 2, 10)  # the sender keeps asking Loki, in vain
    sender.stop(5.0)
    assert pushes(loki) == 1, "the push whose fate is unknown was sent again"
    assert len(loki.lines()) == 5
    assert len(checkpoint.intents()) == 1, "the next start must read the push back"
    assert checkpoint.position("a", "stdout") is None
    assert sender.state.spool.records == 0  # type: ignore[attr-defined]


def test_full_lanes_during_the_read_back_spill_instead_of_stalling(
    loki: LokiServer, tmp_path: Path, clients: list[LokiClient]
) -> None:
    sender, lanes, _ = sender_for(loki, tmp_path, MiB, ["a", "b", "c"], clients)
    loki.fail_queries(60)
    loki.accept_then_drop(2)
    sender.start()
    try:
        two_pushes_awaiting_read_back(loki, lanes)
        loki.fail(503, seconds=60)  # and Loki now refuses pushes too
        fed = 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and fed < 3000:
            assert lanes.put(("c", "stdout"), "c", entries("c", fed, 100), 100 * 164)
            fed += 100
        assert fed == 3000, "the readers were blocked: nothing was spilled"
        assert sender.state.spool.records > 0  # type: ignore[attr-defined]
    finally:
        sender.stop(3.0)


def test_a_spooled_batch_too_large_for_loki_is_replayed_in_parts(tmp_path: Path, clients: list[LokiClient]) -> None:
    # Loki takes bodies of at most 8 KiB (compressed): the spooled batch must be split, recursively, and an entry
    # too large on its own is dropped and counted, not retried forever nor acknowledged as sent.
    with LokiServer(visibility_delay_secs=0.0, max_body_bytes=8 * 1024) as loki:
        sender, _lanes, _checkpoint = sender_for(loki, tmp_path, 64 * MiB, ["a"], clients)
        state: State = sender.state  # type: ignore[attr-defined]
        now = time.time_ns()
        labels = (("container", "a"), ("service", "api"))
        batch = [(now + i, f"a {i:06d} {os.urandom(150).hex()}", None, labels, (now + i, 1), 364) for i in range(200)]
        huge = (now + 200, "a huge " + os.urandom(20_000).hex(), None, labels, (now + 200, 1), 40_071)
        spill(state, [*batch, huge])
        sender.start()
        try:
            assert wait_until(lambda: state.spool.records == 0, 20)
            assert sorted(loki.lines()) == sorted(entry[1] for entry in batch)
            assert loki.duplicates() == []
        finally:
            sender.stop(3.0)


class _SplitThenDie:
    """Loki at the HTTP boundary: 413 for more than 10 entries, stores the first half, then the process 'dies'
    (the second half's push never returns)."""

    def __init__(self) -> None:
        self.stored: list[tuple[tuple[tuple[str, str], ...], int, str]] = []
        self.calls = 0
        self.hang = threading.Event()

    def push(self, body: bytes) -> PushResult:
        data = orjson.loads(gzip.decompress(body))
        self.calls += 1
        if sum(len(s["values"]) for s in data["streams"]) > 10:
            return PushResult("too_large", 413)
        if self.calls == 3:
            self.hang.wait(5)
            return PushResult("retry", 0)
        for s in data["streams"]:
            for ts, line, *_ in s["values"]:
                self.stored.append((tuple(sorted(s["stream"].items())), int(ts), line))
        return PushResult("ok", 204)

    def query_range(self, query: str, start: int, end: int, limit: int = 100) -> list[tuple[int, str]]:
        return [
            (ts, line)
            for labels, ts, line in self.stored
            if start <= ts < end and all(f'{k}="{v}"' in query for k, v in labels)
        ]


def test_a_crash_between_the_parts_of_a_split_replay_loses_nothing(tmp_path: Path) -> None:
    now = time.time_ns()

    def batch(container: str) -> list[Entry]:
        labels = (("container", container),)
        return [(now + i, f"{container} {i}", None, labels, (now + i, 1), 70) for i in range(10)]

    telemetry = Telemetry(CollectorRegistry())
    config = LokiConfig(url="http://loki", timeout_secs=1)
    state = state_in(tmp_path / "state")
    spill(state, batch("a") + batch("b"))
    loki = _SplitThenDie()
    sender = LokiSender(loki, Lanes(16 * MiB), state, config, telemetry)  # type: ignore[arg-type]
    sender.start()
    assert wait_until(lambda: loki.calls == 3, 5)  # 413, first half stored, second half in flight: 'crash' now
    state.checkpoint.commit()
    try:
        # The next start: the record must not count as delivered because its first half arrived (the split parts
        # carry no intent, so nothing can be read back), so it is replayed and its second half arrives too.
        again = state_in(tmp_path / "state")
        assert again.spool.records == 1
        assert again.checkpoint.intents() == []
        restarted = LokiSender(loki, Lanes(16 * MiB), again, config, telemetry)  # type: ignore[arg-type]
        restarted.start()
        assert wait_until(lambda: again.spool.records == 0, 10)
        restarted.stop(1.0)
        stored = {line for _labels, _ts, line in loki.stored}
        assert stored == {f"{c} {i}" for c in "ab" for i in range(10)}, "a half of the record was lost"
    finally:
        loki.hang.set()
        sender.stop(1.0)


def test_other_streams_keep_flowing_while_pushes_wait_to_be_read_back(
    loki: LokiServer, tmp_path: Path, clients: list[LokiClient]
) -> None:
    # Loki stores pushes but cannot answer queries: two pushes whose answers were lost wait to be read back, and
    # must not hold the push slots (max_concurrent_pushes=2) from the other streams meanwhile.
    sender, lanes, _ = sender_for(loki, tmp_path, 64 * MiB, ["a", "b", "c"], clients)
    loki.fail_queries(60)
    loki.accept_then_drop(2)
    sender.start()
    try:
        two_pushes_awaiting_read_back(loki, lanes)
        lanes.put(("c", "stdout"), "c", entries("c", 0, 50), 50 * 164)
        assert wait_until(lambda: len(loki.lines(container="c")) == 50, 5), "stream c waited behind the read-backs"
    finally:
        sender.stop(3.0)


def test_a_push_stored_only_in_part_is_completed_not_called_delivered(
    loki: LokiServer, tmp_path: Path, clients: list[LokiClient]
) -> None:
    # Loki's distributor stores the streams of a and d, fails b, c and e, and the answer is lost. Confirming the
    # push because one stream is found would lose three streams: every stream must be confirmed, and only those
    # that were not are sent again.
    names = ["a", "b", "c", "d", "e"]
    sender, lanes, checkpoint = sender_for(loki, tmp_path, 64 * MiB, names, clients)
    for name in names:
        lanes.put((name, "stdout"), name, entries(name, 0, 20), 20 * 164)
    loki.store_some_then_drop(lambda labels: labels["container"] in ("a", "d"))
    sender.start()
    try:
        assert wait_until(lambda: all(len(loki.lines(container=n)) == 20 for n in names), 15), {
            n: len(loki.lines(container=n)) for n in names
        }
        assert wait_until(lambda: lanes.totals()[1] == 0 and not checkpoint.intents(), 5)
    finally:
        sender.stop(3.0)
    assert loki.duplicates() == [], "streams confirmed by the read-back were sent again"
    stored = [r for r in loki.pushes() if r.stored]
    assert [r.stored for r in stored] == [40, 60], "the re-send carried other streams than the failed ones"
    for name in names:
        assert checkpoint.position(name, "stdout") is not None
    asked = Counter(q["query"] for q in loki.queries())
    assert set(asked) == {f'{{container="{n}", service="api"}}' for n in names}, "a stream was never looked for"
    assert asked['{container="a", service="api"}'] == 1, "a stream already found was asked for again"


class _LockWatch:
    """Checks, whenever the spool is read or acknowledged, whether the lanes' lock is free meanwhile: every `put`
    and every push completion takes that lock, so the disk must never be touched while it is held."""

    def __init__(self, lanes: Lanes) -> None:
        self.lanes = lanes
        self.touched: list[str] = []
        self.touched_under_lock: list[str] = []

    def wrap(self, what: str, method: Any) -> Any:
        def watched(*args: Any, **kwargs: Any) -> Any:
            got: list[bool] = []

            def probe() -> None:
                ok = self.lanes.cond.acquire(timeout=1.0)
                if ok:
                    self.lanes.cond.release()
                got.append(ok)

            prober = threading.Thread(target=probe)
            prober.start()
            prober.join()
            self.touched.append(what)
            if not got[0]:
                self.touched_under_lock.append(what)
            return method(*args, **kwargs)

        return watched


def test_the_spool_is_never_read_or_acknowledged_under_the_lanes_lock(
    loki: LokiServer, tmp_path: Path, clients: list[LokiClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    state = State(tmp_path / "state", spool_max_bytes=64 * MiB, fsync=True)
    state.open()
    telemetry = Telemetry(CollectorRegistry())
    for i in range(3):
        spill(state, entries("a", i * 10, 10))
    lanes = Lanes(64 * MiB)
    watch = _LockWatch(lanes)
    monkeypatch.setattr(state.spool, "next_after", watch.wrap("read", state.spool.next_after))
    monkeypatch.setattr(state.spool, "delivered", watch.wrap("ack", state.spool.delivered))
    config = LokiConfig(url=loki.url, batch_wait_secs=0.1, timeout_secs=2)
    client = LokiClient(config)
    clients.append(client)
    sender = LokiSender(client, lanes, state, config, telemetry)
    sender.start()
    try:
        assert wait_until(lambda: state.spool.records == 0 and len(loki.lines()) == 30, 20)
    finally:
        sender.stop(3.0)
    assert watch.touched.count("ack") == 3 and "read" in watch.touched
    assert watch.touched_under_lock == [], "the disk was touched while every put and ack waited for it"
