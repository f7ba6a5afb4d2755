"""Playing the checkpoint and the pipeline for a `DockerSource` under test."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from logpipe.event import Chunk, Position
from logpipe.sources.frames import DecodeStats
from logpipe.state import Resume


class Recorder:
    """Plays the checkpoint and the pipeline for the source."""

    def __init__(self, resume: dict[str, Resume] | None = None) -> None:
        self.lines: list[tuple[str, str, str, int, int, float]] = []  # name, stream, text, ts, n, seen_at
        self.resumes = resume or {}
        self.followed: dict[str, int] = {}
        self.gone: list[str] = []
        self.stats = DecodeStats()
        self.lock = threading.Lock()

    # Cursors
    def resume(self, cid: str) -> Resume | None:
        return self.resumes.get(cid)

    def follow(self, container_id: str, name: str, origin_ns: int) -> None:
        self.followed[container_id] = origin_ns

    def destroyed(self, cid: str) -> None:
        self.gone.append(cid)

    def known(self) -> Iterable[str]:
        return list(self.followed)

    def settled(self, cid: str, stop: threading.Event) -> dict[str, Position] | None:
        resume = self.resumes.get(cid)
        return dict(resume.positions) if resume is not None else {}

    # SourceEvents
    def decoded(self, partials_joined: int, truncated: int, bad_timestamps: int) -> None:
        self.stats.partials_joined += partials_joined
        self.stats.truncated += truncated

    def reconnected(self, stream: str) -> None:
        pass

    def emit(self, chunk: Chunk) -> bool:
        now = time.monotonic()
        with self.lock:
            for ts, n, content, _cut in chunk.lines:
                self.lines.append((chunk.container.name, chunk.stream, content.decode(), ts, n, now))
        return True

    def texts(self, name: str) -> list[str]:
        with self.lock:
            return [line[2] for line in self.lines if line[0] == name]

    def stream_texts(self, name: str, stream: str) -> list[str]:
        with self.lock:
            return [line[2] for line in self.lines if line[0] == name and line[1] == stream]

    def last_positions(self, name: str) -> dict[str, Position]:
        with self.lock:
            out: dict[str, Position] = {}
            for n, stream, _t, ts, k, _ in self.lines:
                if n == name:
                    out[stream] = (ts, k)
            return out
