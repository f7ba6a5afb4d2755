"""Loki's ingestion rate limit (429) and who waits for it: the streams that sent the volume, not a quiet stream
that shared their push. Against the Loki test server with a tenant rate limit, through the sender."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import orjson
from prometheus_client import CollectorRegistry

from logpipe.config import LokiConfig
from logpipe.sinks.lanes import Entry, Lanes
from logpipe.sinks.loki import LokiClient
from logpipe.sinks.sender import LokiSender
from logpipe.state import State
from logpipe.telemetry import Telemetry
from tests.dockerkit import wait_until
from tests.support.lokiserver import LokiServer

KiB = 1024


def entries(container: str, n: int, size: int) -> list[Entry]:
    labels = (("container", container), ("service", "api"))
    now = time.time_ns()
    return [(now + i, f"{container} {i:06d} " + "x" * size, None, labels, (now + i, 1), size + 64) for i in range(n)]


def test_a_quiet_stream_in_a_rate_limited_push_does_not_take_the_floods_backoff(tmp_path: Path) -> None:
    # 256 KiB/s with a 512 KiB burst; the bucket is emptied first by another client of the same tenant.
    with LokiServer(visibility_delay_secs=0, ingestion_rate_mb=0.25, ingestion_burst_size_mb=0.5) as loki:
        spent = orjson.dumps(
            {
                "streams": [
                    {
                        "stream": {"job": "other"},
                        "values": [[str(time.time_ns() + i), "y" * 250 * KiB] for i in range(2)],
                    }
                ]
            }
        )
        assert (
            httpx.post(
                f"{loki.url}/loki/api/v1/push", content=spent, headers={"Content-Type": "application/json"}
            ).status_code
            == 204
        )
        state = State(tmp_path / "state", spool_max_bytes=64 << 20, fsync=False)
        state.open()
        lanes = Lanes(64 << 20)
        # One push at a time, so that the flood and the quiet stream share it.
        config = LokiConfig(url=loki.url, batch_wait_secs=0.05, min_backoff_secs=0.2, max_backoff_secs=60,
                            max_concurrent_pushes=1, timeout_secs=5)  # fmt: skip
        flood, quiet = entries("flood", 40, 10 * KiB), entries("quiet", 1, 100)
        lanes.put(("flood", "stdout"), "flood", flood, sum(e[5] for e in flood))
        lanes.put(("quiet", "stdout"), "quiet", quiet, quiet[0][5])
        client = LokiClient(config)
        sender = LokiSender(client, lanes, state, config, Telemetry(CollectorRegistry()), spool_policy="block")
        started = time.time()
        sender.start()
        try:
            assert wait_until(lambda: len(loki.lines(container="flood")) == 40, 20)
        finally:
            sender.stop(2.0)
            client.close()
            state.close()
        first_push = loki.pushes()[1]
        assert first_push.status == 429 and first_push.entries == 41, "the flood and the quiet line shared a push"
        (quiet_entry,) = loki.entries(container="quiet")
        flood_at = min(e.received_at for e in loki.entries(container="flood"))
    # The flood's ~400 KiB needs ~1.6 s of refill; the quiet line goes at the minimum backoff, alone.
    assert quiet_entry.received_at - started < 0.8
    assert flood_at - started > 1.2
