"""Delivering the lanes to Loki: batching, concurrency, retries, and acknowledgement into the checkpoint.

A dispatcher thread takes batches from the lanes when they are due and hands them to a small pool of push
workers. Before a push is sent, its intent is written to the checkpoint; when Loki acknowledges it (2xx, or a
final 400 whose rejected entries are counted by reason) the lanes drop the entries and the cursors advance.
A retryable failure (429, 5xx, network, a misconfiguration such as 401) puts only that batch's lanes into a
capped, jittered exponential backoff that honours Retry-After; a 413 halves them. After a crash, `resolve`
reads pushes that were in flight back from Loki, so they are neither lost nor sent twice.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from logpipe.backoff import delay_for
from logpipe.checkpoint import Advance, Checkpoint, Intent
from logpipe.config import LokiConfig
from logpipe.ratelimit import RateLimitedLog
from logpipe.sinks.lanes import Batch, BatchLimits, Entry, Lanes, new_id
from logpipe.sinks.loki import LokiClient, PushResult
from logpipe.sinks.overflow import Overflow
from logpipe.sinks.push import EncodedPush, encode
from logpipe.sinks.readback import ReadBack, Verdict
from logpipe.sinks.spool import SpoolId
from logpipe.telemetry import Telemetry
from logpipe.threads import Threads

log = logging.getLogger("logpipe.loki")

MAX_RETRY_AFTER_SECS = 300.0
#: At shutdown, the time kept back from delivery to write what is left to the spool.
SPILL_RESERVE_SECS = 1.0
#: Pushes in flight at the last exit are read back this many at a time.
RESOLVE_AT_ONCE = 8


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
        threads: Threads | None = None,
    ) -> None:
        self._client = client
        self.overflow = overflow
        self._threads = threads or Threads(lambda _kind: None)
        self._replays = 0
        self._resolving = 0  # intents from the last exit still being read back: no spool replay meanwhile
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
        self._log = RateLimitedLog(log)
        self.loki_up = False
        self._readback = ReadBack(client, config.timeout_secs, lambda: self._stop_at is not None, lanes.over_budget_now)

    def reconfigure(self, config: LokiConfig) -> None:
        """Batching and age settings apply to the next batch; connection settings need a restart."""
        with self._lanes.cond:
            self._config = config
            self._limits = limits_of(config)
            self._lanes.cond.notify_all()

    def start(self) -> None:
        """Start delivering. Pushes in flight at the last exit are read back from Loki meanwhile, concurrently:
        the containers they would advance are held (`Checkpoint.settled`) until each is resolved."""
        intents = self._checkpoint.intents() if self._config.readback else []
        for intent in intents:
            self._checkpoint.hold(intent)
        self._resolving = len(intents)
        if intents:
            self._threads.start("resolver", lambda: self._resolve_all(intents), name="loki-resolve")
        self._thread = self._threads.start("dispatcher", self._run, name="loki-dispatch")

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
            if work[0] == "replay":
                # The spool is read here, outside the lanes' lock: a slow disk must not hold up `put` or acks.
                found = self.overflow.next() if self.overflow is not None else None
                if found is None:
                    with lanes.cond:
                        self._replays -= 1
                        lanes.cond.notify_all()
                    continue
                task: Callable[[], None] = functools.partial(self._replay, *found)
            else:
                task = functools.partial(self._push, work[1])
            try:
                self._pool.submit(self._threads.guard, "push", task)
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
        replay = overflow is not None and self._stop_at is None and not self._resolving
        for kind in ("replay", "live") if replay_turn else ("live", "replay"):
            if kind == "live":
                batch = lanes.take(self._limits, flush=self._flush)
                if batch is not None:
                    return ("live", batch)
            elif replay and overflow is not None and overflow.ready():
                self._replays += 1  # a slot, reserved until the record is read (outside the lock)
                return ("replay", None)
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
        overflow = self.overflow
        assert overflow is not None
        try:
            whole = self._encode(entries)
            intent = Intent(new_id(), time.time(), (), whole.probes, spool_id=rid)
            counted: EncodedPush | None
            result, counted = self._send(entries, whole, intent)
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
                counted = None
            elif result.outcome == "too_large":
                self._telemetry.entries_dropped("too_large", 1)
                result, counted = PushResult("ok", 0), None
            if result.outcome == "retry":
                self._checkpoint.abandon(intent.id)
                overflow.failed(rid, self._delay(result, overflow.failures))
                self._telemetry.entries_retried(len(entries))
                return
            self.loki_up = True
            overflow.delivered(rid)
            self._checkpoint.advance((), intent.id)
            if counted is not None:
                self._account(counted, result)
        except Exception:
            log.exception("replay failed unexpectedly; will retry")
            overflow.failed(rid, self._config.max_backoff_secs)
        finally:
            with self._lanes.cond:
                self._replays -= 1
                self._lanes.cond.notify_all()

    def _replay_part(self, entries: list[Entry]) -> bool:
        """Send part of a spooled batch that Loki found too large; False when it must be tried again."""
        encoded = self._encode(entries)
        result, counted = self._send(entries, encoded, None)
        if result.outcome == "too_large":
            if len(entries) == 1:
                self._telemetry.entries_dropped("too_large", 1)
                return True
            half = len(entries) // 2
            return self._replay_part(entries[:half]) and self._replay_part(entries[half:])
        if result.outcome == "retry":
            return False
        self._account(counted, result)
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

    def _send(
        self, entries: list[Entry], encoded: EncodedPush, intent: Intent | None
    ) -> tuple[PushResult, EncodedPush]:
        """Push `encoded` (built from `entries`), recording `intent` first. When the answer is lost, Loki is read
        back: streams it stored are not sent again, the others are (a push of their entries only).

        Returns the result and the push whose entries it accounts for (the last one sent); entries of streams
        confirmed by the read-back are counted as sent here.
        """
        readback = intent is not None and self._config.readback
        while True:
            if intent is not None and readback:
                self._checkpoint.begin(intent)
            if not encoded.entries:
                return PushResult("ok", 204), encoded
            started = time.perf_counter()
            result = self._client.push(encoded.body)
            self._telemetry.pushed(str(result.status) if result.status else "error", time.perf_counter() - started)
            if not (result.ambiguous and intent is not None and readback):
                return result, encoded
            verdict = self._read_back(intent)
            self._telemetry.readback(verdict.outcome)
            if verdict.outcome == "delivered":
                return PushResult("ok", 0, message="confirmed by reading Loki back"), encoded
            if verdict.outcome == "stopping":
                return PushResult("unresolved", 0, message="logpipe stopped before Loki could be asked"), encoded
            if verdict.outcome in ("unresolved", "not_delivered"):
                return result, encoded
            # Some streams arrived, others did not: send the others again (and only them).
            rest = [entry for entry in entries if entry[3] not in verdict.confirmed]
            self._telemetry.entries_sent(len(entries) - len(rest))
            entries, encoded = rest, self._encode(rest)
            intent = Intent(intent.id, time.time(), intent.advances, encoded.probes, intent.spool_id)

    def _read_back(self, intent: Intent) -> Verdict:
        # While Loki cannot be asked it cannot take the push again either: wait for it, unless logpipe is stopping
        # (the intent stays for the next start) or the lanes are full (re-send, so they can spill).
        live = intent.spool_id is None
        if live:
            with self._lanes.cond:
                self._lanes.suspend()  # its push slot goes to other lanes while Loki is being asked
        try:
            return self._readback.ask(intent, None, settle_secs=2.0, give_way=live)
        finally:
            if live:
                with self._lanes.cond:
                    self._lanes.resume()

    def _push(self, batch: Batch) -> None:
        try:
            encoded = self._encode(batch.entries)
            intent = Intent(batch.id, time.time(), advances_of(batch), encoded.probes)
            result, counted = self._send(batch.entries, encoded, intent)
            self._settle(batch, counted, intent, result)
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
            self._log.warning("Loki found a push too large; splitting it", key="413", entries=len(batch.entries))
            with self._lanes.cond:
                self._lanes.split(batch)
            return
        transient = result.status == 0 or result.status >= 500
        self.loki_up = self.loki_up and not transient
        delay = self._delay(result, max(lane.failures for lane, _ in batch.parts))
        telemetry.entries_retried(len(batch.entries))
        self._log.warning(
            "push failed; retrying",
            key=str(result.status),
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
        self._log.warning("Loki rejected entries", key="400", reasons=result.rejected, error=result.message[:200])

    def _delay(self, result: PushResult, failures: int) -> float:
        retry_after = None if result.retry_after is None else min(result.retry_after, MAX_RETRY_AFTER_SECS)
        return delay_for(failures, self._config.min_backoff_secs, self._config.max_backoff_secs, retry_after)

    # -- after a crash
    def _resolve_all(self, intents: list[Intent]) -> None:
        with ThreadPoolExecutor(min(RESOLVE_AT_ONCE, len(intents)), thread_name_prefix="loki-resolve") as pool:
            for intent in intents:
                pool.submit(self._threads.guard, "resolver", functools.partial(self._resolve, intent))
        self._checkpoint.flush()

    def _resolve(self, intent: Intent) -> None:
        """Decide, by reading Loki back, whether a push in flight at the last exit arrived as a whole."""
        try:
            verdict = self._readback.ask(intent, self._config.readback_max_wait_secs, settle_secs=2.0)
            self._telemetry.readback(verdict.outcome)
            log.info("resolved a push in flight at the last exit", extra={"push": intent.id, "result": verdict.outcome})
            if verdict.outcome == "delivered":
                self._checkpoint.advance(intent.advances, intent.id)
                if intent.spool_id is not None and self.overflow is not None:
                    self.overflow.resolved(intent.spool_id)
            elif verdict.outcome != "stopping":
                # Its lines are read again from Docker (or its spool record replayed): streams Loki stored already
                # are repeated, which loses nothing.
                self._checkpoint.abandon(intent.id)
        finally:
            self._checkpoint.release(intent)
            with self._lanes.cond:
                self._resolving -= 1
                self._lanes.cond.notify_all()

    def resolved(self, timeout: float) -> bool:
        """Wait until the pushes in flight at the last exit are resolved (tests, `logpipe check`)."""
        with self._lanes.cond:
            return self._lanes.cond.wait_for(lambda: self._resolving == 0, timeout)
