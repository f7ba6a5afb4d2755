"""One push to Loki, from entries to an acknowledged outcome: encode, record the intent, POST, classify, settle.

A live batch settles into the lanes (done, retry with backoff, split after a 413) and the checkpoint (advance or
abandon its intent); a spool record settles into the replay source. When the answer is lost after Loki may have
read the request (`PushResult.ambiguous`), the push is not settled here: it comes back as `Uncertain`, for the
resolver to read Loki back. Every Loki answer is counted here, once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from logpipe.backoff import delay_for
from logpipe.config import LokiConfig
from logpipe.ratelimit import RateLimitedLog
from logpipe.sinks.lanes import Batch, Entry, LaneKey, Lanes, new_id
from logpipe.sinks.loki import LokiClient, PushResult
from logpipe.sinks.push import EncodedPush, encode
from logpipe.sinks.replay import ReplaySource
from logpipe.state import Intent, State
from logpipe.telemetry import Telemetry

log = logging.getLogger("logpipe.loki")

MAX_RETRY_AFTER_SECS = 300.0
#: In a push Loki rate-limited, a lane that sent less than this is quiet: it did not cause the limit.
QUIET_BYTES = 64 * 1024


def quiet_lanes(batch: Batch) -> set[LaneKey]:
    """The lanes of a rate-limited batch that did not cause the volume. They retry soon and do not back off: a
    quiet container's error line must not wait behind a flooding container's backoff. (A push of quiet lanes only
    is tiny and fits Loki's bucket once the flood waits; if it does not, it tries again at the minimum backoff.)"""
    quiet: set[LaneKey] = set()
    i = 0
    for lane, n in batch.parts:
        if sum(entry[5] for entry in batch.entries[i : i + n]) < QUIET_BYTES:
            quiet.add(lane.key)
        i += n
    return quiet


@dataclass(slots=True)
class Uncertain:
    """A push whose answer was lost: its entries, what was sent, and its intent (on disk already)."""

    entries: list[Entry]
    encoded: EncodedPush
    intent: Intent
    result: PushResult
    batch: Batch | None = None  # a live batch (None: the spool record `intent.spool_id`)


class Pusher:
    """Thread-safe: push workers call it concurrently."""

    def __init__(
        self,
        client: LokiClient,
        lanes: Lanes,
        state: State,
        replay: ReplaySource | None,
        config: LokiConfig,
        telemetry: Telemetry,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._client = client
        self._lanes = lanes
        self._state = state
        self._replay = replay
        self.config = config  # replaced on reload: read once per push
        self._telemetry = telemetry
        self._wall_ns = wall_ns
        self._log = RateLimitedLog(log)
        self.loki_up = False

    # -- live batches
    def push_batch(self, batch: Batch) -> Uncertain | None:
        try:
            encoded = self.encode(batch.entries)
            intent = Intent(batch.id, time.time(), batch.advances(), encoded.probes)
            result = self.send(encoded, intent)
            if result.ambiguous and self.config.readback:
                return Uncertain(batch.entries, encoded, intent, result, batch)
            self.settle_batch(batch, encoded, intent, result)
        except Exception:  # a bug must not wedge the lanes: put the batch back and say so loudly
            log.exception("push failed unexpectedly; will retry")
            with self._lanes.cond:
                self._lanes.retry(batch, self.config.max_backoff_secs, transient=True)
        return None

    def settle_batch(self, batch: Batch, encoded: EncodedPush, intent: Intent, result: PushResult) -> None:
        """Apply a live push's final result to the lanes and the checkpoint."""
        if result.outcome in ("ok", "rejected") or (result.outcome == "too_large" and len(batch.entries) == 1):
            self.loki_up = self.loki_up or result.status != 0
            with self._lanes.cond:
                self._lanes.done(batch)
            self._state.checkpoint.advance(intent.advances, intent.id)
            if result.outcome == "too_large":
                self._telemetry.entries_dropped("too_large", 1)
            else:
                self.account(encoded, result)
            return
        self._state.checkpoint.abandon(intent.id)
        if result.outcome == "too_large":
            self._log.warning("Loki found a push too large; splitting it", key="413", entries=len(batch.entries))
            with self._lanes.cond:
                self._lanes.split(batch)
            return
        transient = result.status == 0 or result.status >= 500
        self.loki_up = self.loki_up and not transient
        spared = quiet_lanes(batch) if result.status == 429 and result.retry_after is None else ()
        delay = self.delay(result, max((lane.failures for lane, _ in batch.parts if lane.key not in spared), default=0))
        self._telemetry.entries_retried(len(batch.entries))
        self._log.warning(
            "push failed; retrying",
            key=str(result.status),
            status=result.status,
            error=result.message[:200],
            retry_in_secs=round(delay, 2),
        )
        with self._lanes.cond:
            self._lanes.retry(batch, delay, transient, spared, self.config.min_backoff_secs)

    # -- spool records
    def push_record(self, rid: int, entries: list[Entry]) -> Uncertain | None:
        replay = self._replay
        assert replay is not None
        try:
            encoded = self.encode(entries)
            intent = Intent(new_id(), time.time(), (), encoded.probes, spool_id=rid)
            result = self.send(encoded, intent)
            if result.ambiguous and self.config.readback:
                return Uncertain(entries, encoded, intent, result)
            self.settle_record(rid, entries, encoded, intent, result)
        except Exception:
            log.exception("replay failed unexpectedly; will retry")
            replay.failed(rid, self.config.max_backoff_secs)
        return None

    def settle_record(
        self, rid: int, entries: list[Entry], encoded: EncodedPush | None, intent: Intent, result: PushResult
    ) -> None:
        """Apply a replay's final result to the spool. `encoded` None: its entries were counted already."""
        replay = self._replay
        assert replay is not None
        if result.outcome == "too_large" and len(entries) > 1:
            # Not delivered as a whole: forget the intent first, or a crash after the first part would let the
            # next start find that part, call the record delivered and lose the rest. A retry after a half went
            # through sends that half again with the record: rare (413, then 429/5xx); Loki drops exact repeats.
            self._state.checkpoint.abandon(intent.id)
            half = len(entries) // 2
            ok = self._push_part(entries[:half]) and self._push_part(entries[half:])
            result = PushResult("ok", 204) if ok else PushResult("retry", 0, message="a part of a split replay")
            encoded = None
        elif result.outcome == "too_large":
            self._telemetry.entries_dropped("too_large", 1)
            result, encoded = PushResult("ok", 413), None
        if result.outcome == "retry":
            self._state.checkpoint.abandon(intent.id)
            replay.failed(rid, self.delay(result, replay.failures))
            self._telemetry.entries_retried(len(entries))
            return
        self.loki_up = self.loki_up or result.status != 0
        replay.delivered(rid, intent.id)
        self._state.checkpoint.advance((), intent.id)
        if encoded is not None:
            self.account(encoded, result)

    def _push_part(self, entries: list[Entry]) -> bool:
        """Send part of a spooled batch that Loki found too large; False when it must be tried again."""
        encoded = self.encode(entries)
        result = self.send(encoded, None)
        if result.outcome == "too_large":
            if len(entries) == 1:
                self._telemetry.entries_dropped("too_large", 1)
                return True
            half = len(entries) // 2
            return self._push_part(entries[:half]) and self._push_part(entries[half:])
        if result.outcome == "retry":
            return False
        self.account(encoded, result)
        return True

    # -- shared
    def encode(self, entries: list[Entry]) -> EncodedPush:
        config = self.config
        return encode(
            entries,
            now_ns=self._wall_ns(),
            max_age_ns=int(config.max_entry_age_secs * 1e9),
            too_old=config.too_old,
            structured_metadata=config.structured_metadata,
            gzip_level=config.gzip_level,
        )

    def send(self, encoded: EncodedPush, intent: Intent | None) -> PushResult:
        """POST `encoded`, recording `intent` first (durably) so that a crash mid-push can be read back."""
        if not encoded.entries:  # everything was dropped (too old, or stands for records not shipped)
            return PushResult("ok", 0)  # status 0: Loki was not asked
        if intent is not None and self.config.readback:
            self._state.checkpoint.begin(intent)
        started = time.perf_counter()
        result = self._client.push(encoded.body)
        self._telemetry.pushed(str(result.status) if result.status else "error", time.perf_counter() - started)
        return result

    def account(self, encoded: EncodedPush, result: PushResult) -> None:
        telemetry = self._telemetry
        telemetry.entries_dropped("too_old", encoded.too_old_dropped)
        telemetry.entries_retimestamped(encoded.retimestamped)
        if result.outcome == "ok":
            telemetry.entries_sent(encoded.entries, len(encoded.body))
            return
        rejected = sum(n for n in result.rejected.values() if n > 0)
        for reason, n in result.rejected.items():
            telemetry.entries_dropped(reason, encoded.entries if n < 0 else n)
        if all(n >= 0 for n in result.rejected.values()):
            telemetry.entries_sent(max(encoded.entries - rejected, 0), len(encoded.body))
        self._log.warning("Loki rejected entries", key="400", reasons=result.rejected, error=result.message[:200])

    def delay(self, result: PushResult, failures: int) -> float:
        """The retry policy: Retry-After when Loki gives one (capped), else capped jittered exponential backoff."""
        retry_after = None if result.retry_after is None else min(result.retry_after, MAX_RETRY_AFTER_SECS)
        return delay_for(failures, self.config.min_backoff_secs, self.config.max_backoff_secs, retry_after)
