"""Feeding lines through a grouper and a parser the way the pipeline does, for the parser tests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from logpipe.config import PipelineConfig
from logpipe.event import Event
from logpipe.parsers import Parser, RawRecord

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "formats"
BASE_TS = 1_781_260_000 * 10**9
LINE_STEP_NS = 1_000_000  # 1 ms between lines: well inside group_idle_secs
GAP_NS = 5 * 10**9


def fixture_lines(name: str) -> list[str]:
    """The lines of a fixture file, exactly as Docker would hand them over (no newline, nothing else split)."""
    text = (FIXTURES / name).read_text(encoding="utf-8")
    assert text.endswith("\n")
    return text[:-1].split("\n")


def group(
    lines: Iterable[str], config: PipelineConfig | None = None, gaps_before: Sequence[int] = ()
) -> list[RawRecord]:
    """Records of one lane; line numbers in `gaps_before` (1-based) arrive 5 s after the previous line."""
    grouper = Parser(config or PipelineConfig()).grouper()
    records: list[RawRecord] = []
    ts = BASE_TS
    for number, line in enumerate(lines, start=1):
        ts += GAP_NS if number in gaps_before else LINE_STEP_NS
        records.extend(grouper.add(ts, (ts, 1), line, ts / 1e9))
    last = grouper.flush()
    if last is not None:
        records.append(last)
    return records


def parse_lines(
    lines: Iterable[str],
    service: str = "api",
    stream: str = "stdout",
    config: PipelineConfig | None = None,
    gaps_before: Sequence[int] = (),
    errors: list[str] | None = None,
) -> list[Event]:
    """Events of one lane, as the pipeline would produce them; parse errors are appended to `errors`."""
    config = config or PipelineConfig()
    parser = Parser(config, errors.append if errors is not None else None)
    return [
        parser.parse(record, service, f"docker-{service}-1", stream) for record in group(lines, config, gaps_before)
    ]


def parse_one(line: str, service: str = "api", config: PipelineConfig | None = None) -> Event:
    """The single event one line (or one `\\n`-joined record) makes."""
    events = parse_lines(line.split("\n"), service=service, config=config)
    assert len(events) == 1, events
    return events[0]
