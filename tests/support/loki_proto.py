"""Loki's other push encoding: a snappy-compressed (block format) protobuf `logproto.PushRequest`.

A small pure-Python decoder, enough for the test server to accept what Promtail, Alloy or Vector send and to refuse
what Loki refuses (`snappy: corrupt input` for a body that is not snappy). Unknown protobuf fields are skipped.
"""

from __future__ import annotations

from tests.support import loki_logql

RawEntry = tuple[int, str, "dict[str, str] | None"]


class ProtoError(Exception):
    """The body is not a snappy-compressed PushRequest; the message is Loki's (or close to it)."""


def snappy_decompress(data: bytes) -> bytes:
    """Decode one snappy block (the `RawSnappy` framing Loki expects)."""
    size, pos = _varint(data, 0, corrupt="snappy: corrupt input")
    out = bytearray()
    while pos < len(data):
        tag = data[pos]
        kind = tag & 3
        if kind == 0:  # literal
            length = tag >> 2
            if length >= 60:
                extra = length - 59
                length = int.from_bytes(data[pos + 1 : pos + 1 + extra], "little")
                pos += extra
            length += 1
            pos += 1
            if pos + length > len(data):
                raise ProtoError("snappy: corrupt input")
            out += data[pos : pos + length]
            pos += length
            continue
        if kind == 1:
            length, offset, pos = 4 + ((tag >> 2) & 7), ((tag >> 5) << 8) | _at(data, pos + 1), pos + 2
        else:
            width = 2 if kind == 2 else 4
            length, pos = 1 + (tag >> 2), pos + 1 + width
            offset = int.from_bytes(data[pos - width : pos], "little")
        if not 0 < offset <= len(out) or pos > len(data):
            raise ProtoError("snappy: corrupt input")
        pattern = out[-offset:]
        out += (pattern * (length // offset + 1))[:length]
    if len(out) != size:
        raise ProtoError("snappy: corrupt input")
    return bytes(out)


def _at(data: bytes, pos: int) -> int:
    if pos >= len(data):
        raise ProtoError("snappy: corrupt input")
    return data[pos]


def _varint(data: bytes, pos: int, *, corrupt: str = "proto: unexpected EOF") -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ProtoError(corrupt)
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs of one message; varints as ints, length-delimited fields as bytes."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            out.append((number, value))
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ProtoError("proto: unexpected EOF")
            out.append((number, data[pos : pos + length]))
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ProtoError(f"proto: illegal wireType {wire}")
    return out


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _text(value: int | bytes | None) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else ""


def _entry(data: bytes) -> RawEntry:
    ts, line, metadata = 0, "", {}
    for number, value in _fields(data):
        if number == 1 and isinstance(value, bytes):
            parts = dict(_fields(value))
            ts = _signed(int(parts.get(1, 0))) * 10**9 + _signed(int(parts.get(2, 0)))
        elif number == 2 and isinstance(value, bytes):
            line = value.decode("utf-8", "replace")
        elif number == 3 and isinstance(value, bytes):
            pair = dict(_fields(value))
            metadata[_text(pair.get(1))] = _text(pair.get(2))
    return ts, line, metadata or None


def parse_push(body: bytes) -> list[tuple[dict[str, str] | None, list[RawEntry]]]:
    """Decode a snappy-compressed PushRequest into (labels, entries) per stream."""
    streams = []
    for number, value in _fields(snappy_decompress(body)):
        if number != 1 or not isinstance(value, bytes):
            continue
        label_text, entries = "", []
        for field_number, field_value in _fields(value):
            if field_number == 1 and isinstance(field_value, bytes):
                label_text = field_value.decode("utf-8", "replace")
            elif field_number == 2 and isinstance(field_value, bytes):
                entries.append(_entry(field_value))
        try:
            labels = loki_logql.parse_label_string(label_text) if label_text else None
        except loki_logql.QueryError as exc:
            raise ProtoError(f"couldn't parse labels: {exc}") from None
        streams.append((labels, entries))
    return streams
