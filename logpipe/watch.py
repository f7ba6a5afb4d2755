"""Noticing that the configuration file changed.

Editors and `kubectl`/`docker cp` replace a file on save rather than writing it in place, so the watcher watches
the file's directory and filters by name; a ConfigMap's symlink swap shows up as a change of the `..data` entry,
which is accepted too. The watcher only reports; the daemon decides (and validates before applying anything).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import watchfiles

from logpipe.threads import Threads

log = logging.getLogger("logpipe.watch")


class ConfigWatcher:
    def __init__(
        self, path: Path, changed: Callable[[], None], debounce_ms: int = 300, threads: Threads | None = None
    ) -> None:
        self._threads = threads or Threads(lambda _kind: None)
        self._path = path.resolve()
        self._changed = changed
        self._debounce_ms = debounce_ms
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = self._threads.start(
            "config_watcher", self._run, name="config-watch", restart=True, stop=self._stop
        )

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)

    def _wanted(self, _change: watchfiles.Change, path: str) -> bool:
        name = Path(path).name
        return name in (self._path.name, "..data")

    def _run(self) -> None:
        directory = self._path.parent
        try:
            for _changes in watchfiles.watch(
                directory,
                watch_filter=self._wanted,
                stop_event=self._stop,
                debounce=self._debounce_ms,
                recursive=False,
                raise_interrupt=False,
            ):
                self._changed()
        except (OSError, RuntimeError) as exc:
            log.error("cannot watch the config directory; SIGHUP still reloads", extra={"error": str(exc)})
