"""Byte budgets: the one way logpipe bounds what it holds in memory between two threads.

A `ByteBudget` counts the bytes a queue holds. A producer calls `wait_for_room` before adding and blocks (on the
queue's own condition, without polling) while the queue holds `max_bytes` or more; `release` after a consumer took
bytes wakes it; `close` releases every waiting producer for good. Both queues between the stages (the chunk
queue after the Docker readers, the lanes before the sinks) keep their contents however they like and bound them
with one of these, under their own lock.
"""

from __future__ import annotations

import threading


class ByteBudget:
    """Call every method with `cond` held (it is the owning queue's lock)."""

    __slots__ = ("closed", "cond", "held", "max_bytes")

    def __init__(self, max_bytes: int, cond: threading.Condition) -> None:
        self.max_bytes = max_bytes
        self.cond = cond
        self.held = 0
        self.closed = False

    @property
    def spent(self) -> bool:
        return self.held >= self.max_bytes

    def wait_for_room(self) -> bool:
        """Block while the budget is spent; False once the queue is closed (add nothing then)."""
        while self.held >= self.max_bytes and not self.closed:
            self.cond.wait()
        return not self.closed

    def add(self, n: int) -> None:
        self.held += n

    def release(self, n: int) -> None:
        """Bytes left the queue: wake producers that wait for room (and consumers that wait for a change)."""
        self.held -= n
        self.cond.notify_all()

    def close(self) -> None:
        self.closed = True
        self.cond.notify_all()
