"""postgres, redis, the sandbox, weaviate and any other JSON: levels, messages, ids, JSON families."""

from __future__ import annotations

import json

import pytest

from logpipe.parsers.extract import json_family
from tests.parsers.helpers import parse_one


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("LOG", "info"),
        ("INFO", "info"),
        ("NOTICE", "info"),
        ("DEBUG1", "debug"),
        ("DEBUG5", "debug"),
        ("WARNING", "warning"),
        ("ERROR", "error"),
        ("FATAL", "critical"),
        ("PANIC", "critical"),
        ("DETAIL", "info"),
        ("HINT", "info"),
        ("STATEMENT", "info"),
        ("CONTEXT", "info"),
    ],
)
def test_postgres_levels(level: str, expected: str) -> None:
    event = parse_one(f"2026-06-12 10:40:01.456 UTC [88] {level}:  something")
    assert (event.format, event.level, event.message) == ("postgres", expected, "something")


def test_postgres_with_user_and_database_prefix() -> None:
    event = parse_one('2026-06-12 10:40:01.456 UTC [88] postgres@dify ERROR:  relation "x" does not exist')
    assert (event.level, event.message) == ("error", 'relation "x" does not exist')


@pytest.mark.parametrize(("mark", "level"), [(".", "debug"), ("-", "debug"), ("*", "info"), ("#", "warning")])
def test_redis_levels(mark: str, level: str) -> None:
    event = parse_one(f"7:S 12 Jun 2026 10:31:20.321 {mark} Replica message")
    assert (event.format, event.level, event.message) == ("redis", level, "Replica message")


@pytest.mark.parametrize(
    ("obj", "family"),
    [
        ({"ts": "t", "severity": "INFO", "service": "langgenius/dify", "caller": "c", "message": "m"}, "dify_json"),
        ({"ts": "t", "severity": "INFO", "caller": "c", "message": "m"}, "dify_json"),
        ({"severity": "INFO", "service": "dify-plugin-daemon", "message": "m"}, "plugin_json"),
        ({"time": "t", "level": "INFO", "msg": "m"}, "sandbox_json"),
        ({"action": "a", "level": "info", "msg": "m", "time": "t"}, "weaviate_json"),
        ({"event": "llm_call", "model": "gpt-4o"}, "json"),
        ({"level": "info", "message": "m"}, "json"),
        ({"severity": "INFO", "service": "something-else"}, "json"),
    ],
)
def test_json_family(obj: dict[str, object], family: str) -> None:
    assert json_family(obj) == family
    assert parse_one(json.dumps(obj)).format == family


def test_sandbox_empty_ids_mean_absent() -> None:
    line = (
        '{"time":"t","level":"INFO","msg":"run","trace_id":"","span_id":"","tenant_id":"","user_id":"","user_type":""}'
    )
    event = parse_one(line, service="sandbox")
    assert (event.trace_id, event.span_id, event.tenant_id, event.user_id) == (None, None, None, None)


def test_other_json_reads_common_keys() -> None:
    event = parse_one('{"severity":"warn","message":"disk almost full","trace_id":"0123456789abcdef0123456789abcdef"}')
    assert (event.format, event.level, event.message, event.trace_id) == (
        "json",
        "warning",
        "disk almost full",
        "0123456789abcdef0123456789abcdef",
    )


@pytest.mark.parametrize(
    "line",
    [
        '{"a": 123456789012345678901234567890123456789012345678901234567890}',
        '{"a": 1e999}',
        '{"a": "\ud800"}',
        '{"a": NaN}',
    ],
)
def test_json_orjson_refuses_is_still_read(line: str) -> None:
    assert parse_one(line).format == "json"
