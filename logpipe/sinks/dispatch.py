"""Deciding what the Loki sink does next: spill, replay a spooled batch, or push a live batch; and stopping.

One dispatcher thread picks work under the lanes' lock and hands it to a small pool of push workers, at most
`loki.max_concurrent_pushes` at once, alternating live batches and spool replays so neither starves. When the
lanes are over their memory budget, batches of failing lanes go to the spool instead. A push whose answer is lost
leaves its slot at once and goes to the resolver. At stop, what waits is delivered (ignoring `batch_wait_secs`)
until shortly before the deadline, and what could not be delivered is spilled in the time kept back for it.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from logpipe.sinks.lanes import Batch, BatchLimits, Lanes
from logpipe.sinks.pushing import Pusher, Uncertain
from logpipe.sinks.replay import ReplaySource
from logpipe.sinks.resolve import Resolver
from logpipe.threads import Threads

#: At shutdown, the time kept back from delivery to write what is left to the spool.
SPILL_RESERVE_SECS = 1.0
#: The longest the dispatcher sleeps without a reason to wake (it re-checks backoffs and the spool then).
_IDLE_WAIT_SECS = 0.5


class Dispatcher:
    def __init__(
        self,
        lanes: Lanes,
        pusher: Pusher,
        resolver: Resolver,
        replay: ReplaySource | None,
        limits: BatchLimits,
        max_pushes: int,
        threads: Threads,
    ) -> None:
        self._lanes = lanes
        self._pusher = pusher
        self._resolver = resolver
        self._replay = replay
        self.limits = limits  # replaced on reload (under the lanes' lock)
        self._max_pushes = max_pushes
        self._threads = threads
        self._pool = ThreadPoolExecutor(max_pushes, thread_name_prefix="push")
        self._thread: threading.Thread | None = None
        self.pushes = 0  # in flight, live and replays (under the lanes' lock)
        self._replays = 0
        self._stop_at: float | None = None

    def start(self) -> None:
        self._thread = self._threads.start("dispatcher", self._run, name="loki-dispatch")

    def stop(self, deadline: float) -> None:
        """Flush, then spill, within `deadline` (monotonic); pushes still in flight then are not waited for (their
        intents are on disk and the next start reads them back)."""
        with self._lanes.cond:
            self._stop_at = deadline
            self._lanes.cond.notify_all()
        if self._thread is not None:
            self._thread.join(max(deadline - time.monotonic(), 0.0))
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lanes.cond:
            self._lanes.cond.wait_for(lambda: self.pushes == 0, max(deadline - time.monotonic(), 0.0))

    def _run(self) -> None:
        lanes = self._lanes
        replay_turn = False
        while True:
            with lanes.cond:
                kind, batch = self._next_work(replay_turn)
            if kind == "done":
                return
            if kind == "spill":
                assert batch is not None and self._replay is not None
                self._spill(batch)
                continue
            replay_turn = kind == "live"
            if kind == "replay":
                # The spool is read here, outside the lanes' lock: a slow disk must not hold up `put` or acks.
                found = self._replay.next() if self._replay is not None else None
                if found is None:
                    self._finished(replay=True)
                    continue
                task: Callable[[], Uncertain | None] = functools.partial(self._pusher.push_record, *found)
            else:
                assert batch is not None
                task = functools.partial(self._pusher.push_batch, batch)
            try:
                self._pool.submit(self._threads.guard, "push", functools.partial(self._work, task, kind))
            except RuntimeError:  # shut down at the deadline: the work stays unacknowledged
                if batch is not None:
                    with lanes.cond:
                        lanes.release(batch)
                self._finished(replay=kind == "replay")
                return

    def _work(self, task: Callable[[], Uncertain | None], kind: str) -> None:
        try:
            uncertain = task()
        finally:
            self._finished(replay=kind == "replay")
        if uncertain is not None and not self._resolver.submit(uncertain):
            return  # shutting down: it stays in flight, its intent on disk

    def _finished(self, replay: bool) -> None:
        with self._lanes.cond:
            self.pushes -= 1
            if replay:
                self._replays -= 1
            self._lanes.cond.notify_all()

    def _next_work(self, replay_turn: bool) -> tuple[str, Batch | None]:
        """Wait for work (lanes' lock held): ("live" | "spill", batch), ("replay", None) or ("done", None)."""
        lanes = self._lanes
        while True:
            if self._stop_at is not None:
                stopping = self._stopping()
                if stopping[0] in ("done", "spill"):
                    return stopping
            work = self._choose(replay_turn, flush=self._stop_at is not None)
            if work is not None:
                return work
            due = lanes.next_due_in(self.limits)
            lanes.cond.wait(_IDLE_WAIT_SECS if due is None else min(max(due, 0.005), _IDLE_WAIT_SECS))

    def _choose(self, replay_turn: bool, flush: bool) -> tuple[str, Batch | None] | None:
        lanes, replay = self._lanes, self._replay
        if replay is not None and lanes.over_budget() and replay.can_spill():
            failing = lanes.take_failing(self.limits)
            if failing is not None:
                return ("spill", failing)
        if self.pushes >= self._max_pushes:
            return None
        may_replay = replay is not None and self._stop_at is None and not self._resolver.resolving
        for kind in ("replay", "live") if replay_turn else ("live", "replay"):
            if kind == "live":
                batch = lanes.take(self.limits, flush=flush)
                if batch is not None:
                    self.pushes += 1
                    return ("live", batch)
            elif may_replay and replay is not None and self._replays == 0 and replay.ready():
                self.pushes += 1  # a slot, reserved until the record is read (outside the lock)
                self._replays += 1
                return ("replay", None)
        return None

    def _stopping(self) -> tuple[str, Batch | None]:
        """While stopping: ("go", None) to keep delivering, ("spill", batch), or ("done", None)."""
        lanes, replay = self._lanes, self._replay
        assert self._stop_at is not None
        idle = self.pushes == 0
        if idle and not lanes.any_waiting():
            return ("done", None)
        now = time.monotonic()
        cutoff = self._stop_at - (SPILL_RESERVE_SECS if replay is not None else 0.0)
        if now < cutoff and (not idle or lanes.sendable_before(cutoff)):
            return ("go", None)
        # A spill must end (its commit) before the process exits at the deadline.
        if replay is not None and now < self._stop_at - 0.3 and replay.can_spill():
            rest = lanes.take_failing(self.limits, everything=True)
            if rest is not None:
                return ("spill", rest)
        return ("done", None) if idle or now >= self._stop_at else ("go", None)

    def _spill(self, batch: Batch) -> None:
        assert self._replay is not None
        stored = self._replay.spill(batch)
        with self._lanes.cond:
            if stored:
                self._lanes.done(batch, delivered=False)
            else:
                self._lanes.release(batch)
