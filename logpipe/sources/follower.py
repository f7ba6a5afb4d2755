"""Following one container's log stream, from a resume point, across stream breaks and restarts.

A `Follower` owns one thread that opens `/containers/{id}/logs?follow=1`, decodes it into lines, gives every
line its position (Docker timestamp, ordinal at that timestamp) per stream, and hands the lines on in chunks.
It reopens the stream when it breaks or when the container is started again, from the last position it handed
on, so within a process no line is read twice; across processes the resume points come from the checkpoint.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from logpipe.backoff import Backoff
from logpipe.event import Chunk, ContainerInfo, Position, SourceLine
from logpipe.sources.engine import ContainerGone, DockerEngine, DockerUnavailable, LogStream
from logpipe.sources.frames import STREAM_NAMES, DecodeStats, LogDecoder, StreamFormatError
from logpipe.threads import name_os_thread

log = logging.getLogger("logpipe.source")

_COALESCE_BELOW_BYTES = 32 * 1024


@dataclass(slots=True)
class _StreamState:
    last: Position | None = None  # position of the last line handed on
    skip: Position | None = None  # on (re)open: lines at or before this were handed on already


@dataclass(frozen=True, slots=True)
class FollowSettings:
    max_line_bytes: int
    read_coalesce_secs: float
    max_backoff_secs: float


@dataclass(slots=True)
class FollowerCallbacks:
    """How a follower talks to the rest of logpipe (all called from its thread)."""

    emit: Callable[[Chunk], bool]  # blocks for backpressure; False = the pipeline is stopping
    decoded: Callable[[int, int, int], None]  # partial messages joined, lines truncated, bad timestamps
    reconnected: Callable[[], None]
    ended: Callable[[Follower], None]
    crashed: Callable[[BaseException], None] = lambda _exc: None  # an unexpected error; the follower reopens
    # Blocks until the container's cursors are settled (a push in flight at the last exit is being read back from
    # Loki) and returns its resume positions; None when logpipe is stopping meanwhile.
    settled: Callable[[str, threading.Event], dict[str, Position] | None] = lambda _cid, _stop: {}


class Follower:
    """Follows one container until it stops (and again after `wake`), or until `stop`.

    At most one reader thread per follower exists at any time: `wake` starts one only when none is running, and a
    thread gives up being the reader (`_alive = False`) in one step under the lock, after which it touches nothing
    a new reader uses.
    """

    def __init__(
        self,
        engine: DockerEngine,
        info: ContainerInfo,
        resume: dict[str, Position],
        origin_ns: int,
        settings: FollowSettings,
        callbacks: FollowerCallbacks,
        wait_settled: bool = False,
    ) -> None:
        self.info = info
        self.origin_ns = origin_ns
        self.settings = settings  # replaced on reload; read at each reconnect
        self._engine = engine
        self._cb = callbacks
        self._streams = {name: _StreamState(last=resume.get(name)) for name in ("stdout", "stderr")}
        self._wait_settled = wait_settled
        self._lock = threading.Lock()
        self._alive = False
        self._again = False
        self._stream: LogStream | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        with self._lock:
            return self._alive

    def wake(self, info: ContainerInfo | None = None) -> None:
        """Follow now: start the reader thread, or make a reader that is finishing read once more."""
        with self._lock:
            if info is not None:
                self.info = info
            if self._alive:
                self._again = True
                return
            self._alive = True
            self._again = False
            self._stop.clear()
            thread = threading.Thread(target=self._run, name=f"follow-{self.info.name}", daemon=True)
            self._thread = thread
        thread.start()

    def stop(self) -> None:
        """Ask the thread to end and unblock its read; `join` waits for it."""
        self._stop.set()
        stream = self._stream
        if stream is not None:
            stream.close()

    def join(self, timeout: float) -> bool:
        """Wait for the reader thread; True when no reader is running."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def since(self) -> str:
        """The `since` to reopen with: the oldest position still needed by either stream."""
        points = [s.last[0] if s.last is not None else self.origin_ns for s in self._streams.values()]
        ns = max(min(points), 0)
        return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}" if ns else "0"

    def _run(self) -> None:
        name_os_thread(threading.current_thread().name)
        try:
            if self._wait_settled and not self._settle():
                return
            backoff = Backoff(0.5, self.settings.max_backoff_secs)
            while not self._stop.is_set():
                try:
                    finished = self._follow_once()
                    backoff.reset()
                except ContainerGone:
                    return
                except (DockerUnavailable, StreamFormatError) as exc:
                    if self._stop.is_set():
                        return
                    log.warning("log stream lost; reconnecting", extra={"container": self.info.name, "error": str(exc)})
                    self._cb.reconnected()
                    self._pause(backoff)
                    continue
                except Exception as exc:  # a bug: say so, then reopen from the last position handed on
                    self._cb.crashed(exc)
                    self._pause(backoff)
                    continue
                if finished:
                    with self._lock:
                        if not self._again or self._stop.is_set():
                            self._alive = False
                            return
                        self._again = False
        finally:
            # Give up being the reader in one step: a `wake` after this starts a new reader, and nothing below may
            # touch what that reader uses.
            with self._lock:
                ended_here = self._alive and self._thread is threading.current_thread()
                if ended_here:
                    self._alive = False
            self._cb.ended(self)

    def _pause(self, backoff: Backoff) -> None:
        backoff.max_secs = max(self.settings.max_backoff_secs, backoff.min_secs)
        self._stop.wait(backoff.next())

    def _settle(self) -> bool:
        """Wait until the checkpoint has settled this container's cursors; take them as the resume points."""
        positions = self._cb.settled(self.info.id, self._stop)
        if positions is None:
            return False
        for name, state in self._streams.items():
            if name in positions:
                state.last = positions[name]
        self._wait_settled = False
        return True

    def _follow_once(self) -> bool:
        """Read the stream until it ends. True when the container has stopped, False when the stream broke."""
        decoder = self._read(follow=True)
        if decoder is None or self._stop.is_set():
            return True
        info = self._engine.inspect(self.info.id)
        if info.running:
            return False  # the stream broke under a running container: reopen from the last position
        self.info = info
        # Docker can end a followed stream when the container exits before it sent everything the container
        # wrote (seen: 14,508 of 20,000 lines). Read the stopped container's log once more, to its end; lines
        # already handed on are dropped by position.
        decoder = self._read(follow=False)
        if decoder is not None and not self._stop.is_set():
            self._hand_on(decoder.finish(), decoder.stats, 0, rereading=True)
        return True

    def _read(self, follow: bool) -> LogDecoder | None:
        """Read the log from the resume point until the stream ends; the decoder then holds any unfinished line.
        None when the chunks were refused (logpipe is stopping)."""
        for state in self._streams.values():
            state.skip = state.last
        stream = self._engine.open_logs(self.info.id, self.since(), follow=follow)
        self._stream = stream
        try:
            decoder = LogDecoder(self.info.tty, self.settings.max_line_bytes)
            if self._stop.is_set():
                return decoder
            coalesce = self.settings.read_coalesce_secs if follow else 0.0
            while not self._stop.is_set():
                data = stream.read()
                if not data:
                    break
                if not self._hand_on(decoder.feed(data), decoder.stats, len(data), rereading=not follow):
                    return None
                if coalesce and len(data) < _COALESCE_BELOW_BYTES:
                    # Let a trickle accumulate: one wake-up per few ms instead of one per line.
                    self._stop.wait(coalesce)
        finally:
            self._stream = None
            stream.close()
        return decoder

    def _hand_on(
        self, decoded: dict[int, list[SourceLine]], stats: DecodeStats, size: int, rereading: bool = False
    ) -> bool:
        """Hand on what one read decoded; `size` is the bytes it came from (the chunks' share of the queue)."""
        # Truncations are counted on lines that survive the resume filter: a stream reopened after a break reads
        # (and cuts) the same long line again, and that is one truncated line, not two. `rereading` (the final read
        # of a stopped container): partials and timestamps count only where new lines were handed on.
        truncated = handed = 0
        count_cut = stats.truncated > 0
        total = sum(len(lines) for lines in decoded.values()) or 1
        try:
            for stream_id, lines in decoded.items():
                if not lines:
                    continue
                name = STREAM_NAMES[stream_id]
                state = self._streams[name]
                if state.skip is not None:
                    lines = _after_resume_point(state, lines)
                    if not lines:
                        continue
                if not self._cb.emit(Chunk(self.info, name, lines, size * len(lines) // total)):
                    return False
                if count_cut:
                    truncated += sum(1 for line in lines if line[3])
                handed += len(lines)
                last = lines[-1]
                state.last = (last[0], last[1])
            return True
        finally:
            partials, bad = (stats.partials_joined, stats.bad_timestamps) if handed or not rereading else (0, 0)
            if partials or truncated or bad:
                self._cb.decoded(partials, truncated, bad)
            stats.partials_joined = stats.truncated = stats.bad_timestamps = 0


def _after_resume_point(state: _StreamState, lines: list[SourceLine]) -> list[SourceLine]:
    """The lines after the position a reopened stream resumes from (earlier ones were handed on already)."""
    skip = state.skip
    assert skip is not None
    for i, (ts, n, _content, _cut) in enumerate(lines):
        if ts > skip[0] or (ts == skip[0] and n > skip[1]):
            state.skip = None
            return lines[i:]
    return []
