"""Discovering which containers to follow: the Docker events stream plus a full reconciliation.

`DockerSource` subscribes to container events first and then lists every container, so a container started
between the two is not missed; it reconciles again after every reconnect (dockerd restarts). Running containers
that pass the filters are followed; a container that already exited is read to its end when it has unread lines
(we followed it before, or it finished within the initial look-back), which catches short-lived containers.
Destroyed containers are reported so their checkpoint can be forgotten once their last lines are shipped.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from logpipe.backoff import Backoff
from logpipe.config import DockerConfig
from logpipe.event import Chunk, ContainerInfo, Position
from logpipe.sources.engine import ContainerGone, DockerEngine, DockerUnavailable, EventStream
from logpipe.sources.follower import Follower, FollowerCallbacks, FollowSettings
from logpipe.state import Resume
from logpipe.threads import name_os_thread

log = logging.getLogger("logpipe.source")

_START_ACTIONS = frozenset({"start", "restart", "unpause"})


class Cursors(Protocol):
    """The checkpoint as the source sees it."""

    def resume(self, container_id: str) -> Resume | None: ...

    def follow(self, container_id: str, name: str, origin_ns: int) -> None: ...

    def destroyed(self, container_id: str) -> None: ...

    def known(self) -> Iterable[str]: ...

    def settled(self, container_id: str, stop: threading.Event) -> dict[str, Position] | None:
        """Block while a push that may carry this container's lines is being resolved; then its positions."""
        ...


class SourceEvents(Protocol):
    """Telemetry the source reports."""

    def decoded(self, partials_joined: int, truncated: int, bad_timestamps: int) -> None: ...

    def reconnected(self, stream: str) -> None: ...


class Filter:
    """Which containers to follow (compose project, name regexes, never logpipe itself)."""

    def __init__(self, config: DockerConfig, self_id: str) -> None:
        self._project = config.compose_project
        self._require_compose = config.require_compose_labels
        self._include = [re.compile(p) for p in config.include]
        self._exclude = [re.compile(p) for p in config.exclude]
        self._self_id = self_id

    def wants(self, info: ContainerInfo) -> bool:
        if self._self_id and info.id.startswith(self._self_id):
            return False
        if info.labels.get("logpipe.enable", "").lower() == "false":
            return False
        if self._project:
            if info.project != self._project:
                return False
        elif self._require_compose and not info.project:
            return False
        if self._include and not any(p.search(info.name) for p in self._include):
            return False
        return not any(p.search(info.name) for p in self._exclude)


def _log_crash(thread: str, exc: BaseException) -> None:
    log.error("thread crashed", exc_info=(type(exc), exc, exc.__traceback__), extra={"thread_kind": thread})


def _follow_settings(config: DockerConfig) -> FollowSettings:
    return FollowSettings(config.max_line_bytes, config.read_coalesce_secs, config.reconnect_max_backoff_secs)


def own_container_id(proc: Path = Path("/proc/self")) -> str:
    """The id of the container logpipe runs in, or "" outside a container."""
    try:
        text = (proc / "mountinfo").read_text(errors="replace")
    except OSError:
        text = ""
    match = re.search(r"/(?:docker/)?containers/([0-9a-f]{64})/", text)
    if match:
        return match.group(1)
    try:
        text = (proc / "cgroup").read_text(errors="replace")
    except OSError:
        return ""
    match = re.search(r"(?:docker[-/])([0-9a-f]{64})", text)
    return match.group(1) if match else ""


class DockerSource:
    """Follows every wanted container; chunks of lines go to `emit`, which may block for backpressure."""

    def __init__(
        self,
        engine_factory: Callable[[], DockerEngine],
        config: DockerConfig,
        cursors: Cursors,
        emit: Callable[[Chunk], bool],
        events: SourceEvents,
        clock: Callable[[], float] = time.time,
        crashed: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        self._factory = engine_factory
        self._cursors = cursors
        self._events = events
        self._crashed = crashed or _log_crash
        self._clock = clock
        self._config = config
        self._self_id = config.self_container_id or own_container_id()
        self._filter = Filter(config, self._self_id)
        self._settings = _follow_settings(config)
        self._callbacks = FollowerCallbacks(
            emit,
            events.decoded,
            lambda: events.reconnected("logs"),
            self._ended,
            crashed=lambda exc: self._crashed("follower", exc),
            settled=cursors.settled,
        )
        self._engine: DockerEngine | None = None
        self._followers: dict[str, Follower] = {}
        self._destroyed: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._event_stream: EventStream | None = None
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()
        self.host_name = config.host_label

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="docker-events", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Stop discovery and every follower; waits up to `timeout` seconds in all. True when every thread ended."""
        self._stop.set()
        stream = self._event_stream
        if stream is not None:
            stream.close()
        with self._lock:
            followers = list(self._followers.values())
        for follower in followers:
            follower.stop()
        deadline = time.monotonic() + timeout
        ended = [follower.join(max(0.0, deadline - time.monotonic())) for follower in followers]
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
            ended.append(not self._thread.is_alive())
        return all(ended)

    def reconfigure(self, config: DockerConfig) -> None:
        """Apply new filters: start following newly wanted containers, stop those no longer wanted."""
        self._filter = Filter(config, self._self_id)
        self._config = config
        # Restart-only settings (line size, coalescing) keep their values: the daemon hands back the old ones.
        self._settings = _follow_settings(config)
        with self._lock:
            followers = list(self._followers.values())
        for follower in followers:
            follower.settings = self._settings
            if not self._filter.wants(follower.info):
                follower.stop()
        engine = self._engine
        if engine is not None:
            try:
                # Only additions here: this runs beside the events thread, and a container it starts following
                # after our list was taken must not be forgotten. Destroys are the events thread's to handle.
                self._reconcile(engine, forget_missing=False)
            except DockerUnavailable as exc:
                log.warning("reconcile after reload failed", extra={"error": str(exc)})

    def followed(self) -> list[ContainerInfo]:
        with self._lock:
            return [f.info for f in self._followers.values() if f.alive]

    def _run(self) -> None:
        name_os_thread("docker-events")
        backoff = Backoff(0.5, self._config.reconnect_max_backoff_secs)
        first = True
        while not self._stop.is_set():
            try:
                if self._engine is None:
                    self._engine = self._factory()
                engine = self._engine
                stream = engine.events()
                self._event_stream = stream
                if not self.host_name:
                    self.host_name = str(engine.info().get("Name") or "")
                self._reconcile(engine)
                self.connected.set()
                if not first:
                    log.info("docker events stream reconnected")
                first = False
                backoff.reset()
                for event in stream:
                    self._on_event(engine, event)
                    if self._stop.is_set():
                        break
            except DockerUnavailable as exc:
                if self._stop.is_set():
                    break
                log.warning("docker unreachable; retrying", extra={"error": str(exc)})
            except Exception as exc:  # a bug: count it, then start over with a full reconciliation
                self._crashed("events", exc)
            self.connected.clear()
            if self._stop.is_set():
                break
            self._events.reconnected("events")
            backoff.max_secs = self._config.reconnect_max_backoff_secs
            self._stop.wait(backoff.next())

    def _on_event(self, engine: DockerEngine, event: dict[str, object]) -> None:
        action = str(event.get("Action") or event.get("status") or "")
        actor = event.get("Actor")
        cid = str(event.get("id") or (actor.get("ID") if isinstance(actor, dict) else "") or "")
        if not cid:
            return
        if action in _START_ACTIONS:
            try:
                info = engine.inspect(cid)
            except ContainerGone:
                return
            if self._filter.wants(info):
                self._follow(engine, info, "start event")
        elif action == "destroy":
            with self._lock:
                follower = self._followers.get(cid)
                self._destroyed.add(cid)
            if follower is None or not follower.alive:
                self._forget(cid)
        elif action == "rename":
            with self._lock:
                follower = self._followers.get(cid)
            if follower is not None:
                with contextlib.suppress(ContainerGone):
                    follower.info = engine.inspect(cid)

    def _reconcile(self, engine: DockerEngine, forget_missing: bool = True) -> None:
        existing: set[str] = set()
        lookback_start = self._clock() - self._config.initial_lookback_secs
        for cid in engine.container_ids():
            existing.add(cid)
            try:
                info = engine.inspect(cid)
            except ContainerGone:
                continue
            if not self._filter.wants(info):
                continue
            with self._lock:
                follower = self._followers.get(cid)
            if info.running or self._cursors.resume(cid) is not None:
                self._follow(engine, info, "reconcile")
            elif follower is None and info.finished_ns / 1e9 >= lookback_start:
                self._follow(engine, info, "reconcile")  # exited before we looked: read what it printed
        if forget_missing:
            for cid in list(self._cursors.known()):
                if cid not in existing:
                    self._forget(cid)

    def _follow(self, engine: DockerEngine, info: ContainerInfo, found_by: str) -> None:
        with self._lock:
            follower = self._followers.get(info.id)
            if follower is None:
                resume = self._cursors.resume(info.id)
                if resume is None:
                    lookback = self._config.initial_lookback_secs
                    origin = max(0, int((self._clock() - lookback) * 1e9)) if lookback else self._clock_ns()
                    resume = Resume(origin, {})
                follower = Follower(
                    engine, info, resume.positions, resume.origin_ns, self._settings, self._callbacks, wait_settled=True
                )
                self._followers[info.id] = follower
                self._cursors.follow(info.id, info.name, resume.origin_ns)
                log.info(
                    "following container",
                    extra={"container": info.name, "service": info.service, "found_by": found_by},
                )
        follower.wake(info)

    def _clock_ns(self) -> int:
        return int(self._clock() * 1e9)

    def _ended(self, follower: Follower) -> None:
        log.info("container stream ended", extra={"container": follower.info.name})
        with self._lock:
            destroyed = follower.info.id in self._destroyed
        if destroyed:
            self._forget(follower.info.id)

    def _forget(self, cid: str) -> None:
        with self._lock:
            self._followers.pop(cid, None)
            self._destroyed.discard(cid)
        self._cursors.destroyed(cid)
