"""error_type and timeout_kind: bounded, from the phrases services really print, never from a config echo."""

from __future__ import annotations

import pytest

from logpipe.event import TIMEOUT_KINDS
from logpipe.parsers.errors import final_exception, plugin_error_type, timeout_kind
from tests.parsers.helpers import parse_one

DIFY = "2026-06-12 10:33:15.004 ERROR [Dummy-22] [base.py:119]  - "
TB = 'Traceback (most recent call last):\n  File "/app/x.py", line 3, in f\n    g()\n'


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("[2026-06-12 10:40:12 +0000] [1] [CRITICAL] WORKER TIMEOUT (pid:35)", "worker_timeout"),
        (
            "2026/06/12 11:33:20 [error] 30#30: *1 upstream timed out (110: Connection timed out) while reading",
            "upstream_timeout",
        ),
        (DIFY + "Request failed\n" + TB + "httpx.ReadTimeout: timed out", "read_timeout"),
        (
            DIFY + "HTTPConnectionPool(host='10.0.0.111', port=10002): Read timed out. (read timeout=60.0)",
            "read_timeout",
        ),
        (DIFY + "Request failed\n" + TB + "httpx.ConnectTimeout: timed out", "connect_timeout"),
        (DIFY + "urllib3 says: connect timed out", "connect_timeout"),
        (DIFY + "Connection to api.openai.com timed out. (connect timeout=10)", "connect_timeout"),
        (DIFY + 'PluginInvokeError: {"message":"[models] Connection Error, Request timed out."}', "request_timeout"),
        (DIFY + "x\n" + TB + "openai.APITimeoutError: Request timed out.", "request_timeout"),
        (DIFY + "x\n" + TB + "TimeoutError: [Errno 110] Connection timed out", "request_timeout"),
        (DIFY + "x\n" + TB + "socket.timeout: timed out", "request_timeout"),
        (DIFY + "x\n" + TB + "httpx.PoolTimeout: no connection available", "request_timeout"),
        (DIFY + "Soft time limit (300s) exceeded for tasks.x[1c2d3e4f-5a6b-4c7d-8e9f-a0b1c2d3e4f5]", "task_time_limit"),
        (DIFY + "x\n" + TB + "celery.exceptions.SoftTimeLimitExceeded: SoftTimeLimitExceeded()", "task_time_limit"),
        ('{"level":"info","msg":"retrying after a read timed out","time":"t"}', "read_timeout"),
    ],
)
def test_timeouts_are_recognised(text: str, kind: str) -> None:
    event = parse_one(text)
    assert event.timeout_kind == kind
    assert kind in TIMEOUT_KINDS


@pytest.mark.parametrize(
    "text",
    [
        "Starting with GUNICORN_TIMEOUT=360",
        DIFY + "config: {'timeout': 30, 'connect_timeout': 10, 'read_timeout': 60}",
        DIFY + "PLUGIN_DAEMON_TIMEOUT=600.0 HTTP_REQUEST_MAX_READ_TIMEOUT=60",
        DIFY + "timeout: 30",
        DIFY + "set the request timeout to 30 seconds",
        '{"level":"WARN","msg":"pool busy","timeout":30,"time":"t"}',
        "2026-06-12 10:43:00.000 UTC [94] ERROR:  canceling statement due to statement timeout",
        '{"action":"raft","level":"warning","msg":"heartbeat timeout reached","time":"t"}',
        '{"time":"t","level":"ERROR","msg":"process finished with error","status":"signal: killed"}',
        "2025/05/07 17:53:01 output_capture.go:141: [ERROR]process finished with status: signal: killed",
        "[2026-06-12 10:40:13 +0000] [1] [ERROR] Worker (pid:35) was sent SIGKILL! Perhaps out of memory?",
        # A chain whose final exception is not a timeout.
        DIFY + "x\n" + TB + "TimeoutError: timed out\n\nDuring handling of the above exception, another exception "
        "occurred:\n\n" + TB + "RuntimeError: worker died",
        # Prompts in LLM debug blocks are user content.
        "[on_llm_before_invoke]\nModel: m\nParameters:\n\ttimeout: 30\nPrompt messages:\n\tcontent: Request timed out?",
    ],
)
def test_config_echoes_and_look_alikes_are_not_timeouts(text: str) -> None:
    assert parse_one(text).timeout_kind is None


def test_only_one_timeout_kind_per_record_most_specific_first() -> None:
    text = DIFY + "x\n" + TB + "httpx.ConnectTimeout: timed out\n\nDuring handling:\n\n" + TB + "httpx.ReadTimeout: x"
    assert timeout_kind(text) == "connect_timeout"
    assert timeout_kind("WORKER TIMEOUT and upstream timed out") == "worker_timeout"


def test_final_exception_of_a_chained_traceback_is_the_last_one() -> None:
    text = (
        TB + "httpcore.ReadTimeout: timed out\n\nThe above exception was the direct cause of the following "
        "exception:\n\n" + TB + "    ^^^^^^^^^\nhttpx.ReadTimeout: timed out\nextra line"
    )
    assert final_exception(text) == ("httpx.ReadTimeout", "timed out")


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        ("KeyboardInterrupt", ("KeyboardInterrupt", "")),
        ("ValueError:", ("ValueError", "")),
        (
            "psycopg2.errors.UniqueViolation: duplicate key\nDETAIL:  Key exists.",
            ("psycopg2.errors.UniqueViolation", "duplicate key"),
        ),
        ("not an exception line at all!", None),
    ],
)
def test_final_exception_line(tail: str, expected: tuple[str, str] | None) -> None:
    assert final_exception(TB + tail) == expected


def test_no_traceback_no_exception() -> None:
    assert final_exception("ValueError: x") is None
    assert final_exception("Traceback (most recent call last):") is None


def test_plugin_error_type_wins_over_the_wrapping_exception() -> None:
    text = (
        DIFY + "Error\n" + TB + "core.plugin.impl.exc.PluginInvokeError: req_id: 0a1b2c3d4e PluginInvokeError: "
        '{"args":{},"error_type":"InvokeRateLimitError","message":"slow down"}'
    )
    event = parse_one(text)
    assert (event.error_type, event.req_id, event.timeout_kind) == ("InvokeRateLimitError", "0a1b2c3d4e", None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"error_type":"PluginDaemonInnerError"}', "PluginDaemonInnerError"),
        ('{\\"error_type\\":\\"PluginDaemonNotFoundError\\"}', "PluginDaemonNotFoundError"),
        ('{"error_type": "Invoke Error with spaces"}', None),
        ('{"error_type":"' + "A" * 300 + '"}', None),
        ("no error type here", None),
    ],
)
def test_plugin_error_type_is_a_bounded_class_name(text: str, expected: str | None) -> None:
    assert plugin_error_type(text) == expected


def test_error_type_is_never_a_message() -> None:
    event = parse_one(DIFY + "x\n" + TB + "ValueError: user 12345 typed something odd")
    assert event.error_type == "ValueError"


def test_req_id_must_be_ten_hex_digits() -> None:
    assert parse_one(DIFY + "req_id: 9e1e2daabe PluginInvokeError: x").req_id == "9e1e2daabe"
    assert parse_one(DIFY + "req_id: 9e1e2daabe00 x").req_id is None
    assert parse_one(DIFY + "req_id: zzzzzzzzzz x").req_id is None
