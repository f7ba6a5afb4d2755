"""The overflow policy over a real spool: drop_oldest while a replay is in flight, counted drops."""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry

from logpipe.sinks.lanes import Entry
from logpipe.sinks.overflow import Overflow
from logpipe.sinks.spool import Spool
from logpipe.telemetry import Telemetry


def batch(i: int, size: int = 40_000) -> list[Entry]:
    return [(i, os.urandom(size // 2).hex(), None, (("container", "a"),), (i, 1), size + 64)]


def test_drop_oldest_during_a_replay_never_hands_out_a_record_twice(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    spool = Spool(tmp_path, max_bytes=3 * 65536, segment_bytes=65536, fsync=False)
    overflow = Overflow(spool, "drop_oldest", Telemetry(registry))
    assert overflow.spill(batch(1))
    replay_a = overflow.next()
    assert replay_a is not None
    spilled = 1
    while registry.get_sample_value("logpipe_entries_dropped_total", {"reason": "spool_full"}) is None:
        spilled += 1
        assert overflow.spill(batch(spilled))  # drop_oldest makes room: never refuses
        assert spilled < 50
    # The record being replayed was dropped; its push is still in flight, so nothing else is handed out yet.
    assert overflow.next() is None
    overflow.delivered(replay_a[0])  # its ack is skipped: the record is gone
    replay_b = overflow.next()
    assert replay_b is not None and replay_b[0] != replay_a[0]
    assert overflow.next() is None, "a second replay of the same record while the first is in flight"
    overflow.delivered(replay_b[0])
    replay_c = overflow.next()
    assert replay_c is None or replay_c[0] > replay_b[0]
    dropped = registry.get_sample_value("logpipe_entries_dropped_total", {"reason": "spool_full"})
    assert dropped is not None and dropped >= 1
