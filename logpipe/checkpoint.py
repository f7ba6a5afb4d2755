"""The checkpoint: where each container stream is acknowledged up to, and which pushes are in flight.

A cursor is the position (Docker timestamp in ns, ordinal at that timestamp) of the last line of a container
stream that Loki acknowledged — or that sits durably in the disk spool. It moves only on those two events, never
when a line is merely read. Every push is recorded as an `Intent` *before* it is sent (written and fsynced),
so a logpipe killed mid-push can later ask Loki whether the push arrived instead of guessing: a guess either
way would lose or duplicate lines. The file is replaced atomically (temp file, fsync, `os.replace`, directory
fsync). What is not guaranteed: if the disk refuses the write, logpipe keeps shipping and counts the failure,
so a crash in that state may repeat the lines acknowledged since the last good write.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from logpipe.event import Position
from logpipe.sources.docker import Resume
from logpipe.sources.engine import ContainerInfo

log = logging.getLogger("logpipe.checkpoint")

VERSION = 1

#: (container id, stream name, position of the last line the push carries for that stream)
Advance = tuple[str, str, Position]


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
    spool_id: tuple[int, int] | None = None


@dataclass(slots=True)
class _Container:
    name: str
    origin: int
    pos: dict[str, Position] = field(default_factory=dict)
    gone: bool = False


class Checkpoint:
    """Thread-safe cursor store. The source reads resume points; the sinks record intents and advances."""

    def __init__(self, path: Path, on_write_error: Callable[[OSError], None] | None = None) -> None:
        self.path = path
        self._on_write_error = on_write_error
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)
        self._held: dict[str, int] = {}  # container id -> unresolved intents that may advance it
        self._write_lock = threading.Lock()
        self._containers: dict[str, _Container] = {}
        self._intents: dict[int, Intent] = {}
        self._dirty = False
        self.drained: Callable[[str], bool] = lambda _cid: True

    def load(self) -> None:
        """Read the file if there is one. An unreadable file is set aside (never deleted) and logged."""
        try:
            data: Any = orjson.loads(self.path.read_bytes())
            if not isinstance(data, dict) or data.get("version") != VERSION:
                raise ValueError(
                    f"unknown checkpoint version {data.get('version') if isinstance(data, dict) else data}"
                )
            containers = {
                cid: _Container(
                    name=str(c["name"]),
                    origin=int(c["origin"]),
                    pos={s: (int(p[0]), int(p[1])) for s, p in c.get("pos", {}).items()},
                    gone=bool(c.get("gone", False)),
                )
                for cid, c in data.get("containers", {}).items()
            }
            intents = {int(i["id"]): _intent_from_json(i) for i in data.get("intents", [])}
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            aside = self.path.with_suffix(".corrupt")
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            log.error("checkpoint unreadable; starting without it", extra={"error": str(exc), "moved_to": str(aside)})
            return
        with self._lock:
            self._containers = containers
            self._intents = intents

    # -- what the source needs
    def resume(self, container_id: str) -> Resume | None:
        with self._lock:
            c = self._containers.get(container_id)
            return None if c is None else Resume(c.origin, dict(c.pos))

    def follow(self, info: ContainerInfo, origin_ns: int) -> None:
        with self._lock:
            c = self._containers.get(info.id)
            if c is None:
                self._containers[info.id] = _Container(info.name, origin_ns)
                self._dirty = True
            elif c.name != info.name or c.gone:
                c.name, c.gone = info.name, False
                self._dirty = True

    def destroyed(self, container_id: str) -> None:
        """The container is gone: forget it once its last lines are acknowledged (see `flush`)."""
        with self._lock:
            c = self._containers.get(container_id)
            if c is not None:
                c.gone = True
                self._dirty = True

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

    def known(self) -> Iterable[str]:
        with self._lock:
            return list(self._containers)

    def position(self, container_id: str, stream: str) -> Position | None:
        with self._lock:
            c = self._containers.get(container_id)
            return None if c is None else c.pos.get(stream)

    # -- what the sinks need
    def begin(self, intent: Intent) -> None:
        """Record a push before it is sent; durable when this returns (unless the disk refuses)."""
        with self._lock:
            self._intents[intent.id] = intent
            self._dirty = True
        self.flush()

    def advance(self, advances: Iterable[Advance], intent_id: int | None = None) -> None:
        """Lines up to these positions are acknowledged (by Loki, or durably spooled)."""
        with self._lock:
            if intent_id is not None:
                self._intents.pop(intent_id, None)
            for cid, stream, pos in advances:
                c = self._containers.get(cid)
                if c is None:
                    continue
                old = c.pos.get(stream)
                if old is None or pos > old:
                    c.pos[stream] = pos
            self._dirty = True

    def abandon(self, intent_id: int) -> None:
        """The push failed and will be sent again: nothing advances.

        Written at once, so a crash soon after does not leave an intent that the next start must read back.
        """
        with self._lock:
            if self._intents.pop(intent_id, None) is None:
                return
            self._dirty = True
        self.flush()

    def intents(self) -> list[Intent]:
        with self._lock:
            return sorted(self._intents.values(), key=lambda i: i.id)

    def flush(self) -> None:
        """Write the file if anything changed since the last write."""
        with self._write_lock:
            with self._lock:
                if not self._dirty:
                    return
                for cid in [cid for cid, c in self._containers.items() if c.gone and self.drained(cid)]:
                    del self._containers[cid]
                data = self._to_json()
                self._dirty = False
            try:
                _write_atomically(self.path, data)
            except OSError as exc:
                with self._lock:
                    self._dirty = True
                if self._on_write_error is not None:
                    self._on_write_error(exc)

    def _to_json(self) -> bytes:
        return orjson.dumps(
            {
                "version": VERSION,
                "containers": {
                    cid: {"name": c.name, "origin": c.origin, "pos": c.pos, "gone": c.gone}
                    for cid, c in self._containers.items()
                },
                "intents": [_intent_to_json(i) for i in self._intents.values()],
            }
        )


def _intent_to_json(intent: Intent) -> dict[str, Any]:
    return {
        "id": intent.id,
        "started_at": intent.started_at,
        "advances": [[cid, stream, list(pos)] for cid, stream, pos in intent.advances],
        "probes": [{"labels": p.labels, "ts": p.ts_ns, "hash": p.line_hash} for p in intent.probes],
        "spool_id": list(intent.spool_id) if intent.spool_id is not None else None,
    }


def _intent_from_json(data: dict[str, Any]) -> Intent:
    spool = data.get("spool_id")
    return Intent(
        id=int(data["id"]),
        started_at=float(data["started_at"]),
        advances=tuple((str(a[0]), str(a[1]), (int(a[2][0]), int(a[2][1]))) for a in data["advances"]),
        probes=tuple(Probe(dict(p["labels"]), int(p["ts"]), str(p["hash"])) for p in data["probes"]),
        spool_id=(int(spool[0]), int(spool[1])) if spool else None,
    )


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
