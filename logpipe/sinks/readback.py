"""Asking Loki whether it stored a push whose answer never came (a dropped connection, a crash mid-push).

A push is recognised by its probes (the last entry of a few of its streams: labels, timestamp, line hash) and
looked for with `query_range` until it cannot still arrive: its start plus the request timeout (Loki may still
be working on it) plus `settle_secs` (Loki shows an entry to queries about a second after storing it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from logpipe.checkpoint import Intent
from logpipe.sinks.loki import LokiClient, LokiUnavailable
from logpipe.sinks.push import line_hash, selector

log = logging.getLogger("logpipe.loki")

_LOG_EVERY_SECS = 10.0


class ReadBack:
    def __init__(
        self,
        client: LokiClient,
        request_timeout_secs: float,
        stopping: Callable[[], bool],
        lanes_full: Callable[[], bool],
    ) -> None:
        self._client = client
        self._request_timeout = request_timeout_secs
        self._stopping = stopping
        self._lanes_full = lanes_full
        self._last_warning = 0.0

    def ask(self, intent: Intent, max_wait_secs: float | None, settle_secs: float, give_way: bool = True) -> str:
        """ "delivered", "not_delivered", "stopping" or "unresolved".

        With `max_wait_secs` (at startup), "unresolved" when Loki could not be asked in that time. Without (a push
        whose answer was lost), Loki is asked until it answers, unless logpipe begins stopping ("stopping") or
        the lanes fill up ("unresolved": the push is sent again so that its lanes can spill to the spool). Also
        "unresolved" at once when Loki refuses queries. `give_way=False` (a spool replay: re-sending it frees no
        lane memory) keeps asking when the lanes are full.
        """
        if not intent.probes:
            return "not_delivered"
        horizon = intent.started_at + self._request_timeout + settle_secs
        give_up = time.monotonic() + max_wait_secs if max_wait_secs is not None else None
        backoff = 0.5
        while True:
            if give_up is None and self._stopping():
                return "stopping"
            try:
                if any(self._found(p.labels, p.ts_ns, p.line_hash) for p in intent.probes):
                    return "delivered"
                if time.time() >= horizon:
                    return "not_delivered"
                time.sleep(min(1.0, max(horizon - time.time(), 0.05)))
            except LokiUnavailable as exc:
                if give_up is None and self._stopping():
                    return "stopping"
                out_of_time = give_up is not None and time.monotonic() + backoff > give_up
                if exc.permanent or out_of_time or (give_up is None and give_way and self._lanes_full()):
                    log.error("cannot read Loki back; sending the push again", extra={"error": str(exc)})
                    return "unresolved"
                self._warn_rarely(str(exc))
                self._wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _found(self, labels: dict[str, str], ts_ns: int, wanted: str) -> bool:
        found = self._client.query_range(selector(labels), ts_ns, ts_ns + 1, limit=1000)
        return any(ts == ts_ns and line_hash(line) == wanted for ts, line in found)

    def _wait(self, secs: float) -> None:
        """Sleep up to `secs`, waking early when logpipe begins stopping."""
        deadline = time.monotonic() + secs
        while time.monotonic() < deadline and not self._stopping():
            time.sleep(min(0.1, deadline - time.monotonic()))

    def _warn_rarely(self, error: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= _LOG_EVERY_SECS:
            self._last_warning = now
            log.warning("Loki cannot be asked whether it stored a push; asking again", extra={"error": error})
