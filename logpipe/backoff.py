"""One backoff policy for every retry loop: capped exponential with full jitter, honouring a server's wish.

Loops that fail together (every lane after a Loki outage, every follower after a dockerd restart) must not retry
together, so each delay is drawn uniformly from [ceiling / 2, ceiling]. A `Retry-After` overrides the draw.
"""

from __future__ import annotations

import random


class Backoff:
    """Delays for consecutive failures: `next()` after a failure, `reset()` after a success."""

    __slots__ = ("failures", "max_secs", "min_secs")

    def __init__(self, min_secs: float, max_secs: float) -> None:
        self.min_secs = min_secs
        self.max_secs = max(max_secs, min_secs)
        self.failures = 0

    def next(self, retry_after: float | None = None) -> float:
        """The delay before the next attempt (and count one more failure)."""
        delay = delay_for(self.failures, self.min_secs, self.max_secs, retry_after)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0


def delay_for(failures: int, min_secs: float, max_secs: float, retry_after: float | None = None) -> float:
    """The jittered delay after `failures` earlier failures (0 for the first retry), or `retry_after` if given."""
    if retry_after is not None:
        return max(retry_after, 0.0)
    ceiling = min(max_secs, min_secs * 2 ** min(failures, 62))
    return random.uniform(ceiling / 2, ceiling)
