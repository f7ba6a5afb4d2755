"""Line classification: each format's record start, continuation lines, blank lines, ANSI."""

from __future__ import annotations

import pytest

from logpipe.parsers import detect
from logpipe.parsers.detect import BLANK, classify, strip_ansi

E = "\x1b"


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("2026-06-12 10:32:01.117 INFO [Dummy-14] [_client.py:1025] 0123456789abcdef0123456789abcdef - x", "dify_text"),
        ("2024-08-27 15:20:28,976.976 WARNING [MainThread] [ext_mail.py:51] - MAIL_TYPE is not set", "dify_text"),
        ("2026-06-12 10:38:00.101 CRITICAL [MainThread] [strategy.py:161]  - boom", "dify_text"),
        (f"{E}[0m2026-06-12 10:38:00.101 DEBUG [MainThread] [x.py:1]  - after an LLM block", "dify_text"),
        ("2026-06-12 10:40:01.456 UTC [88] ERROR:  duplicate key", "postgres"),
        ("2026-06-12 10:40:01 CEST [88] LOG:  checkpoint starting: time", "postgres"),
        ("2026-06-12T10:32:01.118204551Z INFO dify-plugin-daemon middleware.go:83 HTTP request", "plugin_text"),
        ("2026-06-12T10:32:01+02:00 WARN dify-plugin-daemon x.go:1 m", "plugin_text"),
        ("2026/06/12 11:33:20 [error] 30#30: *902 upstream timed out", "nginx_error"),
        ("2026/06/12 10:33:05 /app/internal/db/executor.go:259 record not found", "gorm"),
        (f"2026/06/12 10:33:05 {E}[32m/app/internal/db/pg.go:120", "gorm"),
        ("2025/08/26 08:22:33 pool.go:32: [INFO]init routine pool, size: 10000", "go_log"),
        ("2025/08/26 08:22:33 plain go log line", "go_log"),
        (
            '172.18.0.1 - - [12/Jun/2026:10:32:01 +0000] "POST /v1/chat-messages HTTP/1.1" 200 5123 "-" "ua" "-"',
            "nginx_access",
        ),
        ('::1 - - [12/Jun/2026:10:32:01 +0000] "GET / HTTP/1.1" 200 1 "-" "ua"', "nginx_access"),
        ('fe80::1 - - [12/Jun/2026:10:32:01 +0000] "GET / HTTP/1.1" 200 1 "-" "ua"', "nginx_access"),
        ("1781260380.402  60011 172.19.0.9 TCP_MISS/504 3960 GET http://h/ - HIER_DIRECT/h text/html", "squid"),
        ("1:M 12 Jun 2026 10:31:20.321 * Ready to accept connections tcp", "redis"),
        ("[2026-06-12 10:40:12 +0000] [1] [CRITICAL] WORKER TIMEOUT (pid:35)", "gunicorn"),
        ("[2024-08-23 06:54:18,106: INFO/MainProcess] Task x[1] received", "celery_text"),
        ('[GIN] 2026/06/12 - 10:33:00 |     200 | 15.002947331s |      172.19.0.7 | POST     "/v1/sandbox/run"', "gin"),
        ("[GIN-debug] GET /health --> main.Health (3 handlers)", "gin"),
        ("[on_llm_before_invoke]", "llm_debug"),
        ("[on_llm_after_invoke]", "llm_debug"),
        ("[on_llm_invoke_error]", "llm_debug"),
        (" -------------- celery@3f9d2c1b7a64 v5.6.0 (recovery)", "celery_banner"),
        ('{"ts":"2026-06-12T10:32:01.117Z","severity":"INFO"}', "json"),
        ("{broken", "json"),
        ("Traceback (most recent call last):", "traceback"),
    ],
)
def test_record_starts(line: str, kind: str) -> None:
    assert classify(line) == kind


@pytest.mark.parametrize(
    "line",
    [
        '  File "/app/x.py", line 1, in f',
        "httpx.ReadTimeout: timed out",
        "During handling of the above exception, another exception occurred:",
        "[0.342ms] [rows:0] SELECT 1",
        f"{E}[0m{E}[33m[0.342ms] {E}[34;1m[rows:0]{E}[0m SELECT 1",
        "[info] message",
        "[tasks]",
        "  . tasks.mail_task.send_mail_task",
        "--- ***** ----- ",
        " -------------- [queues]",
        "goroutine 213 [running]:",
        "\t/app/internal/core/launcher.go:112 +0x3a5",
        "[on_llm_new_chunk]Hello",
        "Model: gpt-4o-mini",
        "[1, 2, 3]",
        "2026-06-12 garbage",
        "2026/06/12 10:30:00| Starting Squid Cache",
        "12345",
        "abc - not an access line",
        "panic: runtime error",
        "\x00",
        "\ufffd\ufffd",
    ],
)
def test_not_record_starts(line: str) -> None:
    assert classify(line) is None


@pytest.mark.parametrize("line", ["", " ", "\t  ", f"{E}[34;1m{E}[1;3m", f"{E}[0m ", f"  {E}[0m"])
def test_blank_lines(line: str) -> None:
    assert classify(line) == BLANK


@pytest.mark.parametrize("line", ["x", " x", f"{E}[0mx", "\x00", f"{E}"])
def test_visible_lines_are_not_blank(line: str) -> None:
    assert classify(line) != BLANK


@pytest.mark.parametrize(
    ("text", "stripped"),
    [
        (f"{E}[32mgreen{E}[0m", "green"),
        (f"{E}[1;31;48;5;236mbold{E}[K", "bold"),
        (f"{E}]0;title{E}\\after", "after"),
        (f"{E}]8;;http://x\x07link{E}]8;;\x07", "link"),
        (f"a{E}Mb", "ab"),
        (f"lone {E}", f"lone {E}"),
        ("no escapes", "no escapes"),
    ],
)
def test_strip_ansi(text: str, stripped: str) -> None:
    assert strip_ansi(text) == stripped


def test_single_line_kinds_are_known_formats() -> None:
    assert set(detect.SINGLE_LINE) <= set(detect.FORMATS)
    assert len(set(detect.FORMATS)) == len(detect.FORMATS)


def test_every_format_tag_is_in_the_list_configuration_validates_against() -> None:
    tags = {
        value
        for name, value in vars(detect).items()
        if name.isupper() and not name.startswith("_") and isinstance(value, str)
        and name not in ("BLANK", "TRACEBACK_HEADER")
    }
    assert tags == set(detect.FORMATS)
