"""The process's long-lived threads: started here, watched here, restarted or reported when they crash.

Every long-lived thread runs its target under `Threads.start`. An unexpected exception is logged with its
traceback (at most once per `LOG_EVERY_SECS` per thread kind, with the number not shown), counted by kind
(`logpipe_thread_crashes_total{thread}`), and then either the target runs again after a jittered backoff
(`restart=True`: threads that rebuild their state when they start, such as the Docker events thread or the metrics
server) or the process is marked failed (`failed` is set, `/healthz` answers 503 and the daemon exits so that its
container restarts from the checkpoint). A thread whose target returns normally has finished; one that is no longer
running without having finished or crashed (killed by something that is not an exception) also counts as dead.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from logpipe.backoff import Backoff

log = logging.getLogger("logpipe.threads")

LOG_EVERY_SECS = 10.0

#: Thread kinds, the bounded values of the `thread` label.
KINDS = (
    "pipeline",
    "dispatcher",
    "push",
    "events",
    "follower",
    "metrics_server",
    "stdout_sink",
    "config_watcher",
    "resolver",
)


_PR_SET_NAME = 15
_libc: ctypes.CDLL | None = None
try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
except OSError:  # not Linux, or no libc to be found: threads keep the process's name
    _libc = None


def name_os_thread(name: str) -> None:
    """Give the calling thread `name` in the OS too (Linux keeps 15 bytes), so `top -H`, `ps -L` and
    /proc/<pid>/task/*/comm tell logpipe's threads apart. Does nothing where that is not possible."""
    if _libc is not None:
        with contextlib.suppress(AttributeError, OSError):
            _libc.prctl(_PR_SET_NAME, name.encode("ascii", "replace")[:15], 0, 0, 0)


@dataclass(slots=True)
class _Watched:
    kind: str
    thread: threading.Thread
    finished: bool = False


@dataclass(slots=True)
class _CrashLog:
    last: float = -LOG_EVERY_SECS
    hidden: int = 0


class Threads:
    """Starts and watches threads. `crashed(kind)` is called once per crash (telemetry counts it)."""

    def __init__(self, crashed: Callable[[str], None], max_backoff_secs: float = 30.0) -> None:
        self._crashed = crashed
        self._max_backoff = max_backoff_secs
        self._lock = threading.Lock()
        self._watched: list[_Watched] = []
        self._logs: dict[str, _CrashLog] = {}
        self.failed = threading.Event()
        self.failure = ""

    def start(
        self,
        kind: str,
        target: Callable[[], None],
        *,
        name: str = "",
        restart: bool = False,
        stop: threading.Event | None = None,
    ) -> threading.Thread:
        """Run `target` on a new daemon thread under watch. With `restart`, a crash runs it again after a backoff
        (unless `stop` is set meanwhile); without, a crash fails the process."""
        if kind not in KINDS:
            raise ValueError(f"unknown thread kind {kind!r}")
        watched = _Watched(kind, threading.Thread(name=name or kind, daemon=True))
        watched.thread.run = lambda: self._run(watched, target, restart, stop)  # type: ignore[method-assign]
        with self._lock:
            self._watched = [w for w in self._watched if not w.finished]
            self._watched.append(watched)
        watched.thread.start()
        return watched.thread

    def guard(self, kind: str, target: Callable[[], None]) -> None:
        """Run `target` on the calling thread (a pool worker): a crash is reported and fails the process."""
        name_os_thread(threading.current_thread().name)
        try:
            target()
        except Exception as exc:
            self.report(kind, exc)
            self._fail(kind)

    def report(self, kind: str, exc: BaseException) -> None:
        """Count and log a crash that the caller recovers from itself (a follower reopening its stream)."""
        self._crashed(kind)
        now = time.monotonic()
        with self._lock:
            entry = self._logs.setdefault(kind, _CrashLog())
            if now - entry.last < LOG_EVERY_SECS:
                entry.hidden += 1
                return
            hidden, entry.hidden, entry.last = entry.hidden, 0, now
        log.error(
            "thread crashed",
            exc_info=(type(exc), exc, exc.__traceback__),
            extra={"thread_kind": kind, "crashes_not_logged": hidden},
        )

    def healthy(self) -> bool:
        """False once a thread that cannot be restarted crashed or died."""
        if self.failed.is_set():
            return False
        with self._lock:
            watched = list(self._watched)
        for w in watched:
            if not w.finished and w.thread.ident is not None and not w.thread.is_alive():
                self._fail(w.kind)
                return False
        return True

    def _run(self, watched: _Watched, target: Callable[[], None], restart: bool, stop: threading.Event | None) -> None:
        name_os_thread(watched.thread.name)
        backoff = Backoff(0.5, self._max_backoff)
        while True:
            try:
                target()
                watched.finished = True
                return
            except Exception as exc:
                self.report(watched.kind, exc)
                if not restart:
                    self._fail(watched.kind)
                    return
            if stop is not None and stop.wait(backoff.next()):
                watched.finished = True
                return
            if stop is None:
                time.sleep(backoff.next())
            log.info("restarting a crashed thread", extra={"thread_kind": watched.kind})

    def _fail(self, kind: str) -> None:
        if not self.failed.is_set():
            self.failure = kind
            log.error("a thread that cannot be restarted stopped; logpipe must restart", extra={"thread_kind": kind})
        self.failed.set()
