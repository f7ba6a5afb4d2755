"""The plugin daemon (Go): its text and JSON formats, gorm's two-line SQL records, and the old `log` format.

Text lines end in `key=value` pairs in random order, Go-quoted when the value has spaces or quotes; they are
split off from the right, so a message may hold anything. The `HTTP request` line is the daemon's access log:
its `/plugin/<tenant>/dispatch/<type>/invoke` path gives the model type and `latency_ms` every model call's
latency. The old format (`2025/08/26 08:22:33 pool.go:32: [INFO]...`) is shared with old sandboxes.
"""

from __future__ import annotations

import re
from typing import Any

from logpipe.event import Event
from logpipe.parsers.access import set_access
from logpipe.parsers.errors import add_errors
from logpipe.parsers.levels import LEVEL_NAMES, normalise_level
from logpipe.parsers.numbers import to_float, to_int

_TEXT = re.compile(r"\S+ ([A-Z]+) dify-plugin-daemon(?: (\S+\.go:\d+))?(?: (.*))?")
_ID_KEYS = ("trace_id=", "tenant_id=", "user_id=", "span_id=")
_KEY = re.compile(r"[A-Za-z_][\w.\-]*")
_GO_ESCAPE = re.compile(r"\\(?:x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|([0-7]{3})|(.))", re.DOTALL)
_GO_SIMPLE = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_HEX32 = re.compile(r"[0-9a-f]{32}")
_CLASS_NAME = re.compile(r"[A-Za-z_][\w.]{0,99}")

_GORM = re.compile(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (\S+\.go:\d+)(?: (.*))?")
_GORM_TIMING = re.compile(r"\[(\d+(?:\.\d+)?)ms\] \[rows:")
_GORM_TAGS = {"[info]": "info", "[warn]": "warning", "[error]": "error"}
_GO_LOG = re.compile(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (?:(\S+\.go:\d+): )?(?:\[([A-Za-z]+)\] ?)?(.*)")


def go_unquote(quoted: str) -> str:
    """The value of a Go-quoted string (`"say \\"hi\\"\\n"`), quotes included; lenient with bad escapes."""
    inner = quoted[1:-1]
    return _GO_ESCAPE.sub(_unescape, inner) if "\\" in inner else inner


def _unescape(match: re.Match[str]) -> str:
    hex2, hex4, hex8, octal, char = match.groups()
    if char is not None:
        return _GO_SIMPLE.get(char, char)
    code = int(hex2, 16) if hex2 else int(octal, 8) if octal else int(hex4 or hex8, 16)
    if hex2 or octal:
        return chr(code) if code < 0x80 else "\ufffd"  # a lone byte of broken UTF-8
    return chr(code) if code <= 0x10FFFF else "\ufffd"


def split_pairs(body: str) -> tuple[str, dict[str, str]]:
    """Split `message key=value key="quoted value"...` into the message and the pairs (unquoted).

    Scans from the right, one pair at a time, and stops at the first token that is not a pair: linear in the
    length of `body` whatever it holds. A message ending in `word=word` is read as a pair (the format is
    ambiguous there).
    """
    pairs: dict[str, str] = {}
    if '"' not in body:
        # The usual line: nothing quoted, so the pairs are the trailing space-separated `k=v` tokens.
        tokens = body.split(" ")
        count = len(tokens)
        while count:
            key, equals, value = tokens[count - 1].partition("=")
            if not equals or not ((key.isascii() and key.isidentifier()) or _KEY.fullmatch(key)):
                break
            pairs.setdefault(key, value)
            count -= 1
        return " ".join(tokens[:count]), pairs
    end = len(body)
    while end > 0:
        if body[end - 1] == '"':
            quote = end - 1
            while True:
                quote = body.rfind('"', 0, quote)
                if quote < 0:
                    return body[:end], pairs
                before = quote - 1
                while before >= 0 and body[before] == "\\":
                    before -= 1
                if (quote - 1 - before) % 2 == 0:
                    break
            if quote == 0 or body[quote - 1] != "=":
                break
            space = body.rfind(" ", 0, quote - 1)
            key = body[space + 1 : quote - 1]
            value = go_unquote(body[quote:end])
        else:
            space = body.rfind(" ", 0, end)
            key, equals, value = body[space + 1 : end].partition("=")
            if not equals or '"' in value:
                break
        if not ((key.isascii() and key.isidentifier()) or _KEY.fullmatch(key)):
            break
        pairs.setdefault(key, value)
        end = max(space, 0)
    return body[:end], pairs


def _set_ids(event: Event, ids: dict[str, str]) -> None:
    get = ids.get
    trace_id = get("trace_id")
    if trace_id and _HEX32.fullmatch(trace_id):
        event.trace_id = trace_id
    event.span_id = get("span_id") or None
    event.tenant_id = get("tenant_id") or None
    event.user_id = get("user_id") or None


def _http_request(event: Event, fields: dict[str, Any]) -> None:
    """The `HTTP request` access line: status, method, path, latency, and the model type of a dispatch."""
    status = to_int(fields.get("status"))
    if status is None or not 100 <= status <= 999:
        return
    path = fields.get("path")
    method = fields.get("method")
    latency = to_float(fields.get("latency_ms"))
    set_access(
        event,
        method if isinstance(method, str) else None,
        path if isinstance(path, str) else None,
        status,
        latency / 1000 if latency is not None and latency >= 0 else None,
        level_from_status=False,
    )


def _error_type(event: Event, value: object) -> None:
    if isinstance(value, str) and _CLASS_NAME.fullmatch(value):
        event.error_type = value


def parse_plugin_text(event: Event, text: str) -> bool:
    """`<ts> <LEVEL> dify-plugin-daemon <caller>[ trace_id=..][ tenant_id=..][ user_id=..] <message>[ k=v]...`.

    Continuation lines (a Go stack trace) are kept in the text and only searched for timeouts.
    """
    match = _TEXT.match(text)  # reads the first line only: `\S` and `.` stop at a newline
    if match is None:
        return False
    level, event.logger_caller, body = match.groups()
    event.level = LEVEL_NAMES.get(level) or normalise_level(level)
    ids: dict[str, str] = {}
    body = body or ""
    while body.startswith(_ID_KEYS):
        token, _, body = body.partition(" ")
        key, _, value = token.partition("=")
        ids[key] = value
    message, pairs = split_pairs(body)
    event.message = message = message.strip()
    if ids or pairs:
        _set_ids(event, {**pairs, **ids} if pairs else ids)
    if message == "HTTP request":
        _http_request(event, pairs)
    if "error_type" in pairs:
        _error_type(event, pairs["error_type"])
    add_errors(event, text)
    return True


def parse_plugin_json(event: Event, obj: dict[str, Any], line: str) -> None:
    """The daemon's JSON line (keys sorted: attributes, caller, identity, message, ..., trace_id, ts)."""
    severity = obj.get("severity")
    event.level = normalise_level(severity) if isinstance(severity, str) else "unknown"
    caller = obj.get("caller")
    event.logger_caller = caller if isinstance(caller, str) else None
    message = obj.get("message")
    event.message = message if isinstance(message, str) else None
    ids = {key: value for key in ("trace_id", "span_id") if isinstance(value := obj.get(key), str)}
    identity = obj.get("identity")
    if isinstance(identity, dict):
        ids.update({key: value for key in ("tenant_id", "user_id") if isinstance(value := identity.get(key), str)})
    _set_ids(event, ids)
    attributes = obj.get("attributes")
    if isinstance(attributes, dict):
        if message == "HTTP request":
            _http_request(event, attributes)
        _error_type(event, attributes.get("error_type"))
    stack = obj.get("stack_trace")
    add_errors(event, line, stack if isinstance(stack, str) else message if isinstance(message, str) else "")


def parse_gorm(event: Event, text: str) -> bool:
    """gorm's record: `2026/06/12 10:33:05 /app/x.go:259 record not found` then `[0.342ms] [rows:0] SELECT..`.

    Level: the `[info]`/`[warn]`/`[error]` tag of a plain message; for a query, error when it failed, warning
    for `SLOW SQL`, info otherwise (gorm's own choice of colour and level).
    """
    match = _GORM.match(text)
    rest = text.partition("\n")[2]
    if match is None:
        return False
    event.logger_caller, message = match.groups()
    event.message = message.strip() if message else None
    second = rest.split("\n", 1)[0]
    tag = _GORM_TAGS.get(second.split(" ", 1)[0])
    if tag is not None:
        event.level = tag
        event.message = second.split(" ", 1)[1].strip() if " " in second else event.message
    else:
        if not event.message:
            event.level = "info"
        elif event.message.startswith("SLOW SQL"):
            event.level = "warning"
        else:
            event.level = "error"
        timing = _GORM_TIMING.match(second)
        if timing is not None and (milliseconds := to_float(timing.group(1))) is not None:
            event.duration_seconds = milliseconds / 1000
    add_errors(event, text)
    return True


def parse_go_log(event: Event, text: str) -> bool:
    """Go's `log` with a file prefix: old daemons and sandboxes (`... pool.go:32: [INFO]init routine pool`)."""
    match = _GO_LOG.match(text)
    if match is None:
        return False
    event.logger_caller, level, message = match.groups()
    event.level = normalise_level(level) if level else "unknown"
    event.message = message
    add_errors(event, text)
    return True
