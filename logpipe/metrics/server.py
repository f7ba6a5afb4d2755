"""The HTTP endpoint: ``/metrics`` (Prometheus or OpenMetrics text), ``/healthz`` and ``/readyz``.

Served by a `ThreadingHTTPServer` on a daemon thread. Optional HTTP basic auth guards every path; credentials are
compared in constant time and never logged.
"""

from __future__ import annotations

import base64
import binascii
import functools
import gzip
import hmac
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import urlsplit

import orjson
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from logpipe.threads import Threads

log = logging.getLogger(__name__)

#: Seconds a connection may sit idle or dribble a request before it is closed.
REQUEST_TIMEOUT_SECS = 10.0
#: Bodies at least this large are gzipped when the client accepts it.
GZIP_MIN_BYTES = 1024


def parse_addr(addr: str) -> tuple[str, int]:
    """Split ``host:port``, ``[v6]:port`` or ``:port`` (all interfaces) into a bindable (host, port)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"not host:port: {addr!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    app: MetricsServer


class _V6Server(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = REQUEST_TIMEOUT_SECS
    server_version = "logpipe"
    sys_version = ""

    def do_GET(self) -> None:
        self._handle(head=False)

    def do_HEAD(self) -> None:
        self._handle(head=True)

    def _handle(self, head: bool) -> None:
        app = cast(_Server, self.server).app
        if not app.authorized(self.headers.get("Authorization", "")):
            self._send(
                401,
                b"unauthorized\n",
                "text/plain; charset=utf-8",
                head,
                {"WWW-Authenticate": 'Basic realm="logpipe", charset="UTF-8"'},
            )
            return
        path = urlsplit(self.path).path
        if path == "/metrics":
            try:
                body, content_type = app.exposition(self.headers.get("Accept", ""))
            except Exception:
                log.exception("Metrics exposition failed.")
                self._send(500, b"exposition failed\n", "text/plain; charset=utf-8", head)
                return
            extra = {}
            if len(body) >= GZIP_MIN_BYTES and "gzip" in self.headers.get("Accept-Encoding", ""):
                body = gzip.compress(body, compresslevel=1)
                extra["Content-Encoding"] = "gzip"
            self._send(200, body, content_type, head, extra)
        elif path == "/healthz":
            alive = app.alive()
            self._send(200 if alive else 503, b"ok\n" if alive else b"not ok\n", "text/plain; charset=utf-8", head)
        elif path == "/readyz":
            checks = app.ready()
            ok = checks is not None and all(checks.values())
            self._send(200 if ok else 503, orjson.dumps(checks or {}), "application/json", head)
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8", head)

    def _send(
        self, status: int, body: bytes, content_type: str, head: bool, headers: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # The request line and status only; headers (credentials) are never logged.
        log.debug("Metrics endpoint request. client=%s " + format, self.address_string(), *args)


class MetricsServer:
    """Serves `registry` and the health endpoints on `addr` (``host:port``; port 0 picks a free one).

    `readiness` returns named checks (``{"docker": True, "loki": False}``): ``/readyz`` is 200 when all are
    true, else 503; the body is the checks as JSON. ``/healthz`` is 200 while `liveness` is true. A callback that
    raises counts as false. With `username` set, every path requires HTTP basic auth.
    """

    def __init__(
        self,
        addr: str,
        registry: CollectorRegistry,
        *,
        readiness: Callable[[], Mapping[str, bool]],
        liveness: Callable[[], bool] = lambda: True,
        username: str = "",
        password: str = "",
        threads: Threads | None = None,
    ) -> None:
        self._threads = threads
        self._addr = addr
        self._registry = registry
        self._readiness = readiness
        self._liveness = liveness
        self._username = username.encode()
        self._password = password.encode()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind now (raises `OSError` if the address is taken or invalid) and serve on a daemon thread."""
        if self._httpd is not None:
            raise RuntimeError("metrics server already started")
        host, port = parse_addr(self._addr)
        server_class = _V6Server if ":" in host else _Server
        httpd = server_class((host, port), _Handler)
        httpd.app = self
        self._httpd = httpd
        if self._threads is not None:
            # serve_forever keeps no state between calls: a crash is served again after a backoff.
            serve = functools.partial(httpd.serve_forever, poll_interval=0.2)
            self._thread = self._threads.start("metrics_server", serve, name="metrics-server", restart=True)
        else:
            self._thread = threading.Thread(
                target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="metrics-server", daemon=True
            )
            self._thread.start()
        log.info("serving metrics", extra={"addr": "{}:{}".format(*self.address), "basic_auth": bool(self._username)})

    def stop(self) -> None:
        """Stop accepting, close the socket and wait briefly for the serving thread. Idempotent."""
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); only meaningful after `start`."""
        if self._httpd is None:
            raise RuntimeError("metrics server not started")
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    def exposition(self, accept: str) -> tuple[bytes, str]:
        """The registry in the format `accept` asks for (OpenMetrics or Prometheus text), and its content type."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self._registry), content_type

    def authorized(self, header: str) -> bool:
        """Whether an ``Authorization`` header carries the configured credentials (always, without a username)."""
        if not self._username:
            return True
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(token.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        user_ok = hmac.compare_digest(user, self._username)
        password_ok = hmac.compare_digest(password, self._password)
        return bool(sep) and user_ok and password_ok

    def alive(self) -> bool:
        """The liveness callback's answer; false if it raised."""
        try:
            return bool(self._liveness())
        except Exception:
            log.exception("Liveness check failed.")
            return False

    def ready(self) -> dict[str, bool] | None:
        """The named checks, or None when the readiness callback raised."""
        try:
            return {str(name): bool(ok) for name, ok in self._readiness().items()}
        except Exception:
            log.exception("Readiness check failed.")
            return None
