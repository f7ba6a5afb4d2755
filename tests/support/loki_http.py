"""HTTP plumbing of the test Loki and its read endpoints.

A stdlib `ThreadingHTTPServer` speaking HTTP/1.1 with keep-alive: every response goes out in one write with a
Content-Length (Go's `http.Error` style plain text: body plus newline, `X-Content-Type-Options: nosniff`; no body
and no Content-Length on 204). The read side answers `query_range`, `labels` and `label/<name>/values` in Loki's
JSON shape; `query` (instant) refuses log queries as Loki does.
"""

from __future__ import annotations

import socket
import socketserver
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple, Protocol
from urllib.parse import unquote

from tests.support import loki_logql
from tests.support.loki_store import Store, result_streams

TEXT = "text/plain; charset=utf-8"
JSON = "application/json; charset=UTF-8"


class Request(NamedTuple):
    """One HTTP request as the server saw it. `entries` counts the entries of a decodable push body; `at` is
    `time.monotonic()` on arrival, `received_at` wall-clock seconds; `fault` names the fault that acted on it.
    `status` is 0 when the connection was dropped without an answer."""

    seq: int
    method: str
    path: str
    status: int
    entries: int
    stored: int
    rejected: int
    tenant: str | None
    content_type: str | None
    content_encoding: str | None
    user_agent: str | None
    body_bytes: int
    decoded_bytes: int
    fault: str | None
    at: float
    received_at: float
    query: str = ""  # the URL's query string, undecoded (reads)


@dataclass
class Exchange:
    """What one request did, filled in while it is served and logged as a `Request` afterwards."""

    body_bytes: int
    at: float
    received_at: float
    status: int = 404
    seq: int = 0
    entries: int = 0
    stored: int = 0
    rejected: int = 0
    decoded_bytes: int = 0
    fault: str | None = None
    logged: bool = False


class Owner(Protocol):
    def serve_request(self, handler: Handler) -> None: ...
    def track(self, conn: socket.socket, *, add: bool) -> None: ...


class HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], owner: Owner) -> None:
        self.owner = owner
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # skips HTTPServer's reverse DNS lookup
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that vanish and connections closed by down() are expected


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 300  # idle keep-alive connections
    server: HTTPServer

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.owner.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner.track(self.connection, add=False)

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.owner.serve_request(self)

    do_POST = do_GET

    def body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(parts)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def reply(self, status: int, body: str | bytes = b"", *, content_type: str = TEXT,
              headers: Mapping[str, str] | None = None) -> None:  # fmt: skip
        """Write the whole response at once; a str body gets Go's `http.Error` newline."""
        data = body.encode() + b"\n" if isinstance(body, str) else body
        head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", f"Date: {formatdate(usegmt=True)}"]
        if status != 204:
            head += [f"Content-Type: {content_type}", f"Content-Length: {len(data)}"]
            if content_type == TEXT:
                head.append("X-Content-Type-Options: nosniff")
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if self.close_connection:
            head.append("Connection: close")
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (b"" if status == 204 else data))


def read_endpoint(store: Store, path: str, params: Mapping[str, str], tenant: str, *, categorize: bool,
                  clock: Callable[[], float], visibility_delay_secs: float) -> object | None:  # fmt: skip
    """The `data` of a read endpoint's answer, None for an unknown path; raises `QueryError` for a 400.
    `categorize` is Loki's `categorize-labels` encoding flag (structured metadata apart from stream labels)."""
    now_ns = int(clock() * 1e9)
    end = loki_logql.parse_time(params.get("end"), now_ns)
    since = loki_logql.parse_duration(params["since"]) if params.get("since") else 3600 * 10**9
    start = loki_logql.parse_time(params.get("start"), end - since)
    if end < start:
        raise loki_logql.QueryError("end timestamp must not be before or equal to start time")
    visible_before = time.time() - visibility_delay_secs
    if path == "/loki/api/v1/query_range":
        query = loki_logql.parse_query(params.get("query", ""))
        limit, direction = _limit(params, store.limits.max_entries_limit_per_query), _direction(params)
        hits = store.query(tenant, query, start, end, visible_before)
        result = result_streams(hits, limit, direction == "forward", categorize)
        return {"resultType": "streams", "result": result, "stats": {}}
    if path == "/loki/api/v1/query":
        loki_logql.parse_query(params.get("query", ""))
        raise loki_logql.QueryError(
            "log queries are not supported as an instant query type, please change your query to a range query type"
        )
    prefix, suffix = "/loki/api/v1/label/", "/values"
    name = unquote(path[len(prefix) : -len(suffix)]) if path.startswith(prefix) and path.endswith(suffix) else None
    if path != "/loki/api/v1/labels" and not name:
        return None
    selector = loki_logql.parse_query(params["query"]) if params.get("query") else None
    found: set[str] = set()
    for stream in store.streams(tenant):
        if selector is not None and not selector.selects(stream.labels):
            continue
        if any(start <= e.ts_ns < end and e.received_at <= visible_before for e in list(stream.records)):
            if name is None:
                found.update(stream.labels)
            elif name in stream.labels:
                found.add(stream.labels[name])
    return sorted(found)


def _limit(params: Mapping[str, str], maximum: int) -> int:
    text = params.get("limit") or "100"
    if not text.isdigit():
        raise loki_logql.QueryError(f'strconv.ParseUint: parsing "{text}": invalid syntax')
    limit = int(text)
    if limit <= 0:
        raise loki_logql.QueryError("limit must be a positive value")
    if limit > maximum:
        raise loki_logql.QueryError(
            f"max entries limit per query exceeded, limit > max_entries_limit_per_query ({limit} > {maximum})"
        )
    return limit


def _direction(params: Mapping[str, str]) -> str:
    direction = (params.get("direction") or "backward").lower()
    if direction not in ("forward", "backward"):
        raise loki_logql.QueryError(f"invalid direction '{params['direction']}'")
    return direction
