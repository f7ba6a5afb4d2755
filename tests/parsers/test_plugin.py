"""The plugin daemon: key=value tails with Go quoting, HTTP request lines, JSON mode, gorm, old Go log."""

from __future__ import annotations

import json

import pytest

from logpipe.parsers.plugin import go_unquote, split_pairs
from tests.parsers.helpers import parse_one

TENANT = "7c75135d-52f5-4e24-b5f3-6f69dcb64461"
TRACE = "6f0b1c3e8a7d4f2e9c4b0a1d2e3f4a5b"
PREFIX = "2026-06-12T10:32:01.118204551Z INFO dify-plugin-daemon middleware.go:83 "


@pytest.mark.parametrize(
    ("body", "message", "pairs"),
    [
        ("HTTP request status=200 latency_ms=5", "HTTP request", {"status": "200", "latency_ms": "5"}),
        ('m error="a \\"quoted\\" word" k=v', "m", {"error": 'a "quoted" word', "k": "v"}),
        ('m msg="line1\\nline2\\ttab \\\\ back"', "m", {"msg": "line1\nline2\ttab \\ back"}),
        ('m u="\\u00e9\\U0001F600\\x41\\101"', "m", {"u": "é😀AA"}),
        ('m empty=""', "m", {"empty": ""}),
        ('m ends_with_backslash="a\\\\"', "m", {"ends_with_backslash": "a\\"}),
        ("a message with = and x=y inside then k=v", "a message with = and x=y inside then", {"k": "v"}),
        ('m bad="unterminated', 'm bad="unterminated', {}),
        ('m x=a"b', 'm x=a"b', {}),
        ("only=pairs here=too", "", {"only": "pairs", "here": "too"}),
        ("no pairs at all", "no pairs at all", {}),
        ("", "", {}),
        ("trailing space k=v ", "trailing space k=v ", {}),
        ('"=x', '"=x', {}),
        ("m url=http://h/p?a=b", "m", {"url": "http://h/p?a=b"}),
    ],
)
def test_split_pairs(body: str, message: str, pairs: dict[str, str]) -> None:
    assert split_pairs(body) == (message, pairs)


def test_go_unquote_is_lenient() -> None:
    assert go_unquote('"\\q\\xff"') == "q\ufffd"
    assert go_unquote('"\\U7fffffff"') == "\ufffd"
    assert go_unquote('"plain"') == "plain"


@pytest.mark.parametrize("model_type", ["llm", "text_embedding", "rerank", "tts", "speech2text", "moderation"])
def test_dispatch_invoke_sets_model_type_and_latency(model_type: str) -> None:
    line = (
        f"{PREFIX}trace_id={TRACE} tenant_id={TENANT} HTTP request latency_ms=1500 method=POST "
        f"path=/plugin/{TENANT}/dispatch/{model_type}/invoke client_ip=172.25.0.9 status=200"
    )
    event = parse_one(line, service="plugin_daemon")
    assert (event.model_type, event.duration_seconds, event.http_status) == (model_type, 1.5, 200)
    assert event.http_path == f"/plugin/:id/dispatch/{model_type}/invoke"
    assert (event.trace_id, event.tenant_id) == (TRACE, TENANT)


@pytest.mark.parametrize(
    "path",
    [
        f"/plugin/{TENANT}/dispatch/tool/invoke",
        f"/plugin/{TENANT}/dispatch/llm/num_tokens",
        "/plugin/x/management/list",
    ],
)
def test_other_paths_have_no_model_type(path: str) -> None:
    event = parse_one(f"{PREFIX}HTTP request status=200 latency_ms=1 method=GET path={path}")
    assert event.model_type is None
    assert event.http_status == 200


def test_quoted_path_and_non_numeric_status() -> None:
    event = parse_one(f'{PREFIX}HTTP request status=200 method=GET path="/plugin/a b/x?q=1" latency_ms=2.5')
    assert (event.http_path, event.duration_seconds) == ("/plugin/a b/x", 0.0025)
    assert parse_one(f"{PREFIX}HTTP request status=ok").http_status is None


def test_plugin_level_is_the_daemons_own() -> None:
    line = "2026-06-12T10:32:01Z WARN dify-plugin-daemon middleware.go:83 HTTP request status=404 method=GET path=/x"
    assert parse_one(line).level == "warning"


def test_ids_in_the_tail_count_too_and_bad_trace_ids_are_dropped() -> None:
    event = parse_one(f"{PREFIX}trace_id=nothex something happened user_id=u1 span_id=0123456789abcdef")
    assert (event.trace_id, event.user_id, event.span_id, event.message) == (
        None,
        "u1",
        "0123456789abcdef",
        "something happened",
    )


def test_text_without_caller() -> None:
    event = parse_one("2026-06-12T10:32:01Z ERROR dify-plugin-daemon")
    assert (event.format, event.level, event.logger_caller, event.message) == ("plugin_text", "error", None, "")


def test_go_stack_trace_stays_with_its_error_line() -> None:
    record = "\n".join(
        [
            f'{PREFIX}panic recovered error="runtime error: invalid memory address"',
            "goroutine 1 [running]:",
            "main.main()",
            "\t/app/cmd/main.go:12 +0x1d",
        ]
    )
    event = parse_one(record)
    assert (event.format, event.lines, event.message) == ("plugin_text", 4, "panic recovered")


def test_json_mode() -> None:
    line = json.dumps(
        {
            "attributes": {"error_type": "PluginDaemonUnauthorizedError", "status": "401"},
            "caller": "auth.go:10",
            "identity": {"tenant_id": TENANT, "user_id": "u"},
            "message": "unauthorized",
            "service": "dify-plugin-daemon",
            "severity": "WARN",
            "trace_id": TRACE,
            "ts": "2026-06-12T10:32:01Z",
        },
        separators=(",", ":"),
    )
    event = parse_one(line, service="plugin_daemon")
    assert (event.format, event.level, event.error_type, event.tenant_id) == (
        "plugin_json",
        "warning",
        "PluginDaemonUnauthorizedError",
        TENANT,
    )
    assert event.http_status is None  # status alone is not an HTTP request line


def test_json_http_request_with_string_numbers() -> None:
    line = json.dumps(
        {
            "attributes": {
                "status": "502",
                "latency_ms": "30000",
                "method": "POST",
                "path": "/plugin/t/dispatch/llm/invoke",
            },
            "message": "HTTP request",
            "service": "dify-plugin-daemon",
            "severity": "ERROR",
        }
    )
    event = parse_one(line)
    assert (event.http_status, event.duration_seconds, event.model_type, event.level) == (502, 30.0, "llm", "error")


@pytest.mark.parametrize(
    ("second", "level", "message", "duration"),
    [
        ("[12.5ms] [rows:3] SELECT 1", "info", None, 0.0125),
        ("[info] replacing callback", "info", "replacing callback", None),
        ("[error] unsupported data type", "error", "unsupported data type", None),
    ],
)
def test_gorm_second_line(second: str, level: str, message: str | None, duration: float | None) -> None:
    event = parse_one(f"2026/06/12 10:33:09 /app/internal/db/pg.go:120\n{second}")
    assert (event.format, event.level, event.message, event.duration_seconds) == ("gorm", level, message, duration)
    assert event.logger_caller == "/app/internal/db/pg.go:120"


def test_gorm_multiline_sql_stays_in_the_record() -> None:
    event = parse_one("2026/06/12 10:33:09 /app/db.go:1 SLOW SQL >= 200ms\n[250.000ms] [rows:1] SELECT a\n  FROM b")
    assert (event.lines, event.level, event.duration_seconds) == (3, "warning", 0.25)


def test_old_go_log_levels() -> None:
    event = parse_one("2025/08/26 08:22:33 pool.go:32: \x1b[33m[WARN]pool nearly full\x1b[0m")
    assert (event.format, event.level, event.message, event.logger_caller) == (
        "go_log",
        "warning",
        "pool nearly full",
        "pool.go:32",
    )


@pytest.mark.parametrize(
    ("pairs", "status", "duration"),
    [
        ("status=nan latency_ms=5", None, None),
        ("status=1e999 latency_ms=5", None, None),
        ("status=200 latency_ms=inf", 200, None),
        ("status=200 latency_ms=-3", 200, None),
        ("status=200 latency_ms=" + "9" * 5000, 200, None),
        ("status=20 latency_ms=5", None, None),
    ],
)
def test_odd_numbers_are_absent_not_fatal(pairs: str, status: int | None, duration: float | None) -> None:
    event = parse_one(f"{PREFIX}HTTP request method=GET path=/x {pairs}")
    assert (event.format, event.http_status, event.duration_seconds) == ("plugin_text", status, duration)
