"""The spool as the Loki sink uses it: spill what Loki will not take, replay it oldest-first when it will.

Only lanes that are failing (Loki unreachable, 429, 5xx) are spilled, and only when the in-memory budget is
exhausted; a lane that is merely slow is held back by backpressure instead, because Docker keeps its logs. A
spill stores the batch and advances its cursors in one transaction (`State.spill`), so "acknowledged" means "in
Loki or in the spool" and a crash never leaves a batch both spooled and unacknowledged. When the spool is full
(or the disk refuses), the configured policy applies: `block` stops spilling (backpressure reaches the Docker
readers, and nothing is lost while Docker retains the logs) or `drop_oldest` discards the oldest spooled batches,
counted. Replays of one record at a time back off on failure like a lane.
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
from logpipe.sinks.lanes import Batch, Entry
from logpipe.state import State, StateError
from logpipe.state.spool import SpoolCorrupt, SpoolFull
from logpipe.telemetry import Telemetry

log = logging.getLogger("logpipe.spool")

_COUNT = struct.Struct("<I")  # entries in the record, readable without decompressing the rest
_NO_POSITION = (0, 0)


def pack(entries: list[Entry]) -> bytes:
    """The entries to ship, for the spool (`PASSED` entries have done their work once the spill commits)."""
    rows = [[ts, line, md, [list(pair) for pair in labels]] for ts, line, md, labels, _p, _s in entries if labels]
    return _COUNT.pack(len(rows)) + zlib.compress(orjson.dumps(rows), 1)


def unpack(payload: bytes) -> list[Entry]:
    rows: Any = orjson.loads(zlib.decompress(payload[_COUNT.size :]))
    out: list[Entry] = []
    for ts, line, metadata, labels in rows:
        key = tuple((str(k), str(v)) for k, v in labels)
        out.append((int(ts), str(line), metadata, key, _NO_POSITION, len(line) + 64))
    return out


class ReplaySource:
    """Thread-safe. `ready` answers from memory (the dispatcher asks it under the lanes' lock); every other
    method reads or writes the state database and must be called without that lock."""

    def __init__(self, state: State, policy: str, telemetry: Telemetry) -> None:
        self._state = state
        self._policy = policy
        self._telemetry = telemetry
        self._warn = RateLimitedLog(log)
        self._lock = threading.Lock()
        self._blocked_until = 0.0
        self.replaying: int | None = None
        self.retry_at = 0.0
        self.failures = 0

    def can_spill(self) -> bool:
        return time.monotonic() >= self._blocked_until

    def spill(self, batch: Batch) -> bool:
        """Store the batch and advance its cursors together. False when the spool is full (or the disk refuses)
        under the block policy: the batch stays in the lanes."""
        payload = pack(batch.entries)
        count = _COUNT.unpack_from(payload)[0]
        for _ in range(3):
            try:
                self._state.spill(payload, count, batch.advances())
                self._telemetry.entries_spooled(count)
                return True
            except (SpoolFull, StateError) as exc:
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

    def ready(self) -> bool:
        """Whether `next` may have a record (one is waiting, none replaying, its backoff over). No disk I/O."""
        return self._state.spool.records > 0 and self.replaying is None and time.monotonic() >= self.retry_at

    def next(self) -> tuple[int, list[Entry]] | None:
        """The oldest spooled batch, if none is being replayed and its backoff is over."""
        with self._lock:
            if self.replaying is not None or time.monotonic() < self.retry_at:
                return None
            while True:
                try:
                    found = self._state.spool.next_after(None)
                    if found is None:
                        return None
                    rid, payload = found
                    try:
                        entries = unpack(payload)
                    except (zlib.error, orjson.JSONDecodeError, ValueError, TypeError, struct.error) as exc:
                        count = _COUNT.unpack_from(payload)[0] if len(payload) >= _COUNT.size else 0
                        raise SpoolCorrupt(rid, count) from exc
                except SpoolCorrupt as exc:
                    # The disk changed the record: it can never be replayed. Drop it, count and say what was lost,
                    # and go on with the next one (instead of stopping at it for good).
                    try:
                        if self._state.spool.delivered(exc.rid):
                            log.error("spool record corrupt; its entries are lost", extra={"error": str(exc)})
                            self._telemetry.entries_dropped("spool_corrupt", exc.entries)
                        continue
                    except StateError:
                        self.retry_at = time.monotonic() + 5.0  # it could not be deleted: try again later
                        return None
                except StateError as exc:
                    self._warn.warning(f"spool unreadable: {exc}", key="unreadable")
                    self.retry_at = time.monotonic() + 5.0
                    return None
                self.replaying = rid
                return rid, entries

    def delivered(self, rid: int, intent_id: int | None = None) -> None:
        """The record is in Loki: delete it with its replay's intent (one transaction)."""
        try:
            self._state.spool.delivered(rid, intent_id)
        except StateError as exc:
            self._warn.warning(f"cannot record a replayed batch as done: {exc}", key="ack")
        with self._lock:
            if self.replaying == rid:
                self.replaying = None
            self.failures = 0
            self.retry_at = 0.0

    def failed(self, rid: int, delay_secs: float) -> None:
        with self._lock:
            if self.replaying == rid:
                self.replaying = None
            self.failures += 1
            self.retry_at = time.monotonic() + delay_secs

    def resolved(self, rid: int, intent_id: int) -> None:
        """A replay found delivered by reading Loki back after a restart."""
        try:
            self._state.spool.delivered(rid, intent_id)
        except StateError as exc:
            self._warn.warning(f"cannot record a replayed batch as done: {exc}", key="ack")

    def _drop_oldest(self) -> bool:
        try:
            records, entries = self._state.spool.drop_oldest()
        except StateError:
            return False
        self._telemetry.entries_dropped("spool_full", entries)
        return records > 0
