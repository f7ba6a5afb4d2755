"""The parse stage: what it keeps per container stream, and that it lets go of streams that went away."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from logpipe.config import Config
from logpipe.event import METADATA_FIELDS, Chunk, ContainerInfo, Event
from logpipe.pipeline import STATE_IDLE_SECS, Pipeline, metadata_of
from logpipe.sinks.lanes import Lanes
from logpipe.telemetry import Telemetry

MiB = 1 << 20


def chunk(cid: str, *lines: str, ts: int = 1_781_260_000_000_000_000) -> Chunk:
    info = ContainerInfo(cid, f"p-{cid}-1", cid, "p", False, True, {})
    return Chunk(info, "stdout", [(ts + i, 1, line.encode(), 0) for i, line in enumerate(lines)], 10)


def test_streams_of_containers_that_went_quiet_are_forgotten_without_losing_an_open_record() -> None:
    lanes = Lanes(64 * MiB)
    pipeline = Pipeline(Config(), lanes, None, Telemetry(CollectorRegistry()), lambda: "host")
    now = 100.0
    for i in range(500):  # container churn: 500 short-lived containers, one line each
        pipeline.process(chunk(f"c{i}", f"2026-06-12 10:32:01.117 INFO [T] [a.py:1]  - line {i}"), now)
    # One more whose traceback is still open (its next line may yet come).
    pipeline.process(
        chunk("tb", "2026-06-12 10:32:01.117 ERROR [T] [a.py:1]  - boom", "Traceback (most recent call last):"), now
    )
    assert pipeline.streams == 501
    pipeline.flush_idle(now + 1.0)  # the traceback closes after the group's idle time
    assert pipeline.streams == 501, "a stream that spoke a second ago was forgotten"
    pipeline.flush_idle(now + STATE_IDLE_SECS + 1.0)
    assert pipeline.streams == 0
    assert lanes.totals()[1] == 501, "forgetting a stream lost what it held"
    pipeline.process(chunk("c1", "2026-06-12 10:40:00.000 INFO [T] [a.py:1]  - back again"), now + 400)
    assert pipeline.streams == 1


def test_structured_metadata_names_every_metadata_field() -> None:
    event = Event(1, "x")
    assert metadata_of(event) is None
    for i, name in enumerate(METADATA_FIELDS):
        setattr(event, name, f"v{i}")
    assert metadata_of(event) == {name: f"v{i}" for i, name in enumerate(METADATA_FIELDS)}
