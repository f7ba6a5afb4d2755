"""The pipeline thread and its input: `ChunkQueue` carries chunks of lines from the Docker readers, bounded in
bytes; `PipelineRunner` takes them off one by one into the current `Pipeline`, closes records that went idle, and
swaps in a new `Pipeline` on reload between two chunks, after the old one has closed its open records, so that no
line is lost or processed twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from logpipe.budget import ByteBudget
from logpipe.event import Chunk
from logpipe.pipeline import Pipeline, PipelineClosed
from logpipe.threads import Threads

log = logging.getLogger("logpipe.pipeline")

#: What a line waiting in the chunk queue takes beyond its bytes (its tuple, timestamp and bytes object): ~156 bytes.
_LINE_OVERHEAD = 150


class ChunkQueue:
    """A FIFO of chunks bounded in bytes; `put` blocks while full. Thread-safe."""

    def __init__(self, max_bytes: int) -> None:
        self._items: deque[Chunk] = deque()
        self._cond = threading.Condition()
        self._budget = ByteBudget(max_bytes, self._cond)

    @property
    def max_bytes(self) -> int:
        return self._budget.max_bytes

    def put(self, chunk: Chunk) -> bool:
        """Queue `chunk`, waiting while the queue is full; False once it is closed (the chunk is not queued)."""
        with self._cond:
            if not self._budget.wait_for_room():
                return False
            was_empty = not self._items
            self._items.append(chunk)
            self._budget.add(chunk.size + _LINE_OVERHEAD * len(chunk.lines))
            if was_empty:
                self._cond.notify_all()  # the pipeline thread waits only on an empty queue
            return True

    def get(self, timeout: float) -> Chunk | None:
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
                if not self._items:
                    return None
            chunk = self._items.popleft()
            self._budget.release(chunk.size + _LINE_OVERHEAD * len(chunk.lines))
            return chunk

    def close(self) -> None:
        """Refuse further puts (releasing blocked readers); what is queued can still be taken."""
        with self._cond:
            self._budget.close()

    @property
    def bytes(self) -> int:
        return self._budget.held


class PipelineRunner:
    """The pipeline thread: takes chunks off the queue, closes idle records, swaps pipelines on reload."""

    def __init__(
        self, queue: ChunkQueue, pipeline: Pipeline, idle_tick_secs: float = 0.1, threads: Threads | None = None
    ) -> None:
        self._queue = queue
        self._threads = threads or Threads(lambda _kind: None)
        self.pipeline = pipeline
        self._tick = idle_tick_secs
        self._next: Pipeline | None = None
        self._stopping = threading.Event()
        self._swap_lock = threading.Lock()
        self._swapped = threading.Condition(self._swap_lock)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        # A crash here cannot be restarted (a chunk may be half processed): it fails the process, whose container
        # then restarts from the checkpoint.
        self._thread = self._threads.start("pipeline", self._run)

    def swap(self, pipeline: Pipeline, timeout: float = 5.0) -> bool:
        """Replace the pipeline between two chunks; True once the new one is in use, False (and withdrawn) when
        the pipeline thread did not take it within `timeout`."""
        with self._swap_lock:
            self._next = pipeline
            if self._swapped.wait_for(lambda: self._next is None, timeout):
                return True
            if self._next is pipeline:
                self._next = None
            return False

    def stop(self, timeout: float) -> None:
        """Process what is queued, close open records, and end the thread (within `timeout`)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        last_tick = time.monotonic()
        try:
            while True:
                chunk = self._queue.get(self._tick)
                now = time.monotonic()
                if chunk is not None:
                    self.pipeline.process(chunk, now)
                if now - last_tick >= self._tick:
                    self.pipeline.flush_idle(now)
                    last_tick = now
                    self._maybe_swap()
                if chunk is None and self._stopping.is_set():
                    self._maybe_swap()
                    self.pipeline.flush_all()
                    return
        except PipelineClosed:
            log.warning("pipeline stopped while the sinks were closed")

    def _maybe_swap(self) -> None:
        with self._swap_lock:
            if self._next is None:
                return
        # Outside the lock: closing open records may wait on full lanes, and `swap` must still be able to time
        # out and withdraw meanwhile.
        self.pipeline.flush_all()
        with self._swap_lock:
            if self._next is not None:
                self.pipeline = self._next
                self._next = None
                self._swapped.notify_all()
