"""Severity names of every format, normalised to `event.LEVELS`.

Python logging, Go's slog and zap, logrus (weaviate), nginx, postgres and redis each spell severities their own
way; metrics count one set: debug, info, warning, error, critical, unknown.
"""

from __future__ import annotations

#: Every spelling logpipe knows, to its normalised level (hot readers look names up here directly).
LEVEL_NAMES = {
    "trace": "debug",
    "debug": "debug",
    "debug1": "debug",
    "debug2": "debug",
    "debug3": "debug",
    "debug4": "debug",
    "debug5": "debug",
    "verbose": "debug",
    "info": "info",
    "information": "info",
    "notice": "info",
    # postgres: LOG is its normal output; DETAIL, HINT, ... annotate the line before them.
    "log": "info",
    "statement": "info",
    "detail": "info",
    "hint": "info",
    "context": "info",
    "location": "info",
    "query": "info",
    "warn": "warning",
    "warning": "warning",
    "err": "error",
    "error": "error",
    "crit": "critical",
    "critical": "critical",
    "alert": "critical",
    "emerg": "critical",
    "fatal": "critical",
    "panic": "critical",
    "dpanic": "critical",
}
LEVEL_NAMES.update({name.upper(): level for name, level in LEVEL_NAMES.items()})
LEVEL_NAMES.update({name.capitalize(): level for name, level in LEVEL_NAMES.items()})

#: redis: `.` debug, `-` verbose, `*` notice, `#` warning.
REDIS_LEVELS = {".": "debug", "-": "debug", "*": "info", "#": "warning"}


def normalise_level(name: str) -> str:
    """One of `event.LEVELS` for a severity name in any case; slog offsets (`INFO+2`) count as their base."""
    level = LEVEL_NAMES.get(name)
    if level is not None:
        return level
    base = name.split("+", 1)[0].split("-", 1)[0].strip().lower()
    return LEVEL_NAMES.get(base, "unknown")
