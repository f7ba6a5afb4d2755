"""The Docker Engine API, as logpipe uses it: read-only calls through the docker SDK.

`DockerEngine` is the only code that talks to dockerd. It lists and inspects containers, follows the events
stream and opens log streams; it never creates, starts, stops or changes anything (every call is a GET). The
SDK negotiates the API version with the daemon, so a new engine that dropped old API versions still answers.
Errors from the SDK and from requests are translated into `DockerUnavailable` and `ContainerGone` here.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import docker
import docker.errors
import requests

from logpipe.sources.frames import TimestampParser

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
#: Each followed container holds one pooled connection for as long as it runs.
_POOL = 256


class DockerUnavailable(Exception):
    """dockerd cannot be reached or answered with a server error."""


class ContainerGone(Exception):
    """The container no longer exists (destroyed)."""


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """What logpipe needs to know about a container to follow it and label its lines."""

    id: str
    name: str
    service: str
    project: str
    tty: bool
    running: bool
    labels: Mapping[str, str]
    finished_ns: int = 0

    @staticmethod
    def from_inspect(data: Mapping[str, Any]) -> ContainerInfo:
        config = data.get("Config") or {}
        labels = config.get("Labels") or {}
        name = str(data.get("Name") or "").lstrip("/") or str(data["Id"])[:12]
        state = data.get("State") or {}
        finished = str(state.get("FinishedAt") or "").encode()
        # Docker trims trailing zeros of the fraction ("...:44.5Z") and uses year 1 for "never".
        finished_ns = TimestampParser().parse(finished) if finished and not finished.startswith(b"0001") else 0
        return ContainerInfo(
            id=str(data["Id"]),
            name=name,
            service=labels.get(SERVICE_LABEL) or name,
            project=labels.get(PROJECT_LABEL, ""),
            tty=bool(config.get("Tty")),
            running=bool(state.get("Running")),
            labels=dict(labels),
            finished_ns=finished_ns or 0,
        )


class LogStream(Protocol):
    """An open `/logs` response: raw body bytes, decoded from HTTP framing by the reader."""

    chunked: bool

    def read(self) -> bytes: ...

    def close(self) -> None: ...


class _HttpLogStream:
    def __init__(self, response: requests.Response) -> None:
        self._response = response
        fp: Any = response.raw._fp  # http.client.HTTPResponse: we read its socket file in bulk, not frame by frame
        if fp is None:
            raise DockerUnavailable("log stream has no body")
        self.chunked = bool(getattr(fp, "chunked", False))
        self._read1 = fp.fp.read1 if self.chunked else fp.read1
        self._sock: socket.socket | None = getattr(getattr(fp.fp, "raw", None), "_sock", None)

    def read(self) -> bytes:
        try:
            data: bytes = self._read1(256 * 1024)
        except (OSError, ValueError, AttributeError) as exc:  # closed underneath us by close()
            raise DockerUnavailable(f"log stream broke: {exc}") from exc
        return data

    def close(self) -> None:
        # shutdown() wakes a reader blocked in recv on another thread; close() alone would not.
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(Exception):
            self._response.close()


class EventStream(Protocol):
    def __iter__(self) -> Iterator[dict[str, Any]]: ...

    def close(self) -> None: ...


class DockerEngine:
    """Read-only access to one dockerd. Thread-safe: each call uses the SDK's pooled HTTP session."""

    def __init__(self, host: str = "", timeout_secs: float = 30.0) -> None:
        try:
            if host:
                self._client = docker.DockerClient(
                    base_url=host, version="auto", timeout=int(timeout_secs), max_pool_size=_POOL
                )
            else:
                self._client = docker.from_env(version="auto", timeout=int(timeout_secs), max_pool_size=_POOL)
        except docker.errors.DockerException as exc:
            raise DockerUnavailable(str(exc)) from exc
        self._api = self._client.api

    @property
    def api_version(self) -> str:
        return str(self._api.api_version)

    def info(self) -> dict[str, Any]:
        with _translated():
            return dict(self._api.info())

    def ping(self) -> bool:
        try:
            with _translated():
                return bool(self._api.ping())
        except DockerUnavailable:
            return False

    def container_ids(self) -> list[str]:
        """Every container, running or not."""
        with _translated():
            return [str(c["Id"]) for c in self._api.containers(all=True)]

    def inspect(self, container_id: str) -> ContainerInfo:
        with _translated():
            return ContainerInfo.from_inspect(self._api.inspect_container(container_id))

    def events(self, since: float | None = None) -> EventStream:
        """Container events from now (or `since`), as decoded dicts. Iteration blocks; close() ends it."""
        with _translated():
            stream = self._api.events(since=since, decode=True, filters={"type": "container"})
        return _Events(stream)

    def open_logs(self, container_id: str, since: str, follow: bool = True) -> LogStream:
        """Open the log stream of a container: both streams, with timestamps, from `since` (seconds.nanos)."""
        params = {"stdout": 1, "stderr": 1, "timestamps": 1, "follow": int(follow), "since": since}
        url = self._api._url("/containers/{0}/logs", container_id)
        with _translated():
            # timeout=None: a quiet container may print nothing for hours; stop() closes the socket instead.
            response = self._api._get(url, params=params, stream=True, timeout=None)
            self._api._raise_for_status(response)
        return _HttpLogStream(response)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()


class _Events:
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[dict[str, Any]]:
        with _translated():
            yield from self._stream

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stream.close()


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except docker.errors.NotFound as exc:
        raise ContainerGone(str(exc)) from exc
    except docker.errors.APIError as exc:
        raise DockerUnavailable(str(exc)) from exc
    except (requests.exceptions.RequestException, docker.errors.DockerException, OSError) as exc:
        raise DockerUnavailable(str(exc)) from exc
    except ValueError as exc:  # the SDK's JSON decoder on a stream cut in the middle of an object
        raise DockerUnavailable(f"bad response: {exc}") from exc
