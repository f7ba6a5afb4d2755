"""The spool in the state database: order, durability, the atomic spill, limits, a full disk, old state dirs."""

from __future__ import annotations

import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import orjson
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from logpipe.state import Intent, Probe, SpoolFull, State
from tests.state.conftest import OpenState, fill, replay, spill_until_full

REPO = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("spill_child.py")



def test_spilled_records_replay_in_order_and_delivered_ones_never_return(open_state: OpenState) -> None:
    state = open_state()
    state.checkpoint.follow("c1", "api", 0)
    ids = [state.spill(f"batch {i}".encode(), 10, [("c1", "stdout", (i, 1))]) for i in range(5)]
    assert ids == sorted(ids)
    assert [payload for _, payload in replay(state)] == [f"batch {i}".encode() for i in range(5)]
    assert state.spool.delivered(ids[0]) and state.spool.delivered(ids[1])
    assert not state.spool.delivered(ids[1]), "delivered twice"
    again = open_state()
    assert [rid for rid, _ in replay(again)] == ids[2:]
    assert (again.spool.records, again.spool.entries) == (3, 30)
    assert again.checkpoint.position("c1", "stdout") == (4, 1), "the spill's cursors were not committed with it"


def test_a_spill_that_does_not_fit_changes_nothing(open_state: OpenState) -> None:
    state = open_state(spool_max_bytes=100)
    state.checkpoint.follow("c1", "api", 0)
    state.spill(b"x" * 60, 1, [("c1", "stdout", (1, 1))])
    with pytest.raises(SpoolFull):
        state.spill(b"y" * 60, 1, [("c1", "stdout", (2, 1))])
    assert state.checkpoint.position("c1", "stdout") == (1, 1), "a refused spill advanced the cursor"
    assert open_state().checkpoint.position("c1", "stdout") == (1, 1)
    assert len(replay(state)) == 1


def test_delivering_a_replay_ends_its_intent_in_the_same_transaction(open_state: OpenState) -> None:
    state = open_state()
    rid = state.spill(b"payload", 3, [])
    state.checkpoint.begin(Intent(9, 1.0, (), (Probe({"a": "b"}, 1, "h"),), spool_id=rid))
    assert state.spool.delivered(rid, intent_id=9)
    again = open_state()
    assert again.checkpoint.intents() == [] and replay(again) == []


def test_drop_oldest_frees_at_least_one_record_and_counts_entries(open_state: OpenState) -> None:
    state = open_state(spool_max_bytes=1000)
    ids = [state.spill(bytes(100), 7, []) for _ in range(8)]
    records, entries = state.spool.drop_oldest(fraction=0.25)
    assert (records, entries) == (3, 21)  # 300 bytes >= a quarter of 1000
    assert [rid for rid, _ in replay(state)] == ids[3:]
    assert state.spool.payload_bytes == 500


def test_oldest_age_follows_the_injected_clock(open_state: OpenState) -> None:
    now = [1000.0]
    state = open_state(clock=lambda: now[0])
    assert state.spool.oldest_age_secs() is None
    state.spill(b"a", 1, [])
    now[0] += 42
    state.spill(b"b", 1, [])
    assert state.spool.oldest_age_secs() == pytest.approx(42.0)


def test_sigkill_mid_spill_leaves_spool_and_cursor_consistent(tmp_path: Path) -> None:
    # The crash window of two files (spool, then checkpoint) replayed a batch AND read it again from Docker.
    # With one transaction, after any kill: batch i is in the spool exactly when the cursor is at or past i.
    directory = tmp_path / "state"
    rng = random.Random(5)
    reported: set[int] = set()
    for _ in range(8):
        child = subprocess.Popen(
            [sys.executable, str(CHILD), str(directory)],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert child.stdout is not None
        first = child.stdout.readline()  # running: now kill it at a random point of its loop
        assert first.startswith(b"spilled")
        time.sleep(rng.uniform(0.0, 0.3))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate(timeout=10)
        reported |= {int(line.split()[1]) for line in (first + out).splitlines() if line.startswith(b"spilled ")}
    state = State(directory, spool_max_bytes=1 << 40)
    state.open()
    try:
        spooled = [int.from_bytes(payload[:8], "big") for _, payload in replay(state)]
        cursor = state.checkpoint.position("c1", "stdout")
        assert cursor is not None
        assert spooled == list(range(1, cursor[0] + 1)), "a batch is in the spool but not acknowledged, or lost"
        assert reported <= set(spooled), "a spill that returned was lost"
    finally:
        state.close()


@pytest.mark.tmpfs_size("8m")
def test_a_full_disk_refuses_spills_but_never_acknowledgements(tiny_tmpfs: Path) -> None:
    # The spool stops short of filling the disk itself; then something else fills it to the last byte.
    state = State(tiny_tmpfs / "state", spool_max_bytes=1 << 30)
    state.open()
    try:
        ids = spill_until_full(state)
        fill(tiny_tmpfs)  # and nothing else on the disk either
        for rid in ids[:5]:  # acknowledging must work on a full disk: it is what frees room
            assert state.spool.delivered(rid)
        assert [rid for rid, _ in replay(state)] == ids[5:]
        (tiny_tmpfs / "filler").unlink()
        more = state.spill(os.urandom(16 * 1024), 1, [])
        assert more > ids[-1]
    finally:
        state.close()
    again = State(tiny_tmpfs / "state", spool_max_bytes=1 << 30)
    again.open()
    assert [rid for rid, _ in replay(again)] == [*ids[5:], more]
    again.close()


class SpoolMachine(RuleBasedStateMachine):
    """Random spill/deliver/drop/reopen sequences against a list of the records that should be there."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="spool-machine-"))
        self.state = self._open()
        self.model: list[tuple[int, bytes]] = []
        self.counter = 0

    def _open(self) -> State:
        state = State(self.directory, spool_max_bytes=1200, fsync=False)
        state.open()
        return state

    @rule(size=st.integers(0, 700))
    def spill(self, size: int) -> None:
        self.counter += 1
        payload = (self.counter.to_bytes(4, "big") * (size // 4 + 1))[:size]
        try:
            rid = self.state.spill(payload, 1, [])
        except SpoolFull:
            assert sum(len(p) for _, p in self.model) + size > 1200
            return
        assert not self.model or rid > self.model[-1][0]
        self.model.append((rid, payload))

    @rule()
    def deliver_oldest(self) -> None:
        if self.model:
            rid, _ = self.model.pop(0)
            assert self.state.spool.delivered(rid)

    @rule()
    def drop(self) -> None:
        records, _ = self.state.spool.drop_oldest()
        del self.model[:records]

    @rule()
    def reopen(self) -> None:
        self.state.close()
        self.state = self._open()

    @invariant()
    def matches(self) -> None:
        assert replay(self.state) == self.model
        assert self.state.spool.records == len(self.model)

    def teardown(self) -> None:
        self.state.close()
        shutil.rmtree(self.directory)


TestSpoolMachine = SpoolMachine.TestCase
TestSpoolMachine.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)


def legacy_record(payload: bytes, written_ns: int = 1) -> bytes:
    head = struct.pack("<4sIIQ", b"LPS1", len(payload), zlib.crc32(payload), written_ns)
    return head + struct.pack("<I", zlib.crc32(head)) + payload


def test_an_old_state_directory_is_migrated_once(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    (directory / "spool").mkdir(parents=True)
    records = [struct.pack("<I", n) + f"record {n}".encode() for n in (3, 4, 5)]
    segment = b"".join(legacy_record(r) for r in records)
    (directory / "spool" / f"{1:020d}.seg").write_bytes(segment)
    first_len = len(legacy_record(records[0]))
    ack = struct.pack("<4sQQ", b"LPA1", 1, first_len)  # the first record was acknowledged already
    (directory / "spool" / "ack").write_bytes(ack + struct.pack("<I", zlib.crc32(ack)))
    second_at = first_len
    (directory / "checkpoint.json").write_bytes(
        orjson.dumps(
            {
                "version": 1,
                "containers": {"c1": {"name": "docker-api-1", "origin": 5, "pos": {"stdout": [90, 2]}, "gone": False}},
                "intents": [
                    {"id": 7, "started_at": 1.5, "advances": [["c1", "stdout", [100, 1]]],
                     "probes": [{"labels": {"service": "api"}, "ts": 100, "hash": "h"}], "spool_id": None},
                    {"id": 8, "started_at": 1.5, "advances": [], "probes": [], "spool_id": [1, second_at]},
                    {"id": 9, "started_at": 1.5, "advances": [], "probes": [], "spool_id": [1, 0]},
                ],
            }
        )
    )  # fmt: skip
    state = State(directory, spool_max_bytes=1 << 20)
    state.open()
    try:
        assert [payload for _, payload in replay(state)] == records[1:]
        assert state.spool.entries == 9
        assert state.checkpoint.resume("c1") is not None
        assert state.checkpoint.position("c1", "stdout") == (90, 2)
        intents = {i.id: i for i in state.checkpoint.intents()}
        assert sorted(intents) == [7, 8], "the intent of an acknowledged record was kept"
        assert intents[8].spool_id == replay(state)[0][0], "the replay's intent names its record's old id"
        assert intents[7].advances == (("c1", "stdout", (100, 1)),)
    finally:
        state.close()
    assert sorted(p.name for p in directory.iterdir() if not p.name.startswith("state.")) == [
        "checkpoint.json.migrated",
        "spool.migrated",
    ]
    again = State(directory, spool_max_bytes=1 << 20)  # a second start imports nothing again
    again.open()
    assert len(replay(again)) == 2
    again.close()
