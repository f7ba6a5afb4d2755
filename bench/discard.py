"""A Loki push endpoint that answers 204 and keeps nothing: the headline benchmark measures logpipe, not a store.

It reads each body in full (as Loki must), answers `204 No Content` over keep-alive HTTP/1.1, and counts requests
and bytes. Runs on threads of the benchmark process.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        server: Any = self.server
        with server.lock:
            server.pushes += 1
            server.bytes += len(body)
        self.send_response(204)
        self.end_headers()

    def do_GET(self) -> None:  # /ready, and read-backs (never needed here)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class DiscardLoki:
    def __init__(self) -> None:
        self._server: Any = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.lock = threading.Lock()
        self._server.pushes = 0
        self._server.bytes = 0
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def pushes(self) -> int:
        return int(self._server.pushes)

    def __enter__(self) -> DiscardLoki:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
