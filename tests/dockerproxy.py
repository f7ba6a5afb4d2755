"""A Docker API proxy on a unix socket that lets only GET and HEAD through (403 for anything else).

It forces one request per connection (`Connection: close`), so every request is checked, and it records the
request line of everything it saw. Used to show that logpipe only ever reads from the Docker socket.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path

UPSTREAM = "/var/run/docker.sock"


class ReadOnlyDockerProxy:
    def __init__(self, path: Path, upstream: str = UPSTREAM) -> None:
        self.path = path
        self.upstream = upstream
        self.seen: list[str] = []
        self.refused: list[str] = []
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def docker_host(self) -> str:
        return f"unix://{self.path}"

    def __enter__(self) -> ReadOnlyDockerProxy:
        self._server.bind(str(self.path))
        self._server.listen(64)
        self._server.settimeout(0.2)
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._server.close()
        for thread in self._threads[:1]:
            thread.join(2)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            head = b""
            while b"\r\n\r\n" not in head:
                data = client.recv(65536)
                if not data:
                    return
                head += data
            head, _, rest = head.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            request_line = lines[0].decode("latin-1")
            method = request_line.split(" ", 1)[0]
            with self._lock:
                self.seen.append(request_line)
            if method not in ("GET", "HEAD"):
                with self._lock:
                    self.refused.append(request_line)
                body = b"read-only proxy: refused\n"
                client.sendall(
                    b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                return
            headers = [h for h in lines[1:] if not h.lower().startswith(b"connection:")]
            forwarded = b"\r\n".join([lines[0], *headers, b"Connection: close"]) + b"\r\n\r\n" + rest
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as upstream:
                upstream.connect(self.upstream)
                upstream.sendall(forwarded)
                while True:
                    try:
                        data = upstream.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    with contextlib.suppress(OSError):
                        client.sendall(data)
