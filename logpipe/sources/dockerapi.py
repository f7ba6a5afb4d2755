"""Plain HTTP/1.1 to the Docker Engine API for the two long-lived streams: container logs and events.

The docker SDK serves every other call; these two are read in bulk (up to 256 KiB per `recv`) straight from a
socket this module owns, which the SDK's public API does not allow. One request per connection, over the Unix
socket, TCP or TCP+TLS, resolved from `DOCKER_HOST`, `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH` the way the
docker CLI and SDK read them (or from an explicit host). Chunked transfer encoding is decoded here, so a stream
hands out body bytes. Every failure leaves this module as `DockerUnavailable`, or `ContainerGone` for a 404.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import docker.errors
import docker.tls
import docker.utils
import orjson

from logpipe import __version__
from logpipe.sources.frames import ChunkedDecoder, StreamFormatError

#: One read takes whatever the kernel has, up to this much: a backlog arrives in few, large reads.
READ_BYTES = 256 * 1024
_MAX_HEAD_BYTES = 64 * 1024
_MAX_ERROR_BODY_BYTES = 64 * 1024


class DockerUnavailable(Exception):
    """dockerd cannot be reached, answered with an error, or broke a stream."""


class ContainerGone(Exception):
    """The container no longer exists (destroyed)."""


@dataclass(frozen=True, slots=True)
class DockerAddress:
    """Where dockerd listens and how to talk to it; both the SDK and the streams are built from one of these."""

    base_url: str  # as given ("" for the default socket), for the SDK
    tls: docker.tls.TLSConfig | None
    unix_path: str  # "" for TCP
    host: str
    port: int

    @staticmethod
    def resolve(host: str = "", environ: Mapping[str, str] | None = None) -> DockerAddress:
        """`host` (the `docker.host` setting) or `DOCKER_HOST`; TLS from `DOCKER_TLS_VERIFY`/`DOCKER_CERT_PATH`.

        Docker CLI contexts are not consulted: the streams and the SDK must reach the same daemon.
        """
        try:
            params = docker.utils.kwargs_from_env(environ)
            base_url = host or params.get("base_url", "")
            tls = params.get("tls")
            parsed = docker.utils.parse_host(base_url or None, False, tls=tls is not None)
        except docker.errors.DockerException as exc:
            raise DockerUnavailable(f"bad Docker address: {exc}") from exc
        url = parsed.decode() if isinstance(parsed, bytes) else parsed
        if url.startswith("http+unix://"):
            return DockerAddress(base_url, None, url.removeprefix("http+unix://"), "", 0)
        split = urllib.parse.urlsplit(url)
        if split.scheme not in ("http", "https") or not split.hostname:
            raise DockerUnavailable(f"unsupported Docker address {base_url!r} (unix://, tcp:// or https:// only)")
        if split.scheme == "http":
            tls = None  # the SDK, too, speaks plain HTTP to an http:// address whatever the environment says
        elif tls is None:
            tls = docker.tls.TLSConfig(verify=True)  # https:// without DOCKER_CERT_PATH: the system's CAs
        return DockerAddress(base_url, tls, "", split.hostname, split.port or (2376 if tls else 2375))

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS settings `TLSConfig.configure_client` gives the SDK's requests session, for a plain socket."""
        if self.tls is None:
            return None
        verify = self.tls.verify
        try:
            if verify:
                cafile = verify if isinstance(verify, str) else self.tls.ca_cert
                context = ssl.create_default_context(cafile=cafile)
            else:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if self.tls.cert:
                context.load_cert_chain(*self.tls.cert)
        except OSError as exc:  # ssl.SSLError too: a file that is not a certificate or key
            raise DockerUnavailable(f"cannot load the Docker TLS files: {exc}") from exc
        return context

    @property
    def authority(self) -> str:
        """The `Host` header: host:port for TCP (IPv6 in brackets), a fixed name for the Unix socket."""
        if self.unix_path:
            return "docker"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class HttpStream:
    """The body of one streaming response. `read` blocks until bytes arrive; `close` may come from any thread.

    HTTP framing (chunked transfer encoding) is already removed from what `read` returns.
    """

    def __init__(self, sock: socket.socket, body_start: bytes, chunked: bool, length: int | None) -> None:
        self._sock = sock
        self._pending = body_start
        self._dechunk = ChunkedDecoder() if chunked else None
        self._left = length  # bytes still owed by a Content-Length body; None: until the connection closes
        self._ended = False
        self._closed = False
        self._lock = threading.Lock()

    def read(self) -> bytes:
        """The next body bytes; b"" at the end of the body, or once `close` was called.

        The connection is closed when the body ends or breaks, so a caller that stops at an error leaks nothing.
        """
        try:
            data = self._next()
        except DockerUnavailable:
            self.close()
            raise
        if not data:
            self.close()
        return data

    def _next(self) -> bytes:
        while not self._ended:
            raw = self._pending or self._receive()
            self._pending = b""
            if self._closed:
                return b""
            if not raw:
                if self._dechunk is not None or self._left:
                    raise DockerUnavailable("dockerd closed the stream in the middle of a response")
                self._ended = True
                return b""
            if self._dechunk is not None:
                try:
                    data = self._dechunk.feed(raw)
                except StreamFormatError as exc:
                    raise DockerUnavailable(f"bad chunked stream: {exc}") from exc
                self._ended = self._dechunk.done
            elif self._left is not None:
                data = raw[: self._left]
                self._left -= len(data)
                self._ended = self._left == 0
            else:
                data = raw
            if data:
                return data
        return b""

    def _receive(self) -> bytes:
        try:
            # recv, not recv_into a buffer of our own: a buffer per stream would keep 256 KiB resident for every
            # quiet container, while recv's buffer only lives (untouched) while it waits, then shrinks to the data.
            return self._sock.recv(READ_BYTES)
        except OSError as exc:
            if self._closed:
                return b""
            raise DockerUnavailable(f"Docker stream broke: {exc}") from exc

    def close(self) -> None:
        """End the stream; a `read` blocked on another thread returns."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        # shutdown() wakes a reader blocked in recv on another thread; close() alone would not.
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


class EventLines:
    """Docker's `/events` body: one JSON object per line, iterated as dicts until the stream ends or is closed."""

    def __init__(self, stream: HttpStream) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rest = b""
        while True:
            data = self._stream.read()
            if not data:
                return
            lines = (rest + data).split(b"\n")
            rest = lines.pop()
            for line in lines:
                if not line.strip():
                    continue
                try:
                    event = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    self._stream.close()
                    raise DockerUnavailable(f"bad event from dockerd: {line[:80]!r}") from exc
                if isinstance(event, dict):
                    yield event

    def close(self) -> None:
        self._stream.close()


class DockerStreams:
    """Opens the logs and events streams of one dockerd, at the API version the SDK negotiated."""

    def __init__(self, address: DockerAddress, api_version: str, timeout_secs: float) -> None:
        self._address = address
        self._prefix = f"/v{api_version}"
        self._timeout = timeout_secs
        self._ssl = address.ssl_context()

    def logs(self, container_id: str, since: str, follow: bool) -> HttpStream:
        """`GET /containers/{id}/logs`: both streams, with timestamps, from `since` (seconds.nanoseconds).

        Asked in HTTP/1.0: dockerd then sends the frames as they are and ends the body by closing the connection,
        instead of wrapping every log line in a chunk of its own (decoding those cost a third of the reader's time
        on a backlog). The connection serves this one response either way.
        """
        query = {"stdout": "1", "stderr": "1", "timestamps": "1", "follow": "1" if follow else "0", "since": since}
        return self.get(f"/containers/{urllib.parse.quote(container_id, safe='')}/logs", query, version="1.0")

    def events(self, since: float | None = None) -> EventLines:
        """`GET /events` for containers, from now (or `since`, epoch seconds)."""
        query = {"filters": json.dumps({"type": ["container"]})}
        if since is not None:
            query["since"] = f"{since:.9f}"
        return EventLines(self.get("/events", query))

    def get(self, path: str, query: Mapping[str, str], version: str = "1.1") -> HttpStream:
        """Send one GET and wait for the response head (under the API timeout); the body then streams untimed."""
        target = f"{self._prefix}{path}?{urllib.parse.urlencode(query)}"
        request = (
            f"GET {target} HTTP/{version}\r\nHost: {self._address.authority}\r\nUser-Agent: logpipe/{__version__}\r\n"
            "Accept-Encoding: identity\r\n\r\n"
        ).encode()
        sock = self._connect()
        try:
            sock.sendall(request)
            status, reason, headers, body_start = _read_head(sock)
            chunked = "chunked" in headers.get("transfer-encoding", "").lower()
            length = None if chunked else _content_length(headers)
            stream = HttpStream(sock, body_start, chunked, length)
            if status >= 400:
                _raise_status(status, reason, stream, path)
            # A quiet container may print nothing for hours: only close() ends the wait for the next bytes.
            sock.settimeout(None)
            return stream
        except OSError as exc:
            sock.close()
            raise DockerUnavailable(f"Docker API request failed: {exc}") from exc
        except BaseException:
            sock.close()
            raise

    def _connect(self) -> socket.socket:
        address = self._address
        try:
            if address.unix_path:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.settimeout(self._timeout)
                    sock.connect(address.unix_path)
                except BaseException:
                    sock.close()
                    raise
                return sock
            sock = socket.create_connection((address.host, address.port), self._timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl is None:
                return sock
            try:
                return self._ssl.wrap_socket(sock, server_hostname=address.host)
            except BaseException:
                sock.close()
                raise
        except OSError as exc:  # includes timeouts and TLS failures (a certificate that does not verify)
            where = address.unix_path or f"{address.host}:{address.port}"
            raise DockerUnavailable(f"cannot connect to dockerd at {where}: {exc}") from exc


def _read_head(sock: socket.socket) -> tuple[int, str, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > _MAX_HEAD_BYTES:
            raise DockerUnavailable("response head from dockerd too long")
        more = sock.recv(READ_BYTES)
        if not more:
            raise DockerUnavailable("dockerd closed the connection before answering")
        data += more
    head, _, body_start = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise DockerUnavailable(f"not an HTTP response from dockerd: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), parts[2] if len(parts) > 2 else "", headers, body_start


def _content_length(headers: Mapping[str, str]) -> int | None:
    text = headers.get("content-length")
    if text is None:
        return None
    if not text.isdigit():
        raise DockerUnavailable(f"bad Content-Length from dockerd: {text[:20]!r}")
    return int(text)


def _raise_status(status: int, reason: str, body: HttpStream, path: str) -> None:
    """dockerd's error answers carry `{"message": ...}`; 404 means the container is gone."""
    parts: list[bytes] = []
    size = 0
    while size < _MAX_ERROR_BODY_BYTES and (data := body.read()):
        parts.append(data)
        size += len(data)
    text = b"".join(parts)
    try:
        message = str(orjson.loads(text).get("message") or reason)
    except (orjson.JSONDecodeError, AttributeError):
        message = text[:200].decode("utf-8", "replace").strip() or reason
    body.close()
    if status == 404:
        raise ContainerGone(message)
    raise DockerUnavailable(f"dockerd answered {status} to {path}: {message}")
