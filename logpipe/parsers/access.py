"""Access-style records: nginx access and error lines, gin, squid, and the HTTP fields every access record shares.

An access record yields `http_method`, a normalised `http_path` (query dropped; UUIDs, numbers and long hex ids
replaced by `:id`, so it can be a metric label), `http_status`, `duration_seconds` when the format has one, a
level from the status when the line has none (info below 400, warning for 4xx, error for 5xx, as the plugin
daemon logs), the `upstream_timeout` kind for a 504, and the `model_type` of a plugin daemon
`/plugin/<tenant>/dispatch/<type>/invoke` call.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

from logpipe.event import Event
from logpipe.parsers.errors import add_errors
from logpipe.parsers.levels import normalise_level
from logpipe.parsers.numbers import to_float

# A whole segment, or one with a file extension (`/files/tools/<uuid>.png`). Starting at the literal `/` (no
# look-behind) lets the regex engine skip to candidate positions.
_ID_SEGMENT = re.compile(
    r"/(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|\d+|[0-9a-fA-F]{16,})"
    r"(?=/|$|\.[A-Za-z][A-Za-z0-9]{0,4}(?:/|$))"
)
_DISPATCH = re.compile(r"/dispatch/(llm|text_embedding|rerank|tts|speech2text|moderation)/invoke(?:$|[/?])")
_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE", "PROPFIND", "MKCOL"}
)

_NGINX_ACCESS = re.compile(r'\S+ - \S+ \[[^\]]*\] "(?:([A-Z]+) ([^ "]+) [^ "]+|[^"]*)" (\d{3}) ')
_NGINX_ERROR = re.compile(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(\w+)\] \d+#\d+: (?:\*\d+ )?(.*)")
_NGINX_REQUEST = re.compile(r', request: "([A-Z]+) (\S+)[^"]*"')
_GIN = re.compile(r"\[GIN\] [^|]*\|\s*(\d{3})\s*\|\s*(\S+)\s*\|[^|]*\|\s*(\S+)\s+\"(.*)\"")
_GIN_DEBUG_LEVEL = re.compile(r"\[GIN-debug\] (?:\[(\w+)\] )?(.*)")
_SQUID = re.compile(r"\d+\.\d+\s+(\d{1,15}) \S+ [A-Z_]+/(\d{3}) \d+ (\S+) (\S+)")
_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|μs|ms|s|m|h)")  # Go prints µs (U+00B5); μs (U+03BC) seen too
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def normalise_path(path: str) -> str:
    """`path` (or a URL) without scheme, host, query and fragment, with id-like segments replaced by `:id`."""
    return _path_info(path)[0]


@lru_cache(maxsize=8192)
def _path_info(path: str) -> tuple[str, str | None]:
    """The normalised path and the model type of a plugin daemon dispatch path (cached: paths repeat)."""
    dispatch = _DISPATCH.search(path) if "/dispatch/" in path else None
    return _normalise(path), dispatch.group(1) if dispatch else None


def _normalise(path: str) -> str:
    if "://" in path:
        path = path.split("://", 1)[1]
        slash = path.find("/")
        path = path[slash:] if slash >= 0 else "/"
    path = path.split("?", 1)[0].split("#", 1)[0]
    if not path:
        return "/"
    return _ID_SEGMENT.sub("/:id", path)


def method_name(method: str) -> str:
    """`method` if it is a known HTTP method, else `OTHER` (garbage request lines must not make labels)."""
    return method if method in _METHODS else "OTHER"


def set_access(
    event: Event,
    method: str | None,
    path: str | None,
    status: int,
    duration: float | None,
    level_from_status: bool = True,
) -> None:
    """Fill the HTTP fields of an access record and a 504's timeout kind; the level too, from the status,
    unless the line has its own (`level_from_status=False`)."""
    if method is not None:
        event.http_method = method if method in _METHODS else "OTHER"
    if path is not None:
        event.http_path, model_type = _path_info(path)
        if model_type is not None:
            event.model_type = model_type
    event.http_status = status
    event.duration_seconds = duration
    if level_from_status:
        event.level = "info" if status < 400 else "warning" if status < 500 else "error"
    if status == 504:
        event.timeout_kind = "upstream_timeout"


def go_duration(text: str) -> float | None:
    """Seconds in a Go `time.Duration` string (`14.364958ms`, `1m2.5s`, `512µs`), or None."""
    total = 0.0
    pos = 0
    for match in _GO_DURATION_PART.finditer(text):
        if match.start() != pos:
            return None
        number = to_float(match.group(1))
        if number is None:
            return None
        total += number * _GO_UNITS[match.group(2)]
        pos = match.end()
    return total if pos and pos == len(text) and math.isfinite(total) else None


def parse_nginx_access(event: Event, text: str) -> bool:
    """`172.18.0.1 - - [12/Jun/2026:10:32:01 +0000] "POST /v1/chat-messages HTTP/1.1" 200 5123 "-" "ua" "-"`."""
    match = _NGINX_ACCESS.match(text)
    if match is None:
        return False
    method, path, status = match.groups()
    set_access(event, method, path, int(status), None)  # no method/path: e.g. TLS bytes sent to the HTTP port
    return True


def parse_nginx_error(event: Event, text: str) -> bool:
    """`2026/06/12 11:33:20 [error] 30#30: *902 upstream timed out (...), client: ..., request: "POST /x ..."`."""
    match = _NGINX_ERROR.match(text)
    if match is None:
        return False
    level, message = match.groups()
    event.level = normalise_level(level)
    event.message = message.split(", client: ", 1)[0]
    request = _NGINX_REQUEST.search(message)
    if request is not None:
        event.http_method = method_name(request.group(1))
        event.http_path = normalise_path(request.group(2))
    add_errors(event, message)
    return True


def parse_gin(event: Event, text: str) -> bool:
    """`[GIN] 2026/06/12 - 10:33:00 |     200 | 15.002947331s |  172.19.0.7 | POST  "/v1/sandbox/run"`."""
    match = _GIN.match(text)
    if match is not None:
        status, latency, method, path = match.groups()
        set_access(event, method, path, int(status), go_duration(latency))
        return True
    debug = _GIN_DEBUG_LEVEL.match(text)
    if debug is None:
        return False
    event.level = normalise_level(debug.group(1)) if debug.group(1) else "debug"
    event.message = debug.group(2)
    return True


def parse_squid(event: Event, text: str) -> bool:
    """`1781260380.402  60011 172.19.0.9 TCP_MISS/504 3960 GET http://10.0.0.111:10002/v1/models - ...`."""
    match = _SQUID.match(text)
    if match is None:
        return False
    elapsed_ms, status, method, url = match.groups()
    path = url if "://" in url or url.startswith("/") else None  # CONNECT host:443 has no path
    code = int(status)
    if code >= 100:
        set_access(event, method, path, code, int(elapsed_ms) / 1000)
    else:  # NONE/000: squid answered nothing (client gone, aborted)
        event.http_method = method_name(method) if method != "-" else None
        event.duration_seconds = int(elapsed_ms) / 1000
        event.level = "info"
    return True
