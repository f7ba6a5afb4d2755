"""Lanes: batching limits, one batch in flight per lane, per-lane backoff, order, and the byte budget."""

from __future__ import annotations

import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from logpipe.sinks.lanes import MEMORY_PER_ENTRY, BatchLimits, Entry, Lanes

LABELS = (("service", "api"),)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def entries(lane: str, start: int, n: int, size: int = 100) -> list[Entry]:
    return [(i, f"{lane}-{i}", None, LABELS, (i, 1), size) for i in range(start, start + n)]


def test_a_batch_waits_for_batch_wait_unless_full() -> None:
    clock = Clock()
    lanes = Lanes(10_000_000, clock)
    limits = BatchLimits(max_bytes=1000, max_entries=100, wait_secs=1.0)
    lanes.put(("c1", "stdout"), "api", entries("a", 0, 3), 300)
    with lanes.cond:
        assert lanes.take(limits) is None
        assert lanes.next_due_in(limits) == 1.0
    clock.now += 1.0
    with lanes.cond:
        batch = lanes.take(limits)
    assert batch is not None and [e[1] for e in batch.entries] == ["a-0", "a-1", "a-2"]
    # full by bytes: due at once
    lanes.put(("c2", "stdout"), "worker", entries("b", 0, 10), 1000)
    with lanes.cond:
        full = lanes.take(limits)
    assert full is not None and len(full.entries) == 10


def test_batch_limits_cap_bytes_and_entries() -> None:
    lanes = Lanes(10_000_000, Clock())
    lanes.put(("c1", "stdout"), "api", entries("a", 0, 50), 5000)
    with lanes.cond:
        batch = lanes.take(BatchLimits(max_bytes=1000, max_entries=100, wait_secs=0), flush=True)
    assert batch is not None and len(batch.entries) == 10 and batch.size == 1000
    with lanes.cond:
        lanes.done(batch)
        batch = lanes.take(BatchLimits(max_bytes=10**6, max_entries=7, wait_secs=0), flush=True)
    assert batch is not None and [e[0] for e in batch.entries] == list(range(10, 17))


def test_one_batch_in_flight_per_lane_and_done_advances_in_order() -> None:
    lanes = Lanes(10_000_000, Clock())
    limits = BatchLimits(max_bytes=250, max_entries=100, wait_secs=0)
    lanes.put(("c1", "stdout"), "api", entries("a", 0, 5), 500)
    with lanes.cond:
        first = lanes.take(limits, flush=True)
        assert first is not None
        assert lanes.take(limits, flush=True) is None  # the lane's head is in flight
        assert lanes.done(first) == [(("c1", "stdout"), (1, 1))]
        second = lanes.take(limits, flush=True)
    assert second is not None and [e[0] for e in second.entries] == [2, 3]


def test_a_failing_lane_does_not_hold_up_the_others() -> None:
    clock = Clock()
    lanes = Lanes(10_000_000, clock)
    limits = BatchLimits(max_bytes=10**6, max_entries=1000, wait_secs=0)
    lanes.put(("slow", "stdout"), "api", entries("s", 0, 2), 200)
    with lanes.cond:
        batch = lanes.take(limits, flush=True)
        assert batch is not None
        lanes.retry(batch, delay_secs=30.0, transient=False)  # e.g. a 429 with Retry-After: 30
    lanes.put(("fast", "stdout"), "worker", entries("f", 0, 2), 200)
    with lanes.cond:
        other = lanes.take(limits, flush=True)
    assert other is not None and {lane.key[0] for lane, _ in other.parts} == {"fast"}
    with lanes.cond:
        lanes.done(other)
        assert lanes.take(limits, flush=True) is None  # the rate-limited lane still waits
        clock.now += 30.0
        again = lanes.take(limits, flush=True)
    assert again is not None and [e[1] for e in again.entries] == ["s-0", "s-1"]


def test_success_elsewhere_ends_a_network_backoff() -> None:
    clock = Clock()
    lanes = Lanes(10_000_000, clock)
    limits = BatchLimits(max_bytes=10**6, max_entries=1000, wait_secs=0)
    lanes.put(("a", "stdout"), "a", entries("a", 0, 1), 100)
    with lanes.cond:
        batch = lanes.take(limits, flush=True)
        assert batch is not None
        lanes.retry(batch, delay_secs=60.0, transient=True)  # connection refused
    lanes.put(("b", "stdout"), "b", entries("b", 0, 1), 100)
    with lanes.cond:
        ok = lanes.take(limits, flush=True)
        assert ok is not None
        lanes.done(ok)  # Loki answered again
        retried = lanes.take(limits, flush=True)
    assert retried is not None and retried.entries[0][1] == "a-0"


def test_split_halves_a_lane_after_413() -> None:
    lanes = Lanes(10_000_000, Clock())
    limits = BatchLimits(max_bytes=10**6, max_entries=1000, wait_secs=0)
    lanes.put(("a", "stdout"), "a", entries("a", 0, 8), 800)
    with lanes.cond:
        batch = lanes.take(limits, flush=True)
        assert batch is not None
        lanes.split(batch)
        half = lanes.take(limits)  # due at once, no batch_wait
    assert half is not None and len(half.entries) == 4


def test_put_blocks_over_budget_until_acknowledged() -> None:
    lanes = Lanes(1000, Clock())
    lanes.put(("a", "stdout"), "a", entries("a", 0, 10), 1000)
    released = threading.Event()

    def writer() -> None:
        lanes.put(("a", "stdout"), "a", entries("a", 10, 1), 100)
        released.set()

    thread = threading.Thread(target=writer)
    thread.start()
    assert not released.wait(0.3)
    with lanes.cond:
        batch = lanes.take(BatchLimits(10**6, 1000, 0), flush=True)
        assert batch is not None
        lanes.done(batch)
    assert released.wait(2)
    thread.join()


def test_close_releases_a_blocked_put() -> None:
    lanes = Lanes(100, Clock())
    lanes.put(("a", "stdout"), "a", entries("a", 0, 1), 100)
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(lanes.put(("a", "stdout"), "a", entries("a", 1, 1), 100)))
    thread.start()
    lanes.close()
    thread.join(2)
    assert result == [False]


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["put", "take", "done", "retry", "split", "tick"]),
            st.integers(0, 3),
            st.integers(1, 20),
        ),
        max_size=80,
    ),
    max_bytes=st.integers(100, 3000),
    max_entries=st.integers(1, 30),
)
def test_batches_respect_limits_and_lanes_acknowledge_in_order(
    ops: list[tuple[str, int, int]], max_bytes: int, max_entries: int
) -> None:
    clock = Clock()
    lanes = Lanes(10**9, clock)
    limits = BatchLimits(max_bytes, max_entries, wait_secs=1.0)
    next_seq = [0] * 4
    acknowledged: dict[int, list[int]] = {i: [] for i in range(4)}
    inflight: list = []
    for op, lane_no, n in ops:
        key = (f"c{lane_no}", "stdout")
        with lanes.cond:
            if op == "put":
                new = [(s, "x", None, LABELS, (s, 1), 100) for s in range(next_seq[lane_no], next_seq[lane_no] + n)]
                next_seq[lane_no] += n
                lanes.put(key, key[0], new, 100 * n)
            elif op == "take":
                batch = lanes.take(limits, flush=bool(n % 2))
                if batch is not None:
                    assert len(batch.entries) <= max_entries
                    assert batch.size <= max(max_bytes, 100)  # a single entry may exceed the byte cap alone
                    lane_keys = [lane.key for lane, _ in batch.parts]
                    assert len(lane_keys) == len(set(lane_keys))
                    inflight.append(batch)
            elif inflight:
                batch = inflight.pop(0)
                if op == "done":
                    start = 0
                    for lane, count in batch.parts:
                        seqs = [e[0] for e in batch.entries[start : start + count]]
                        acknowledged[int(lane.key[0][1:])].extend(seqs)
                        start += count
                    lanes.done(batch)
                elif op == "retry":
                    lanes.retry(batch, 0.5, transient=bool(n % 2))
                elif op == "split":
                    lanes.split(batch)
                else:
                    inflight.insert(0, batch)
            if op == "tick":
                clock.now += n / 10
    for lane_no, seqs in acknowledged.items():
        assert seqs == list(range(len(seqs))), f"lane {lane_no} acknowledged out of order or twice"
    # everything not acknowledged is still held
    total_bytes, total_entries = lanes.totals()
    assert total_entries == sum(next_seq) - sum(len(s) for s in acknowledged.values())
    assert total_bytes == (100 + MEMORY_PER_ENTRY) * total_entries
