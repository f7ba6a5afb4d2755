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
from typing import Any

from logpipe.checkpoint import Advance, Checkpoint, Intent
from logpipe.config import LokiConfig
from logpipe.sinks.lanes import Batch, BatchLimits, Entry, Lanes, new_id
from logpipe.sinks.loki import LokiClient, PushResult
from logpipe.sinks.overflow import Overflow
from logpipe.sinks.push import EncodedPush, encode
from logpipe.sinks.readback import ReadBack
from logpipe.sinks.spool import SpoolId
from logpipe.telemetry import Telemetry

log = logging.getLogger("logpipe.loki")

MAX_RETRY_AFTER_SECS = 300.0
#: At shutdown, the time kept back from delivery to write what is left to the spool.
SPILL_RESERVE_SECS = 1.0
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
        overflow: Overflow | None = None,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._client = client
        self.overflow = overflow
        self._replays = 0
        self._lanes = lanes
        self._checkpoint = checkpoint
        self._telemetry = telemetry
        self._wall_ns = wall_ns
        self._config = config
        self._limits = limits_of(config)
        # Twice the pushes: a worker waiting to read Loki back gives its push slot to other lanes meanwhile.
        self._pool = ThreadPoolExecutor(2 * config.max_concurrent_pushes, thread_name_prefix="push")
        self._thread: threading.Thread | None = None
        self._flush = False
        self._stop_at: float | None = None
        self._last_log: dict[str, float] = {}
        self.loki_up = False
        self._readback = ReadBack(client, config.timeout_secs, lambda: self._stop_at is not None, lanes.over_budget_now)

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
        """Deliver what is waiting (ignoring batch_wait) within `timeout`; spool what cannot be delivered.

        Delivery stops early when every waiting lane is backing off past the deadline (Loki is down). Pushes
        still in flight at the deadline are not waited for: their intents are in the checkpoint, and the next
        start reads them back from Loki.
        """
        deadline = time.monotonic() + timeout
        with self._lanes.cond:
            self._flush = True
            self._stop_at = deadline
            self._lanes.cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lanes.cond:
            self._lanes.cond.wait_for(
                lambda: self._lanes.inflight_batches == 0 and self._replays == 0,
                max(deadline - time.monotonic(), 0.0),
            )

    def _run(self) -> None:
        lanes = self._lanes
        replay_turn = False
        while True:
            with lanes.cond:
                work = None
                while work is None:
                    if self._stop_at is not None:
                        work = self._stopping()
                        if work is None:
                            return
                        if work[0] == "spill":
                            break
                        work = None
                    work = self._choose(replay_turn)
                    if work is None:
                        due = lanes.next_due_in(self._limits)
                        lanes.cond.wait(0.5 if due is None else min(max(due, 0.005), 0.5))
            if work[0] == "spill":
                self._spill(work[1])
                continue
            replay_turn = work[0] == "live"
            try:
                if work[0] == "replay":
                    self._pool.submit(self._replay, *work[1])
                else:
                    self._pool.submit(self._push, work[1])
            except RuntimeError:  # the pool was shut down at the deadline: the work stays unacknowledged
                with lanes.cond:
                    if work[0] == "replay":
                        self._replays -= 1
                    else:
                        lanes.release(work[1])
                return

    def _stopping(self) -> tuple[str, Any] | None:
        """While stopping (lock held): ("go",) to keep delivering, ("spill", batch), or None when done."""
        lanes = self._lanes
        assert self._stop_at is not None
        idle = lanes.inflight_batches == 0 and self._replays == 0
        if idle and not lanes.any_waiting():
            return None
        cutoff = self._stop_at - (SPILL_RESERVE_SECS if self.overflow is not None else 0.0)
        if time.monotonic() < cutoff and (not idle or lanes.sendable_before(cutoff)):
            return ("go", None)
        # A spill must end (spool fsync, checkpoint write) before the process exits at the deadline.
        if self.overflow is not None and time.monotonic() < self._stop_at - 0.3 and self.overflow.can_spill():
            rest = lanes.take_failing(self._limits, everything=True)
            if rest is not None:
                return ("spill", rest)
        return None if idle or time.monotonic() >= self._stop_at else ("go", None)

    def _choose(self, replay_turn: bool) -> tuple[str, Any] | None:
        """The next piece of work (call with the lanes' lock held): spill, replay or a live batch."""
        lanes, overflow = self._lanes, self.overflow
        if overflow is not None and lanes.over_budget_now() and overflow.can_spill():
            failing = lanes.take_failing(self._limits)
            if failing is not None:
                return ("spill", failing)
        if lanes.inflight_batches + self._replays >= self._config.max_concurrent_pushes:
            return None
        replay = overflow is not None and self._stop_at is None
        for kind in ("replay", "live") if replay_turn else ("live", "replay"):
            if kind == "live":
                batch = lanes.take(self._limits, flush=self._flush)
                if batch is not None:
                    return ("live", batch)
            elif replay and overflow is not None:
                found = overflow.next()
                if found is not None:
                    self._replays += 1
                    return ("replay", found)
        return None

    def _spill(self, batch: Batch) -> None:
        assert self.overflow is not None
        stored = self.overflow.spill(batch.entries)
        with self._lanes.cond:
            if stored:
                self._lanes.done(batch, delivered=False)
            else:
                self._lanes.release(batch)
        if stored:
            # Durable in the spool: acknowledged, and written at once. Until the checkpoint says so, a crash
            # would both replay the record and read its lines from Docker again.
            self._checkpoint.advance(advances_of(batch))
            self._checkpoint.flush()

    def _replay(self, rid: SpoolId, entries: list[Entry]) -> None:
        assert self.overflow is not None
        try:
            whole = self._encode(entries)
            encoded: EncodedPush | None = whole  # None once its parts were sent and counted one by one
            intent = Intent(new_id(), time.time(), (), whole.probes, spool_id=rid)
            result = self._send(whole, intent)
            if result.outcome == "unresolved":
                return  # the record stays in the spool and its intent in the checkpoint, for the next start
            if result.outcome == "too_large" and len(entries) > 1:
                # Not delivered as a whole: forget the intent first, or a crash after the first part would let the
                # next start find that part, call the record delivered and lose the rest.
                self._checkpoint.abandon(intent.id)
                half = len(entries) // 2
                # Halves, recursively, as the live lanes do. A retry after a half went through sends that half
                # again with the record: rare (413, then 429/5xx), and Loki drops exact duplicates.
                ok = self._replay_part(entries[:half]) and self._replay_part(entries[half:])
                result = PushResult("ok", 0) if ok else PushResult("retry", 0, message="a part of a split replay")
                encoded = None
            elif result.outcome == "too_large":
                self._telemetry.entries_dropped("too_large", 1)
                result, encoded = PushResult("ok", 0), None
            if result.outcome == "retry":
                self._checkpoint.abandon(intent.id)
                delay = self._delay(result, self.overflow.failures)
                with self._lanes.cond:
                    self.overflow.failed(rid, delay)
                self._telemetry.entries_retried(len(entries))
                return
            self.loki_up = True
            with self._lanes.cond:
                self.overflow.delivered(rid)
            self._checkpoint.advance((), intent.id)
            if encoded is not None:
                self._account(encoded, result)
        except Exception:
            log.exception("replay failed unexpectedly; will retry")
            with self._lanes.cond:
                self.overflow.failed(rid, self._config.max_backoff_secs)
        finally:
            with self._lanes.cond:
                self._replays -= 1
                self._lanes.cond.notify_all()

    def _replay_part(self, entries: list[Entry]) -> bool:
        """Send part of a spooled batch that Loki found too large; False when it must be tried again."""
        encoded = self._encode(entries)
        result = self._send(encoded, None)
        if result.outcome == "too_large":
            if len(entries) == 1:
                self._telemetry.entries_dropped("too_large", 1)
                return True
            half = len(entries) // 2
            return self._replay_part(entries[:half]) and self._replay_part(entries[half:])
        if result.outcome == "retry":
            return False
        self._account(encoded, result)
        return True

    def _encode(self, entries: list[Entry]) -> EncodedPush:
        config = self._config
        return encode(
            entries,
            now_ns=self._wall_ns(),
            max_age_ns=int(config.max_entry_age_secs * 1e9),
            too_old=config.too_old,
            structured_metadata=config.structured_metadata,
            gzip_level=config.gzip_level,
        )

    def _send(self, encoded: EncodedPush, intent: Intent | None) -> PushResult:
        if intent is not None and self._config.readback:
            self._checkpoint.begin(intent)
        if not encoded.entries:
            return PushResult("ok", 204)
        started = time.perf_counter()
        result = self._client.push(encoded.body)
        self._telemetry.pushed(str(result.status) if result.status else "error", time.perf_counter() - started)
        if result.ambiguous and intent is not None and self._config.readback:
            # The connection broke after Loki had the request: ask Loki before sending it again.
            # While Loki cannot be asked it cannot take the push again either: wait for it, unless logpipe is
            # stopping (the intent stays for the next start) or the lanes are full (re-send, so they can spill).
            live = intent.spool_id is None
            if live:
                with self._lanes.cond:
                    self._lanes.suspend()  # its push slot goes to other lanes while Loki is being asked
            try:
                verdict = self._readback.ask(intent, None, settle_secs=2.0, give_way=live)
            finally:
                if live:
                    with self._lanes.cond:
                        self._lanes.resume()
            self._telemetry.readback(verdict)
            if verdict == "delivered":
                return PushResult("ok", 0, message="confirmed by reading Loki back")
            if verdict == "stopping":
                return PushResult("unresolved", 0, message="logpipe stopped before Loki could be asked")
        return result

    def _push(self, batch: Batch) -> None:
        try:
            encoded = self._encode(batch.entries)
            intent = Intent(batch.id, time.time(), advances_of(batch), encoded.probes)
            self._settle(batch, encoded, intent, self._send(encoded, intent))
        except Exception:  # a bug must not wedge the lanes: put the batch back and say so loudly
            log.exception("push failed unexpectedly; will retry")
            with self._lanes.cond:
                self._lanes.retry(batch, self._config.max_backoff_secs, transient=True)

    def _settle(self, batch: Batch, encoded: EncodedPush, intent: Intent, result: PushResult) -> None:
        telemetry = self._telemetry
        if result.outcome == "unresolved":
            with self._lanes.cond:
                self._lanes.park(batch)  # neither re-sent nor spilled: the next start reads it back
            return
        if result.outcome in ("ok", "rejected") or (result.outcome == "too_large" and len(batch.entries) == 1):
            self.loki_up = True
            with self._lanes.cond:
                self._lanes.done(batch)
            self._checkpoint.advance(intent.advances, intent.id)
            if result.outcome == "too_large":
                telemetry.entries_dropped("too_large", 1)
            else:
                self._account(encoded, result)
            return
        self._checkpoint.abandon(intent.id)
        if result.outcome == "too_large":
            self._log_rarely("413", "Loki found a push too large; splitting it", entries=len(batch.entries))
            with self._lanes.cond:
                self._lanes.split(batch)
            return
        transient = result.status == 0 or result.status >= 500
        self.loki_up = self.loki_up and not transient
        delay = self._delay(result, max(lane.failures for lane, _ in batch.parts))
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

    def _account(self, encoded: EncodedPush, result: PushResult) -> None:
        telemetry = self._telemetry
        telemetry.entries_dropped("too_old", encoded.too_old_dropped)
        telemetry.entries_retimestamped(encoded.retimestamped)
        if result.outcome == "ok":
            telemetry.entries_sent(encoded.entries, len(encoded.body))
            return
        rejected = sum(n for n in result.rejected.values() if n > 0)
        for reason, n in result.rejected.items():
            self._telemetry.entries_dropped(reason, encoded.entries if n < 0 else n)
        if all(n >= 0 for n in result.rejected.values()):
            self._telemetry.entries_sent(max(encoded.entries - rejected, 0), len(encoded.body))
        self._log_rarely("400", "Loki rejected entries", reasons=result.rejected, error=result.message[:200])

    def _delay(self, result: PushResult, failures: int) -> float:
        if result.retry_after is not None:
            return min(result.retry_after, MAX_RETRY_AFTER_SECS)
        ceiling = min(self._config.max_backoff_secs, self._config.min_backoff_secs * 2**failures)
        return random.uniform(ceiling / 2, ceiling)  # jitter: lanes that failed together do not retry together

    def _log_rarely(self, key: str, message: str, **context: object) -> None:
        now = time.monotonic()
        if now - self._last_log.get(key, 0.0) >= _LOG_EVERY_SECS:
            self._last_log[key] = now
            log.warning(message, extra=context)

    # -- after a crash
    def resolve(self, max_wait_secs: float, settle_secs: float = 2.0) -> None:
        """Decide, by reading Loki back, whether each push in flight at the last exit arrived."""
        for intent in self._checkpoint.intents():
            result = self._readback.ask(intent, max_wait_secs, settle_secs)
            self._telemetry.readback(result)
            log.info("resolved a push in flight at the last exit", extra={"push": intent.id, "result": result})
            if result == "delivered":
                self._checkpoint.advance(intent.advances, intent.id)
                if intent.spool_id is not None and self.overflow is not None:
                    self.overflow.resolved(intent.spool_id)
            else:
                self._checkpoint.abandon(intent.id)  # its lines are read again from Docker
        self._checkpoint.flush()
