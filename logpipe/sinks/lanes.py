"""Entries waiting for a sink, one lane per container stream, bounded in bytes: the sinks' input.

The pipeline appends a lane's entries in order; a sink takes batches from the heads of many lanes at once.
A lane has at most one batch in flight, so its entries are acknowledged in order and its cursor is simply the
position of its last acknowledged entry. A lane that failed waits out its own backoff while the others keep
flowing: one rate-limited container never holds up the rest. `put` blocks while the lanes hold more than
their byte budget (backpressure reaches the Docker readers, and Docker keeps the logs meanwhile). How many
batches a sink sends at once is the sink's business, not the lanes'.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from logpipe.budget import ByteBudget
from logpipe.event import Position
from logpipe.state import Advance

#: Stream labels as a sorted tuple of (name, value): hashable, and the key of a Loki stream.
LabelKey = tuple[tuple[str, str], ...]

#: One Loki entry: (timestamp ns, line, structured metadata or None, stream labels, source position, size).
Entry = tuple[int, str, dict[str, str] | None, LabelKey, Position, int]
LaneKey = tuple[str, str]  # (container id, stream name)
#: Labels of an entry never sent: it stands for records dropped (ship rules, rate limit), to move the cursor past.
PASSED: LabelKey = ()


@dataclass(slots=True)
class Lane:
    key: LaneKey
    container: str
    entries: deque[Entry] = field(default_factory=deque)
    bytes: int = 0
    inflight: int = 0
    enqueued_at: float = 0.0  # when the oldest entry not in flight arrived
    retry_at: float = 0.0
    failures: int = 0
    transient: bool = False  # the last failure was the network or a 5xx, not a rate limit
    split: int = 0  # after a 413: take at most this many entries


@dataclass(slots=True)
class Batch:
    """Entries taken from the heads of several lanes, to be acknowledged or returned together."""

    id: int
    parts: list[tuple[Lane, int]]
    entries: list[Entry]
    size: int
    attempt: int = 1

    def advances(self) -> tuple[Advance, ...]:
        """For each lane in the batch, the position of its last entry: what acknowledging the batch advances."""
        out: list[Advance] = []
        i = 0
        for lane, n in self.parts:
            i += n
            out.append((lane.key[0], lane.key[1], self.entries[i - 1][4]))
        return tuple(out)


@dataclass(frozen=True, slots=True)
class BatchLimits:
    max_bytes: int
    max_entries: int
    wait_secs: float


_ids = itertools.count(1)

#: Python memory an entry takes beyond its size for batching (tuple, timestamp, position, metadata dict): measured
#: with tracemalloc on the bench corpus at ~370 bytes. The byte budget counts it, so that it bounds real memory.
MEMORY_PER_ENTRY = 370


def new_id() -> int:
    """A process-unique batch id (batches and spool replays share the sequence, as intents do)."""
    return next(_ids)


class Lanes:
    """Thread-safe. The pipeline thread calls `put`; sink threads call `take` and `done`/`retry`/`split`."""

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic, batch_bytes: int = 1 << 20) -> None:
        """`batch_bytes`: the size at which a lane's batch is due at once (then `put` wakes the sink)."""
        self.batch_bytes = batch_bytes
        self._clock = clock
        self._lanes: dict[LaneKey, Lane] = {}
        self._entries = 0
        self.cond = threading.Condition()
        self._budget = ByteBudget(max_bytes, self.cond)

    @property
    def max_bytes(self) -> int:
        return self._budget.max_bytes

    @property
    def closed(self) -> bool:
        return self._budget.closed

    # -- pipeline side
    def put(self, key: LaneKey, container: str, entries: list[Entry], size: int) -> bool:
        """Append entries to a lane, waiting while over budget. False if the lanes were closed meanwhile."""
        with self.cond:
            if not self._budget.wait_for_room():
                return False
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = Lane(key, container)
            fresh = len(lane.entries) == lane.inflight
            if fresh:
                lane.enqueued_at = self._clock()
            was = lane.bytes
            lane.entries.extend(entries)
            lane.bytes += size
            self._budget.add(size + MEMORY_PER_ENTRY * len(entries))
            self._entries += len(entries)
            # Wake the sink only when its timing changes: new entries for an idle lane (a timer to start), a lane
            # that just filled a batch, a spent budget. Every other put would wake it for nothing.
            if fresh or (was < self.batch_bytes <= lane.bytes) or self._budget.spent:
                self.cond.notify_all()
            return True

    def close(self) -> None:
        """Release any waiting `put` (shutdown); entries already held stay available to `take`."""
        with self.cond:
            self._budget.close()

    # -- sink side (call with self.cond held)
    def take(self, limits: BatchLimits, flush: bool = False) -> Batch | None:
        """A batch from every lane that is free, if one of them is due (full, or waited long enough)."""
        now = self._clock()
        ready = [lane for lane in self._lanes.values() if lane.inflight == 0 and lane.entries and lane.retry_at <= now]
        if not ready:
            return None
        if (
            not flush
            and not self._budget.spent
            and not any(
                lane.bytes >= limits.max_bytes
                or now - lane.enqueued_at >= limits.wait_secs
                or lane.failures
                or lane.split
                for lane in ready
            )
        ):
            return None
        ready.sort(key=lambda lane: lane.enqueued_at)
        return self._cut(ready, limits, split_aware=True)

    def next_due_in(self, limits: BatchLimits) -> float | None:
        """Seconds until `take` could return a batch without new input; None when nothing waits."""
        now = self._clock()
        waits = [
            max(
                lane.retry_at - now,
                0.0 if lane.failures or lane.split else limits.wait_secs - (now - lane.enqueued_at),
            )
            for lane in self._lanes.values()
            if lane.inflight == 0 and lane.entries
        ]
        return max(min(waits), 0.0) if waits else None

    def take_failing(self, limits: BatchLimits, everything: bool = False) -> Batch | None:
        """A batch from lanes that are failing and not in flight, whatever their backoff (to spill to disk).

        `everything`: any lane not in flight (at shutdown, what could not be delivered goes to the spool).
        """
        failing = [
            lane
            for lane in self._lanes.values()
            if (everything or lane.failures) and not lane.inflight and lane.entries
        ]
        if not failing:
            return None
        failing.sort(key=lambda lane: lane.enqueued_at)
        return self._cut(failing, limits, split_aware=False)

    def _cut(self, lanes: list[Lane], limits: BatchLimits, split_aware: bool) -> Batch | None:
        """One batch from the heads of `lanes` (oldest first) within the limits; its lanes are then in flight.
        `split_aware`: a lane that Loki found too large sends at most its `split` entries."""
        parts: list[tuple[Lane, int]] = []
        taken: list[Entry] = []
        size = 0
        for lane in lanes:
            limit = (lane.split or limits.max_entries) if split_aware else limits.max_entries
            n = 0
            for entry in lane.entries:
                if n >= limit or len(taken) >= limits.max_entries or (taken and size + entry[5] > limits.max_bytes):
                    break
                taken.append(entry)
                size += entry[5]
                n += 1
            if n:
                lane.inflight = n
                parts.append((lane, n))
            if len(taken) >= limits.max_entries or size >= limits.max_bytes:
                break
        if not parts:
            return None
        return Batch(next(_ids), parts, taken, size)

    def release(self, batch: Batch) -> None:
        """Give a batch back untouched (a spill that could not be written, a push never started)."""
        for lane, _ in batch.parts:
            lane.inflight = 0
        self.cond.notify_all()

    def sendable_before(self, deadline: float) -> bool:
        """Whether some waiting lane's backoff ends before `deadline` (monotonic)."""
        return any(lane.retry_at < deadline for lane in self._lanes.values() if lane.entries and not lane.inflight)

    def over_budget(self) -> bool:
        return self._budget.spent

    def done(self, batch: Batch, delivered: bool = True) -> list[tuple[LaneKey, Position]]:
        """The batch is acknowledged (by Loki, or `delivered=False`: durably spooled): drop its entries.

        Returns each lane's new acknowledged position.
        """
        advances: list[tuple[LaneKey, Position]] = []
        for lane, n in batch.parts:
            last: Entry | None = None
            freed = 0
            for _ in range(n):
                last = lane.entries.popleft()
                freed += last[5]
            lane.bytes -= freed
            self._budget.release(freed + MEMORY_PER_ENTRY * n)
            self._entries -= n
            lane.inflight = 0
            lane.split = 0
            lane.enqueued_at = self._clock()
            if delivered:
                lane.failures = 0
            if last is not None:
                advances.append((lane.key, last[4]))
            if not lane.entries:
                del self._lanes[lane.key]
        if delivered:
            # Loki answered: lanes waiting out a network or 5xx backoff may go now.
            for lane in self._lanes.values():
                if lane.transient:
                    lane.retry_at = 0.0
                    lane.transient = False
        self.cond.notify_all()
        return advances

    def retry(
        self, batch: Batch, delay_secs: float, transient: bool, spared: Collection[LaneKey] = (), spared_secs: float = 0
    ) -> None:
        """The batch failed; its lanes wait `delay_secs`, then send again. Lanes in `spared` did not cause it (quiet
        streams in a batch that Loki rate-limited): they wait `spared_secs`, and it is not a failure of theirs."""
        now = self._clock()
        for lane, _ in batch.parts:
            lane.inflight = 0
            if lane.key in spared:
                lane.retry_at = now + spared_secs
                continue
            lane.failures += 1
            lane.retry_at = now + delay_secs
            lane.transient = transient
        self.cond.notify_all()

    def split(self, batch: Batch) -> None:
        """Loki found the batch too large: resend its lanes in halves, at once."""
        for lane, n in batch.parts:
            lane.inflight = 0
            lane.split = max(1, n // 2)
        self.cond.notify_all()

    # -- observation
    def totals(self) -> tuple[int, int]:
        """(bytes held, counted as the budget counts them; entries held)."""
        with self.cond:
            return self._budget.held, self._entries

    def oldest_by_container(self) -> dict[str, int]:
        """Docker time of the oldest waiting entry per container name (for the lag gauge)."""
        with self.cond:
            oldest: dict[str, int] = {}
            for lane in self._lanes.values():
                if lane.entries and lane.entries[0][0] < oldest.get(lane.container, 1 << 63):
                    oldest[lane.container] = lane.entries[0][0]
            return oldest

    def containers(self) -> set[str]:
        """Ids of the containers with entries not yet acknowledged."""
        with self.cond:
            return {key[0] for key in self._lanes}

    def any_waiting(self) -> bool:
        """Entries not yet acknowledged (call with `cond` held, or accept a stale answer)."""
        return bool(self._lanes)
