"""A Docker engine in memory, at the boundary logpipe talks to (`DockerEngine`'s methods), for unit tests.

Containers print lines with Docker timestamps; `open_logs` serves them as Docker's multiplexed frames from
`since` on (inclusive, as dockerd does), and with `follow` it blocks for more until the container stops or the
stream is closed. Every stream opened is recorded, and `max_readers` says how many were ever open at once for
one container: the number a follower must keep at one. The events stream delivers what `start`, `stop`,
`restart` and `destroy` publish.
"""

from __future__ import annotations

import queue
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from logpipe.event import ContainerInfo
from logpipe.sources.engine import ContainerGone, DockerUnavailable

_HEADER = struct.Struct(">BxxxL")
_STREAMS = {"stdout": 1, "stderr": 2}


def rfc3339(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + f".{ns % 1_000_000_000:09d}Z"


@dataclass
class FakeContainer:
    id: str
    name: str
    service: str
    project: str
    running: bool = True
    tty: bool = False
    lines: list[tuple[int, str, bytes]] = field(default_factory=list)  # (ts ns, stream, content without \n)
    finished_ns: int = 0

    def info(self) -> ContainerInfo:
        labels = {"com.docker.compose.project": self.project, "com.docker.compose.service": self.service}
        return ContainerInfo(
            self.id, self.name, self.service, self.project, self.tty, self.running, labels, self.finished_ns
        )


class FakeLogStream:
    def __init__(self, engine: FakeEngine, container: FakeContainer, since_ns: int, follow: bool) -> None:
        self._engine = engine
        self._container = container
        self._next = 0
        self._since = since_ns
        self._follow = follow
        self._closed = False
        self._done = False

    def read(self) -> bytes:
        engine = self._engine
        with engine.cond:
            while True:
                if self._closed:
                    raise DockerUnavailable("stream closed")
                if engine.broken:
                    engine.broken -= 1
                    raise DockerUnavailable("connection reset by fake dockerd")
                lines = self._container.lines
                if self._next < len(lines):
                    out = []
                    while self._next < len(lines) and len(out) < engine.lines_per_read:
                        ts, stream, content = lines[self._next]
                        self._next += 1
                        if ts >= self._since:
                            payload = rfc3339(ts).encode() + b" " + content + b"\n"
                            out.append(_HEADER.pack(_STREAMS[stream], len(payload)) + payload)
                    if out:
                        return b"".join(out)
                    continue
                if not self._follow or not self._container.running or self._done:
                    return b""
                engine.cond.wait()

    def close(self) -> None:
        with self._engine.cond:
            if not self._closed:
                self._closed = True
                self._engine.closed_stream(self._container.id)
            self._engine.cond.notify_all()


class FakeEvents:
    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            event = self.queue.get()
            if event is None:
                raise DockerUnavailable("events stream closed")
            yield event

    def close(self) -> None:
        self.queue.put(None)


class FakeEngine:
    """Thread-safe. `clock_ns` stamps lines; tests advance it by writing."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.containers: dict[str, FakeContainer] = {}
        self.opened: list[tuple[str, str, bool]] = []  # (container id, since, follow) per open_logs
        self.readers: dict[str, int] = {}
        self.max_readers: dict[str, int] = {}
        self.events_streams: list[FakeEvents] = []
        self.lines_per_read = 1000
        self.broken = 0  # the next reads that fail as a dropped connection
        self._ns = time.time_ns()

    # -- what the test does
    def add(self, cid: str, service: str, project: str = "p", running: bool = True) -> FakeContainer:
        with self.cond:
            container = FakeContainer(cid, f"{project}-{service}-1", service, project, running)
            self.containers[cid] = container
        return container

    def write(self, cid: str, *texts: str, stream: str = "stdout", same_ts: bool = False) -> None:
        with self.cond:
            container = self.containers[cid]
            ts = self._tick()
            for text in texts:
                container.lines.append((ts, stream, text.encode()))
                if not same_ts:
                    ts = self._tick()
            self.cond.notify_all()

    def stop(self, cid: str) -> None:
        with self.cond:
            container = self.containers[cid]
            container.running = False
            container.finished_ns = self._tick()
            self.cond.notify_all()
        self.publish("die", cid)

    def start(self, cid: str) -> None:
        with self.cond:
            self.containers[cid].running = True
            self.cond.notify_all()
        self.publish("start", cid)

    def destroy(self, cid: str) -> None:
        with self.cond:
            self.containers.pop(cid)
            self.cond.notify_all()
        self.publish("destroy", cid)

    def publish(self, action: str, cid: str) -> None:
        for stream in list(self.events_streams):
            stream.queue.put({"Type": "container", "Action": action, "id": cid, "Actor": {"ID": cid}})

    def advance(self, secs: float) -> None:
        """Let time pass for what the engine stamps next."""
        with self.cond:
            self._ns += int(secs * 1e9)

    def lines_of(self, cid: str) -> list[str]:
        with self.cond:
            return [content.decode() for _ts, _stream, content in self.containers[cid].lines]

    # -- the DockerEngine surface
    api_version = "1.41"

    def info(self) -> dict[str, Any]:
        return {"Name": "fakehost"}

    def ping(self) -> bool:
        return True

    def container_ids(self) -> list[str]:
        with self.cond:
            return list(self.containers)

    def inspect(self, container_id: str) -> ContainerInfo:
        with self.cond:
            container = self.containers.get(container_id)
            if container is None:
                raise ContainerGone(container_id)
            return container.info()

    def events(self, since: float | None = None) -> FakeEvents:
        stream = FakeEvents()
        self.events_streams.append(stream)
        return stream

    def open_logs(self, container_id: str, since: str, follow: bool = True) -> FakeLogStream:
        with self.cond:
            container = self.containers.get(container_id)
            if container is None:
                raise ContainerGone(container_id)
            secs, _, frac = since.partition(".")
            since_ns = int(secs) * 1_000_000_000 + int((frac or "0").ljust(9, "0")[:9])
            self.opened.append((container_id, since, follow))
            self.readers[container_id] = self.readers.get(container_id, 0) + 1
            self.max_readers[container_id] = max(self.max_readers.get(container_id, 0), self.readers[container_id])
            return FakeLogStream(self, container, since_ns, follow)

    def close(self) -> None:
        pass

    # -- internals
    def closed_stream(self, cid: str) -> None:
        self.readers[cid] = self.readers.get(cid, 1) - 1

    def _tick(self) -> int:
        self._ns += 1_000
        return self._ns
