"""The disk spool as the sender uses it: spill what Loki will not take, replay it oldest-first when it will.

Only lanes that are failing (Loki unreachable, 429, 5xx) are spilled, and only when the in-memory budget is
exhausted; a lane that is merely slow is held back by backpressure instead, because Docker keeps its logs. A
spilled batch is durable on disk before the lanes drop it and before the cursors advance, so "acknowledged"
means "in Loki or in the spool". When the spool is full (or the disk refuses), the configured policy applies:
`block` stops spilling (backpressure reaches the Docker readers, and nothing is lost while Docker retains the
logs) or `drop_oldest` discards the oldest spooled batches, counted.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
import zlib
from typing import Any

import orjson

from logpipe.ratelimit import RateLimitedLog
from logpipe.sinks.lanes import Entry
from logpipe.sinks.spool import Spool, SpoolError, SpoolFull, SpoolId
from logpipe.telemetry import Telemetry

log = logging.getLogger("logpipe.spool")

_COUNT = struct.Struct("<I")  # entries in the record, readable without decompressing the rest
_NO_POSITION = (0, 0)


def pack(entries: list[Entry]) -> bytes:
    rows = [[ts, line, metadata, [list(pair) for pair in labels]] for ts, line, metadata, labels, _p, _s in entries]
    return _COUNT.pack(len(entries)) + zlib.compress(orjson.dumps(rows), 1)


def unpack(payload: bytes) -> list[Entry]:
    rows: Any = orjson.loads(zlib.decompress(payload[_COUNT.size :]))
    out: list[Entry] = []
    for ts, line, metadata, labels in rows:
        key = tuple((str(k), str(v)) for k, v in labels)
        out.append((int(ts), str(line), metadata, key, _NO_POSITION, len(line) + 64))
    return out


def count(payload: bytes) -> int:
    return int(_COUNT.unpack_from(payload)[0])


class Overflow:
    """Thread-safe wrapper over `Spool` with the full policy and the replay backoff.

    `ready` answers from memory, without touching the disk, so the sender may ask it under its busiest lock; every
    other method may read or fsync the spool and must be called without that lock.
    """

    def __init__(self, spool: Spool, policy: str, telemetry: Telemetry) -> None:
        self.spool = spool
        self._policy = policy
        self._telemetry = telemetry
        self._blocked_until = 0.0
        self._warn = RateLimitedLog(log)
        self.replaying: SpoolId | None = None
        # Serialises acks with drop_oldest, which reads the head segment and then drops it, and guards the state.
        self._head_lock = threading.Lock()
        self._dropped_through: SpoolId | None = None  # the last record drop_oldest removed
        self._records = spool.records  # a count kept in memory, for `ready`
        self.retry_at = 0.0
        self.failures = 0

    def ready(self) -> bool:
        """Whether `next` may have a record to hand out (no replay under way, its backoff over). No disk I/O."""
        return self._records > 0 and self.replaying is None and time.monotonic() >= self.retry_at

    def can_spill(self) -> bool:
        return time.monotonic() >= self._blocked_until

    def spill(self, entries: list[Entry]) -> bool:
        """Write entries durably. False when the spool is full (or the disk refuses) under the block policy."""
        payload = pack(entries)
        for _ in range(3):
            try:
                self.spool.append(payload)
                with self._head_lock:
                    self._records += 1
                self._telemetry.entries_spooled(len(entries))
                return True
            except (SpoolFull, SpoolError) as exc:
                why = "full" if isinstance(exc, SpoolFull) else f"disk refused: {exc}"
                if self._policy != "drop_oldest" or not self._drop_oldest():
                    self._warn.warning(
                        f"spool {why}; holding entries in memory (backpressure to Docker)",
                        key="full",
                        policy=self._policy,
                    )
                    self._blocked_until = time.monotonic() + 1.0
                    return False
                self._warn.warning(f"spool {why}; dropped its oldest batches", key="dropped", policy=self._policy)
        self._blocked_until = time.monotonic() + 1.0
        return False

    def next(self) -> tuple[SpoolId, list[Entry]] | None:
        """The oldest spooled batch, if none is being replayed and its backoff is over (reads the disk)."""
        with self._head_lock:
            if self.replaying is not None or time.monotonic() < self.retry_at:
                return None
            try:
                found = self.spool.next_after(None)
            except SpoolError as exc:
                self._warn.warning(f"spool unreadable: {exc}", key="unreadable")
                self.retry_at = time.monotonic() + 5.0
                return None
            if found is None:
                self._records = 0
                return None
            rid, payload = found
            self.replaying = rid
        return rid, unpack(payload)

    def delivered(self, rid: SpoolId) -> None:
        """The record is in Loki: acknowledge it in the spool (an fsync)."""
        with self._head_lock:
            if self._dropped_through is None or rid > self._dropped_through:  # else drop_oldest removed it
                try:
                    self.spool.ack(rid)
                    self._records = max(self._records - 1, 0)
                except (SpoolError, ValueError) as exc:
                    self._warn.warning(f"cannot record a replayed batch as done: {exc}", key="ack")
            if self.replaying == rid:
                self.replaying = None
            self.failures = 0
            self.retry_at = 0.0

    def failed(self, rid: SpoolId, delay_secs: float) -> None:
        with self._head_lock:
            if self.replaying == rid:
                self.replaying = None
            self.failures += 1
            self.retry_at = time.monotonic() + delay_secs

    def resolved(self, rid: SpoolId) -> None:
        """A replay found delivered by reading Loki back after a restart."""
        with self._head_lock:
            found = self.spool.next_after(None)
            if found is not None and found[0] == rid:
                self.spool.ack(rid)
                self._records = max(self._records - 1, 0)

    def _drop_oldest(self) -> bool:
        with self._head_lock:
            return self._drop_head_segment()

    def _drop_head_segment(self) -> bool:
        first = self.spool.next_after(None)
        if first is None:
            return False
        segment = first[0][0]
        entries = 0
        cursor: SpoolId | None = None
        while (found := self.spool.next_after(cursor)) is not None and found[0][0] == segment:
            entries += count(found[1])
            cursor = found[0]
        records, _ = self.spool.drop_oldest()
        self._records = max(self._records - records, 0)
        # A replay of a dropped record may still be in flight: `replaying` stays set until it ends, so the next
        # record is not handed out twice meanwhile; its ack is then skipped.
        if cursor is not None:
            self._dropped_through = cursor
        self._telemetry.entries_dropped("spool_full", entries)
        return records > 0
