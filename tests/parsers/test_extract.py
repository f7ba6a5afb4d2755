"""The Parser: text building, ANSI policy, raw fallback, parse errors, and never raising."""

from __future__ import annotations

import pytest

from logpipe.config import PipelineConfig
from logpipe.event import LEVELS
from logpipe.parsers import FORMATS, Parser, RawRecord
from logpipe.parsers import extract as extract_module

TS = 1_781_260_000 * 10**9
COLOURED = "2026-06-12 10:32:01.117 INFO [a] [b.py:1]  - \x1b[32mready\x1b[0m"


def record(*lines: str, kind: str, capped: bool = False) -> RawRecord:
    return RawRecord(TS, (TS + len(lines), 1), list(lines), kind, capped)


def test_event_origin_and_shape() -> None:
    event = Parser(PipelineConfig()).parse(
        record(COLOURED, "second", kind="dify_text", capped=True), "api", "dify-api-1", "stderr"
    )
    assert (event.ts_ns, event.service, event.container, event.stream) == (TS, "api", "dify-api-1", "stderr")
    assert (event.lines, event.truncated, event.format, event.message) == (2, True, "dify_text", "ready")
    assert event.text == "2026-06-12 10:32:01.117 INFO [a] [b.py:1]  - ready\nsecond"


def test_ansi_is_kept_in_the_text_when_configured_but_matching_still_works() -> None:
    event = Parser(PipelineConfig(strip_ansi=False)).parse(record(COLOURED, kind="dify_text"), "api", "c", "stdout")
    assert event.text == COLOURED
    assert (event.format, event.level, event.message) == ("dify_text", "info", "ready")


def test_broken_json_reports_a_parse_error_and_ships_raw() -> None:
    errors: list[str] = []
    event = Parser(PipelineConfig(), errors.append).parse(record('{"ts": "x", ', kind="json"), "api", "c", "stdout")
    assert (event.format, event.level, event.text) == ("raw", "unknown", '{"ts": "x", ')
    assert errors == ["json"]


def test_a_json_array_or_scalar_is_not_an_object() -> None:
    errors: list[str] = []
    parser = Parser(PipelineConfig(), errors.append)
    assert parser.parse(record("{}", kind="json"), "a", "c", "stdout").format == "json"
    assert parser.parse(record('"x"', kind="json"), "a", "c", "stdout").format == "raw"
    assert errors == ["json"]


def test_raw_and_traceback_records_are_not_parse_errors() -> None:
    errors: list[str] = []
    parser = Parser(PipelineConfig(), errors.append)
    raw = parser.parse(record("anything", kind="raw"), "a", "c", "stdout")
    tb = parser.parse(
        record("Traceback (most recent call last):", "ValueError: x", kind="traceback"), "a", "c", "stdout"
    )
    assert (raw.format, tb.format, tb.error_type) == ("raw", "traceback", "ValueError")
    assert errors == []


def test_a_text_record_that_does_not_match_its_kind_falls_back_to_raw() -> None:
    errors: list[str] = []
    event = Parser(PipelineConfig(), errors.append).parse(record("not gunicorn", kind="gunicorn"), "a", "c", "stdout")
    assert (event.format, event.level) == ("raw", "unknown")
    assert errors == ["gunicorn"]


def test_an_unknown_kind_is_raw() -> None:
    event = Parser(PipelineConfig()).parse(record("x", kind="from-the-future"), "a", "c", "stdout")
    assert event.format == "raw"


def test_a_reader_bug_costs_the_fields_not_the_record(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(event: object, text: str) -> bool:
        raise RuntimeError("bug")

    monkeypatch.setitem(extract_module._TEXT_READERS, "dify_text", broken)
    errors: list[str] = []
    event = Parser(PipelineConfig(), errors.append).parse(
        record(COLOURED, "Traceback (most recent call last):", "KeyError: 'k'", kind="dify_text", capped=True),
        "api",
        "c",
        "stdout",
    )
    assert (event.format, event.level, event.lines, event.truncated) == ("raw", "unknown", 3, True)
    assert event.error_type == "KeyError"
    assert errors == ["dify_text"]


def test_every_format_and_level_is_in_the_bounded_sets() -> None:
    assert "raw" in FORMATS
    assert set(LEVELS) == {"debug", "info", "warning", "error", "critical", "unknown"}


def test_grouper_uses_the_configured_caps() -> None:
    grouper = Parser(PipelineConfig(group_max_lines=2)).grouper()
    grouper.add(TS, (TS, 1), "Traceback (most recent call last):", 0.0)
    grouper.add(TS, (TS, 2), "  x", 0.0)
    [capped] = grouper.add(TS, (TS, 3), "  y", 0.0)
    assert capped.capped
