"""Dify api/worker/beat records in text and JSON mode, gunicorn, old Celery, the banner."""

from __future__ import annotations

import json

import pytest

from tests.parsers.helpers import parse_one

TRACE = "0123456789abcdef0123456789abcdef"
TASK_ID = "c14c96c2-0a8b-4d7e-9f61-2e3d4c5b6a79"


def text_line(message: str, level: str = "INFO", caller: str = "x.py:1", trace: str = "") -> str:
    return f"2026-06-12 10:32:01.117 {level} [Dummy-1] [{caller}] {trace} - {message}"


def json_line(message: str, **extra: object) -> str:
    obj = {"ts": "2026-06-12T10:32:01.117Z", "severity": "INFO", "service": "langgenius/dify", "caller": "x.py:1"}
    return json.dumps({**obj, "message": message, **extra}, separators=(",", ":"))


@pytest.mark.parametrize("mode", ["text", "json"])
@pytest.mark.parametrize(
    ("message", "name", "state", "runtime"),
    [
        (f"Task tasks.a.b[{TASK_ID}] received", "tasks.a.b", "received", None),
        (
            f"Task tasks.a.b[{TASK_ID}] succeeded in 0.03291739500127733s: {{'ok': True}}",
            "tasks.a.b",
            "succeeded",
            0.03291739500127733,
        ),
        (f"Task tasks.a.b[{TASK_ID}] succeeded in 1.2e-05s: None", "tasks.a.b", "succeeded", 1.2e-05),
        (f"Task tasks.a.b[{TASK_ID}] raised unexpected: ValueError('x')", "tasks.a.b", "failed", None),
        (f"Task tasks.a.b[{TASK_ID}] retry: Retry in 5s", "tasks.a.b", "retry", None),
    ],
)
def test_celery_task_lines(mode: str, message: str, name: str, state: str, runtime: float | None) -> None:
    event = parse_one(text_line(message) if mode == "text" else json_line(message))
    assert (event.task_name, event.task_id, event.task_state, event.task_runtime_seconds) == (
        name,
        TASK_ID,
        state,
        runtime,
    )
    assert event.error_type == ("ValueError" if state == "failed" else None)


@pytest.mark.parametrize("kind", ["Soft", "Hard"])
def test_time_limits(kind: str) -> None:
    event = parse_one(text_line(f"{kind} time limit (30.5s) exceeded for tasks.x[{TASK_ID}]", "ERROR"))
    assert (event.task_name, event.task_id, event.task_state) == ("tasks.x", TASK_ID, None)
    assert event.timeout_kind == "task_time_limit"
    assert event.error_type == ("SoftTimeLimitExceeded" if kind == "Soft" else "TimeLimitExceeded")


def test_messages_that_only_look_like_task_lines() -> None:
    for message in ("Task list refreshed", "Tasks: 3 received", "Scheduler: idle", "Soft limits are fine"):
        event = parse_one(text_line(message))
        assert (event.task_name, event.task_state, event.timeout_kind) == (None, None, None)


def test_request_log_variants() -> None:
    with_trace = parse_one(
        text_line(f"PATCH /console/api/apps/42/site 200 7 {TRACE}", caller="ext_request_logging.py:73")
    )
    assert (with_trace.http_method, with_trace.http_path, with_trace.http_status) == (
        "PATCH",
        "/console/api/apps/:id/site",
        200,
    )
    assert with_trace.duration_seconds == pytest.approx(0.007)
    assert with_trace.trace_id == TRACE
    assert with_trace.level == "info"  # the line's own level, not one derived from the status
    error = parse_one(text_line("POST /v1/chat-messages 500 35.112 ", caller="ext_request_logging.py:73"))
    assert (error.http_status, error.level, error.trace_id) == (500, "info", None)


def test_request_log_shape_from_another_caller_is_not_an_access_record() -> None:
    event = parse_one(text_line("POST /v1/chat-messages 200 35.112", caller="other.py:1"))
    assert event.http_status is None


def test_text_trace_id_must_be_32_hex() -> None:
    assert parse_one(text_line("m", trace=TRACE)).trace_id == TRACE
    assert parse_one(text_line("m", trace="not-a-trace")).trace_id is None
    assert parse_one(text_line("m", trace="0" * 32)).trace_id is None


def test_text_message_keeps_dashes_and_brackets() -> None:
    event = parse_one(text_line("a - b [c] - d", trace=TRACE))
    assert event.message == "a - b [c] - d"


def test_ansi_in_the_message_is_stripped_for_matching_and_shipping() -> None:
    event = parse_one(text_line(f"\x1b[32mTask tasks.a[{TASK_ID}] received\x1b[0m"))
    assert event.task_state == "received"
    assert "\x1b" not in event.text


def test_json_non_compact_fallback_and_unknown_keys() -> None:
    line = json.dumps(
        {
            "ts": "2026-06-12T10:32:01.117Z",
            "severity": "ERROR",
            "service": "langgenius/dify",
            "caller": "y.py:2",
            "message": "boom",
            "trace_id": TRACE,
            "span_id": "0123456789abcdef",
            "identity": {"tenant_id": "t1", "user_id": "u1", "user_type": "end_user"},
            "attributes": {"req_id": "a1b2c3d4e5", "nested": {"deep": [1, 2]}},
            "context": {"app_id": "a1", "workflow_id": "w1", "node_id": "n1"},
            "error_source": "workflow",
            "future_key": {"x": 1},
        },
        separators=(", ", ": "),
    )
    event = parse_one(line)
    assert (event.format, event.level, event.logger_caller, event.message) == ("dify_json", "error", "y.py:2", "boom")
    assert (event.trace_id, event.span_id, event.tenant_id, event.user_id) == (TRACE, "0123456789abcdef", "t1", "u1")
    assert (event.app_id, event.workflow_id, event.node_id, event.req_id) == ("a1", "w1", "n1", "a1b2c3d4e5")


def test_json_with_wrong_value_types_is_still_read() -> None:
    line = json.dumps(
        {
            "ts": 1,
            "severity": 3,
            "service": "langgenius/dify",
            "caller": None,
            "message": ["x"],
            "identity": "t",
            "context": [],
            "trace_id": 12,
            "stack_trace": {"a": 1},
        }
    )
    event = parse_one(line)
    assert (event.format, event.level, event.message, event.trace_id, event.tenant_id) == (
        "dify_json",
        "unknown",
        None,
        None,
        None,
    )


def test_json_stack_trace_gives_the_error_type() -> None:
    stack = (
        'Traceback (most recent call last):\n  File "a.py", line 1, in f\n'
        "sqlalchemy.exc.OperationalError: (psycopg2.OperationalError) x\n"
    )
    event = parse_one(json_line("DB error", severity="ERROR", stack_trace=stack))
    assert event.error_type == "sqlalchemy.exc.OperationalError"


def test_json_critical_is_written_as_error_and_warn_is_warning() -> None:
    assert parse_one(json_line("m", severity="WARN")).level == "warning"
    assert parse_one(json_line("m", severity="DEBUG")).level == "debug"


def test_gunicorn_levels_and_errors() -> None:
    timeout = parse_one("[2026-06-12 10:40:12 +0000] [1] [CRITICAL] WORKER TIMEOUT (pid:35)")
    assert (timeout.format, timeout.level, timeout.error_type, timeout.timeout_kind) == (
        "gunicorn",
        "critical",
        "WorkerTimeout",
        "worker_timeout",
    )
    warning = parse_one("[2026-06-12 10:40:12 -0700] [7] [WARNING] Worker graceful timeout (pid:35)")
    assert (warning.level, warning.error_type, warning.timeout_kind) == ("warning", None, None)


def test_old_celery_format() -> None:
    event = parse_one(f"[2024-08-23 06:54:18,106: WARNING/ForkPoolWorker-3] Task tasks.a[{TASK_ID}] retry: Retry in 1s")
    assert (event.format, event.level, event.task_state) == ("celery_text", "warning", "retry")


def test_banner_is_one_info_record() -> None:
    banner = "\n".join(
        [
            " -------------- celery@worker-1 v5.6.0 (recovery)",
            "--- ***** ----- ",
            "- ** ---------- [config]",
            "- ** ---------- .> transport:   redis://:**@redis:6379/1",
            "",
            "[tasks]",
            "  . tasks.a",
        ]
    )
    event = parse_one(banner)
    assert (event.format, event.level, event.lines, event.message) == (
        "celery_banner",
        "info",
        7,
        "celery@worker-1 v5.6.0 (recovery)",
    )
    assert event.timeout_kind is None


def test_unreadable_task_runtime_keeps_the_rest() -> None:
    event = parse_one(text_line(f"Task tasks.a[{TASK_ID}] succeeded in 1.2.3s: None"))
    assert (event.format, event.task_state, event.task_runtime_seconds) == ("dify_text", "succeeded", None)
