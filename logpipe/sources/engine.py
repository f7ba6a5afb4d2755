"""The Docker Engine API, as logpipe uses it: read-only calls, through the docker SDK and `dockerapi`.

`DockerEngine` is the only code that talks to dockerd. It lists and inspects containers through the SDK's public
API, and follows the events stream and opens log streams through `dockerapi` (plain HTTP, read in bulk); it never
creates, starts, stops or changes anything (every call is a GET). The API version is negotiated once (the
daemon's own, from `/version`) and used by the SDK and the streams alike, so a new engine that dropped old API
versions still answers.
Errors from the SDK and from requests are translated into `DockerUnavailable` and `ContainerGone` here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import docker
import docker.constants
import docker.errors
import requests

from logpipe.event import ContainerInfo
from logpipe.sources.dockerapi import ContainerGone, DockerAddress, DockerStreams, DockerUnavailable
from logpipe.sources.frames import TimestampParser

__all__ = [
    "PROJECT_LABEL",
    "SERVICE_LABEL",
    "ContainerGone",
    "ContainerInfo",
    "DockerEngine",
    "DockerUnavailable",
    "EventStream",
    "LogStream",
]

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
#: Concurrent short calls (inspect after events, reconciliation beside followers); the streams have their own.
_POOL = 32


def container_info(data: Mapping[str, Any]) -> ContainerInfo:
    """A container's `ContainerInfo` from its `GET /containers/{id}/json` answer."""
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
    """An open `/logs` response. `read` blocks for the next body bytes and returns b"" at the end of the stream;
    `close` may be called from another thread and makes a blocked `read` return. The bytes carry no HTTP framing."""

    def read(self) -> bytes: ...

    def close(self) -> None: ...


class EventStream(Protocol):
    """Docker events as dicts; iteration blocks for the next one and ends when the stream ends or is closed."""

    def __iter__(self) -> Iterator[dict[str, Any]]: ...

    def close(self) -> None: ...


class DockerEngine:
    """Read-only access to one dockerd. Thread-safe: the SDK's calls share a pooled HTTP session, and every
    stream has a connection of its own."""

    def __init__(self, host: str = "", timeout_secs: float = 30.0) -> None:
        address = DockerAddress.resolve(host)
        try:
            # The API version is negotiated once, here; the SDK's calls and the streams both use it.
            probe = _sdk_client(address, timeout_secs, docker.constants.MINIMUM_DOCKER_API_VERSION)
            try:
                version = str(probe.version(api_version=False)["ApiVersion"])
            finally:
                probe.close()
            self._api = _sdk_client(address, timeout_secs, version)
        except (docker.errors.DockerException, requests.exceptions.RequestException, KeyError) as exc:
            raise DockerUnavailable(f"cannot talk to dockerd: {exc}") from exc
        self._streams = DockerStreams(address, version, timeout_secs)

    @property
    def api_version(self) -> str:
        return self._api.api_version

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
            return container_info(self._api.inspect_container(container_id))

    def events(self, since: float | None = None) -> EventStream:
        """Container events from now (or `since`), as decoded dicts. Iteration blocks; close() ends it."""
        return self._streams.events(since)

    def open_logs(self, container_id: str, since: str, follow: bool = True) -> LogStream:
        """Open the log stream of a container: both streams, with timestamps, from `since` (seconds.nanos).

        The stream hands out the body without HTTP framing. ContainerGone when it does not
        exist; DockerUnavailable for everything else that goes wrong, then or while reading.
        """
        return self._streams.logs(container_id, since, follow)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._api.close()


def _sdk_client(address: DockerAddress, timeout_secs: float, version: str) -> docker.APIClient:
    api = docker.APIClient(
        base_url=address.base_url or None,
        version=version,
        timeout=int(timeout_secs),
        tls=address.tls or False,
        max_pool_size=_POOL,
    )
    # Like the streams, the SDK goes straight to the address: no HTTP(S)_PROXY, and no REQUESTS_CA_BUNDLE in
    # place of DOCKER_CERT_PATH's CA (requests lets it override a session's verify).
    api.trust_env = False
    return api


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
    except ValueError as exc:  # a JSON answer cut short
        raise DockerUnavailable(f"bad response: {exc}") from exc
