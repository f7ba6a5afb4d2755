"""logpipe's own logs: one JSON object per line on stderr, with level, logger, message and context.

Context comes from `extra=` keyword arguments. Values are made JSON-safe; nothing here ever reads secrets from
the configuration (they are excluded from reprs and never passed as context).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

import orjson

_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def setup(level: str = "info", stream: TextIO | None = None) -> None:
    """Route every logger through one JSON handler (idempotent: replaces handlers set up earlier)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Libraries log at INFO per request; their warnings still come through.
    for noisy in ("urllib3", "httpx", "httpcore", "docker", "watchfiles"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
