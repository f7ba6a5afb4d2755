"""The metrics endpoint, for real over a local socket."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator, Mapping

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from logpipe.config import MetricsConfig
from logpipe.metrics import LogMetrics, MetricsServer
from logpipe.metrics.server import GZIP_MIN_BYTES

from .support import event


@pytest.fixture
def serve(registry) -> Iterator[Callable[..., MetricsServer]]:
    servers: list[MetricsServer] = []

    def start(**kwargs: object) -> MetricsServer:
        kwargs.setdefault("readiness", lambda: {"docker": True, "loki": True})
        server = MetricsServer("127.0.0.1:0", registry, **kwargs)  # type: ignore[arg-type]
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def url(server: MetricsServer, path: str) -> str:
    host, port = server.address
    return f"http://{host}:{port}{path}"


def test_metrics_in_prometheus_text_format(serve, registry):
    metrics = LogMetrics(registry, MetricsConfig())
    metrics.observe(event(level="error", error_type="ValueError"))
    server = serve()
    reply = httpx.get(url(server, "/metrics"))
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(reply.text)
        for s in family.samples
    }
    assert samples[("dify_errors_total", (("error_type", "ValueError"), ("service", "api")))] == 1
    assert samples[("dify_llm_cost_budget_usd", ())] == 100


def test_metrics_in_openmetrics_when_asked(serve, registry):
    metrics = LogMetrics(registry, MetricsConfig())
    metrics.observe(event())
    server = serve()
    reply = httpx.get(url(server, "/metrics"), headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("application/openmetrics-text")
    assert 'dify_log_entries_total{level="info",service="api"} 1.0' in reply.text
    assert reply.text.endswith("# EOF\n")


def test_metrics_gzip_when_accepted(serve, registry):
    metrics = LogMetrics(registry, MetricsConfig())
    metrics.observe(event())
    server = serve()
    with httpx.Client() as client:
        raw = client.get(url(server, "/metrics"), headers={"Accept-Encoding": "gzip"})
    assert raw.headers.get("content-encoding") == "gzip"
    assert "dify_log_entries_total" in raw.text  # httpx decoded it
    plain = httpx.get(url(server, "/metrics"), headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert len(plain.content) >= GZIP_MIN_BYTES  # the body was big enough to be compressed


@pytest.mark.parametrize(("alive", "status", "body"), [(True, 200, "ok\n"), (False, 503, "not ok\n")])
def test_healthz(serve, alive, status, body):
    server = serve(liveness=lambda: alive)
    reply = httpx.get(url(server, "/healthz"))
    assert (reply.status_code, reply.text) == (status, body)


@pytest.mark.parametrize(
    ("checks", "status"),
    [({"docker": True, "loki": True}, 200), ({"docker": True, "loki": False}, 503), ({}, 200)],
)
def test_readyz(serve, checks: Mapping[str, bool], status: int):
    server = serve(readiness=lambda: checks)
    reply = httpx.get(url(server, "/readyz"))
    assert reply.status_code == status
    assert reply.headers["content-type"] == "application/json"
    assert orjson.loads(reply.content) == checks


def test_readyz_when_the_check_raises(serve):
    def broken() -> Mapping[str, bool]:
        raise RuntimeError("boom")

    server = serve(readiness=broken)
    reply = httpx.get(url(server, "/readyz"))
    assert reply.status_code == 503


def test_unknown_path_is_404(serve):
    server = serve()
    assert httpx.get(url(server, "/")).status_code == 404
    assert httpx.get(url(server, "/metricsx")).status_code == 404
    assert httpx.get(url(server, "/metrics?x=1")).status_code == 200


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz", "/nope"])
def test_basic_auth_on_every_path(serve, path):
    server = serve(username="prom", password="s3cret:with:colons")
    missing = httpx.get(url(server, path))
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Basic realm=")
    assert httpx.get(url(server, path), auth=("prom", "wrong")).status_code == 401
    assert httpx.get(url(server, path), auth=("other", "s3cret:with:colons")).status_code == 401
    assert httpx.get(url(server, path), headers={"Authorization": "Basic !!notbase64"}).status_code == 401
    assert httpx.get(url(server, path), headers={"Authorization": "Bearer x"}).status_code == 401
    expected = 404 if path == "/nope" else 200
    assert httpx.get(url(server, path), auth=("prom", "s3cret:with:colons")).status_code == expected


def test_head_has_headers_and_no_body(serve):
    server = serve()
    reply = httpx.head(url(server, "/healthz"))
    assert reply.status_code == 200 and reply.headers["content-length"] == "3" and reply.content == b""


def test_start_raises_when_the_port_is_taken(registry):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = MetricsServer(f"127.0.0.1:{port}", registry, readiness=dict)
        with pytest.raises(OSError):
            server.start()


def test_stop_closes_the_socket_and_is_idempotent(registry):
    server = MetricsServer("127.0.0.1:0", registry, readiness=dict)
    server.start()
    host, port = server.address
    server.stop()
    server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{host}:{port}/healthz")


def test_ipv6_address(registry):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    server = MetricsServer("[::1]:0", registry, readiness=dict)
    try:
        server.start()
    except OSError:
        pytest.skip("cannot bind ::1 here")
    try:
        host, port = server.address
        assert host == "::1"
        assert httpx.get(f"http://[::1]:{port}/healthz").status_code == 200
    finally:
        server.stop()
