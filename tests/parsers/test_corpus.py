"""The fixture corpus: every service's lines, grouped and parsed, checked field by field.

Each `tests/fixtures/formats/<name>.log` is one lane as Docker hands it over; `<name>.expected.json` lists the
records it must make, in order. Every event field not listed must keep its default, so an extraction that
appears where it should not (a timeout from a config echo, an id from a prompt) fails too.
"""

from __future__ import annotations

import json
import math
from dataclasses import fields
from typing import Any

import pytest

from logpipe.event import Event
from tests.parsers.helpers import BASE_TS, FIXTURES, fixture_lines, parse_lines

ORIGIN = {"ts_ns", "service", "container", "stream"}
DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Event) if f.name not in ORIGIN | {"text"}}
CORPUS = sorted(path.name.removesuffix(".expected.json") for path in FIXTURES.glob("*.expected.json"))


def _check(name: str, index: int, field: str, actual: Any, expected: Any) -> None:
    where = f"{name} record {index} field {field}"
    if isinstance(expected, dict):  # {"prefix": ..., "length": ...} for very long strings
        assert isinstance(actual, str), where
        assert actual.startswith(expected["prefix"]), where
        assert len(actual) == expected["length"], where
    elif isinstance(expected, float):
        assert isinstance(actual, float), f"{where}: {actual!r}"
        assert math.isclose(actual, expected, rel_tol=1e-9), f"{where}: {actual!r} != {expected!r}"
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def test_every_log_fixture_has_expectations() -> None:
    logs = sorted(path.name.removesuffix(".log") for path in FIXTURES.glob("*.log"))
    assert logs == CORPUS
    assert len(CORPUS) >= 15


@pytest.mark.parametrize("name", CORPUS)
def test_fixture(name: str) -> None:
    spec = json.loads((FIXTURES / f"{name}.expected.json").read_text(encoding="utf-8"))
    errors: list[str] = []
    events = parse_lines(
        fixture_lines(f"{name}.log"),
        service=spec["service"],
        stream=spec["stream"],
        gaps_before=spec.get("gaps_before", ()),
        errors=errors,
    )
    expected_records = spec["records"]
    summary = [(e.format, e.level, e.lines, (e.message or e.text)[:60]) for e in events]
    assert len(events) == len(expected_records), summary
    for index, (event, expected) in enumerate(zip(events, expected_records, strict=True)):
        unknown = set(expected) - set(DEFAULTS) - {"text"}
        assert not unknown, f"{name} record {index}: unknown keys {unknown}"
        assert event.service == spec["service"]
        assert event.container == f"docker-{spec['service']}-1"
        assert event.stream == spec["stream"]
        assert event.ts_ns > BASE_TS
        for field, default in DEFAULTS.items():
            _check(name, index, field, getattr(event, field), expected.get(field, default))
        if "text" in expected:
            _check(name, index, "text", event.text, expected["text"])
        assert "\x1b" not in event.text  # strip_ansi defaults to True
    assert [e.ts_ns for e in events] == sorted(e.ts_ns for e in events)
    assert errors == spec.get("parse_errors", [])
