"""Delivering the lanes to Loki: batching, concurrency, retries, and acknowledgement into the checkpoint.

A dispatcher thread takes batches from the lanes when they are due and hands them to a small pool of push
workers. Before a push is sent, its intent is written to the checkpoint; when Loki acknowledges it (2xx, or a
final 400 whose rejected entries are counted by reason) the lanes drop the entries and the cursors advance.
A retryable failure (429, 5xx, network, a misconfiguration such as 401) puts only that batch's lanes into a
capped, jittered exponential backoff that honours Retry-After; a 413 halves them. After a crash, `resolve`
reads pushes that were in flight back from Loki, so they are neither lost nor sent twice.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from logpipe.checkpoint import Advance, Checkpoint, Intent
from logpipe.config import LokiConfig
from logpipe.sinks.lanes import Batch, BatchLimits, Lanes
from logpipe.sinks.loki import LokiClient, LokiUnavailable, PushResult
from logpipe.sinks.push import EncodedPush, encode, line_hash, selector
from logpipe.telemetry import Telemetry

log = logging.getLogger("logpipe.loki")

MAX_RETRY_AFTER_SECS = 300.0
_LOG_EVERY_SECS = 10.0


def limits_of(config: LokiConfig) -> BatchLimits:
    return BatchLimits(config.batch_max_bytes, config.batch_max_entries, config.batch_wait_secs)


def advances_of(batch: Batch) -> tuple[Advance, ...]:
    """For each lane in the batch, the position of its last entry in the batch."""
    out: list[Advance] = []
    i = 0
    for lane, n in batch.parts:
        i += n
        out.append((lane.key[0], lane.key[1], batch.entries[i - 1][4]))
    return tuple(out)


class LokiSender:
    """Owns the dispatcher thread and push workers for one Loki endpoint."""

    def __init__(
        self,
        client: LokiClient,
        lanes: Lanes,
        checkpoint: Checkpoint,
        config: LokiConfig,
        telemetry: Telemetry,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._client = client
        self._lanes = lanes
        self._checkpoint = checkpoint
        self._telemetry = telemetry
        self._wall_ns = wall_ns
        self._config = config
        self._limits = limits_of(config)
        self._pool = ThreadPoolExecutor(config.max_concurrent_pushes, thread_name_prefix="push")
        self._thread: threading.Thread | None = None
        self._flush = False
        self._stop_at: float | None = None
        self._last_log: dict[str, float] = {}
        self.loki_up = False

    def reconfigure(self, config: LokiConfig) -> None:
        """Batching and age settings apply to the next batch; connection settings need a restart."""
        with self._lanes.cond:
            self._config = config
            self._limits = limits_of(config)
            self._lanes.cond.notify_all()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="loki-dispatch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Send what is waiting (ignoring batch_wait) until the lanes are empty or `timeout` passes."""
        with self._lanes.cond:
            self._flush = True
            self._stop_at = time.monotonic() + timeout
            self._lanes.cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout + 1.0)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self) -> None:
        lanes = self._lanes
        while True:
            with lanes.cond:
                batch = None
                while batch is None:
                    if self._stop_at is not None and (
                        time.monotonic() >= self._stop_at or (lanes.inflight_batches == 0 and not lanes.any_waiting())
                    ):
                        return
                    if lanes.inflight_batches < self._config.max_concurrent_pushes:
                        batch = lanes.take(self._limits, flush=self._flush)
                        if batch is not None:
                            break
                    due = lanes.next_due_in(self._limits)
                    lanes.cond.wait(0.5 if due is None else min(max(due, 0.005), 0.5))
            self._pool.submit(self._push, batch)

    def _push(self, batch: Batch) -> None:
        try:
            config = self._config
            encoded = encode(
                batch.entries,
                now_ns=self._wall_ns(),
                max_age_ns=int(config.max_entry_age_secs * 1e9),
                too_old=config.too_old,
                structured_metadata=config.structured_metadata,
                gzip_level=config.gzip_level,
            )
            intent = Intent(batch.id, time.time(), advances_of(batch), encoded.probes)
            if config.readback:
                self._checkpoint.begin(intent)
            started = time.perf_counter()
            result = self._client.push(encoded.body) if encoded.entries else PushResult("ok", 204)
            self._telemetry.pushed(str(result.status) if result.status else "error", time.perf_counter() - started)
            self._settle(batch, encoded, intent, result)
        except Exception:  # a bug must not wedge the lanes: put the batch back and say so loudly
            log.exception("push failed unexpectedly; will retry")
            with self._lanes.cond:
                self._lanes.retry(batch, self._config.max_backoff_secs, transient=True)

    def _settle(self, batch: Batch, encoded: EncodedPush, intent: Intent, result: PushResult) -> None:
        telemetry = self._telemetry
        if result.outcome in ("ok", "rejected") or (result.outcome == "too_large" and len(batch.entries) == 1):
            self.loki_up = True
            with self._lanes.cond:
                self._lanes.done(batch)
            self._checkpoint.advance(intent.advances, intent.id)
            if result.outcome == "ok":
                telemetry.entries_sent(encoded.entries, len(encoded.body))
            elif result.outcome == "too_large":
                telemetry.entries_dropped("too_large", 1)
            else:
                self._count_rejected(encoded, result)
            telemetry.entries_dropped("too_old", encoded.too_old_dropped)
            telemetry.entries_retimestamped(encoded.retimestamped)
            return
        self._checkpoint.abandon(intent.id)
        if result.outcome == "too_large":
            self._log_rarely("413", "Loki found a push too large; splitting it", entries=len(batch.entries))
            with self._lanes.cond:
                self._lanes.split(batch)
            return
        transient = result.status == 0 or result.status >= 500
        self.loki_up = self.loki_up and not transient
        delay = self._backoff(batch, result)
        telemetry.entries_retried(len(batch.entries))
        self._log_rarely(
            str(result.status),
            "push failed; retrying",
            status=result.status,
            error=result.message[:200],
            retry_in_secs=round(delay, 2),
        )
        with self._lanes.cond:
            self._lanes.retry(batch, delay, transient)

    def _count_rejected(self, encoded: EncodedPush, result: PushResult) -> None:
        rejected = sum(n for n in result.rejected.values() if n > 0)
        for reason, n in result.rejected.items():
            self._telemetry.entries_dropped(reason, encoded.entries if n < 0 else n)
        if all(n >= 0 for n in result.rejected.values()):
            self._telemetry.entries_sent(max(encoded.entries - rejected, 0), len(encoded.body))
        self._log_rarely("400", "Loki rejected entries", reasons=result.rejected, error=result.message[:200])

    def _backoff(self, batch: Batch, result: PushResult) -> float:
        if result.retry_after is not None:
            return min(result.retry_after, MAX_RETRY_AFTER_SECS)
        failures = max(lane.failures for lane, _ in batch.parts)
        ceiling = min(self._config.max_backoff_secs, self._config.min_backoff_secs * 2**failures)
        return random.uniform(ceiling / 2, ceiling)  # jitter: lanes that failed together do not retry together

    def _log_rarely(self, key: str, message: str, **context: object) -> None:
        now = time.monotonic()
        if now - self._last_log.get(key, 0.0) >= _LOG_EVERY_SECS:
            self._last_log[key] = now
            log.warning(message, extra=context)

    # -- after a crash
    def resolve(self, max_wait_secs: float, settle_secs: float = 3.0) -> None:
        """Decide, by reading Loki back, whether each push in flight at the last exit arrived."""
        for intent in self._checkpoint.intents():
            result = self._read_back(intent, max_wait_secs, settle_secs)
            self._telemetry.readback(result)
            log.info("resolved a push in flight at the last exit", extra={"push": intent.id, "result": result})
            if result == "delivered":
                self._checkpoint.advance(intent.advances, intent.id)
            else:
                self._checkpoint.abandon(intent.id)  # its lines are read again from Docker
        self._checkpoint.flush()

    def _read_back(self, intent: Intent, max_wait_secs: float, settle_secs: float) -> str:
        if not intent.probes:
            return "not_delivered"
        deadline = time.monotonic() + max_wait_secs
        settled = False
        backoff = 0.5
        while True:
            try:
                if any(self._probe_found(p.labels, p.ts_ns, p.line_hash) for p in intent.probes):
                    return "delivered"
                if settled:
                    return "not_delivered"
                # Loki shows a push to queries about a second after it answered: look once more, later.
                wait = intent.started_at + self._config.timeout_secs + settle_secs - time.time()
                time.sleep(min(max(wait, settle_secs), max(deadline - time.monotonic(), 0.0)))
                settled = True
            except LokiUnavailable as exc:
                if time.monotonic() + backoff > deadline:
                    log.error("cannot read Loki back; resending the push", extra={"error": str(exc)})
                    return "unresolved"
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _probe_found(self, labels: dict[str, str], ts_ns: int, wanted: str) -> bool:
        found = self._client.query_range(selector(labels), ts_ns, ts_ns + 1, limit=1000)
        return any(ts == ts_ns and line_hash(line) == wanted for ts, line in found)
