"""The on-disk spool: batches the Loki sender could not deliver, kept until they are acknowledged.

The spool owns one directory. Records (opaque payload bytes) are appended to segment files named
`<20-digit number>.seg`; a segment is closed ("rotated") once the next record would take it past
`segment_bytes`, so a record larger than a segment gets a segment of its own. Each record has a 24-byte header
with checksums of the payload and of itself (`spoolformat`), so a torn header is never trusted. The
acknowledged position (segment number, offset just after the last acknowledged record) lives in the file `ack`,
written as `ack.tmp` + fsync + `os.replace` + directory fsync. A spare `ack.tmp` is kept allocated so that an
acknowledgement, which is what frees space, still works on a full disk.

A record's id is `(segment number, byte offset)`; ids only grow, across reopens too (unless the ack file is lost
while no segment file is left: numbering then restarts).

Not guaranteed: with `fsync=False` the format is the same but nothing is fsynced, so data survives the process
being killed (the page cache does) but not an OS crash or power loss. A record corrupted on disk after the spool
was opened makes the read raise `SpoolError`; the next open skips it as a corrupt segment. Opening reads and
verifies every unacknowledged record, one at a time.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from logpipe.sinks import spoolformat
from logpipe.sinks.spoolformat import HEADER_BYTES

log = logging.getLogger(__name__)

SpoolId = tuple[int, int]


class SpoolFull(Exception):
    """Appending the record would take the spool past `max_bytes`; nothing was written."""


class SpoolError(Exception):
    """The disk refused (ENOSPC, EIO, ...) or returned a corrupt record; `__cause__` holds the OSError if any.

    A failed append or ack leaves the spool as it was: the record is not stored, the ack is not recorded.
    """


@dataclass(frozen=True)
class Recovery:
    """What opening the spool found."""

    records: int  # unacknowledged records available for replay
    bytes: int  # their size on disk, headers included
    truncated_bytes: int  # torn or garbage tail cut off the last segment
    corrupt_segments: int  # older segments with a bad record before their end (skipped from there on)


@dataclass
class _Segment:
    number: int
    size: int  # end of the last valid record: reading stops here, the next append goes here
    disk_size: int  # bytes the file occupies (more than size when a corrupt remainder is skipped)
    records: int  # unacknowledged records in this segment
    fd: int = -1  # open for writing while this is the active segment


def _name(number: int) -> str:
    return f"{number:020d}.seg"


class Spool:
    """Durable FIFO of opaque records, acknowledged strictly oldest-first.

    Thread-safe through one lock, which is held across fsyncs: a slow disk delays readers and ackers too.
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        segment_bytes: int,
        fsync: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Create the directory if needed and recover what is in it (see `recovery`).

        A torn or garbage tail is truncated and reported, never raised. Raises SpoolError when the directory
        cannot be created, listed or read. Records before the persisted ack position are never replayed again;
        if the ack file itself is unreadable every segment is replayed (duplicates rather than loss).
        Appends after opening always go to a new segment.
        """
        if max_bytes <= 0 or segment_bytes <= 0:
            raise ValueError("max_bytes and segment_bytes must be > 0")
        self._dir = Path(directory)
        self._max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._fsync = fsync
        self._clock = clock
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []  # oldest first; every one but the active holds unacked records
        self._active: _Segment | None = None
        self._head_off = 0  # offset of the oldest unacknowledged record in _segments[0]
        self._records = 0
        self._disk_bytes = 0
        self._next_number = 1
        self._closed = False
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            self.recovery = self._recover()
        except OSError as exc:
            raise SpoolError(f"cannot open spool in {self._dir}: {exc}") from exc
        self._prepare_spare_ack()

    def append(self, payload: bytes) -> SpoolId:
        """Store payload as the newest record and return its id.

        With fsync=True the record is on stable storage when this returns (file fsync, plus a directory fsync
        when it opened a new segment). Raises SpoolFull if the on-disk size would exceed max_bytes, SpoolError
        if the disk refused; in both cases nothing was stored (a partial write is truncated away). A payload
        over spoolformat.MAX_PAYLOAD (~2 GiB) raises ValueError.
        """
        if len(payload) > spoolformat.MAX_PAYLOAD:
            raise ValueError(f"payload of {len(payload)} bytes is over the {spoolformat.MAX_PAYLOAD} bytes limit")
        size = HEADER_BYTES + len(payload)
        with self._lock:
            self._check_open()
            if self._disk_bytes + size > self._max_bytes and self._active is not None and not self._records:
                self._seal_active()  # it holds only acknowledged records: reclaim them before refusing
            if self._disk_bytes + size > self._max_bytes:
                raise SpoolFull(f"spool full: bytes={self._disk_bytes} record={size} max_bytes={self._max_bytes}")
            head = spoolformat.HEAD.pack(
                spoolformat.MAGIC, len(payload), zlib.crc32(payload), max(0, int(self._clock() * 1e9))
            )
            record = head + struct.pack("<I", zlib.crc32(head)) + payload
            active, fresh = self._active, False
            if active is None or (active.size > 0 and active.size + size > self._segment_bytes):
                active, fresh = self._create_segment(), True
            offset = active.size
            try:
                spoolformat.pwrite(active.fd, record, offset)
                if self._fsync:
                    os.fsync(active.fd)
                    if fresh:
                        spoolformat.fsync_dir(self._dir)
            except OSError as exc:
                self._roll_back(active, fresh)
                raise SpoolError(f"spool append failed: segment={active.number} error={exc}") from exc
            if fresh:
                self._seal_active()
                self._segments.append(active)
                self._active = active
            active.size = active.disk_size = offset + size
            active.records += 1
            self._records += 1
            self._disk_bytes += size
            return (active.number, offset)

    def next_after(self, rid: SpoolId | None) -> tuple[SpoolId, bytes] | None:
        """Return the oldest unacknowledged record after rid (None, or an acknowledged id: the oldest of all).

        Returns None when there is nothing after rid. rid must be an id this spool returned, else ValueError.
        The payload is read from disk and verified; a corrupt one raises SpoolError.
        """
        with self._lock:
            self._check_open()
            found = self._locate_after(rid)
            if found is None:
                return None
            segment, offset = found
            return (segment.number, offset), self._read(segment, offset, True)[2]

    def ack(self, rid: SpoolId) -> None:
        """Acknowledge rid, which must be the oldest unacknowledged record (ValueError otherwise).

        An id already acknowledged or dropped is ignored. The new position is persisted (durable when this
        returns if fsync=True) before memory changes; on SpoolError nothing changed. A segment that is fully
        acknowledged and no longer written to is deleted.
        """
        with self._lock:
            self._check_open()
            head_id = (self._segments[0].number, self._head_off) if self._segments else (self._next_number, 0)
            if rid < head_id:
                return
            head = self._segments[0] if self._segments else None
            if head is None or rid != head_id or head.records == 0:
                raise ValueError(f"ack out of order: {rid} is not the oldest unacknowledged record {head_id}")
            length = self._read(head, self._head_off, False)[0]
            end = self._head_off + HEADER_BYTES + length
            self._persist_ack((head.number, end))
            head.records -= 1
            self._records -= 1
            self._head_off = end
            if head.records == 0 and head is not self._active:
                self._forget_head()

    def drop_oldest(self) -> tuple[int, int]:
        """Drop every unacknowledged record of the oldest segment; return (records, bytes incl. headers).

        If that segment is the active one it is rotated first, so later appends go to a new segment.
        Returns (0, 0) when there is nothing to drop. Persisted like an ack; on SpoolError nothing was dropped.
        """
        with self._lock:
            self._check_open()
            if not self._records:
                return (0, 0)
            head = self._segments[0]
            dropped = (head.records, head.size - self._head_off)
            self._persist_ack((head.number, head.size))
            if head is self._active:
                self._seal_active()
            self._records -= head.records
            head.records = 0
            self._forget_head()
            log.warning("Spool dropped its oldest segment. segment=%d records=%d bytes=%d", head.number, *dropped)
            return dropped

    @property
    def records(self) -> int:
        """Unacknowledged records."""
        with self._lock:
            return self._records

    @property
    def oldest_age_secs(self) -> float | None:
        """Seconds since the oldest unacknowledged record was written, never negative.

        None when there is none or the spool is closed. Both ends come from the injected clock (the write time
        is stored in the record), so a clock step or a different clock after a restart skews it.
        """
        with self._lock:
            if self._closed or not self._records:
                return None
            written_ns = self._read(self._segments[0], self._head_off, False)[1]
            return max(0.0, self._clock() - written_ns / 1e9)

    def close(self) -> None:
        """Close the files. Idempotent; every other method except the size properties then raises RuntimeError."""
        with self._lock:
            self._closed = True
            if self._active is not None:
                os.close(self._active.fd)
                self._active.fd = -1
                self._active = None

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("spool is closed")

    def _recover(self) -> Recovery:
        ack_segment, ack_offset = self._read_ack()
        numbers = sorted(int(m.group(1)) for name in os.listdir(self._dir) if (m := spoolformat.SEGMENT.match(name)))
        self._next_number = max([ack_segment, *numbers]) + 1
        truncated = corrupt = replay_bytes = 0
        for number in numbers:
            path = self._dir / _name(number)
            if number < ack_segment:
                self._unlink(path)  # fully acknowledged; its deletion was interrupted
                continue
            start = ack_offset if number == ack_segment else 0
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            try:
                disk_size = os.fstat(fd).st_size
                end, records, problem = spoolformat.scan(fd, start, disk_size)
                if problem and number == numbers[-1]:
                    os.ftruncate(fd, end)
                    if self._fsync:
                        os.fsync(fd)
                    truncated, disk_size = truncated + disk_size - end, end
                elif problem:
                    corrupt += 1
            finally:
                os.close(fd)
            if problem:
                log.warning("Spool found a bad record. segment=%d offset=%d reason=%s", number, end, problem)
            if not records:
                self._unlink(path)
                continue
            if not self._segments:
                self._head_off = start
            self._segments.append(_Segment(number, end, disk_size, records))
            self._records += records
            self._disk_bytes += disk_size
            replay_bytes += end - start
        recovery = Recovery(self._records, replay_bytes, truncated, corrupt)
        if self._records or truncated or corrupt:
            log.info("Spool recovered. %s", recovery)
        return recovery

    def _read_ack(self) -> SpoolId:
        try:
            raw = (self._dir / spoolformat.ACK_FILE).read_bytes()
        except FileNotFoundError:
            return (0, 0)
        if len(raw) == spoolformat.ACK.size:
            magic, segment, offset, crc = spoolformat.ACK.unpack(raw)
            if magic == spoolformat.ACK_MAGIC and crc == zlib.crc32(raw[:-4]):
                return (segment, offset)
        log.error("Spool ack file unreadable; replaying every segment (duplicates possible). dir=%s", self._dir)
        return (0, 0)

    def _persist_ack(self, position: SpoolId) -> None:
        body = spoolformat.ACK.pack(spoolformat.ACK_MAGIC, position[0], position[1], 0)[:-4]
        raw = body + struct.pack("<I", zlib.crc32(body))
        tmp = self._dir / spoolformat.ACK_TMP
        try:
            # No O_TRUNC: overwriting the spare's already allocated block needs no free space.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                spoolformat.pwrite(fd, raw, 0)
                os.ftruncate(fd, len(raw))
                if self._fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self._dir / spoolformat.ACK_FILE)
            if self._fsync:
                spoolformat.fsync_dir(self._dir)
        except OSError as exc:
            raise SpoolError(f"cannot persist the spool ack position: {exc}") from exc
        self._prepare_spare_ack()

    def _prepare_spare_ack(self) -> None:
        with contextlib.suppress(OSError):  # already there, or no room: the next ack writes it
            fd = os.open(self._dir / spoolformat.ACK_TMP, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                spoolformat.pwrite(fd, bytes(spoolformat.ACK.size), 0)
            finally:
                os.close(fd)

    def _create_segment(self) -> _Segment:
        path = self._dir / _name(self._next_number)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise SpoolError(f"cannot create spool segment {path}: {exc}") from exc
        self._next_number += 1
        return _Segment(self._next_number - 1, 0, 0, 0, fd)

    def _roll_back(self, segment: _Segment, fresh: bool) -> None:
        if fresh:
            os.close(segment.fd)
            self._unlink(self._dir / _name(segment.number))
            return
        try:
            os.ftruncate(segment.fd, segment.size)
        except OSError as exc:
            # Garbage may stay past segment.size (uncounted in bytes until reopen); never write after it.
            log.error("Spool could not roll back a failed append. segment=%d error=%s", segment.number, exc)
            self._seal_active()

    def _seal_active(self) -> None:
        active, self._active = self._active, None
        if active is None:
            return
        os.close(active.fd)
        active.fd = -1
        if active.records == 0:
            self._forget_head()  # only ever the sole segment: acks are in order

    def _forget_head(self) -> None:
        head = self._segments.pop(0)
        self._head_off = 0
        self._disk_bytes -= head.disk_size
        self._unlink(self._dir / _name(head.number))

    def _unlink(self, path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            # Harmless to leave: the ack position already covers it, and the next open deletes it.
            log.warning("Spool could not delete an acknowledged segment. path=%s error=%s", path, exc)

    def _locate_after(self, rid: SpoolId | None) -> tuple[_Segment, int] | None:
        if not self._segments:
            return None
        index, offset = 0, self._head_off
        if rid is not None and rid >= (self._segments[0].number, self._head_off):
            index = bisect.bisect_left(self._segments, rid[0], key=lambda s: s.number)
            if index == len(self._segments) or self._segments[index].number != rid[0]:
                raise ValueError(f"{rid} is not a record of this spool")
            segment = self._segments[index]
            if rid[1] >= segment.size:
                raise ValueError(f"{rid} is not a record of this spool")
            offset = rid[1] + HEADER_BYTES + self._read(segment, rid[1], False)[0]
        if offset >= self._segments[index].size:
            index, offset = index + 1, 0
        return (self._segments[index], offset) if index < len(self._segments) else None

    def _read(self, segment: _Segment, offset: int, payload: bool) -> tuple[int, int, bytes]:
        """Return (payload length, write time ns, payload if asked for) of a verified record."""
        try:
            fd = segment.fd if segment.fd >= 0 else os.open(self._dir / _name(segment.number), os.O_RDONLY)
            try:
                length, crc, time_ns = spoolformat.parse_header(os.pread(fd, HEADER_BYTES, offset))
                data = os.pread(fd, length, offset + HEADER_BYTES) if payload else b""
            finally:
                if fd != segment.fd:
                    os.close(fd)
            if payload and (len(data) != length or zlib.crc32(data) != crc):
                raise spoolformat.Corrupt("payload checksum mismatch")
        except (OSError, spoolformat.Corrupt) as exc:
            raise SpoolError(f"cannot read spool record ({segment.number}, {offset}): {exc}") from exc
        return length, time_ns, data

    # Last in the class: below it, `bytes` in an annotation would name this property.
    @property
    def bytes(self) -> int:
        """Bytes the segment files occupy, acknowledged-but-not-yet-deleted parts included (what max_bytes bounds).

        The small ack file is not counted.
        """
        with self._lock:
            return self._disk_bytes
