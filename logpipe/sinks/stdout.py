"""The stdout sink: writes the entries logpipe would push as JSON lines, for people without a Loki.

It takes batches from the same lanes as the Loki sender and acknowledges them once written and flushed, so
cursors behave the same. Not guaranteed: a crash between the write and the next checkpoint flush prints the
last lines again on restart (there is no Loki to read back).
"""

from __future__ import annotations

import threading
import time
from typing import BinaryIO

import orjson

from logpipe.config import Config
from logpipe.sinks import SinkStats
from logpipe.sinks.lanes import BatchLimits, Lanes
from logpipe.state import State
from logpipe.telemetry import Telemetry
from logpipe.threads import Threads


class StdoutSink:
    """One thread writing JSON lines: {"ts": "<ns>", "labels": {...}, "line": "...", "metadata": {...}}."""

    def __init__(
        self,
        lanes: Lanes,
        state: State,
        telemetry: Telemetry,
        out: BinaryIO,
        wait_secs: float = 0.2,
        threads: Threads | None = None,
    ) -> None:
        self._threads = threads or Threads(lambda _kind: None)
        self._lanes = lanes
        self._state = state
        self._telemetry = telemetry
        self._out = out
        self._limits = BatchLimits(1 << 20, 10_000, wait_secs)
        self._stop_at: float | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        # A write error (a closed pipe) cannot be retried into success: the crash fails the process, and the lines not
        # written are read again from Docker after the restart.
        self._thread = self._threads.start("stdout_sink", self._run, name="stdout-sink")

    def stop(self, timeout: float) -> None:
        with self._lanes.cond:
            self._stop_at = time.monotonic() + timeout
            self._lanes.cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout + 1.0)

    def _run(self) -> None:
        lanes = self._lanes
        while True:
            with lanes.cond:
                batch = lanes.take(self._limits, flush=self._stop_at is not None)
                if batch is None:
                    if self._stop_at is not None and (time.monotonic() >= self._stop_at or not lanes.any_waiting()):
                        return
                    due = lanes.next_due_in(self._limits)
                    lanes.cond.wait(0.2 if due is None else min(max(due, 0.005), 0.2))
                    continue
            lines = [
                orjson.dumps(
                    {"ts": str(ts), "labels": dict(labels), "line": line, "metadata": metadata or {}},
                    option=orjson.OPT_APPEND_NEWLINE,
                )
                for ts, line, metadata, labels, _pos, _size in batch.entries
                if labels  # not PASSED
            ]
            self._out.write(b"".join(lines))
            self._out.flush()
            with lanes.cond:
                lanes.done(batch)
            self._state.checkpoint.advance(batch.advances())
            self._telemetry.entries_sent(len(lines))

    def reconfigure(self, config: Config) -> None:
        """Nothing of it is reloadable."""

    def ready(self) -> bool:
        return True  # there is no Loki to wait for

    def stats(self) -> SinkStats:
        return SinkStats()

    def close(self) -> None:
        """Its output belongs to the process."""
