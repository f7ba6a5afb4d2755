"""Scripted misbehaviour for the test Loki: refusals, accepted-then-dropped connections and delays.

Rules are consumed by pushes in arrival order; every time one acts, a `FaultReply` is recorded with its monotonic
time, so a test can check that a shipper waited for `Retry-After` before pushing again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

DEFAULT_BODIES = {
    429: "Ingestion rate limit exceeded for user {tenant} (limit: 4194304 bytes/sec) while attempting to ingest "
    "'{lines}' lines totaling '{size}' bytes, reduce log volume or contact your Loki administrator to see if the "
    "limit can be increased",
    500: "at least 1 live replicas required, could only find 0 - unhealthy instances: 127.0.0.1:9095",
    503: "Service Unavailable",
}


class FaultReply(NamedTuple):
    """A push answered (`fail`), dropped (`drop`) or held (`delay`) by a fault; `at` is `time.monotonic()` when
    it acted, `push_seq` the push's sequence number (see `Request.seq`)."""

    kind: str
    status: int | None
    retry_after: str | None
    push_seq: int
    at: float


@dataclass
class Rule:
    kind: str
    status: int = 0
    body: str | None = None
    retry_after: str | None = None
    remaining: int | None = None
    until: float | None = None
    seconds: float = 0.0
    keep: Callable[[dict[str, str]], bool] | None = None  # partial_drop: the streams that are stored

    def live(self, now: float) -> bool:
        return (self.remaining is None or self.remaining > 0) and (self.until is None or now < self.until)


class Faults:
    """A thread-safe set of rules and the record of their replies."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self.replies: list[FaultReply] = []

    def fail(self, status: int, count: int | None = None, seconds: float | None = None,
             retry_after: float | str | None = None, body: str | None = None) -> None:  # fmt: skip
        if isinstance(retry_after, float) and retry_after.is_integer():
            retry_after = int(retry_after)
        until = None if seconds is None else time.monotonic() + seconds
        self._add(Rule("fail", status, body, None if retry_after is None else str(retry_after), count, until))

    def fail_queries(self, status: int, seconds: float, body: str) -> None:
        self._add(Rule("query_fail", status, body, until=time.monotonic() + seconds))

    def drop(self, count: int) -> None:
        self._add(Rule("drop", remaining=count))

    def partial_drop(self, count: int, keep: Callable[[dict[str, str]], bool]) -> None:
        self._add(Rule("partial_drop", remaining=count, keep=keep))

    def delay(self, seconds: float, count: int | None) -> None:
        self._add(Rule("delay", remaining=count, seconds=seconds))

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def forget(self) -> None:
        with self._lock:
            self.replies.clear()

    def _add(self, rule: Rule) -> None:
        with self._lock:
            self._rules.append(rule)

    def take(self, kind: str) -> Rule | None:
        """The first live rule of `kind`, counted as used; None when there is none."""
        now = time.monotonic()
        with self._lock:
            self._rules = [r for r in self._rules if r.live(now)]
            for rule in self._rules:
                if rule.kind == kind:
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    return rule
        return None

    def acted(self, rule: Rule, push_seq: int) -> None:
        reply = FaultReply(rule.kind, rule.status or None, rule.retry_after, push_seq, time.monotonic())
        with self._lock:
            self.replies.append(reply)
