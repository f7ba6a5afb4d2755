"""Settling pushes whose fate is unknown, by reading Loki back: an answer lost mid-push, or a push in flight
when logpipe last exited.

A lost answer: the push's lanes stay in flight (nothing is sent twice meanwhile) while Loki is asked; streams Loki
has are confirmed, the others are sent again, and the outcome settles the batch as any push's would. If logpipe
begins stopping first, the batch is left in flight and its intent on disk, for the next start. At startup, each
intent left on disk is read back concurrently while the readers start: the containers it would advance wait
(`Checkpoint.hold`), delivered pushes advance their cursors (or free their spool record), the others are read
again from Docker (or replayed). Read-backs run on their own threads, not in push slots.
"""

from __future__ import annotations

import functools
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from logpipe.sinks.loki import PushResult
from logpipe.sinks.pushing import Pusher, Uncertain
from logpipe.sinks.readback import ReadBack
from logpipe.sinks.replay import ReplaySource
from logpipe.state import Intent, State
from logpipe.telemetry import Telemetry
from logpipe.threads import Threads

log = logging.getLogger("logpipe.loki")

#: Read-backs at once (lost answers are rare; at startup there are at most a few intents per push slot).
AT_ONCE = 8
#: Loki shows an entry to queries about a second after storing it.
SETTLE_SECS = 2.0


class Resolver:
    def __init__(
        self,
        readback: ReadBack,
        pusher: Pusher,
        state: State,
        replay: ReplaySource | None,
        telemetry: Telemetry,
        threads: Threads,
    ) -> None:
        self._readback = readback
        self._pusher = pusher
        self._state = state
        self._replay = replay
        self._telemetry = telemetry
        self._threads = threads
        self._pool = ThreadPoolExecutor(AT_ONCE, thread_name_prefix="loki-resolve")
        self._cond = threading.Condition()
        self._pending = 0  # intents of the last exit still being read back

    # -- after a lost answer
    def submit(self, uncertain: Uncertain) -> bool:
        """Settle `uncertain` on a resolver thread; False when the resolver is shut down (then it stays unknown)."""
        try:
            self._pool.submit(self._threads.guard, "resolver", functools.partial(self._settle, uncertain))
        except RuntimeError:
            return False
        return True

    def _settle(self, u: Uncertain) -> None:
        live = u.batch is not None
        while True:
            verdict = self._readback.ask(u.intent, None, SETTLE_SECS, give_way=live)
            self._telemetry.readback(verdict.outcome)
            if verdict.outcome == "stopping":
                return  # left in flight; the intent is on disk for the next start
            if verdict.outcome == "delivered":
                result = PushResult("ok", 0, message="confirmed by reading Loki back")
            elif verdict.outcome == "partial":
                # Some streams arrived, others did not: send the others again (and only them).
                rest = [entry for entry in u.entries if entry[3] not in verdict.confirmed]
                self._telemetry.entries_sent(len(u.entries) - len(rest))
                encoded = self._pusher.encode(rest)
                intent = Intent(u.intent.id, u.intent.started_at, u.intent.advances, encoded.probes, u.intent.spool_id)
                result = self._pusher.send(encoded, intent)
                u = Uncertain(rest, encoded, intent, result, u.batch)
                if result.ambiguous:
                    continue
            else:
                result = u.result  # not there, or Loki cannot be asked: send it again
            break
        if u.batch is not None:
            self._pusher.settle_batch(u.batch, u.encoded, u.intent, result)
        elif u.intent.spool_id is not None:
            self._pusher.settle_record(u.intent.spool_id, u.entries, u.encoded, u.intent, result)

    # -- after a crash
    def resolve_at_start(self, intents: list[Intent], max_wait_secs: float) -> None:
        """Hold the containers `intents` would advance, and read the intents back in the background."""
        with self._cond:
            self._pending += len(intents)
        for intent in intents:
            self._state.checkpoint.hold(intent)
            try:
                task = functools.partial(self._resolve, intent, max_wait_secs)
                self._pool.submit(self._threads.guard, "resolver", task)
            except RuntimeError:
                self._done(intent)

    def _resolve(self, intent: Intent, max_wait_secs: float) -> None:
        """Decide, by reading Loki back, whether a push in flight at the last exit arrived as a whole."""
        try:
            verdict = self._readback.ask(intent, max_wait_secs, SETTLE_SECS)
            self._telemetry.readback(verdict.outcome)
            log.info("resolved a push in flight at the last exit", extra={"push": intent.id, "result": verdict.outcome})
            if verdict.outcome == "delivered":
                self._state.checkpoint.advance(intent.advances, intent.id)
                if intent.spool_id is not None and self._replay is not None:
                    self._replay.resolved(intent.spool_id, intent.id)
            elif verdict.outcome != "stopping":
                # Its lines are read again from Docker (or its spool record replayed): streams Loki stored already
                # are repeated, which loses nothing.
                self._state.checkpoint.abandon(intent.id)
        finally:
            self._done(intent)

    def _done(self, intent: Intent) -> None:
        self._state.checkpoint.release(intent)
        with self._cond:
            self._pending -= 1
            self._cond.notify_all()

    @property
    def resolving(self) -> bool:
        """Intents of the last exit are still being read back (spool replays wait: one may be among them)."""
        with self._cond:
            return self._pending > 0

    def resolved(self, timeout: float) -> bool:
        """Wait until the intents of the last exit are resolved."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
