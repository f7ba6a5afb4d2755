"""Loki's push wire format: turning a request body into streams of entries, failing the way Loki's HTTP push
handler fails.

Mirrors `pkg/loghttp/push.ParseLokiRequest` (Content-Encoding, media type, JSON or snappy-protobuf), the jsonparser
based decoding of `loghttp.LogProtoStream` (timestamps and lines must be JSON strings, structured metadata values
must be strings) and the label syntax check (`syntax.ParseLabels`). Everything here fails the whole request with
400 and stores nothing; per-entry limits (partial success) live in `loki_store`.

Approximations: jsoniter's error positions (`error found in #N byte of ...|...|...`) are reproduced in form, not
byte for byte; label-syntax messages use one wording (`unexpected character inside braces`) for every bad name.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import zlib
from dataclasses import dataclass, field

import orjson

from tests.support import loki_proto

MetadataDict = dict[str, str]
RawEntry = tuple[int, str, "MetadataDict | None"]

STREAMS_PREFIX = "loghttp.PushRequest.Streams: []loghttp.LogProtoStream: "
# buger/jsonparser's error texts, which Loki returns verbatim.
MALFORMED_STRING = "Value is string, but can't find closing '\"' symbol"
MALFORMED_ARRAY = "Value is array, but can't find closing ']' symbol"
MALFORMED_OBJECT = "Value looks like object, but can't find closing '}' symbol"
MALFORMED_VALUE = "Value looks like Number/Boolean/None, but can't find its end: ',' or '}' symbol"
OVERFLOW_INTEGER = "Value is number, but overflowed while parsing"

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_NAME_CHAR = re.compile(r"[^a-zA-Z0-9_]")
_STREAMS_KEY = re.compile(rb'"streams"\s*:\s*\[')
_INT64_MAX = 2**63 - 1
_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


class PushError(Exception):
    """A push Loki refuses as a whole: `status` and the plain-text `message` it answers (without the newline)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _JsonParserError(Exception):
    pass


@dataclass(slots=True)
class PushStream:
    """One stream of a push: its labels, Loki's rendering of them (`key`) and its entries in request order."""

    labels: dict[str, str]
    key: str
    entries: list[RawEntry]


@dataclass(slots=True)
class PushBody:
    streams: list[PushStream] = field(default_factory=list)
    entry_count: int = 0
    decoded_bytes: int = 0


def go_quote(s: str) -> str:
    """Go's `strconv.Quote` (how Loki renders label values)."""
    if s.isascii() and s.isprintable() and '"' not in s and "\\" not in s:
        return f'"{s}"'
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        elif ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def render_labels(labels: dict[str, str]) -> str:
    """Loki's (and Prometheus') label rendering: sorted by name, `{level="info", service="api"}`."""
    return "{" + ", ".join(f"{name}={go_quote(labels[name])}" for name in sorted(labels)) + "}"


def _utc(ns: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=ns // 1000)


def rfc3339(ns: int) -> str:
    """Go's `t.Format(time.RFC3339)` in UTC: whole seconds, `Z`."""
    return _utc(ns).strftime("%Y-%m-%dT%H:%M:%SZ")


def go_time_string(ns: int) -> str:
    """Go's `time.Time.String()` of `time.Unix(0, ns)` in UTC: `2026-11-23 16:03:09.818373504 +0000 UTC`."""
    frac = f"{ns % 1_000_000_000:09d}".rstrip("0")
    return _utc(ns).strftime("%Y-%m-%d %H:%M:%S") + (f".{frac}" if frac else "") + " +0000 UTC"


def jsoniter_error(message: str, body: bytes, head: int) -> str:
    """jsoniter's `ReportError` text: the message, then the bytes around where the decoder stood."""
    head = max(0, min(head, len(body)))
    peek_start, ctx_start = max(0, head - 10), max(0, head - 50)
    peek = body[peek_start : head + 10].decode("utf-8", "replace")
    ctx = body[ctx_start : head + 50].decode("utf-8", "replace")
    return f"{message}, error found in #{head - peek_start} byte of ...|{peek}|..., bigger context ...|{ctx}|..."


def decode_body(content_type: str | None, content_encoding: str | None, raw: bytes, max_bytes: int | None) -> PushBody:
    """Decode a push body like Loki's `ParseLokiRequest`; raises `PushError` for anything Loki refuses whole.

    `max_bytes` limits the decompressed body (413, Loki's `request body too large` wording)."""
    encoding = content_encoding or ""
    if encoding == "gzip":
        _check_gzip_header(raw)
    elif encoding not in ("", "snappy", "deflate"):
        raise PushError(400, f"Content-Encoding {go_quote(encoding)} not supported")
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if not media:
        raise PushError(400, "mime: no media type")
    body = _gunzip(raw) if encoding == "gzip" else _inflate(raw) if encoding == "deflate" else raw
    if max_bytes is not None and len(body) > max_bytes:
        raise PushError(413, f"request body too large: {len(body)} bytes, limit: {max_bytes} bytes")
    if media == "application/json":
        streams = _parse_json(body)
    else:
        # Loki treats every other media type as snappy-compressed protobuf.
        try:
            streams = loki_proto.parse_push(body)
        except loki_proto.ProtoError as exc:
            raise PushError(400, str(exc)) from None
    pushed = PushBody(streams=[], entry_count=0, decoded_bytes=len(body))
    for labels, entries in streams:
        checked = _checked(labels)
        pushed.streams.append(PushStream(checked, render_labels(checked), entries))
        pushed.entry_count += len(entries)
    return pushed


def _check_gzip_header(raw: bytes) -> None:
    # Go's gzip.NewReader reads the 10-byte header with io.ReadFull before it looks at the magic bytes.
    if not raw:
        raise PushError(400, "EOF")
    if len(raw) < 10:
        raise PushError(400, "unexpected EOF")
    if raw[:3] != b"\x1f\x8b\x08":
        raise PushError(400, "gzip: invalid header")


def _gunzip(raw: bytes) -> bytes:
    parts, data = [], raw
    while data:  # Go's gzip reader reads concatenated members
        _check_gzip_header(data)
        member = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            parts.append(member.decompress(data))
        except zlib.error as exc:
            corrupt = "check" in str(exc)
            raise PushError(400, "gzip: invalid checksum" if corrupt else "flate: corrupt input") from None
        if not member.eof:
            raise PushError(400, "unexpected EOF")
        data = member.unused_data
    return b"".join(parts)


def _inflate(raw: bytes) -> bytes:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)  # Go's flate.NewReader: raw deflate, no zlib header
    try:
        body = inflater.decompress(raw)
    except zlib.error:
        raise PushError(400, "flate: corrupt input") from None
    if not inflater.eof:
        raise PushError(400, "unexpected EOF")
    return body


def _parse_json(body: bytes) -> list[tuple[dict[str, str] | None, list[RawEntry]]]:
    if not body.strip():
        raise PushError(400, "EOF")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        doc = _first_value(body, exc)
    if doc is None:
        return []
    if not isinstance(doc, dict):
        found = body.lstrip()[:1].decode("utf-8", "replace")
        message = f"loghttp.PushRequest.readObjectStart: expect {{ or n, but found {found}"
        raise PushError(400, jsoniter_error(message, body, 1))
    raw_streams = doc.get("streams")
    if raw_streams is None:
        return []
    if not isinstance(raw_streams, list):
        at = body.find(b'"streams"') + 10
        found = body[at:].lstrip(b": \t\r\n")[:1].decode("utf-8", "replace")
        msg = f"loghttp.PushRequest.Streams: []loghttp.LogProtoStream: decode slice: expect [ or n, but found {found}"
        raise PushError(400, jsoniter_error(msg, body, at))
    streams = []
    for index, raw_stream in enumerate(raw_streams):
        try:
            streams.append(_parse_stream(raw_stream))
        except _JsonParserError as exc:
            head = _stream_end(body, index)
            raise PushError(400, jsoniter_error(f"{STREAMS_PREFIX}unmarshalerDecoder: {exc}", body, head)) from None
    return streams


def _first_value(body: bytes, exc: orjson.JSONDecodeError) -> object:
    """jsoniter's Decoder reads one value and ignores what follows; anything else is a syntax error."""
    try:
        return json.JSONDecoder().raw_decode(body.decode("utf-8", "replace").lstrip())[0]
    except ValueError:
        pass
    streams = _STREAMS_KEY.search(body)
    prefix = STREAMS_PREFIX if streams is not None and exc.pos >= streams.end() else "loghttp.PushRequest."
    reason = "skipObject: incomplete object" if exc.pos >= len(body.rstrip()) else f"Skip: {exc.msg}"
    raise PushError(400, jsoniter_error(prefix + reason, body, exc.pos)) from None


def _stream_end(body: bytes, index: int) -> int:
    """Offset just after the `index`-th object of the streams array, where jsoniter reports a stream's error."""
    start = _STREAMS_KEY.search(body)
    depth, in_string, escaped, seen = 1, False, False, -1
    for pos in range(start.end() if start else 0, len(body)):
        byte = body[pos]
        if in_string:
            escaped, in_string = (False, True) if escaped else (byte == 0x5C, byte != 0x22)
        elif byte == 0x22:
            in_string = True
        elif byte in b"[{":
            depth += 1
        elif byte in b"]}":
            depth -= 1
            if depth == 1:
                seen += 1
                if seen == index:
                    return pos + 1
            if depth == 0:
                break
    return len(body)


def _parse_stream(raw: object) -> tuple[dict[str, str] | None, list[RawEntry]]:
    if not isinstance(raw, dict):
        raise _JsonParserError(MALFORMED_OBJECT)
    labels: dict[str, str] | None = None
    entries: list[RawEntry] = []
    for key, value in raw.items():
        if key == "stream":
            if not isinstance(value, dict):
                raise _JsonParserError(MALFORMED_OBJECT)
            labels = {name: v if type(v) is str else _json_text(v) for name, v in value.items()}
        elif key == "values" and value is not None:
            if type(value) is not list:
                raise _JsonParserError(MALFORMED_ARRAY)
            entries = _parse_values(value)
    return labels, entries


def _json_text(value: object) -> str:
    return orjson.dumps(value).decode()


def _parse_values(values: list[object]) -> list[RawEntry]:
    entries: list[RawEntry] = []
    append = entries.append
    for value in values:
        # Fast path for the common `["<digits>", "<line>"]`; everything else goes through the careful one.
        if type(value) is list and len(value) == 2:
            ts, line = value
            if type(ts) is str and type(line) is str and len(ts) < 19 and ts.isdigit() and ts.isascii():
                append((int(ts), line, None))
                continue
        if value is not None:
            append(_parse_entry(value))
    return entries


def _parse_entry(value: object) -> RawEntry:
    if type(value) is not list:
        raise _JsonParserError(MALFORMED_ARRAY)
    ts, line, metadata = 0, "", None
    for index, item in enumerate(value[:3]):  # Loki ignores elements after the third
        if index < 2 and not isinstance(item, str):
            raise _JsonParserError(MALFORMED_STRING)
        if index == 0:
            ts = _parse_ts(item)
        elif index == 1:
            line = item
        elif not isinstance(item, dict):
            raise _JsonParserError(MALFORMED_OBJECT)
        elif item:
            if any(type(v) is not str for v in item.values()):
                raise _JsonParserError(MALFORMED_STRING)
            metadata = item
    return ts, line, metadata


def _parse_ts(text: str) -> int:
    """jsonparser.ParseInt: an optional `-` then ASCII digits, within int64."""
    digits = text[1:] if text.startswith("-") else text
    if not digits or not (digits.isascii() and digits.isdigit()):
        raise _JsonParserError(MALFORMED_VALUE)
    ns = int(digits)
    if ns > _INT64_MAX + (text[0] == "-"):
        raise _JsonParserError(OVERFLOW_INTEGER)
    return -ns if text[0] == "-" else ns


def _checked(labels: dict[str, str] | None) -> dict[str, str]:
    """The stream's labels, checked as Loki's `syntax.ParseLabels` checks their rendering (the whole push fails)."""
    if labels is None:
        raise PushError(400, "couldn't parse labels: 1:1: parse error: unexpected end of input")
    col = 2  # 1-based column of the first label name in `{name="value", ...}`
    for name in sorted(labels):
        if not _LABEL_NAME.fullmatch(name):
            bad = _NAME_CHAR.search(name) if name and not name[0].isdigit() else None
            offset = bad.start() if bad else 0
            if not name:
                msg = 'unexpected "=" in label matching, expected identifier or "}"'
            else:
                msg = f"unexpected character inside braces: '{name[offset]}'"
            raise PushError(400, f"couldn't parse labels: 1:{col + offset}: parse error: {msg}")
        col += len(name) + 1 + len(go_quote(labels[name])) + 2
    return labels
