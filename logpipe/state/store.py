"""The one durable store: an SQLite database in WAL mode holding cursors, push intents and the spool.

One file, `state.db`, so that "these entries are in the spool" and "their lines are acknowledged" commit in one
transaction: a crash can no longer leave a batch both in the spool and unacknowledged (replayed *and* read again
from Docker). With `fsync` on, each commit is durable when it returns (`synchronous=FULL`: one fsync of the WAL).

A full disk makes SQLite refuse a write (`StateFull`); the transaction is rolled back and nothing changed. Even a
delete needs room in the WAL, so the store keeps a small reserve file (`state.reserve`) that it gives up when a
write finds the disk full, and takes back once there is room again: acknowledging (which frees spool space) keeps
working on a full disk. A database SQLite cannot read is set aside (never deleted) and a new one started.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

log = logging.getLogger("logpipe.state")

T = TypeVar("T")

SCHEMA_VERSION = 1
RESERVE_BYTES = 256 * 1024
WAL_PAGES = 256  # 1 MiB of 4 KiB pages
#: Free disk space a spill leaves at least (beyond twice its own size): room for the WAL, so that acknowledging
#: spooled batches (what frees room) never finds the disk full because of the spool itself.
FREE_MARGIN_BYTES = 2 * WAL_PAGES * 4096 + RESERVE_BYTES

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS containers (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, origin INTEGER NOT NULL, gone INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS cursors (
    container TEXT NOT NULL, stream TEXT NOT NULL, ts INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (container, stream));
CREATE TABLE IF NOT EXISTS intents (id INTEGER PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY AUTOINCREMENT, written_ns INTEGER NOT NULL, entries INTEGER NOT NULL,
    payload BLOB NOT NULL, crc INTEGER);
"""


class StateError(Exception):
    """The disk refused (EIO, read-only, ...) or the database is unusable; the transaction was rolled back."""


class StateFull(StateError):
    """The disk is full; the transaction was rolled back."""


class Store:
    """Thread-safe: one connection, one lock. `write()` is the only way to write."""

    def __init__(self, directory: Path, fsync: bool = True) -> None:
        self.directory = Path(directory)
        self.path = self.directory / "state.db"
        self._reserve = self.directory / "state.reserve"
        self._fsync = fsync
        self._lock = threading.RLock()
        self.created = False  # the database did not exist before this open
        self._reserve_missing = True
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._db = self._open()
        except (OSError, sqlite3.Error) as exc:
            raise StateError(f"cannot open the state database {self.path}: {exc}") from exc
        self._keep_reserve()

    def _open(self) -> sqlite3.Connection:
        self.created = not self.path.exists()
        try:
            return self._connect()
        except sqlite3.DatabaseError as exc:
            if self.created:
                raise
            aside = self.path.with_name(f"state.db.corrupt-{int(time.time())}")
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(OSError):
                    os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")
            log.error("state database unreadable; set aside, starting a new one", extra={"error": str(exc)})
            self.created = True
            return self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if self._fsync else 'OFF'}")
            # Small, frequent checkpoints: spooled data reaches the database file soon, and the WAL (bounded, then
            # reused from its start) keeps room for acknowledgements even when the disk fills up.
            db.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
            db.execute(f"PRAGMA journal_size_limit={WAL_PAGES * 4096}")
            if db.execute("PRAGMA quick_check(1)").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("quick_check failed")
            db.executescript(_SCHEMA)
            if "crc" not in {row[1] for row in db.execute("PRAGMA table_info(spool)")}:
                db.execute("ALTER TABLE spool ADD COLUMN crc INTEGER")  # a database from before the checksum
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        except BaseException:
            db.close()
            raise
        return db

    def write(self, work: Callable[[sqlite3.Connection], T], frees_space: bool = False) -> T:
        """Run `work` in one transaction: everything it does commits together, or nothing does (StateError).

        `frees_space`: the work deletes spool records. Only such work may use the reserve: on a full disk the
        reserve is given up and it runs once more before StateFull is raised.
        """
        with self._lock:
            for attempt in (1, 2):
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                    try:
                        result = work(self._db)
                        self._db.execute("COMMIT")
                    except BaseException:
                        with contextlib.suppress(sqlite3.Error):
                            self._db.execute("ROLLBACK")
                        raise
                    if self._reserve_missing and not frees_space:
                        self._keep_reserve()
                    return result
                except sqlite3.OperationalError as exc:
                    if _is_full(exc) and attempt == 1 and frees_space and self._give_up_reserve():
                        continue  # once more, with the room the reserve made
                    raise (StateFull if _is_full(exc) else StateError)(str(exc)) from exc
                except sqlite3.Error as exc:
                    raise StateError(str(exc)) from exc
            raise AssertionError("unreachable")

    def query(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            try:
                return list(self._db.execute(sql, args).fetchall())
            except sqlite3.Error as exc:
                raise StateError(str(exc)) from exc

    def free_bytes(self) -> int:
        """Free space on the disk of the state directory."""
        try:
            return shutil.disk_usage(self.directory).free
        except OSError:
            return 0

    @staticmethod
    def unused_bytes(db: sqlite3.Connection) -> int:
        """Bytes of free pages inside the database: deleted records leave them, and new ones reuse them."""
        pages = db.execute("PRAGMA freelist_count").fetchone()[0]
        size = db.execute("PRAGMA page_size").fetchone()[0]
        return int(pages) * int(size)

    def file_bytes(self) -> int:
        """Bytes the database and its WAL occupy on disk."""
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += os.stat(f"{self.path}{suffix}").st_size
        return total

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.close()

    def _give_up_reserve(self) -> bool:
        try:
            self._reserve.unlink()
        except OSError:
            return False
        self._reserve_missing = True
        log.warning("state disk full: gave up the reserve so that acknowledgements go on")
        return True

    def _keep_reserve(self) -> None:
        if self._reserve.exists():
            self._reserve_missing = False
            return
        try:
            with open(self._reserve, "wb") as reserve:
                reserve.write(bytes(RESERVE_BYTES))
                if self._fsync:
                    os.fsync(reserve.fileno())
            self._reserve_missing = False
        except OSError:
            self._reserve_missing = True
            with contextlib.suppress(OSError):
                self._reserve.unlink()


def _is_full(exc: sqlite3.Error) -> bool:
    return "full" in str(exc).lower()
