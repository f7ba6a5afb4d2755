"""The Loki sink: its parts, built once and wired at construction, and its lifecycle.

    lanes --> Dispatcher --(live batch | spool record)--> Pusher --> Loki
                  |                                         |  ack --> lanes.done, Checkpoint.advance, Spool
                  +--(over budget: failing lanes)--> ReplaySource.spill --> State (spool + cursors, one commit)
                                                            |  answer lost --> Resolver --(read back)--> settle

`Pusher` encodes, records the intent, POSTs and settles one push; `Dispatcher` decides what to push next and when
to spill; `ReplaySource` is the spool as the sink uses it; `Resolver` reads back pushes whose fate is unknown
(a lost answer now, or a push in flight at the last exit). Data flows one way; the only thing a part tells
another is an outcome it hands on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from logpipe.config import Config, LokiConfig
from logpipe.sinks import SinkStats
from logpipe.sinks.dispatch import Dispatcher
from logpipe.sinks.lanes import BatchLimits, Lanes
from logpipe.sinks.loki import LokiClient
from logpipe.sinks.pushing import Pusher
from logpipe.sinks.readback import ReadBack
from logpipe.sinks.replay import ReplaySource
from logpipe.sinks.resolve import Resolver
from logpipe.state import State
from logpipe.telemetry import Telemetry
from logpipe.threads import Threads

_READY_CHECK_EVERY_SECS = 5.0


def limits_of(config: LokiConfig) -> BatchLimits:
    return BatchLimits(config.batch_max_bytes, config.batch_max_entries, config.batch_wait_secs)


class LokiSender:
    """The `Sink` for one Loki endpoint. `spool_policy` None: no spool (what cannot be delivered stays in memory,
    and Docker keeps the rest)."""

    def __init__(
        self,
        client: LokiClient,
        lanes: Lanes,
        state: State,
        config: LokiConfig,
        telemetry: Telemetry,
        spool_policy: str | None = "block",
        threads: Threads | None = None,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        threads = threads or Threads(lambda _kind: None)
        self._client = client
        self._lanes = lanes
        self._state = state
        self._config = config
        self._stopping = threading.Event()
        self.replay = ReplaySource(state, spool_policy, telemetry) if spool_policy is not None else None
        self.pusher = Pusher(client, lanes, state, self.replay, config, telemetry, wall_ns)
        readback = ReadBack(client, config.timeout_secs, self._stopping, lanes)
        self.resolver = Resolver(readback, self.pusher, state, self.replay, telemetry, threads)
        self.dispatcher = Dispatcher(
            lanes, self.pusher, self.resolver, self.replay, limits_of(config), config.max_concurrent_pushes, threads
        )
        self._ready_at = 0.0
        self._ready = False

    def start(self) -> None:
        """Start delivering. Pushes in flight at the last exit are read back meanwhile, concurrently: the
        containers they would advance are held (`Checkpoint.settled`) until each is resolved."""
        if self._config.readback:
            intents = self._state.checkpoint.intents()
            if intents:
                self.resolver.resolve_at_start(intents, self._config.readback_max_wait_secs)
        self.dispatcher.start()

    def stop(self, timeout: float) -> None:
        """Deliver what is waiting (ignoring batch_wait) within `timeout`; spool what cannot be delivered.

        Delivery stops early when every waiting lane is backing off past the deadline (Loki is down). Pushes
        still in flight at the deadline are not waited for: their intents are on disk, and the next start reads
        them back from Loki.
        """
        deadline = time.monotonic() + timeout
        self._stopping.set()
        self.dispatcher.stop(deadline)
        self.resolver.shutdown()

    def reconfigure(self, config: Config) -> None:
        """Batching, retry and age settings apply to the next batch; connection settings need a restart."""
        with self._lanes.cond:
            self._config = config.loki
            self.pusher.config = config.loki
            self.dispatcher.limits = limits_of(config.loki)
            self._lanes.batch_bytes = config.loki.batch_max_bytes
            self._lanes.cond.notify_all()

    def resolved(self, timeout: float) -> bool:
        """Wait until the pushes in flight at the last exit are resolved."""
        return self.resolver.resolved(timeout)

    def ready(self) -> bool:
        if self.pusher.loki_up:
            return True
        now = time.monotonic()
        if now - self._ready_at > _READY_CHECK_EVERY_SECS:
            self._ready_at = now
            self._ready = self._client.ready()
        return self._ready

    @property
    def loki_up(self) -> bool:
        return self.pusher.loki_up

    def stats(self) -> SinkStats:
        spool = self._state.spool if self.replay is not None else None
        with self._lanes.cond:
            pushes = self.dispatcher.pushes
        return SinkStats(
            loki_up=self.pusher.loki_up,
            pushes_in_flight=pushes,
            spool_bytes=spool.bytes if spool is not None else 0,
            spool_records=spool.records if spool is not None else 0,
            spool_oldest_age_secs=(spool.oldest_age_secs() or 0.0) if spool is not None else 0.0,
        )

    def close(self) -> None:
        self._client.close()
