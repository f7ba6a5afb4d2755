"""Operators' JSON mappings: dotted paths onto event fields, with `services` and `match` filters."""

from __future__ import annotations

import json

import pytest

from logpipe.config import JsonMapping, PipelineConfig
from logpipe.event import Event
from logpipe.parsers.mapping import as_text, coerce
from tests.parsers.helpers import parse_one

LLM_CALL = (
    '{"event":"llm_call","model":"gpt-4o","usage":{"prompt_tokens":812,"completion_tokens":96},"latency_ms":1912}'
)
TOKENS = JsonMapping(
    fields={"model": "model", "prompt_tokens": "usage.prompt_tokens", "completion_tokens": "usage.completion_tokens"},
)


def with_mappings(*mappings: JsonMapping) -> PipelineConfig:
    return PipelineConfig(json_mappings=mappings)


def test_the_token_example() -> None:
    event = parse_one(LLM_CALL, service="gateway", config=with_mappings(TOKENS))
    assert (event.format, event.model, event.prompt_tokens, event.completion_tokens) == ("json", "gpt-4o", 812, 96)
    assert event.total_tokens is None


def test_services_filter() -> None:
    mapping = JsonMapping(fields=TOKENS.fields, services=("gateway",))
    assert parse_one(LLM_CALL, service="gateway", config=with_mappings(mapping)).model == "gpt-4o"
    assert parse_one(LLM_CALL, service="api", config=with_mappings(mapping)).model is None


@pytest.mark.parametrize(
    ("match", "applies"),
    [
        ({"event": "llm_call"}, True),
        ({"event": "other"}, False),
        ({"usage.prompt_tokens": "812"}, True),
        ({"usage.prompt_tokens": "*"}, True),
        ({"usage.total_tokens": "*"}, False),
        ({"event": "llm_call", "model": "gpt-4o-mini"}, False),
        ({"usage": '{"prompt_tokens":812,"completion_tokens":96}'}, True),
    ],
)
def test_match(match: dict[str, str], applies: bool) -> None:
    mapping = JsonMapping(fields={"model": "model"}, match=match)
    event = parse_one(LLM_CALL, config=with_mappings(mapping))
    assert (event.model == "gpt-4o") is applies


def test_coercion_and_skipping() -> None:
    line = json.dumps(
        {
            "tokens": {"in": "120", "out": 30.0, "total": "150.0", "bad": "many"},
            "price": "0.0042",
            "latency_ms": 1912,
            "app": 42,
            "flag": True,
            "nested": {"x": 1},
        }
    )
    mapping = JsonMapping(
        fields={
            "prompt_tokens": "tokens.in",
            "completion_tokens": "tokens.out",
            "total_tokens": "tokens.total",
            "cost": "price",
            "llm_latency_seconds": "latency_ms",
            "app_id": "app",
            "model": "flag",
            "model_type": "nested",
            "node_id": "missing.path",
        }
    )
    event = parse_one(line, config=with_mappings(mapping))
    assert (event.prompt_tokens, event.completion_tokens, event.total_tokens) == (120, 30, 150)
    assert (event.cost, event.llm_latency_seconds, event.app_id) == (0.0042, 1912.0, "42")
    assert (event.model, event.model_type, event.node_id) == (None, None, None)


def test_uncoercible_value_is_skipped_not_fatal() -> None:
    mapping = JsonMapping(fields={"prompt_tokens": "tokens.bad", "model": "model"})
    event = parse_one('{"model":"m","tokens":{"bad":"many"}}', config=with_mappings(mapping))
    assert (event.prompt_tokens, event.model) == (None, "m")


def test_flat_keys_with_dots_and_later_mappings_win() -> None:
    first = JsonMapping(fields={"model": "model"})
    second = JsonMapping(fields={"model": "gen_ai.request.model"}, match={"gen_ai.system": "openai"})
    event = parse_one(
        '{"model":"a","gen_ai.request.model":"b","gen_ai.system":"openai"}', config=with_mappings(first, second)
    )
    assert event.model == "b"


def test_mappings_override_built_in_fields_of_known_formats() -> None:
    line = '{"time":"t","level":"INFO","msg":"call","trace_id":"","tenant_id":"t1","model":"qwen"}'
    mapping = JsonMapping(fields={"model": "model", "tenant_id": "msg"}, services=("sandbox",))
    event = parse_one(line, service="sandbox", config=with_mappings(mapping))
    assert (event.format, event.model, event.tenant_id) == ("sandbox_json", "qwen", "call")


def test_mappings_never_touch_non_json_records() -> None:
    mapping = JsonMapping(fields={"model": "model"})
    event = parse_one("2026-06-12 10:32:01.117 INFO [a] [b.py:1]  - model=gpt", config=with_mappings(mapping))
    assert event.model is None


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        (812, int, 812),
        ("812", int, 812),
        (" 812 ", int, 812),
        ("812.0", int, 812),
        (812.5, int, None),
        ("1e400", int, None),
        (True, int, None),
        (None, int, None),
        ([1], int, None),
        ("x", int, None),
        (1.5, float, 1.5),
        ("1.5", float, 1.5),
        (10**400, float, None),
        ("nan", float, None),
        ("inf", float, None),
        ("s", str, "s"),
        (3, str, "3"),
        (2.5, str, "2.5"),
        (float("inf"), str, None),
        ({"a": 1}, str, None),
    ],
)
def test_coerce(value: object, kind: type, expected: object) -> None:
    assert coerce(value, kind) == expected


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("s", "s"),
        (True, "true"),
        (False, "false"),
        (None, "null"),
        (200, "200"),
        (200.0, "200"),
        (2.5, "2.5"),
        ([1, "a"], '[1,"a"]'),
    ],
)
def test_as_text(value: object, text: str) -> None:
    assert as_text(value) == text


def test_mapped_fields_are_event_fields() -> None:
    assert {"model", "prompt_tokens", "cost"} <= set(Event.__dataclass_fields__)
