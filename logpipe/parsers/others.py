"""The stack's other services: postgres, redis, the sandbox's slog JSON, weaviate's logrus JSON, any JSON.

Each needs little more than a level and a message; the sandbox also carries trace and identity ids. A sandbox
`process finished with error` whose status is `signal: killed` is an error, not a timeout: the kill may have
any cause, and the timeout that usually causes it is reported where it happens.
"""

from __future__ import annotations

import re
from typing import Any

from logpipe.event import Event
from logpipe.parsers.errors import add_errors
from logpipe.parsers.levels import REDIS_LEVELS, normalise_level

_POSTGRES = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?(?: [\w+:\-]+)? \[\d+\] (?:\S+@\S+ )?([A-Z][A-Z0-9]*):\s+(.*)"
)
_REDIS = re.compile(r"\d+:[XCSM] \d\d? \w{3}(?: \d{4})? \d\d:\d\d:\d\d(?:\.\d+)? ([.\-*#]) ?(.*)")
_HEX32 = re.compile(r"[0-9a-f]{32}")


def parse_postgres(event: Event, text: str) -> bool:
    """`2026-06-12 10:40:01.456 UTC [88] ERROR:  duplicate key value violates unique constraint "..."`."""
    match = _POSTGRES.match(text)
    if match is None:
        return False
    level, event.message = match.groups()
    event.level = normalise_level(level)
    return True


def parse_redis(event: Event, text: str) -> bool:
    """`1:M 12 Jun 2026 10:31:20.321 * Ready to accept connections tcp` (`.` `-` `*` `#` are the levels)."""
    match = _REDIS.match(text)
    if match is None:
        return False
    mark, event.message = match.groups()
    event.level = REDIS_LEVELS[mark]
    return True


def _string(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) and value else None


def _ids(event: Event, obj: dict[str, Any]) -> None:
    trace_id = _string(obj, "trace_id")
    event.trace_id = trace_id if trace_id and _HEX32.fullmatch(trace_id) else None
    event.span_id = _string(obj, "span_id")
    # The sandbox prints these even when empty; empty means absent.
    event.tenant_id = _string(obj, "tenant_id")
    event.user_id = _string(obj, "user_id")


def parse_sandbox_json(event: Event, obj: dict[str, Any], line: str) -> None:
    """Go slog JSON: `time`, `level` (DEBUG INFO WARN ERROR), `msg`, then attributes and request ids."""
    level = obj.get("level")
    event.level = normalise_level(level) if isinstance(level, str) else "unknown"
    event.message = _string(obj, "msg")
    _ids(event, obj)
    add_errors(event, line)


def parse_weaviate_json(event: Event, obj: dict[str, Any], line: str) -> None:
    """logrus JSON, keys sorted: `action`, ..., `level` (lower case), `msg`, `time`."""
    level = obj.get("level")
    event.level = normalise_level(level) if isinstance(level, str) else "unknown"
    event.message = _string(obj, "msg")
    add_errors(event, line)


def parse_other_json(event: Event, obj: dict[str, Any], line: str) -> None:
    """Any other JSON object: the usual level, message and trace keys when present (operators map the rest)."""
    level = obj.get("level", obj.get("severity", obj.get("lvl")))
    event.level = normalise_level(level) if isinstance(level, str) else "unknown"
    event.message = _string(obj, "message") or _string(obj, "msg")
    _ids(event, obj)
    add_errors(event, line)
