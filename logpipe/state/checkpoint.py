"""The checkpoint: where each container stream is acknowledged up to, and which pushes are in flight.

A cursor is the position of the last line of a container stream that Loki acknowledged, or that sits in the
spool. It moves only on those two events, never when a line is merely read. Every push is recorded as an `Intent`
before it is sent (durable when `begin` returns), so a logpipe killed mid-push can later ask Loki whether the push
arrived instead of guessing. Advances are kept in memory and written by `commit` (the daemon calls it every
`state.flush_interval_secs`): a crash before that loses nothing, because the intent that the advance ends is still
on disk and is read back. A spill commits its spool record and its cursors together (`commit(spool_record=...)`).

Not guaranteed: if the disk refuses a write, logpipe keeps shipping and counts the failure; a crash in that
state may repeat the lines acknowledged since the last good write.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from logpipe.event import Position
from logpipe.state.store import StateError, Store

log = logging.getLogger("logpipe.checkpoint")

T = TypeVar("T")

#: (container id, stream name, position of the last line the push carries for that stream)
Advance = tuple[str, str, Position]


@dataclass(frozen=True, slots=True)
class Resume:
    """Where to resume a container known from the checkpoint."""

    origin_ns: int
    positions: dict[str, Position]


@dataclass(frozen=True, slots=True)
class Probe:
    """One entry of a push that a read-back query can look for."""

    labels: dict[str, str]
    ts_ns: int
    line_hash: str


@dataclass(frozen=True, slots=True)
class Intent:
    """A push about to be sent: what acknowledging it would advance, and how to recognise it in Loki."""

    id: int
    started_at: float
    advances: tuple[Advance, ...]
    probes: tuple[Probe, ...]
    spool_id: int | None = None


@dataclass(slots=True)
class _Container:
    name: str
    origin: int
    pos: dict[str, Position] = field(default_factory=dict)
    gone: bool = False


class Checkpoint:
    """Thread-safe cursor and intent store in front of the state database. The source reads resume points and
    the containers to follow; the sinks record intents and advances."""

    def __init__(self, store: Store, on_write_error: Callable[[Exception], None] | None = None) -> None:
        self._store = store
        self._on_write_error = on_write_error
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)
        self._held: dict[str, int] = {}  # container id -> unresolved intents that may advance it
        self._containers: dict[str, _Container] = {}
        self._intents: dict[int, Intent] = {}
        self._dirty_containers: set[str] = set()
        self._dirty_intents: set[int] = set()
        self._write_lock = threading.Lock()

    def load(self) -> None:
        """Read what the database holds (at startup)."""
        containers = {
            str(cid): _Container(str(name), int(origin), gone=bool(gone))  # type: ignore[call-overload]
            for cid, name, origin, gone in self._store.query("SELECT id, name, origin, gone FROM containers")
        }
        for cid, stream, ts, n in self._store.query("SELECT container, stream, ts, n FROM cursors"):
            c = containers.get(str(cid))
            if c is not None:
                c.pos[str(stream)] = (int(ts), int(n))  # type: ignore[call-overload]
        intents = {}
        for (body,) in self._store.query("SELECT body FROM intents"):
            intent = intent_from_json(orjson.loads(body))  # type: ignore[arg-type]
            intents[intent.id] = intent
        with self._lock:
            self._containers = containers
            self._intents = intents

    # -- what the source needs
    def resume(self, container_id: str) -> Resume | None:
        with self._lock:
            c = self._containers.get(container_id)
            return None if c is None else Resume(c.origin, dict(c.pos))

    def follow(self, container_id: str, name: str, origin_ns: int) -> None:
        with self._lock:
            c = self._containers.get(container_id)
            if c is None:
                self._containers[container_id] = _Container(name, origin_ns)
            elif c.name != name or c.gone:
                c.name, c.gone = name, False
            else:
                return
            self._dirty_containers.add(container_id)

    def destroyed(self, container_id: str) -> None:
        """The container is gone: forget it once its last lines are acknowledged (see `commit`)."""
        with self._lock:
            c = self._containers.get(container_id)
            if c is not None:
                c.gone = True
                self._dirty_containers.add(container_id)

    def known(self) -> Iterable[str]:
        with self._lock:
            return list(self._containers)

    def position(self, container_id: str, stream: str) -> Position | None:
        with self._lock:
            c = self._containers.get(container_id)
            return None if c is None else c.pos.get(stream)

    def hold(self, intent: Intent) -> None:
        """The intent is being resolved: the containers it would advance wait (see `settled`)."""
        with self._lock:
            for cid in {a[0] for a in intent.advances}:
                self._held[cid] = self._held.get(cid, 0) + 1

    def release(self, intent: Intent) -> None:
        """The intent is resolved (or will be at the next start): its containers may be followed."""
        with self._lock:
            for cid in {a[0] for a in intent.advances}:
                left = self._held.get(cid, 0) - 1
                if left > 0:
                    self._held[cid] = left
                else:
                    self._held.pop(cid, None)
            self._settled.notify_all()

    def settled(self, container_id: str, stop: threading.Event) -> dict[str, Position] | None:
        """Wait while an unresolved intent may advance this container, then return its positions; None on `stop`.

        Following a container before then would read lines again that the intent may have delivered.
        """
        with self._lock:
            while container_id in self._held:
                if stop.is_set():
                    return None
                self._settled.wait(0.2)
            c = self._containers.get(container_id)
            return {} if c is None else dict(c.pos)

    # -- what the sinks need
    def begin(self, intent: Intent) -> None:
        """Record a push before it is sent; durable when this returns (unless the disk refuses)."""
        with self._lock:
            self._intents[intent.id] = intent
            self._dirty_intents.add(intent.id)
        self.commit()

    def advance(self, advances: Iterable[Advance], intent_id: int | None = None) -> None:
        """Lines up to these positions are acknowledged by Loki (and the intent, if any, is over)."""
        with self._lock:
            if intent_id is not None and self._intents.pop(intent_id, None) is not None:
                self._dirty_intents.add(intent_id)
            self._apply(advances)

    def abandon(self, intent_id: int) -> None:
        """The push failed and will be sent again: nothing advances. Written at once, so a crash soon after does
        not leave an intent that the next start must read back."""
        with self._lock:
            if self._intents.pop(intent_id, None) is None:
                return
            self._dirty_intents.add(intent_id)
        self.commit()

    def intents(self) -> list[Intent]:
        with self._lock:
            return sorted(self._intents.values(), key=lambda i: i.id)

    def commit(
        self,
        pending: Collection[str] = (),
        with_record: Callable[[sqlite3.Connection], T] | None = None,
        advances: Iterable[Advance] = (),
    ) -> T | None:
        """Write what changed, in one transaction. `pending`: containers with lines not yet acknowledged (a gone
        container is forgotten only without any). `with_record` runs in the same transaction (a spill inserts its
        record there) and `advances` are applied only if it commits: "spooled" and "acknowledged" are one step.

        Raises StateError only when `with_record` is given (the caller must know the spill failed); otherwise a
        refused write is counted and retried at the next commit.
        """
        advances = tuple(advances)
        with self._write_lock:
            with self._lock:
                for cid, c in list(self._containers.items()):
                    if c.gone and cid not in pending and not self._held.get(cid):
                        del self._containers[cid]
                        self._dirty_containers.add(cid)
                containers = {cid: self._containers.get(cid) for cid in self._dirty_containers}
                positions = {cid: dict(c.pos) for cid, c in containers.items() if c is not None}
                for cid, stream, pos in advances:
                    # A container with nothing uncommitted starts from its committed positions: a spill's advance
                    # never takes a cursor back on disk.
                    known = self._containers.get(cid)
                    now = positions.setdefault(cid, dict(known.pos)) if known is not None else None
                    if now is not None and (now.get(stream) is None or pos > now[stream]):
                        now[stream] = pos
                        containers.setdefault(cid, self._containers[cid])
                intents = {i: self._intents.get(i) for i in self._dirty_intents}
                self._dirty_containers.clear()
                self._dirty_intents.clear()
            if not containers and not intents and with_record is None:
                return None
            try:
                result = self._store.write(lambda db: _write(db, containers, positions, intents, with_record))
            except BaseException as exc:
                with self._lock:  # written next time
                    self._dirty_containers.update(containers)
                    self._dirty_intents.update(intents)
                if with_record is not None or not isinstance(exc, StateError):
                    raise
                if self._on_write_error is not None:
                    self._on_write_error(exc)
                return None
            if advances:
                with self._lock:
                    self._apply(advances)
            return result

    def _apply(self, advances: Iterable[Advance]) -> None:
        for cid, stream, pos in advances:
            c = self._containers.get(cid)
            if c is None:
                continue
            old = c.pos.get(stream)
            if old is None or pos > old:
                c.pos[stream] = pos
                self._dirty_containers.add(cid)


def _write(
    db: sqlite3.Connection,
    containers: dict[str, _Container | None],
    positions: dict[str, dict[str, Position]],
    intents: dict[int, Intent | None],
    with_record: Callable[[sqlite3.Connection], T] | None,
) -> T | None:
    for cid, c in containers.items():
        if c is None:
            db.execute("DELETE FROM containers WHERE id = ?", (cid,))
            db.execute("DELETE FROM cursors WHERE container = ?", (cid,))
            continue
        db.execute(
            "INSERT INTO containers VALUES (?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET name = ?, gone = ?",
            (cid, c.name, c.origin, int(c.gone), c.name, int(c.gone)),
        )
        for stream, (ts, n) in positions.get(cid, {}).items():
            db.execute("INSERT OR REPLACE INTO cursors VALUES (?, ?, ?, ?)", (cid, stream, ts, n))
    for intent_id, intent in intents.items():
        if intent is None:
            db.execute("DELETE FROM intents WHERE id = ?", (intent_id,))
        else:
            body = orjson.dumps(intent_to_json(intent))
            db.execute("INSERT OR REPLACE INTO intents VALUES (?, ?)", (intent_id, body))
    return with_record(db) if with_record is not None else None


def intent_to_json(intent: Intent) -> dict[str, Any]:
    return {
        "id": intent.id,
        "started_at": intent.started_at,
        "advances": [[cid, stream, list(pos)] for cid, stream, pos in intent.advances],
        "probes": [{"labels": p.labels, "ts": p.ts_ns, "hash": p.line_hash} for p in intent.probes],
        "spool_id": intent.spool_id,
    }


def intent_from_json(data: dict[str, Any]) -> Intent:
    spool = data.get("spool_id")
    return Intent(
        id=int(data["id"]),
        started_at=float(data["started_at"]),
        advances=tuple((str(a[0]), str(a[1]), (int(a[2][0]), int(a[2][1]))) for a in data["advances"]),
        probes=tuple(Probe(dict(p["labels"]), int(p["ts"]), str(p["hash"])) for p in data["probes"]),
        spool_id=int(spool) if isinstance(spool, int) else None,
    )
