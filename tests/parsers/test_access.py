"""Access-style records (nginx, gin, squid) and the path normalisation that makes paths usable as labels."""

from __future__ import annotations

import pytest

from logpipe.parsers.access import go_duration, normalise_path
from tests.parsers.helpers import parse_one


@pytest.mark.parametrize(
    ("path", "normalised"),
    [
        ("/v1/chat-messages", "/v1/chat-messages"),
        ("/v1/chat-messages?user=abc&x=1", "/v1/chat-messages"),
        (
            "/console/api/apps/05eaafb0-9d1e-4a0a-8c47-3f2b8e0e6b11/workflows/draft",
            "/console/api/apps/:id/workflows/draft",
        ),
        ("/console/api/apps/05EAAFB0-9D1E-4A0A-8C47-3F2B8E0E6B11", "/console/api/apps/:id"),
        ("/console/api/datasets/123/documents/456", "/console/api/datasets/:id/documents/:id"),
        ("/files/3f2e1d0c9b8a7f6e5d4c3b2a19081726/file-preview", "/files/:id/file-preview"),
        ("/files/tools/05eaafb0-9d1e-4a0a-8c47-3f2b8e0e6b11.png", "/files/tools/:id.png"),
        ("/v1/deadbeef/x", "/v1/deadbeef/x"),  # 8 hex characters are not an id
        ("/v1/abc123", "/v1/abc123"),
        ("/api/v2/x#frag", "/api/v2/x"),
        ("http://10.0.0.111:10002/v1/models/12", "/v1/models/:id"),
        ("https://host", "/"),
        ("", "/"),
        ("*", "*"),
        ("/v1/12/", "/v1/:id/"),
    ],
)
def test_normalise_path(path: str, normalised: str) -> None:
    assert normalise_path(path) == normalised


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("14.364958ms", 0.014364958),
        ("15.002947331s", 15.002947331),
        ("512µs", 0.000512),
        ("512μs", 0.000512),
        ("845ns", 8.45e-07),
        ("1m2s", 62.0),
        ("1h0m0.5s", 3600.5),
        ("0s", 0.0),
        ("", None),
        ("12", None),
        ("1x", None),
        ("ms", None),
    ],
)
def test_go_duration(text: str, seconds: float | None) -> None:
    result = go_duration(text)
    if seconds is None:
        assert result is None
    else:
        assert result == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("status", "level", "timeout"),
    [
        (200, "info", None),
        (302, "info", None),
        (499, "warning", None),
        (502, "error", None),
        (504, "error", "upstream_timeout"),
    ],
)
def test_nginx_access_levels_and_timeouts(status: int, level: str, timeout: str | None) -> None:
    line = f'10.0.0.1 - - [12/Jun/2026:10:32:01 +0000] "GET /v1/x HTTP/1.1" {status} 0 "-" "ua" "-"'
    event = parse_one(line, service="nginx")
    assert (event.format, event.http_status, event.level, event.timeout_kind) == (
        "nginx_access",
        status,
        level,
        timeout,
    )
    assert event.duration_seconds is None  # nginx's default format has no request time


def test_nginx_access_without_forwarded_for_and_with_quotes_in_agent() -> None:
    line = (
        '10.0.0.1 - - [12/Jun/2026:10:32:01 +0000] "DELETE /console/api/apps/42 HTTP/1.1" 204 0 "-" '
        '"a \\x22quoted\\x22 ua"'
    )
    event = parse_one(line)
    assert (event.http_method, event.http_path, event.http_status) == ("DELETE", "/console/api/apps/:id", 204)


def test_gin_variants() -> None:
    event = parse_one('[GIN] 2026/06/12 - 10:33:00 | 404 |     1.5ms |  172.19.0.7 | GET      "/v1/nope?x=1"')
    assert (event.format, event.level, event.http_path, event.duration_seconds) == (
        "gin",
        "warning",
        "/v1/nope",
        0.0015,
    )


def test_squid_variants() -> None:
    event = parse_one(
        "1781260380.402    120 172.19.0.9 TCP_MISS/502 10 POST https://api.x.com/v1/chat?k=1 - HIER_DIRECT/1.2.3.4 -"
    )
    assert (event.format, event.http_method, event.http_path, event.http_status, event.level) == (
        "squid",
        "POST",
        "/v1/chat",
        502,
        "error",
    )
    assert event.duration_seconds == pytest.approx(0.12)


def test_nginx_error_without_request() -> None:
    event = parse_one("2026/06/12 10:30:00 [alert] 1#1: worker process 30 exited on signal 9")
    assert (event.level, event.message, event.http_path) == ("critical", "worker process 30 exited on signal 9", None)
