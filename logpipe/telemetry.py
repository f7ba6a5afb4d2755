"""logpipe's own health: one method per thing that happens, counting it (and logging it where useful).

Every `logpipe_*` metric is defined here, on the registry the daemon passes in. Hot paths report in bulk
(`lines_read(n)` once per chunk), never per line. State gauges (lag, queue depth, spool size, containers
followed) are read at scrape time from a `StateProbe` the daemon provides. Label values are bounded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from logpipe import __version__
from logpipe.event import FORMATS
from logpipe.ratelimit import RateLimitedLog
from logpipe.threads import KINDS as THREAD_KINDS

log = logging.getLogger("logpipe")

#: Why entries never reach Loki. Chosen: a ship rule (`rule`), a sample rule (`sampled`), the per-stream rate limit
#: (`rate_limited`). Lost: the rest, Loki's own reasons (from its 400 bodies) included. Every one is exported at
#: 0 from the start, so `increase()` alerts and dashboard panels read 0 rather than nothing on a healthy system.
CHOSEN_DROPS = ("rule", "sampled", "rate_limited")
LOST_DROPS = (
    "too_old",
    "too_large",
    "spool_full",
    "spool_corrupt",
    "too_far_behind",
    "too_new",
    "line_too_long",
    "metadata_invalid",
    "invalid_labels",
    "loki_rate_limited",
    "stream_limit",
    "rejected",
)
#: Loki answers exported at 0 from the start ("error": no answer at all). Other statuses appear when they happen.
LOKI_STATUSES = ("204", "400", "401", "403", "404", "413", "429", "500", "502", "503", "504", "error")
RECONNECT_STREAMS = ("logs", "events")


@dataclass(frozen=True, slots=True)
class StateSnapshot:
    """Gauges read at scrape time."""

    containers_followed: int = 0
    lag_secs: Mapping[str, float] = field(default_factory=dict)
    queue_bytes: int = 0
    queue_entries: int = 0
    pushes_in_flight: int = 0
    spool_bytes: int = 0
    spool_records: int = 0
    spool_oldest_age_secs: float = 0.0
    docker_up: bool = False
    loki_up: bool = False


class _StateCollector(Collector):
    def __init__(self, probe: Callable[[], StateSnapshot]) -> None:
        self._probe = probe

    def collect(self) -> Iterator[Metric]:
        s = self._probe()
        yield _gauge("logpipe_containers_followed", "Containers whose logs are being followed.", s.containers_followed)
        lag = GaugeMetricFamily(
            "logpipe_container_lag_seconds",
            "0 when every line read is acknowledged, else now minus the Docker time of the oldest unacknowledged line.",
            labels=["container"],
        )
        for name, value in sorted(s.lag_secs.items()):
            lag.add_metric([name], value)
        yield lag
        yield _gauge("logpipe_queue_bytes", "Bytes of entries held in memory, waiting for Loki.", s.queue_bytes)
        yield _gauge("logpipe_queue_entries", "Entries held in memory, waiting for Loki.", s.queue_entries)
        yield _gauge("logpipe_pushes_in_flight", "Loki pushes under way.", s.pushes_in_flight)
        yield _gauge("logpipe_spool_bytes", "Bytes the disk spool occupies.", s.spool_bytes)
        yield _gauge("logpipe_spool_records", "Batches in the disk spool waiting for replay.", s.spool_records)
        yield _gauge(
            "logpipe_spool_oldest_age_seconds", "Age of the oldest batch waiting in the spool.", s.spool_oldest_age_secs
        )
        yield _gauge("logpipe_docker_up", "1 while the Docker events stream is connected.", int(s.docker_up))
        yield _gauge("logpipe_loki_up", "1 when the last push reached Loki.", int(s.loki_up))
        info = GaugeMetricFamily("logpipe_build_info", "logpipe's version.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


PUSH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Telemetry:
    """Self-metrics on a registry passed in (never the global one)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        c = _CounterFactory(registry)
        self._lines_read = c("logpipe_lines_read", "Lines read from Docker.")
        self._lines_sanitized = c("logpipe_lines_sanitized", "Lines repaired before parsing.", ["reason"])
        self._skipped = c("logpipe_lines_skipped", "Lines not shipped on purpose, by reason (blank lines).", ["reason"])
        self._partials = c("logpipe_partial_frames_joined", "Docker 16 KiB partial messages joined into their line.")
        self._truncated = c("logpipe_lines_truncated", "Lines cut at docker.max_line_bytes (marked in the line).")
        self._bad_ts = c("logpipe_bad_timestamps", "Docker log frames without a readable timestamp.")
        self._entries_read = c("logpipe_entries_read", "Entries built: records, and rate-limit summaries.")
        self._entries_sent = c("logpipe_entries_sent", "Entries acknowledged by Loki (or written by the stdout sink).")
        self._entries_dropped = c(
            "logpipe_entries_dropped",
            "Entries that will never reach Loki, by reason (and the ship rule that chose it, or empty).",
            ["reason", "rule"],
        )
        self._entries_retried = c("logpipe_entries_retried", "Entries in pushes that had to be retried.")
        self._entries_spooled = c("logpipe_entries_spooled", "Entries written to the disk spool.")
        self._entries_retimestamped = c(
            "logpipe_entries_retimestamped", "Entries too old for Loki's window sent with a new timestamp."
        )
        self._sent_bytes = c("logpipe_sent_bytes", "Compressed bytes of pushes Loki accepted.")
        self._responses = c(
            "logpipe_loki_responses", "Loki push responses by status (error = no response).", ["status"]
        )
        self._parse_errors = c("logpipe_parse_errors", "Lines that looked like a format but did not parse.", ["format"])
        self._reconnects = c("logpipe_stream_reconnects", "Docker streams reopened after breaking.", ["stream"])
        self._reloads = c("logpipe_config_reloads", "Configuration reloads by result.", ["result"])
        self._redactions = c("logpipe_redactions", "Secrets redacted from lines, by rule.", ["rule"])
        self._readback = c(
            "logpipe_readback", "Pushes in flight at a crash, resolved by reading Loki back.", ["result"]
        )
        self._state_errors = c("logpipe_state_write_errors", "Failed writes of the checkpoint file.")
        self._thread_crashes = c(
            "logpipe_thread_crashes", "Unexpected exceptions that ended a thread's work, by thread.", ["thread"]
        )
        for kind in THREAD_KINDS:
            self._thread_crashes.labels(kind)
        for reason in CHOSEN_DROPS[2:] + LOST_DROPS:
            self._entries_dropped.labels(reason, "")
        for status in LOKI_STATUSES:
            self._responses.labels(status)
        for stream in RECONNECT_STREAMS:
            self._reconnects.labels(stream)
        for fmt in FORMATS:
            self._parse_errors.labels(fmt)
        self._warn = RateLimitedLog(log)
        self._push_duration = Histogram(
            "logpipe_loki_push_duration_seconds",
            "Duration of Loki push requests.",
            buckets=PUSH_BUCKETS,
            registry=registry,
        )

    def watch_state(self, probe: Callable[[], StateSnapshot]) -> None:
        self.registry.register(_StateCollector(probe))

    # -- source
    def lines_read(self, n: int) -> None:
        self._lines_read.inc(n)

    def decoded(self, partials_joined: int, truncated: int, bad_timestamps: int) -> None:
        """What decoding a container's log stream had to repair."""
        if partials_joined:
            self._partials.inc(partials_joined)
        if truncated:
            self._truncated.inc(truncated)
        if bad_timestamps:
            self._bad_ts.inc(bad_timestamps)

    def lines_sanitized(self, reason: str, n: int = 1) -> None:
        self._lines_sanitized.labels(reason).inc(n)

    def lines_skipped(self, reason: str, n: int) -> None:
        self._skipped.labels(reason).inc(n)

    def reconnected(self, stream: str) -> None:
        self._reconnects.labels(stream).inc()

    # -- parse
    def entries_read(self, n: int) -> None:
        self._entries_read.inc(n)

    def parse_error(self, fmt: str) -> None:
        self._parse_errors.labels(fmt).inc()

    def redacted(self, rule: str, n: int) -> None:
        self._redactions.labels(rule).inc(n)

    # -- sinks
    def pushed(self, status: str, seconds: float) -> None:
        self._responses.labels(status).inc()
        self._push_duration.observe(seconds)

    def entries_sent(self, n: int, compressed_bytes: int = 0) -> None:
        self._entries_sent.inc(n)
        if compressed_bytes:
            self._sent_bytes.inc(compressed_bytes)

    def entries_dropped(self, reason: str, n: int, rule: str = "") -> None:
        """`n` entries will never reach Loki; a lost one is logged (at most every 10 s per reason)."""
        if n:
            self._entries_dropped.labels(reason, rule).inc(n)
            if reason not in ("rule", "sampled"):
                self._warn.warning("entries dropped", key=reason, reason=reason, entries=n)

    def ship_rules(self, rules: Mapping[str, str]) -> None:
        """Export the drops of these ship rules (name: action) at 0 (at startup and on every reload)."""
        for name, action in rules.items():
            if action in ("drop", "sample"):
                self._entries_dropped.labels("rule" if action == "drop" else "sampled", name)

    def entries_retried(self, n: int) -> None:
        self._entries_retried.inc(n)

    def entries_spooled(self, n: int) -> None:
        self._entries_spooled.inc(n)

    def entries_retimestamped(self, n: int) -> None:
        if n:
            self._entries_retimestamped.inc(n)

    def readback(self, result: str) -> None:
        self._readback.labels(result).inc()

    def state_write_failed(self, error: Exception) -> None:
        self._state_errors.inc()
        log.error("cannot write the checkpoint", extra={"error": str(error)})

    def thread_crashed(self, thread: str) -> None:
        self._thread_crashes.labels(thread).inc()

    # -- control
    def reloaded(self, ok: bool) -> None:
        self._reloads.labels("success" if ok else "failure").inc()


class _CounterFactory:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def __call__(self, name: str, doc: str, labels: list[str] | None = None) -> Counter:
        return Counter(name, doc, labelnames=labels or [], registry=self._registry)
