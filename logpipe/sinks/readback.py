"""Asking Loki whether it stored a push whose answer never came (a dropped connection, a crash mid-push).

A push carries one probe per stream: the stream's last entry (labels, timestamp, line hash). Loki's distributor
can store some streams of a push and fail others, so a push counts as delivered only when every probe is found;
the streams found are reported, so that only the others need sending again. Each probe is looked for with one
`query_range` over its own one-nanosecond window, and a probe once found is not asked for again; the search
goes on until the push cannot still arrive: its start plus the request timeout (Loki may still be working on it)
plus `settle_secs` (Loki shows an entry to queries about a second after storing it).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from logpipe.backoff import Backoff
from logpipe.ratelimit import RateLimitedLog
from logpipe.sinks.lanes import Lanes
from logpipe.sinks.loki import LokiClient, LokiUnavailable
from logpipe.sinks.push import line_hash, selector
from logpipe.state import Intent, Probe

log = logging.getLogger("logpipe.loki")

#: A stream's labels as a sorted tuple of pairs (the lanes' LabelKey).
StreamKey = tuple[tuple[str, str], ...]


def stream_key(probe: Probe) -> StreamKey:
    return tuple(sorted(probe.labels.items()))


@dataclass(frozen=True, slots=True)
class Verdict:
    """What reading Loki back found.

    `outcome`: "delivered" (every stream found), "partial" (some), "not_delivered" (none), "stopping" (logpipe
    began stopping first) or "unresolved" (Loki could not be asked). `confirmed`: the streams found.
    """

    outcome: str
    confirmed: frozenset[StreamKey] = field(default_factory=frozenset)


class ReadBack:
    def __init__(self, client: LokiClient, request_timeout_secs: float, stop: threading.Event, lanes: Lanes) -> None:
        """`stop` is set when logpipe begins stopping; `lanes` tell when memory is full (see `ask`)."""
        self._client = client
        self._request_timeout = request_timeout_secs
        self._stop = stop
        self._lanes = lanes
        self._warn = RateLimitedLog(log)

    def ask(self, intent: Intent, max_wait_secs: float | None, settle_secs: float, give_way: bool = True) -> Verdict:
        """Look for every stream of the push until it is found or cannot still arrive.

        With `max_wait_secs` (at startup), "unresolved" when Loki could not be asked in that time. Without (a push
        whose answer was lost), Loki is asked until it answers, unless the lanes fill up ("unresolved": the push
        is sent again so that its lanes can spill to the spool; `give_way=False`, a spool replay whose re-send
        frees no lane memory, keeps asking). "stopping" as soon as logpipe begins stopping: the intent stays for
        the next start. Also "unresolved" at once when Loki refuses queries for good (a 4xx).
        """
        if not intent.probes:
            return Verdict("not_delivered")
        horizon = intent.started_at + self._request_timeout + settle_secs
        give_up = time.monotonic() + max_wait_secs if max_wait_secs is not None else None
        wanted = {stream_key(p): p for p in intent.probes}
        confirmed: set[StreamKey] = set()
        backoff = Backoff(0.5, 5.0)
        while True:
            if self._stop.is_set():
                return Verdict("stopping", frozenset(confirmed))
            try:
                for key, probe in wanted.items():
                    if key not in confirmed and self._found(probe):
                        confirmed.add(key)
                if len(confirmed) == len(wanted):
                    return Verdict("delivered", frozenset(confirmed))
                if time.time() >= horizon:
                    return Verdict("partial" if confirmed else "not_delivered", frozenset(confirmed))
                self._sleep(min(1.0, max(horizon - time.time(), 0.05)))
            except LokiUnavailable as exc:
                if self._stop.is_set():
                    return Verdict("stopping", frozenset(confirmed))
                delay = backoff.next()
                out_of_time = give_up is not None and time.monotonic() + delay > give_up
                if exc.permanent or out_of_time or (give_up is None and give_way and self._lanes.over_budget()):
                    log.error("cannot read Loki back; sending the push again", extra={"error": str(exc)})
                    return Verdict("unresolved", frozenset(confirmed))
                self._warn.warning(
                    "Loki cannot be asked whether it stored a push; asking again", key="query", error=str(exc)
                )
                self._sleep(delay)

    def _found(self, probe: Probe) -> bool:
        found = self._client.query_range(selector(probe.labels), probe.ts_ns, probe.ts_ns + 1, limit=1000)
        return any(ts == probe.ts_ns and line_hash(line) == probe.line_hash for ts, line in found)

    def _sleep(self, secs: float) -> None:
        """Sleep up to `secs`, waking early when logpipe begins stopping."""
        self._stop.wait(secs)
