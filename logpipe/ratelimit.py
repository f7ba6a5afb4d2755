"""Rate-limited logging: a condition that repeats (Loki down, a full spool) is logged once per interval.

Each distinct `key` (the message itself unless given) is logged at most once per `every_secs`; the next record
says how many were held back meanwhile (`suppressed`), so nothing that happened is invisible in the logs.
"""

from __future__ import annotations

import logging
import threading
import time


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, every_secs: float = 10.0) -> None:
        self._logger = logger
        self._every = every_secs
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, message: str, key: str = "", **context: object) -> None:
        self.log(logging.WARNING, message, key, **context)

    def error(self, message: str, key: str = "", **context: object) -> None:
        self.log(logging.ERROR, message, key, **context)

    def log(self, level: int, message: str, key: str = "", **context: object) -> None:
        key = key or message
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._every:
                self._held[key] = self._held.get(key, 0) + 1
                return
            self._last[key] = now
            held = self._held.pop(key, 0)
        if held:
            context["suppressed"] = held
        self._logger.log(level, message, extra=context)
