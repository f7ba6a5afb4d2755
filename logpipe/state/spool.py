"""The spool: batches the Loki sink could not deliver, kept in the state database until Loki has them.

Records are opaque payloads with their entry count, replayed oldest-first by id (ids only grow). A record is
inserted in the same transaction as the cursor advance of its lines (`Checkpoint.commit(with_record=...)`), and
deleted in the same transaction as the end of the intent of its replay (`Spool.delivered`). `max_bytes` bounds
the payload bytes held; the database file may be somewhat larger (SQLite pages, the WAL), and reuses the space of
delivered records for new ones.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import zlib
from collections.abc import Callable

from logpipe.state.store import FREE_MARGIN_BYTES, StateFull, Store


class SpoolFull(Exception):
    """The record would take the spool past `max_bytes`; nothing was written."""


class SpoolCorrupt(Exception):
    """A record's payload no longer matches the checksum it was written with (the disk changed it)."""

    def __init__(self, rid: int, entries: int) -> None:
        super().__init__(f"spool record {rid} is corrupt ({entries} entries)")
        self.rid = rid
        self.entries = entries


class Spool:
    """Thread-safe. Counts are kept in memory (for gauges and the full check), the records on disk."""

    def __init__(self, store: Store, max_bytes: int, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self.max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        (records, payload_bytes, entries) = store.query(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0), COALESCE(SUM(entries), 0) FROM spool"
        )[0]
        self.records = int(records)  # type: ignore[call-overload]
        self.payload_bytes = int(payload_bytes)  # type: ignore[call-overload]
        self.entries = int(entries)  # type: ignore[call-overload]

    def inserter(self, payload: bytes, entries: int) -> Callable[[sqlite3.Connection], int]:
        """The insert of one record, to run inside a checkpoint commit. Raises SpoolFull there when it does not
        fit; call `inserted` once the commit succeeded."""

        def insert(db: sqlite3.Connection) -> int:
            with self._lock:
                if self.payload_bytes + len(payload) > self.max_bytes:
                    raise SpoolFull(
                        f"spool full: bytes={self.payload_bytes} record={len(payload)} max_bytes={self.max_bytes}"
                    )
            # Delivered records leave free pages in the database, which new records reuse: they count as room.
            free = self._store.free_bytes() + self._store.unused_bytes(db)
            if free < 2 * len(payload) + FREE_MARGIN_BYTES:
                raise StateFull(
                    f"disk nearly full: {free} bytes free, keeping {FREE_MARGIN_BYTES} for acknowledgements"
                )
            cursor = db.execute(
                "INSERT INTO spool (written_ns, entries, payload, crc) VALUES (?, ?, ?, ?)",
                (int(self._clock() * 1e9), entries, payload, zlib.crc32(payload)),
            )
            return int(cursor.lastrowid or 0)

        return insert

    def inserted(self, payload: bytes, entries: int) -> None:
        with self._lock:
            self.records += 1
            self.payload_bytes += len(payload)
            self.entries += entries

    def next_after(self, rid: int | None) -> tuple[int, bytes] | None:
        """The oldest record after `rid` (None: the oldest of all), or None. Raises SpoolCorrupt when its payload
        fails its checksum (the caller drops it: `delivered` deletes it like any other)."""
        rows = self._store.query(
            "SELECT id, payload, crc, entries FROM spool WHERE id > ? ORDER BY id LIMIT 1",
            (-1 if rid is None else rid,),
        )
        if not rows:
            return None
        rid_, payload, crc, entries = rows[0]
        data = bytes(payload)  # type: ignore[call-overload]
        if crc is not None and zlib.crc32(data) != crc:
            raise SpoolCorrupt(int(rid_), int(entries))  # type: ignore[call-overload]
        return int(rid_), data  # type: ignore[call-overload]

    def delivered(self, rid: int, intent_id: int | None = None) -> bool:
        """The record is in Loki: delete it, and the intent of its replay, in one transaction. False when it was
        gone already (dropped by the full policy meanwhile)."""

        def delete(db: sqlite3.Connection) -> tuple[int, int] | None:
            if intent_id is not None:
                db.execute("DELETE FROM intents WHERE id = ?", (intent_id,))
            row = db.execute("SELECT LENGTH(payload), entries FROM spool WHERE id = ?", (rid,)).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM spool WHERE id = ?", (rid,))
            return int(row[0]), int(row[1])

        found = self._store.write(delete, frees_space=True)
        if found is None:
            return False
        self._forget(1, *found)
        return True

    def drop_oldest(self, fraction: float = 0.125) -> tuple[int, int]:
        """Delete the oldest records, at least one and about `fraction` of `max_bytes`; return (records, entries)
        dropped. Used by the `drop_oldest` full policy."""
        want = max(1, int(self.max_bytes * fraction))

        def drop(db: sqlite3.Connection) -> tuple[int, int, int]:
            records = payload = entries = 0
            last = None
            for rid, size, count in db.execute("SELECT id, LENGTH(payload), entries FROM spool ORDER BY id"):
                records, payload, entries, last = records + 1, payload + size, entries + count, rid
                if payload >= want:
                    break
            if last is not None:
                db.execute("DELETE FROM spool WHERE id <= ?", (last,))
            return records, payload, entries

        records, payload, entries = self._store.write(drop, frees_space=True)
        self._forget(records, payload, entries)
        return records, entries

    def oldest_age_secs(self) -> float | None:
        """Seconds since the oldest record was written (never negative), or None when the spool is empty."""
        rows = self._store.query("SELECT written_ns FROM spool ORDER BY id LIMIT 1")
        if not rows:
            return None
        written: int = rows[0][0]  # type: ignore[assignment]
        return max(0.0, self._clock() - written / 1e9)

    @property
    def bytes(self) -> int:
        """Bytes the state database occupies on disk (the spool is nearly all of it when it holds anything)."""
        return self._store.file_bytes()

    def _forget(self, records: int, payload: int, entries: int) -> None:
        with self._lock:
            self.records -= records
            self.payload_bytes -= payload
            self.entries -= entries
