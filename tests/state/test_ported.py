"""Behaviours the file-based spool, overflow and checkpoint tests asserted (deleted in 71944e3) that still apply to
the state database, asserted again against `logpipe.state` (and the spool's user, `ReplaySource`).

Each test names the deleted test it comes from. Layout-specific assertions (segment files, torn-tail truncation
counts, fsync calls) have no counterpart and are not here; where the old on-disk format is
still read (migrating an old state directory, `logpipe.state.legacy`), its recovery rules are tested here too.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from prometheus_client import CollectorRegistry

from logpipe.sinks.lanes import Batch, new_id
from logpipe.sinks.replay import ReplaySource
from logpipe.state import SpoolFull, State, StateFull
from logpipe.state.spool import SpoolCorrupt
from logpipe.telemetry import Telemetry
from tests.state.conftest import OpenState, replay, spill_until_full

REPO = Path(__file__).resolve().parents[2]



def counts(state: State) -> tuple[int, int, int]:
    return state.spool.records, state.spool.payload_bytes, state.spool.entries


def rec(i: int, size: int = 300) -> bytes:
    """A payload of exactly `size` bytes that names its number."""
    head = f"{i}:".encode()
    return head + bytes([i % 251]) * (size - len(head))


# -- from tests/sinks/test_spool.py::test_append_next_after_and_ack_follow_append_order
def test_next_after_looks_ahead_from_any_id_live_or_gone(open_state: OpenState) -> None:
    state = open_state()
    ids = [state.spill(rec(i), 1, []) for i in range(6)]
    assert len(set(ids)) == 6 and ids == sorted(ids)
    assert state.spool.next_after(None) == (ids[0], rec(0))
    assert state.spool.next_after(ids[3]) == (ids[4], rec(4))  # look-ahead
    assert state.spool.next_after(ids[-1]) is None
    assert state.spool.delivered(ids[0]) and state.spool.delivered(ids[1])
    assert state.spool.next_after(None) == (ids[2], rec(2))
    assert state.spool.next_after(ids[0]) == (ids[2], rec(2)), "a delivered id must lead to the next live record"


# -- from test_append_next_after_and_ack_follow_append_order, test_unacked_records_survive_reopen_and_acked_never_
#    return and test_drop_oldest_drops_a_segment_at_a_time (acks of acknowledged or dropped records are ignored)
def test_stale_deliveries_change_nothing_before_and_after_a_reopen(open_state: OpenState) -> None:
    state = open_state()
    ids = [state.spill(rec(i), 2, []) for i in range(6)]
    assert state.spool.delivered(ids[0]) and state.spool.delivered(ids[1])
    assert state.spool.drop_oldest(fraction=0.0) == (1, 2)  # drops ids[2], the oldest left
    expected = [(rid, rec(i)) for i, rid in enumerate(ids) if i >= 3]
    assert counts(state) == (3, 900, 6)
    for stale in ids[:3]:
        assert not state.spool.delivered(stale)
    assert counts(state) == (3, 900, 6), "a stale delivery changed the counts"
    assert replay(state) == expected
    state.close()

    again = open_state()
    assert counts(again) == (3, 900, 6)
    for stale in ids[:3]:
        assert not again.spool.delivered(stale)
    assert counts(again) == (3, 900, 6)
    assert replay(again) == expected


# -- from test_unacked_records_survive_reopen_and_acked_never_return and test_drop_oldest_drops_a_segment_at_a_time
#    (`new > max(ids)` after a reopen, after everything was acknowledged or dropped)
def test_ids_are_never_reused_even_once_the_spool_emptied_and_reopened(open_state: OpenState) -> None:
    # An intent names its replay's record by id (Intent.spool_id): a reused id would resolve the wrong record.
    state = open_state()
    delivered = [state.spill(rec(i), 1, []) for i in range(3)]
    for rid in delivered:
        assert state.spool.delivered(rid)
    assert state.spool.records == 0
    state.close()

    state = open_state()
    dropped = [state.spill(rec(i), 1, []) for i in range(3, 5)]
    assert min(dropped) > max(delivered)
    assert state.spool.drop_oldest(fraction=1.0) == (2, 2)
    assert state.spool.records == 0
    state.close()

    state = open_state()
    new = state.spill(rec(5), 1, [])
    assert new > max(dropped)
    assert replay(state) == [(new, rec(5))]


# -- from test_spool_full_at_max_bytes_and_frees_after_ack, test_acknowledged_records_of_the_active_segment_are_
#    reclaimed_when_full and the recovery counts of test_unacked_records_survive_reopen_and_acked_never_return
def test_spool_full_bound_is_exact_freed_by_delivery_and_kept_across_reopen(open_state: OpenState) -> None:
    state = open_state(spool_max_bytes=1000)
    with pytest.raises(SpoolFull):
        state.spill(bytes(1001), 1, [])  # can never fit
    assert counts(state) == (0, 0, 0) and replay(state) == []

    ids = [state.spill(rec(i, 250), 2, []) for i in range(4)]  # exactly max_bytes: accepted
    assert counts(state) == (4, 1000, 8)
    with pytest.raises(SpoolFull):
        state.spill(b"x", 1, [])
    assert counts(state) == (4, 1000, 8), "a refused spill changed the counts"
    assert [rid for rid, _ in replay(state)] == ids

    assert state.spool.delivered(ids[0])
    assert counts(state) == (3, 750, 6)
    ids.append(state.spill(rec(4, 250), 2, []))  # the delivered record's room is free again at once
    assert counts(state) == (4, 1000, 8)
    state.close()

    again = open_state(spool_max_bytes=1000)
    assert counts(again) == (4, 1000, 8), "the counts were not reloaded from the database"
    with pytest.raises(SpoolFull):
        again.spill(b"x", 1, [])  # the bound holds against what was reloaded
    assert again.spool.drop_oldest(fraction=0.0) == (1, 2)
    ids.append(again.spill(rec(5, 250), 2, []))
    assert [payload for _, payload in replay(again)] == [rec(i, 250) for i in range(2, 6)]
    assert counts(again) == (4, 1000, 8)


# -- from test_drop_oldest_drops_a_segment_at_a_time (`drop_oldest() == (0, 0)` once empty)
def test_drop_oldest_on_an_empty_spool_drops_nothing(open_state: OpenState) -> None:
    state = open_state(spool_max_bytes=1000)
    assert state.spool.drop_oldest() == (0, 0)
    assert counts(state) == (0, 0, 0)
    ids = [state.spill(rec(i, 100), 5, []) for i in range(3)]
    assert state.spool.drop_oldest(fraction=1.0) == (3, 15)
    assert state.spool.drop_oldest() == (0, 0)
    assert counts(state) == (0, 0, 0) and replay(state) == []
    new = state.spill(rec(3, 100), 5, [])
    assert new > ids[-1]
    assert replay(open_state(spool_max_bytes=1000)) == [(new, rec(3, 100))]


# -- from test_oldest_age_secs_follows_the_injected_clock (after an ack, after a reopen, once empty)
def test_oldest_age_moves_on_with_delivery_and_survives_a_reopen(open_state: OpenState) -> None:
    now = [1000.0]
    state = open_state(clock=lambda: now[0])
    first = state.spill(b"a", 1, [])
    now[0] = 1005.0
    second = state.spill(b"b", 1, [])
    now[0] = 1012.5
    assert state.spool.oldest_age_secs() == pytest.approx(12.5)
    assert state.spool.delivered(first)
    assert state.spool.oldest_age_secs() == pytest.approx(7.5)
    state.close()

    now[0] = 1100.0
    again = open_state(clock=lambda: now[0])  # the write time is on disk
    assert again.spool.oldest_age_secs() == pytest.approx(95.0)
    assert again.spool.delivered(second)
    assert again.spool.oldest_age_secs() is None


# -- from test_segments_rotate_and_fully_acked_ones_are_deleted and the machine's `spool.bytes == disk_bytes(...)`
def test_disk_use_stays_bounded_as_records_come_and_go(open_state: OpenState, tmp_path: Path) -> None:
    max_bytes = 256 << 10
    state = open_state(spool_max_bytes=max_bytes, fsync=False)
    rounds = 60  # 15 MiB through a 256 KiB spool
    for _ in range(rounds):
        ids = [state.spill(os.urandom(64 << 10), 1, []) for _ in range(4)]
        with pytest.raises(SpoolFull):
            state.spill(b"x", 1, [])
        for rid in ids:
            assert state.spool.delivered(rid)
    assert counts(state) == (0, 0, 0)
    files = [tmp_path / "state" / name for name in ("state.db", "state.db-wal")]
    assert state.spool.bytes == sum(f.stat().st_size for f in files if f.exists())
    assert 0 < state.spool.bytes <= 2 * max_bytes + (2 << 20), "delivered records' room is not reused"
    assert rounds * max_bytes > 5 * state.spool.bytes


# -- from test_a_failing_disk_leaves_the_spool_unchanged and test_enospc_raises_spool_error_and_recovers_after_acks
#    (`spool.records == len(ids)` after the refusal, the refused record absent after a reopen)
@pytest.mark.tmpfs_size("8m")
def test_a_spill_the_disk_refuses_changes_nothing(tiny_tmpfs: Path) -> None:
    directory = tiny_tmpfs / "state"
    state = State(directory, spool_max_bytes=1 << 30)
    state.open()
    try:
        state.checkpoint.follow("c1", "docker-api-1", 0)
        ids: list[int] = []
        with pytest.raises(StateFull):
            for i in range(1, 200):
                ids.append(state.spill(os.urandom(64 << 10), 3, [("c1", "stdout", (i, 1))]))
        n = len(ids)
        assert n > 10
        assert state.checkpoint.position("c1", "stdout") == (n, 1), "a refused spill advanced the cursor"
        assert counts(state) == (n, n * (64 << 10), 3 * n)
        assert [rid for rid, _ in replay(state)] == ids
        state.checkpoint.commit()
    finally:
        state.close()
    again = State(directory, spool_max_bytes=1 << 30)
    again.open()
    try:
        assert again.checkpoint.position("c1", "stdout") == (n, 1)
        assert counts(again) == (n, n * (64 << 10), 3 * n)
        assert [rid for rid, _ in replay(again)] == ids
    finally:
        again.close()


# -- from test_enospc_raises_spool_error_and_recovers_after_acks (acks alone make room for new appends)
@pytest.mark.tmpfs_size("8m")
def test_delivering_records_makes_room_for_new_spills_after_the_disk_filled(tiny_tmpfs: Path) -> None:
    state = State(tiny_tmpfs / "state", spool_max_bytes=1 << 30)
    state.open()
    try:
        ids = spill_until_full(state)
        for rid in ids:
            assert state.spool.delivered(rid)
        assert counts(state) == (0, 0, 0)
        more = [state.spill(os.urandom(64 << 10), 1, []) for _ in range(len(ids) // 2)]
        assert min(more) > ids[-1]
        assert state.spool.records == len(more)
    finally:
        state.close()


# -- from test_corrupt_record_in_an_older_segment_skips_its_remainder and
#    test_a_record_corrupted_while_open_is_never_returned
def corrupt_on_disk(db: Path, payload: bytes, offset: int) -> None:
    """Flip one bit of `payload` where the closed database holds it."""
    data = bytearray(db.read_bytes())
    at = data.find(payload)
    assert at >= 0 and data.find(payload, at + 1) == -1, "the payload is not stored once, in the clear"
    data[at + offset] ^= 0x40
    db.write_bytes(bytes(data))


def test_a_payload_corrupted_on_disk_is_never_returned(open_state: OpenState, tmp_path: Path) -> None:
    payloads = [f"record {i}:".encode() + hashlib.sha256(bytes([i])).hexdigest().encode() * 12 for i in range(3)]
    state = open_state()
    ids = [state.spill(payload, 1, []) for payload in payloads]
    state.close()  # the last connection: the WAL is checkpointed into state.db
    corrupt_on_disk(tmp_path / "state" / "state.db", payloads[1], 100)

    again = open_state()
    assert again.spool.next_after(None) == (ids[0], payloads[0])
    with pytest.raises(SpoolCorrupt) as refused:
        again.spool.next_after(ids[0])
    assert (refused.value.rid, refused.value.entries) == (ids[1], 1)
    assert again.spool.next_after(ids[1]) == (ids[2], payloads[2])


def test_replay_drops_a_corrupted_record_counts_its_entries_and_goes_on(open_state: OpenState, tmp_path: Path) -> None:
    # Before the checksum, ReplaySource.next raised zlib.error with the record marked as replaying: replay stopped
    # for good at the first bad record, and everything spooled behind it waited forever.
    registry = CollectorRegistry()
    telemetry = Telemetry(registry)
    state = open_state()
    source = ReplaySource(state, "block", telemetry)
    batches = []
    for i in range(3):
        line = os.urandom(200).hex()  # a record small enough to sit in one database page, contiguous on disk
        batches.append((Batch(new_id(), [], [(i, line, None, (("container", "a"),), (i, 1), 464)], 464), line))
    for batch, _line in batches:
        assert source.spill(batch)
    state.close()
    again = open_state()
    (rid0, _), (_, second), (rid2, _) = replay(again)
    again.close()
    corrupt_on_disk(tmp_path / "state" / "state.db", second, len(second) // 2)

    state = open_state()
    source = ReplaySource(state, "block", telemetry)
    got = source.next()
    assert got is not None and got[0] == rid0 and got[1][0][1] == batches[0][1]
    source.delivered(rid0)
    got = source.next()
    assert got is not None and got[0] == rid2 and got[1][0][1] == batches[2][1], "replay stopped at the bad record"
    lost = registry.get_sample_value("logpipe_entries_dropped_total", {"reason": "spool_corrupt", "rule": ""})
    assert lost == 1
    assert [rid for rid, _ in replay(state)] == [rid2]


# -- from test_concurrent_append_and_replay_keep_order
def test_concurrent_spill_and_replay_keep_order(open_state: OpenState) -> None:
    state = open_state(fsync=False)
    total = 2000
    received: list[bytes] = []
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            for i in range(total):
                state.spill(rec(i, 50), 1, [])
        except BaseException as exc:
            errors.append(exc)

    def consume() -> None:
        try:
            deadline = time.monotonic() + 60
            while len(received) < total and time.monotonic() < deadline:
                found = state.spool.next_after(None)
                if found is None:
                    time.sleep(0.0005)
                    continue
                received.append(found[1])
                assert state.spool.delivered(found[0])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert errors == []
    assert received == [rec(i, 50) for i in range(total)]
    assert counts(state) == (0, 0, 0)


# -- from test_recovery_reads_one_chunk_at_a_time (SQLite's own page cache is not traced: this bounds what the
#    spool itself loads at open)
def test_opening_a_large_spool_does_not_load_its_payloads(open_state: OpenState) -> None:
    big = os.urandom(16 << 20)
    state = open_state(fsync=False)
    state.spill(big, 1, [])
    state.close()
    tracemalloc.start()
    try:
        again = open_state(fsync=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert counts(again) == (1, 16 << 20, 1)
    assert peak < 4 << 20
    found = again.spool.next_after(None)
    assert found is not None and found[1] == big


# -- from test_sigkill_mid_append_loses_no_returned_record: its child also acknowledged the oldest record after
#    every even append; tests/state/test_spool.py's crash test only spills.
def crash_payload(n: int) -> bytes:
    """The record for number n: `<n>:` then a filler derived from n, 0..20 KB long, every 5th one 256 KiB."""
    size = 256 << 10 if n % 5 == 4 else (n * 7919) % 20_000
    block = hashlib.sha256(str(n).encode()).digest()
    return f"{n}:".encode() + (block * (size // len(block) + 1))[:size]


def crash_number(payload: bytes) -> int:
    return int(payload.split(b":", 1)[0])


CRASH_CHILD = """
import sys
from pathlib import Path
from logpipe.state import State
from tests.state.test_ported import crash_number, crash_payload

state = State(Path(sys.argv[1]), spool_max_bytes=1 << 40, fsync=True)
state.open()
n = int(sys.argv[2])
print("ready", flush=True)
while True:
    rid = state.spill(crash_payload(n), 1, [])
    print(f"S {n} {rid}", flush=True)
    if n % 2 == 0:
        oldest, payload = state.spool.next_after(None)
        print(f"D? {crash_number(payload)}", flush=True)
        assert state.spool.delivered(oldest)
        print(f"D {crash_number(payload)}", flush=True)
    n += 1
"""


def test_sigkill_while_spilling_and_delivering_loses_nothing_and_resurrects_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    rng = random.Random(20240601)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    kept: list[int] = []  # record numbers in the spool after the previous round, in order
    next_number, total_spilled, total_delivered = 0, 0, 0
    for _ in range(6):
        with subprocess.Popen(
            [sys.executable, "-c", CRASH_CHILD, str(directory), str(next_number)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=REPO,
        ) as proc:
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"ready\n"
            time.sleep(rng.uniform(0.05, 0.4))
            proc.send_signal(signal.SIGKILL)
            out, err = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL, err.decode()
        spilled: dict[int, int] = {}
        tried: set[int] = set()
        delivered: set[int] = set()
        for line in out.split(b"\n")[:-1]:  # the last piece is empty or a line cut by the kill
            kind, *fields = line.decode().split()
            if kind == "S":
                spilled[int(fields[0])] = int(fields[1])
            elif kind == "D?":
                tried.add(int(fields[0]))
            elif kind == "D":
                delivered.add(int(fields[0]))
        total_spilled += len(spilled)
        total_delivered += len(delivered)

        state = State(directory, spool_max_bytes=1 << 40)
        state.open()
        try:
            found = replay(state)
            assert state.spool.records == len(found)
        finally:
            state.close()
        numbers = [crash_number(payload) for _, payload in found]
        assert numbers == sorted(set(numbers)), "records must be in order, each exactly once"
        for rid, payload in found:
            n = crash_number(payload)
            assert payload == crash_payload(n), f"record {n} is garbage"
            assert spilled.get(n, rid) == rid
        last_printed = max(spilled, default=next_number - 1)
        assert set(numbers) <= set(kept) | set(range(next_number, last_printed + 2))  # at most one unprinted
        missing = (set(kept) | set(spilled)) - tried - set(numbers)
        assert not missing, f"spilled records lost: {sorted(missing)}"
        assert not delivered & set(numbers), "delivered records came back"
        kept = numbers
        next_number = max([*numbers, last_printed + 1, next_number]) + 1
    assert total_spilled > 0 and total_delivered > 0


# -- from tests/sinks/test_spool.py::SpoolMachine: what tests/state/test_spool.py's machine does not check
#    (over-limit spills refused, stale acks, drop accounting, counts after a reopen, look-ahead from any id,
#    ids growing even across an empty spool and a reopen)
class PortedSpoolMachine(RuleBasedStateMachine):
    MAX_BYTES = 1200

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="spool-ported-"))
        self.state = self._open()
        self.model: list[tuple[int, bytes, int]] = []  # (id, payload, entries)
        self.gone: list[int] = []  # delivered or dropped
        self.last_id = 0
        self.counter = 0

    def _open(self) -> State:
        state = State(self.directory, spool_max_bytes=self.MAX_BYTES, fsync=False)
        state.open()
        return state

    @rule(size=st.one_of(st.integers(0, 120), st.integers(0, 700)))
    def spill(self, size: int) -> None:
        self.counter += 1
        payload = (self.counter.to_bytes(4, "big") * (size // 4 + 1))[:size]
        entries = size % 7 + 1
        if sum(len(p) for _, p, _ in self.model) + size > self.MAX_BYTES:
            with pytest.raises(SpoolFull):
                self.state.spill(payload, entries, [])
            return
        rid = self.state.spill(payload, entries, [])
        assert rid > self.last_id
        self.last_id = rid
        self.model.append((rid, payload, entries))

    @precondition(lambda self: self.model)
    @rule()
    def deliver_oldest(self) -> None:
        rid, _, _ = self.model.pop(0)
        assert self.state.spool.delivered(rid)
        self.gone.append(rid)

    @precondition(lambda self: self.gone)
    @rule(data=st.data())
    def deliver_stale(self, data: st.DataObject) -> None:
        assert not self.state.spool.delivered(data.draw(st.sampled_from(self.gone)))

    @rule(fraction=st.sampled_from([0.0, 0.125, 0.5, 1.0]))
    def drop_oldest(self, fraction: float) -> None:
        want = max(1, int(self.MAX_BYTES * fraction))
        n = held = entries = 0
        for _, payload, count in self.model:
            n, held, entries = n + 1, held + len(payload), entries + count
            if held >= want:
                break
        assert self.state.spool.drop_oldest(fraction) == (n, entries)
        self.gone.extend(rid for rid, _, _ in self.model[:n])
        del self.model[:n]

    @rule()
    def reopen(self) -> None:
        self.state.close()
        self.state = self._open()

    @precondition(lambda self: self.model or self.gone)
    @rule(data=st.data())
    def look_ahead(self, data: st.DataObject) -> None:
        rid = data.draw(st.sampled_from([rid for rid, _, _ in self.model] + self.gone))
        following = [(r, p) for r, p, _ in self.model if r > rid]
        assert self.state.spool.next_after(rid) == (following[0] if following else None)

    @invariant()
    def matches_the_model(self) -> None:
        assert replay(self.state) == [(rid, payload) for rid, payload, _ in self.model]
        held = sum(len(p) for _, p, _ in self.model)
        assert counts(self.state) == (len(self.model), held, sum(e for _, _, e in self.model))
        assert held <= self.MAX_BYTES

    def teardown(self) -> None:
        self.state.close()
        shutil.rmtree(self.directory)


TestPortedSpoolMachine = PortedSpoolMachine.TestCase
TestPortedSpoolMachine.settings = settings(max_examples=30, stateful_step_count=30, deadline=None)


# -- from tests/sinks/test_overflow.py::test_drop_oldest_during_a_replay_never_hands_out_a_record_twice
def overflow_batch(i: int) -> tuple[Batch, str]:
    line = os.urandom(20_000).hex()
    entry = (i, line, None, (("container", "a"),), (i, 1), len(line) + 64)
    return Batch(new_id(), [], [entry], len(line) + 64), line


def test_drop_oldest_during_a_replay_never_hands_out_a_record_twice(open_state: OpenState) -> None:
    registry = CollectorRegistry()
    state = open_state(spool_max_bytes=3 * 65536)
    source = ReplaySource(state, "drop_oldest", Telemetry(registry))

    def dropped() -> float:
        return registry.get_sample_value("logpipe_entries_dropped_total", {"reason": "spool_full", "rule": ""}) or 0.0

    lines: dict[int, str] = {}
    batch, lines[1] = overflow_batch(1)
    assert source.spill(batch)
    replay_a = source.next()
    assert replay_a is not None and replay_a[1][0][1] == lines[1]
    spilled = 1
    while dropped() == 0:
        spilled += 1
        batch, lines[spilled] = overflow_batch(spilled)
        assert source.spill(batch)  # drop_oldest makes room: never refuses
        assert spilled < 50
    assert dropped() == spilled - state.spool.records  # one entry a batch, none delivered yet
    assert all(rid != replay_a[0] for rid, _ in replay(state)), "the record in flight was not dropped"

    # Its push is still in flight, so nothing else is handed out yet.
    assert source.next() is None
    before = counts(state)
    source.delivered(replay_a[0])  # the record is gone: nothing to delete
    assert counts(state) == before
    replay_b = source.next()
    assert replay_b is not None and replay_b[0] > replay_a[0]
    assert replay_b[1][0][1] == lines[replay_b[1][0][0]]
    assert source.next() is None, "a second replay while the first is in flight"
    source.delivered(replay_b[0])
    assert state.spool.records == before[0] - 1
    assert all(rid != replay_b[0] for rid, _ in replay(state))
    replay_c = source.next()
    assert replay_c is None or replay_c[0] > replay_b[0]


# -- from tests/test_checkpoint.py::test_cursors_only_move_forward, which checked memory only: before 71944e3 the
#    file was written from memory, so the rule held on disk too. Now a spill writes its own advances.
def test_cursors_only_move_forward_on_disk_too(open_state: OpenState) -> None:
    cp = open_state().checkpoint
    cp.follow("c1", "docker-api-1", 0)
    cp.advance([("c1", "stdout", (100, 2))])
    cp.commit()
    cp.advance([("c1", "stdout", (100, 1)), ("c1", "stderr", (5, 1))])
    cp.commit()
    assert cp.position("c1", "stdout") == (100, 2)
    again = open_state().checkpoint
    assert again.position("c1", "stdout") == (100, 2)
    assert again.position("c1", "stderr") == (5, 1)


def test_a_spill_never_moves_a_cursor_back(open_state: OpenState) -> None:
    state = open_state()
    cp = state.checkpoint
    cp.follow("c1", "docker-api-1", 0)
    cp.advance([("c1", "stdout", (100, 2))])
    cp.commit()
    state.spill(b"an older batch", 1, [("c1", "stdout", (50, 1))])
    assert cp.position("c1", "stdout") == (100, 2)
    assert open_state().checkpoint.position("c1", "stdout") == (100, 2), "the spill moved the cursor back on disk"


# -- The old on-disk spool is still read, once, when an old state directory is migrated (logpipe.state.legacy):
#    the recovery rules the deleted tests asserted for it apply there.
LEGACY_HEADER = 24


def legacy_payload(i: int) -> bytes:
    return struct.pack("<I", 1) + rec(i, 296)


def legacy_record(payload: bytes, written_ns: int = 1) -> bytes:
    head = struct.pack("<4sIIQ", b"LPS1", len(payload), zlib.crc32(payload), written_ns)
    return head + struct.pack("<I", zlib.crc32(head)) + payload


def legacy_ack(segment: int, offset: int) -> bytes:
    ack = struct.pack("<4sQQ", b"LPA1", segment, offset)
    return ack + struct.pack("<I", zlib.crc32(ack))


LEGACY_RECORD = len(legacy_record(legacy_payload(0)))


def write_legacy_spool(directory: Path, segments: list[list[int]]) -> list[Path]:
    """Segments 1, 2, ... holding the records numbered as given; no ack file (nothing acknowledged)."""
    spool = directory / "spool"
    spool.mkdir(parents=True)
    paths = []
    for number, records in enumerate(segments, start=1):
        path = spool / f"{number:020d}.seg"
        path.write_bytes(b"".join(legacy_record(legacy_payload(i)) for i in records))
        paths.append(path)
    return paths


def open_migrated(directory: Path) -> State:
    state = State(directory, spool_max_bytes=1 << 20)
    state.open()
    return state


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def extend(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


# (damage to the last segment, whose last record starts at `last`; intact records left of 5)
TORN_TAILS: dict[str, tuple[Callable[[Path, int], None], int]] = {
    "cut mid-header": (lambda p, last: os.truncate(p, last + 10), 4),
    "cut mid-payload": (lambda p, last: os.truncate(p, last + LEGACY_HEADER + 100), 4),
    "random garbage appended": (lambda p, last: extend(p, random.Random(7).randbytes(500)), 5),
    "zeros appended": (lambda p, last: extend(p, bytes(4096)), 5),
    "byte flipped in last payload": (lambda p, last: flip(p, last + LEGACY_HEADER + 50), 4),
    "byte flipped in last length": (lambda p, last: flip(p, last + 5), 4),
    "byte flipped in last write time": (lambda p, last: flip(p, last + 16), 4),  # only the header crc sees it
}


# -- from test_torn_tail_is_truncated_and_reported
@pytest.mark.parametrize("damage", TORN_TAILS.keys())
def test_migration_keeps_the_intact_records_before_a_torn_tail(tmp_path: Path, damage: str) -> None:
    directory = tmp_path / "state"
    paths = write_legacy_spool(directory, [[0, 1, 2], [3, 4]])
    corrupt, intact = TORN_TAILS[damage]
    corrupt(paths[-1], LEGACY_RECORD)
    state = open_migrated(directory)
    try:
        assert [payload for _, payload in replay(state)] == [legacy_payload(i) for i in range(intact)]
        assert (state.spool.records, state.spool.entries) == (intact, intact)
        last = replay(state)[-1][0]
        assert state.spill(b"new", 1, []) > last
    finally:
        state.close()
    assert (directory / "spool.migrated").is_dir()


# -- from test_corrupt_record_in_an_older_segment_skips_its_remainder
@pytest.mark.parametrize("bad_index", [0, 1])
def test_migration_skips_the_rest_of_a_segment_after_a_bad_record(tmp_path: Path, bad_index: int) -> None:
    directory = tmp_path / "state"
    paths = write_legacy_spool(directory, [[0, 1, 2], [3, 4, 5]])
    flip(paths[0], bad_index * LEGACY_RECORD + LEGACY_HEADER + 7)
    state = open_migrated(directory)
    try:
        expected = [legacy_payload(i) for i in range(6) if i < bad_index or i >= 3]
        assert [payload for _, payload in replay(state)] == expected
        assert state.spool.records == len(expected)
    finally:
        state.close()


# -- from test_unreadable_ack_file_replays_everything_rather_than_losing
def test_migration_of_an_unreadable_ack_file_imports_everything(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    write_legacy_spool(directory, [[0, 1, 2], [3, 4]])
    (directory / "spool" / "ack").write_bytes(b"garbage")
    state = open_migrated(directory)
    try:
        assert [payload for _, payload in replay(state)] == [legacy_payload(i) for i in range(5)]
    finally:
        state.close()


# -- from test_acknowledged_segments_left_by_a_crash_are_deleted_at_open
@pytest.mark.parametrize("ack", [(2, 0), (2, LEGACY_RECORD)])
def test_migration_never_imports_an_acknowledged_segment_left_by_a_crash(tmp_path: Path, ack: tuple[int, int]) -> None:
    directory = tmp_path / "state"
    write_legacy_spool(directory, [[0, 1, 2], [3, 4, 5]])  # segment 1 fully acknowledged, its deletion lost
    (directory / "spool" / "ack").write_bytes(legacy_ack(*ack))
    state = open_migrated(directory)
    try:
        first = 3 + ack[1] // LEGACY_RECORD
        assert [payload for _, payload in replay(state)] == [legacy_payload(i) for i in range(first, 6)]
    finally:
        state.close()


# -- from tests/test_checkpoint.py::test_corrupt_file_is_set_aside_not_deleted, where checkpoint.json is still read
def test_migration_of_an_unreadable_checkpoint_keeps_it_and_still_imports_the_spool(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    write_legacy_spool(directory, [[0, 1]])
    garbage = b'{"version": 1, "containers": {"c1": {"na'
    (directory / "checkpoint.json").write_bytes(garbage)
    state = open_migrated(directory)
    try:
        assert list(state.checkpoint.known()) == []
        assert state.checkpoint.intents() == []
        assert [payload for _, payload in replay(state)] == [legacy_payload(0), legacy_payload(1)]
    finally:
        state.close()
    assert (directory / "checkpoint.json.migrated").read_bytes() == garbage
    assert not (directory / "checkpoint.json").exists()
