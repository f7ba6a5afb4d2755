"""logpipe's durable state: cursors, push intents and the spool, in one database (`<state.dir>/state.db`).

`State` opens the database (migrating an old state directory on the first start), and owns the two views on it:
the `Checkpoint` (cursors, intents) and the `Spool` (undelivered batches). The only write that touches both is a
spill, and it is one transaction: `spill` stores the batch and advances its cursors together.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from logpipe.state import legacy
from logpipe.state.checkpoint import Advance, Checkpoint, Intent, Probe, Resume
from logpipe.state.spool import Spool, SpoolFull
from logpipe.state.store import StateError, StateFull, Store

__all__ = [
    "Advance",
    "Checkpoint",
    "Intent",
    "Probe",
    "Resume",
    "Spool",
    "SpoolFull",
    "State",
    "StateError",
    "StateFull",
]

log = logging.getLogger("logpipe.state")


class State:
    """Open with `open()` (at startup); until then nothing touches the disk."""

    def __init__(
        self,
        directory: Path,
        *,
        spool_max_bytes: int,
        fsync: bool = True,
        on_write_error: Callable[[Exception], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = Path(directory)
        self._spool_max_bytes = spool_max_bytes
        self._fsync = fsync
        self._on_write_error = on_write_error
        self._clock = clock
        self._store: Store | None = None
        self._checkpoint: Checkpoint | None = None
        self._spool: Spool | None = None

    def open(self) -> None:
        """Open (or create) the database, migrate an old state directory into a new one, load the checkpoint.
        Raises StateError when the directory or the database cannot be used."""
        migrate = not (self.directory / "state.db").exists() and legacy.needs_migration(self.directory)
        store = Store(self.directory, self._fsync)
        if migrate:
            legacy.migrate(store, self.directory)
        self._store = store
        self._checkpoint = Checkpoint(store, self._on_write_error)
        self._checkpoint.load()
        self._spool = Spool(store, self._spool_max_bytes, self._clock)
        if self._spool.records:
            log.info("spool opened", extra={"records": self._spool.records, "entries": self._spool.entries})

    @property
    def checkpoint(self) -> Checkpoint:
        if self._checkpoint is None:
            raise RuntimeError("state not opened")
        return self._checkpoint

    @property
    def spool(self) -> Spool:
        if self._spool is None:
            raise RuntimeError("state not opened")
        return self._spool

    def spill(self, payload: bytes, entries: int, advances: Iterable[Advance]) -> int:
        """Store a batch in the spool and advance its lines' cursors, in one transaction; the record's id.
        Raises SpoolFull (over `spool.max_bytes`) or StateError (the disk refused); then nothing changed."""
        spool = self.spool
        rid = self.checkpoint.commit(with_record=spool.inserter(payload, entries), advances=advances)
        assert rid is not None
        spool.inserted(payload, entries)
        return rid

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
