"""The on-disk spool: ordering, acknowledgement, rotation, limits, recovery from torn/corrupt files, crashes, ENOSPC."""

from __future__ import annotations

import errno
import importlib.util
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from logpipe.sinks.spool import HEADER_BYTES, Spool, SpoolError, SpoolFull, SpoolId

REPO_ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("spool_crash_child.py")

OpenSpool = Callable[..., Spool]


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def open_spool(spool_dir: Path) -> Iterator[OpenSpool]:
    """Open spools in spool_dir (small segments by default) and close them all at teardown."""
    opened: list[Spool] = []

    def _open(**kwargs: Any) -> Spool:
        options: dict[str, Any] = {"max_bytes": 1 << 20, "segment_bytes": 1000, "fsync": False}
        options.update(kwargs)
        spool = Spool(options.pop("directory", spool_dir), **options)
        opened.append(spool)
        return spool

    yield _open
    for spool in opened:
        spool.close()


def replay(spool: Spool) -> list[tuple[SpoolId, bytes]]:
    """Every unacknowledged record, oldest first, by walking next_after."""
    out: list[tuple[SpoolId, bytes]] = []
    item = spool.next_after(None)
    while item is not None:
        out.append(item)
        item = spool.next_after(item[0])
    return out


def segment_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.seg"))


def disk_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("*.seg"))


def rec(i: int, size: int = 300) -> bytes:
    """A payload of exactly `size` bytes that names its number."""
    head = f"{i}:".encode()
    return head + bytes([i % 251]) * (size - len(head))


# With segment_bytes=1000, three 300-byte payloads (324 bytes with their header) fill a segment.
PER_SEGMENT = 3
RECORD = HEADER_BYTES + 300


def test_append_next_after_and_ack_follow_append_order(open_spool: OpenSpool) -> None:
    spool = open_spool()
    ids = [spool.append(rec(i)) for i in range(10)]
    assert ids == sorted(ids) and len(set(ids)) == 10
    assert replay(spool) == [(rid, rec(i)) for i, rid in enumerate(ids)]
    assert spool.next_after(None) == (ids[0], rec(0))
    assert spool.next_after(ids[3]) == (ids[4], rec(4))  # look-ahead
    assert spool.next_after(ids[-1]) is None
    for rid in ids[:5]:
        spool.ack(rid)
    assert spool.records == 5
    assert replay(spool) == [(rid, rec(i)) for i, rid in enumerate(ids) if i >= 5]
    assert spool.next_after(ids[0]) == (ids[5], rec(5))  # an acknowledged id means "from the oldest"
    spool.ack(ids[0])  # already acknowledged: ignored
    assert spool.records == 5
    with pytest.raises(ValueError, match="out of order"):
        spool.ack(ids[7])
    with pytest.raises(ValueError, match="not a record"):
        spool.next_after((ids[-1][0] + 5, 0))
    assert spool.records == 5


def test_unacked_records_survive_reopen_and_acked_never_return(open_spool: OpenSpool) -> None:
    spool = open_spool()
    ids = [spool.append(rec(i)) for i in range(20)]
    for rid in ids[:7]:
        spool.ack(rid)
    spool.close()

    spool = open_spool()
    assert spool.recovery.records == 13
    assert spool.recovery.bytes == 13 * RECORD
    assert (spool.recovery.truncated_bytes, spool.recovery.corrupt_segments) == (0, 0)
    assert replay(spool) == [(rid, rec(i)) for i, rid in enumerate(ids) if i >= 7]
    spool.ack(ids[3])  # acknowledged before the reopen: ignored
    new = spool.append(rec(20))
    assert new > max(ids)
    for rid in ids[7:10]:
        spool.ack(rid)
    spool.close()

    spool = open_spool()
    assert spool.recovery.records == 11
    assert [payload for _, payload in replay(spool)] == [rec(i) for i in range(10, 21)]


def test_segments_rotate_and_fully_acked_ones_are_deleted(open_spool: OpenSpool, spool_dir: Path) -> None:
    spool = open_spool()
    ids = [spool.append(rec(i)) for i in range(9)]
    assert [rid[0] for rid in ids] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert [rid[1] for rid in ids[:3]] == [0, RECORD, 2 * RECORD]
    assert len(segment_files(spool_dir)) == 3
    assert spool.bytes == disk_bytes(spool_dir) == 9 * RECORD
    spool.ack(ids[0])
    spool.ack(ids[1])
    assert len(segment_files(spool_dir)) == 3  # partly acknowledged: kept
    spool.ack(ids[2])
    assert segment_files(spool_dir) == [f"{2:020d}.seg", f"{3:020d}.seg"]
    assert spool.bytes == disk_bytes(spool_dir) == 6 * RECORD
    for rid in ids[3:]:
        spool.ack(rid)
    # The active segment is still written to, so it stays even though every record in it is acknowledged.
    assert segment_files(spool_dir) == [f"{3:020d}.seg"]
    assert spool.records == 0 and spool.next_after(None) is None
    new = spool.append(rec(9))  # does not fit segment 3: rotates, and segment 3 goes away
    assert new == (4, 0)
    assert segment_files(spool_dir) == [f"{4:020d}.seg"]
    assert spool.bytes == disk_bytes(spool_dir) == RECORD


def test_record_larger_than_a_segment_gets_its_own(open_spool: OpenSpool) -> None:
    spool = open_spool()
    small = spool.append(rec(0))
    big = spool.append(rec(1, 5000))
    after = spool.append(rec(2))
    assert small[0] < big[0] < after[0] and big[1] == 0 and after[1] == 0
    assert replay(spool) == [(small, rec(0)), (big, rec(1, 5000)), (after, rec(2))]
    spool.close()
    spool = open_spool()
    assert replay(spool) == [(small, rec(0)), (big, rec(1, 5000)), (after, rec(2))]


def test_spool_full_at_max_bytes_and_frees_after_ack(open_spool: OpenSpool, spool_dir: Path) -> None:
    spool = open_spool(max_bytes=2000)
    ids = [spool.append(rec(i)) for i in range(6)]  # 1944 bytes
    files = segment_files(spool_dir)
    with pytest.raises(SpoolFull):
        spool.append(rec(6))
    with pytest.raises(SpoolFull):
        spool.append(b"x" * 5000)  # can never fit
    assert (spool.records, spool.bytes, segment_files(spool_dir)) == (6, 6 * RECORD, files)
    for rid in ids[:PER_SEGMENT]:
        spool.ack(rid)
    assert spool.bytes == 3 * RECORD
    spool.append(rec(6))
    assert spool.bytes == disk_bytes(spool_dir) == 4 * RECORD <= 2000


def test_acknowledged_records_of_the_active_segment_are_reclaimed_when_full(open_spool: OpenSpool) -> None:
    spool = open_spool(max_bytes=1000, segment_bytes=10_000)
    for rid in [spool.append(rec(i)) for i in range(3)]:
        spool.ack(rid)
    assert spool.bytes == 3 * RECORD  # still there: the segment is active
    rid = spool.append(rec(3))
    assert rid[1] == 0 and spool.bytes == RECORD
    assert replay(spool) == [(rid, rec(3))]


def test_drop_oldest_drops_a_segment_at_a_time(open_spool: OpenSpool, spool_dir: Path) -> None:
    spool = open_spool()
    ids = [spool.append(rec(i)) for i in range(7)]  # segments 1, 2 full; 3 active with one record
    spool.ack(ids[0])
    assert spool.drop_oldest() == (2, 2 * RECORD)
    assert replay(spool)[0] == (ids[3], rec(3))
    assert spool.drop_oldest() == (3, 3 * RECORD)
    assert segment_files(spool_dir) == [f"{3:020d}.seg"]
    assert spool.drop_oldest() == (1, RECORD)  # only the active segment had data: rotated, then dropped
    assert segment_files(spool_dir) == [] and spool.records == 0 and spool.bytes == 0
    assert spool.drop_oldest() == (0, 0)
    new = spool.append(rec(7))
    assert new[0] > ids[-1][0]
    spool.ack(ids[6])  # dropped: ignored
    spool.close()
    spool = open_spool()
    assert replay(spool) == [(new, rec(7))]


def test_oldest_age_secs_follows_the_injected_clock(open_spool: OpenSpool) -> None:
    now = [1000.0]
    spool = open_spool(clock=lambda: now[0])
    assert spool.oldest_age_secs is None
    first = spool.append(b"a")
    now[0] = 1005.0
    second = spool.append(b"b")
    now[0] = 1012.5
    assert spool.oldest_age_secs == pytest.approx(12.5)
    spool.ack(first)
    assert spool.oldest_age_secs == pytest.approx(7.5)
    spool.close()
    now[0] = 1100.0
    spool = open_spool(clock=lambda: now[0])  # the write time is on disk
    assert spool.oldest_age_secs == pytest.approx(95.0)
    spool.ack(second)
    assert spool.oldest_age_secs is None


def _flip(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x40]))


def _cut(path: Path, size: int) -> None:
    os.truncate(path, size)


def _extend(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


# (damage to the last segment, whose last record starts at `last`; bytes expected cut; intact records left of 5)
TORN_TAILS: dict[str, tuple[Callable[[Path, int], None], int, int]] = {
    "cut mid-header": (lambda p, last: _cut(p, last + 10), 10, 4),
    "cut mid-payload": (lambda p, last: _cut(p, last + HEADER_BYTES + 100), HEADER_BYTES + 100, 4),
    "random garbage appended": (lambda p, last: _extend(p, random.Random(7).randbytes(500)), 500, 5),
    "zeros appended": (lambda p, last: _extend(p, bytes(4096)), 4096, 5),
    "byte flipped in last payload": (lambda p, last: _flip(p, last + HEADER_BYTES + 50), RECORD, 4),
    "byte flipped in last length": (lambda p, last: _flip(p, last + 5), RECORD, 4),
    "byte flipped in last write time": (lambda p, last: _flip(p, last + 16), RECORD, 4),  # only the header crc sees it
}


@pytest.mark.parametrize("damage", TORN_TAILS.keys())
def test_torn_tail_is_truncated_and_reported(open_spool: OpenSpool, spool_dir: Path, damage: str) -> None:
    spool = open_spool()
    ids = [spool.append(rec(i)) for i in range(5)]  # segment 1: three records, segment 2: two
    spool.close()
    last_segment = spool_dir / f"{ids[-1][0]:020d}.seg"
    corrupt, cut, intact = TORN_TAILS[damage]
    corrupt(last_segment, ids[-1][1])

    spool = open_spool()
    assert spool.recovery.truncated_bytes == cut
    assert spool.recovery.corrupt_segments == 0
    assert spool.recovery.records == intact
    assert last_segment.stat().st_size == (intact - PER_SEGMENT) * RECORD
    assert replay(spool) == [(rid, rec(i)) for i, rid in enumerate(ids[:intact])]
    new = spool.append(rec(9))
    assert new > ids[-1]
    assert spool.bytes == disk_bytes(spool_dir)
    spool.close()

    spool = open_spool()
    assert spool.recovery.truncated_bytes == 0
    assert [p for _, p in replay(spool)] == [rec(i) for i in range(intact)] + [rec(9)]


@pytest.mark.parametrize("bad_index", [0, 1])
def test_corrupt_record_in_an_older_segment_skips_its_remainder(
    open_spool: OpenSpool, spool_dir: Path, bad_index: int
) -> None:
    spool = open_spool()
    ids = [spool.append(rec(i)) for i in range(9)]
    spool.close()
    first_segment = spool_dir / f"{ids[0][0]:020d}.seg"
    _flip(first_segment, ids[bad_index][1] + HEADER_BYTES + 7)

    spool = open_spool()
    assert spool.recovery.corrupt_segments == 1
    assert spool.recovery.truncated_bytes == 0
    expected = [(rid, rec(i)) for i, rid in enumerate(ids) if i < bad_index or i >= PER_SEGMENT]
    assert replay(spool) == expected
    assert spool.records == len(expected)
    assert spool.bytes == disk_bytes(spool_dir)
    assert first_segment.exists() == (bad_index > 0)  # nothing replayable left in it: deleted
    for rid, _ in expected[: 1 if bad_index else 0]:
        spool.ack(rid)
    assert not first_segment.exists()
    spool.append(rec(9))
    spool.close()
    spool = open_spool()
    assert spool.recovery.corrupt_segments == 0


def test_a_record_corrupted_while_open_is_never_returned(open_spool: OpenSpool, spool_dir: Path) -> None:
    spool = open_spool()
    ids = [spool.append(rec(i)) for i in range(2)]
    _flip(spool_dir / f"{ids[1][0]:020d}.seg", ids[1][1] + HEADER_BYTES + 3)
    assert spool.next_after(None) == (ids[0], rec(0))
    with pytest.raises(SpoolError, match="checksum"):
        spool.next_after(ids[0])


def test_acknowledged_segments_left_by_a_crash_are_deleted_at_open(open_spool: OpenSpool, spool_dir: Path) -> None:
    spool = open_spool()
    ids = [spool.append(rec(i)) for i in range(2 * PER_SEGMENT)]
    first = spool_dir / f"{ids[0][0]:020d}.seg"
    saved = first.read_bytes()
    for rid in ids[:PER_SEGMENT]:
        spool.ack(rid)
    spool.close()
    first.write_bytes(saved)  # as if the process died between persisting the ack and deleting the file
    spool = open_spool()
    assert not first.exists()
    assert spool.recovery.records == PER_SEGMENT
    assert replay(spool) == [(rid, rec(i)) for i, rid in enumerate(ids) if i >= PER_SEGMENT]
    spool.ack(ids[PER_SEGMENT])  # the ack position moves on into the next segment
    spool.close()
    first.write_bytes(saved)
    spool = open_spool()
    assert not first.exists()
    assert replay(spool) == [(rid, rec(i)) for i, rid in enumerate(ids) if i > PER_SEGMENT]


def test_unreadable_ack_file_replays_everything_rather_than_losing(open_spool: OpenSpool, spool_dir: Path) -> None:
    spool = open_spool()
    ids = [spool.append(rec(i)) for i in range(5)]
    spool.ack(ids[0])
    spool.close()
    (spool_dir / "ack").write_bytes(b"garbage")
    spool = open_spool()
    assert [p for _, p in replay(spool)] == [rec(i) for i in range(5)]  # duplicates, not loss


def test_fsync_covers_the_record_the_new_segment_and_the_ack(
    open_spool: OpenSpool, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    spool = open_spool(fsync=True)
    rid = spool.append(rec(0))
    assert synced == ["file", "dir"]  # a new segment: its directory entry too
    synced.clear()
    spool.append(rec(1))
    assert synced == ["file"]
    synced.clear()
    spool.ack(rid)
    assert synced == ["file", "dir"]  # ack.tmp, then the rename
    spool.close()

    synced.clear()
    spool = open_spool(fsync=False)
    spool.append(rec(2))
    oldest = spool.next_after(None)
    assert oldest is not None
    spool.ack(oldest[0])
    assert synced == []


def test_a_failing_disk_leaves_the_spool_unchanged(
    open_spool: OpenSpool, spool_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = open_spool(fsync=True)
    first = spool.append(rec(0))
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(SpoolError) as failure:
        spool.append(rec(1))  # into the active segment
    assert isinstance(failure.value.__cause__, OSError) and failure.value.__cause__.errno == errno.EIO
    assert (spool.records, spool.bytes, disk_bytes(spool_dir)) == (1, RECORD, RECORD)  # partial write rolled back
    with pytest.raises(SpoolError):
        spool.append(rec(3, 2000))  # into a new segment: the file is removed again
    assert segment_files(spool_dir) == [f"{first[0]:020d}.seg"]
    with pytest.raises(SpoolError):
        spool.ack(first)
    assert spool.next_after(None) == (first, rec(0))  # the ack was not recorded

    monkeypatch.setattr(os, "fsync", real_fsync)
    second = spool.append(rec(4))
    assert replay(spool) == [(first, rec(0)), (second, rec(4))]
    spool.ack(first)
    spool.close()
    spool = open_spool()
    assert spool.recovery.truncated_bytes == 0
    assert replay(spool) == [(second, rec(4))]


def test_recovery_reads_one_chunk_at_a_time(open_spool: OpenSpool) -> None:
    spool = open_spool(max_bytes=64 << 20, segment_bytes=1 << 20)
    spool.append(os.urandom(16 << 20))
    spool.close()
    tracemalloc.start()
    try:
        spool = open_spool(max_bytes=64 << 20, segment_bytes=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert spool.recovery.records == 1
    assert peak < 4 << 20


def test_concurrent_append_and_replay_keep_order(open_spool: OpenSpool) -> None:
    spool = open_spool(max_bytes=64 << 20)
    total = 2000
    received: list[bytes] = []
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            for i in range(total):
                spool.append(rec(i, 50))
        except BaseException as exc:
            errors.append(exc)

    def consume() -> None:
        try:
            deadline = time.monotonic() + 60
            while len(received) < total and time.monotonic() < deadline:
                item = spool.next_after(None)
                if item is None:
                    time.sleep(0.0005)
                    continue
                received.append(item[1])
                spool.ack(item[0])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert errors == []
    assert received == [rec(i, 50) for i in range(total)]
    assert spool.records == 0


def _load_child() -> ModuleType:
    spec = importlib.util.spec_from_file_location("spool_crash_child", CHILD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sigkill_mid_append_loses_no_returned_record(spool_dir: Path) -> None:
    child = _load_child()
    rng = random.Random(20240601)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    kept: list[int] = []  # record numbers in the spool after the previous round, in order
    next_number, total_appended, torn = 0, 0, 0
    for round_ in range(10):
        # Even rounds: killed from here at a random time. Odd rounds: at a random write call, often mid-record.
        kill_at = [] if round_ % 2 == 0 else [str(rng.randint(1, 1500))]
        with subprocess.Popen(
            [sys.executable, str(CHILD), str(spool_dir), str(next_number), *kill_at],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        ) as proc:
            assert proc.stdout is not None
            if not kill_at:
                assert proc.stdout.readline() == b"ready\n"
                time.sleep(rng.uniform(0.0, 0.4))
                proc.send_signal(signal.SIGKILL)
            out, err = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL, err.decode()
        appended: dict[int, SpoolId] = {}
        ack_tried: set[int] = set()
        acked: set[int] = set()
        for line in out.split(b"\n")[:-1]:  # the last piece is empty or a line cut by the kill
            kind, *fields = line.decode().split() or ["ready"]
            if kind == "A":
                appended[int(fields[0])] = (int(fields[1]), int(fields[2]))
            elif kind == "K?":
                ack_tried.add(int(fields[0]))
            elif kind == "K":
                acked.add(int(fields[0]))
        total_appended += len(appended)

        spool = Spool(spool_dir, max_bytes=1 << 30, segment_bytes=64 * 1024, fsync=True)
        try:
            assert spool.recovery.corrupt_segments == 0
            torn += spool.recovery.truncated_bytes > 0
            found = replay(spool)
        finally:
            spool.close()
        numbers = [child.number(payload) for _, payload in found]
        assert numbers == sorted(set(numbers)), "records must be in order, each exactly once"
        for rid, payload in found:
            n = child.number(payload)
            assert payload == child.payload(n), f"record {n} is garbage"
            assert appended.get(n, rid) == rid
        last_printed = max(appended, default=next_number - 1)
        assert set(numbers) <= set(kept) | set(range(next_number, last_printed + 2))  # at most one unprinted
        missing = (set(kept) | set(appended)) - ack_tried - set(numbers)
        assert not missing, f"acknowledged appends lost: {sorted(missing)}"
        assert not acked & set(numbers), "acknowledged records came back"
        kept = numbers
        next_number = max([*numbers, last_printed + 1, next_number]) + 1
    assert total_appended > 0
    assert torn > 0, "no round left a torn record to recover from"
    shutil.rmtree(spool_dir)  # tens of MB


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs. Skips (fails when CI=true) if it cannot be mounted."""
    mountpoint = tmp_path / "tmpfs"
    mountpoint.mkdir()
    reason = ""
    if os.geteuid() != 0:
        reason = "mounting a tmpfs needs root"
    else:
        try:
            result = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)],
                check=False,
                capture_output=True,
                text=True,
            )
            reason = f"mount -t tmpfs failed: {result.stderr.strip()}" if result.returncode else ""
        except FileNotFoundError:
            reason = "no mount binary"
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"ENOSPC test cannot run: {reason}")
        pytest.skip(f"ENOSPC test cannot run: {reason}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


def test_enospc_raises_spool_error_and_recovers_after_acks(tiny_tmpfs: Path, open_spool: OpenSpool) -> None:
    directory = tiny_tmpfs / "spool"
    spool = open_spool(directory=directory, max_bytes=64 << 20, segment_bytes=64 * 1024, fsync=True)
    payload = b"p" * (16 * 1024)
    ids: list[SpoolId] = []
    with pytest.raises(SpoolError) as failure:
        for _ in range(200):
            ids.append(spool.append(payload))
    assert isinstance(failure.value.__cause__, OSError) and failure.value.__cause__.errno == errno.ENOSPC
    assert len(ids) > 10
    assert spool.records == len(ids)
    assert spool.bytes == disk_bytes(directory)  # the partial write was truncated away
    with pytest.raises(SpoolError):
        spool.append(payload)
    assert [rid for rid, _ in replay(spool)] == ids

    for rid in ids[:6]:  # two full segments: acknowledging them deletes their files
        spool.ack(rid)
    more = spool.append(payload)
    assert more > ids[-1]
    spool.close()
    spool = open_spool(directory=directory, max_bytes=64 << 20, segment_bytes=64 * 1024, fsync=True)
    assert (spool.recovery.truncated_bytes, spool.recovery.corrupt_segments) == (0, 0)
    assert [rid for rid, _ in replay(spool)] == [*ids[6:], more]
    spool.close()


class SpoolMachine(RuleBasedStateMachine):
    """Random append/ack/drop/reopen sequences against a list of the unacknowledged records."""

    MAX_BYTES = 1200

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="spool-machine-"))
        self.spool = self._open()
        self.model: list[tuple[SpoolId, bytes]] = []
        self.gone: list[SpoolId] = []  # acknowledged or dropped
        self.last_id: SpoolId = (0, -1)
        self.counter = 0

    def _open(self) -> Spool:
        return Spool(self.directory, max_bytes=self.MAX_BYTES, segment_bytes=400, fsync=False)

    @rule(size=st.one_of(st.integers(0, 120), st.integers(0, 700)))  # mostly several per segment, some bigger
    def append(self, size: int) -> None:
        self.counter += 1
        payload = self.counter.to_bytes(4, "big") * (size // 4 + 1)
        payload = payload[:size]
        try:
            rid = self.spool.append(payload)
        except SpoolFull:
            assert self.spool.bytes + HEADER_BYTES + size > self.MAX_BYTES
            return
        assert rid > self.last_id
        self.last_id = rid
        self.model.append((rid, payload))

    @precondition(lambda self: self.model)
    @rule()
    def ack_oldest(self) -> None:
        rid, _ = self.model.pop(0)
        self.spool.ack(rid)
        self.gone.append(rid)

    @precondition(lambda self: self.gone)
    @rule(data=st.data())
    def ack_stale(self, data: st.DataObject) -> None:
        self.spool.ack(data.draw(st.sampled_from(self.gone)))

    @rule()
    def drop_oldest(self) -> None:
        dropped = self.spool.drop_oldest()
        if not self.model:
            assert dropped == (0, 0)
            return
        segment = self.model[0][0][0]
        gone = [item for item in self.model if item[0][0] == segment]
        assert dropped == (len(gone), sum(HEADER_BYTES + len(p) for _, p in gone))
        self.model = self.model[len(gone) :]
        self.gone.extend(rid for rid, _ in gone)

    @rule()
    def reopen(self) -> None:
        self.spool.close()
        self.spool = self._open()
        recovery = self.spool.recovery
        assert (recovery.truncated_bytes, recovery.corrupt_segments) == (0, 0)
        assert recovery.records == len(self.model)
        assert recovery.bytes == sum(HEADER_BYTES + len(p) for _, p in self.model)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def look_ahead(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.model) - 1))
        following = self.spool.next_after(self.model[i][0])
        assert following == (self.model[i + 1] if i + 1 < len(self.model) else None)

    @invariant()
    def matches_the_model(self) -> None:
        assert self.spool.records == len(self.model)
        assert replay(self.spool) == self.model
        assert self.spool.bytes == disk_bytes(self.directory) <= self.MAX_BYTES
        on_disk = [int(name[:20]) for name in segment_files(self.directory)]
        live = {rid[0] for rid, _ in self.model}
        assert set(on_disk[:-1]) <= live  # only the newest (possibly active) file may hold no live record

    def teardown(self) -> None:
        self.spool.close()
        shutil.rmtree(self.directory)


TestSpoolMachine = SpoolMachine.TestCase
TestSpoolMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
