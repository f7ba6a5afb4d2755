"""Decoding the bytes of Docker's `/containers/{id}/logs?timestamps=1` stream into lines.

Pure functions and small state machines, no I/O: HTTP/1.1 chunked transfer decoding, the 8-byte stdout/stderr
frame headers of non-TTY containers, RFC 3339 timestamps to nanoseconds, and the re-joining of Docker's 16 KiB
partial messages (frames without a trailing newline, or, on a TTY, timestamps glued into the middle of a line).
Lines longer than the configured maximum are cut and marked. Everything works on whole read buffers at once so
the per-line cost stays small.
"""

from __future__ import annotations

import calendar
import struct
import time
from dataclasses import dataclass, field

STDOUT = 1
STDERR = 2
STREAM_NAMES = {STDOUT: "stdout", STDERR: "stderr"}

#: Docker splits a message into partial messages of this many bytes of content.
PARTIAL_SIZE = 16 * 1024

#: One decoded line: (Docker timestamp ns, ordinal among its stream's lines with that timestamp, content without
#: the newline, bytes cut off by truncation).
Line = tuple[int, int, bytes, int]

#: What an `n`-digit fraction of a second is multiplied by to give nanoseconds.
_FRACTION_SCALE = tuple(10 ** (9 - digits) if digits <= 9 else 0 for digits in range(10))

_HEADER = struct.Struct(">BxxxL")


class StreamFormatError(ValueError):
    """The bytes cannot be Docker's log stream (a bad chunk size); the connection must be dropped."""


class ChunkedDecoder:
    """Incremental decoder for HTTP/1.1 chunked transfer encoding.

    `feed` returns the payload bytes available so far; `done` turns true at the terminating zero-size chunk.
    """

    __slots__ = ("_buf", "_crlf", "_need", "done")

    def __init__(self) -> None:
        self._buf = b""
        self._need = 0  # payload bytes still owed by the current chunk
        self._crlf = False  # the CRLF that ends a chunk's payload is still to come
        self.done = False

    def feed(self, data: bytes) -> bytes:
        buf = self._buf + data if self._buf else data
        out: list[bytes] = []
        pos = 0
        end = len(buf)
        while pos < end and not self.done:
            if self._need:
                take = min(self._need, end - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self._need -= take
                if self._need:
                    break
                self._crlf = True
            elif self._crlf:
                if end - pos < 2:
                    break
                pos += 2
                self._crlf = False
            else:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    if end - pos > 64:
                        raise StreamFormatError("chunk size line too long")
                    break
                size_text = buf[pos:eol].split(b";", 1)[0].strip()
                try:
                    self._need = int(size_text, 16)
                except ValueError as exc:
                    raise StreamFormatError(f"bad chunk size {size_text[:20]!r}") from exc
                pos = eol + 2
                if self._need == 0:
                    self.done = True
        self._buf = buf[pos:] if pos < end and not self.done else b""
        return b"".join(out)


class TimestampParser:
    """Parses Docker's `2026-06-12T10:32:01.118204551Z` timestamps to integer nanoseconds, caching the second."""

    __slots__ = ("_key", "_sec_ns")

    def __init__(self) -> None:
        self._key = b""
        self._sec_ns = 0

    def parse(self, ts: bytes) -> int | None:
        """Nanoseconds since the epoch, or None when `ts` is not an RFC 3339 UTC timestamp."""
        key = ts[:19]
        if key != self._key:
            try:
                parsed = time.strptime(key.decode("ascii"), "%Y-%m-%dT%H:%M:%S")
            except (UnicodeDecodeError, ValueError):
                return None
            self._key = key
            self._sec_ns = calendar.timegm(parsed) * 1_000_000_000
        if len(ts) == 20 and ts[19:20] == b"Z":
            return self._sec_ns
        if ts[19:20] != b"." or ts[-1:] != b"Z":
            return None
        frac = ts[20:-1]
        if not frac.isdigit() or len(frac) > 9:
            return None
        ns: int = self._sec_ns + int(frac) * 10 ** (9 - len(frac))
        return ns


@dataclass(slots=True)
class _Partial:
    ts: int = 0
    parts: list[bytes] = field(default_factory=list)
    size: int = 0
    cut: int = 0
    active: bool = False


@dataclass(slots=True)
class DecodeStats:
    """Counts of what decoding had to repair; the reader reports them to telemetry."""

    partials_joined: int = 0
    truncated: int = 0
    bad_timestamps: int = 0


class LogDecoder:
    """Turns a container's (de-chunked) log stream into complete, numbered lines per stream.

    `feed` takes any slice of the byte stream and returns the lines completed by it, per stream id
    (1 = stdout, 2 = stderr), as `(timestamp ns, ordinal at that timestamp, content, bytes cut off)`: the ordinal
    counts the lines of that stream with exactly that timestamp, from 1, in the order this decoder saw them. A
    TTY container has no frame headers: everything is stdout. Lines longer than `max_line_bytes` keep their first
    `max_line_bytes` bytes and report how many were cut. `finish` returns a partial line left at the end of the
    stream (Docker ends a stream without the final newline when the container exits mid-line).

    The common frame (a whole line, no partial message open, a timestamp in the same second as the last one) is
    decoded inline with one slice; anything else takes the general path.
    """

    def __init__(self, tty: bool, max_line_bytes: int) -> None:
        self.tty = tty
        self.max_line_bytes = max_line_bytes
        self.stats = DecodeStats()
        self._ts = TimestampParser()
        self._buf = b""
        self._last_ts = [0, 0, 0]  # per stream id: the last good timestamp (a bad one borrows it)
        self._line_ts = [0, 0, 0]  # per stream id: the timestamp of the last line handed out ...
        self._line_n = [0, 0, 0]  # ... and its ordinal
        self._partial = {STDOUT: _Partial(), STDERR: _Partial()}
        self._partials_open = 0
        self._prefix = b""  # `2026-06-12T10:32:01.` of the last fractional timestamp read
        self._second_ns = 0  # that second, in ns

    def feed(self, data: bytes) -> dict[int, list[Line]]:
        out: dict[int, list[Line]] = {STDOUT: [], STDERR: []}
        buf = self._buf + data if self._buf else data
        if self.tty:
            self._buf = self._feed_tty(buf, out[STDOUT])
        else:
            self._buf = self._feed_frames(buf, out)
        return out

    def finish(self) -> dict[int, list[Line]]:
        """Flush what an ended stream left unterminated."""
        out: dict[int, list[Line]] = {STDOUT: [], STDERR: []}
        if self.tty and self._buf:
            self._tty_line(self._buf, out[STDOUT])
        self._buf = b""
        for stream, partial in self._partial.items():
            if partial.active:
                self._complete(stream, partial, out[stream])
        return out

    def _feed_frames(self, buf: bytes, out: dict[int, list[Line]]) -> bytes:
        pos = 0
        end = len(buf)
        unpack = _HEADER.unpack_from
        max_line = self.max_line_bytes
        line_ts, line_n, last_ts = self._line_ts, self._line_n, self._last_ts
        prefix, second_ns = self._prefix, self._second_ns
        while end - pos >= 8:
            stream, length = unpack(buf, pos)
            start = pos + 8
            stop = start + length
            if stop > end:
                break
            pos = stop
            if stream not in (STDOUT, STDERR):
                stream = STDOUT
            space = buf.find(b" ", start, start + 40)
            if (
                space > start + 20
                and not self._partials_open
                and buf[stop - 1] == 10  # ends with a newline: a whole line
                and buf[space - 1] == 90  # "Z"
                and stop - space - 2 <= max_line
                and prefix
                and buf.startswith(prefix, start)
            ):
                fraction = buf[start + 20 : space - 1]
                if fraction.isdigit() and len(fraction) <= 9:
                    ts = second_ns + int(fraction) * _FRACTION_SCALE[len(fraction)]
                    last_ts[stream] = ts
                    if ts == line_ts[stream]:
                        n = line_n[stream] + 1
                    else:
                        n = 1
                        line_ts[stream] = ts
                    line_n[stream] = n
                    out[stream].append((ts, n, buf[space + 1 : stop - 1], 0))
                    continue
            self._payload(stream, buf[start:stop], out[stream])
            prefix, second_ns = self._prefix, self._second_ns
        return buf[pos:]

    def _timestamp(self, text: bytes) -> int | None:
        ts = self._ts.parse(text)
        if ts is not None and text[19:20] == b"." and len(text) > 21:
            # Remember the second for the inline path: the next frames are almost always in it.
            fraction = text[20:-1]
            self._prefix = text[:20]
            self._second_ns = ts - int(fraction) * _FRACTION_SCALE[len(fraction)]
        return ts

    def _emit(self, stream: int, ts: int, content: bytes, cut: int, out: list[Line]) -> None:
        if ts == self._line_ts[stream]:
            n = self._line_n[stream] + 1
        else:
            n = 1
            self._line_ts[stream] = ts
        self._line_n[stream] = n
        out.append((ts, n, content, cut))

    def _payload(self, stream: int, payload: bytes, out: list[Line]) -> None:
        space = payload.find(b" ", 0, 40)
        ts = self._timestamp(payload[:space]) if space > 0 else None
        if ts is None:
            self.stats.bad_timestamps += 1
            ts = self._last_ts[stream]
            content = payload
        else:
            self._last_ts[stream] = ts
            content = payload[space + 1 :]
        partial = self._partial[stream]
        if content.endswith(b"\n"):
            if partial.active:
                self._append(partial, content[:-1])
                self.stats.partials_joined += 1
                self._complete(stream, partial, out)
            elif len(content) - 1 <= self.max_line_bytes:
                self._emit(stream, ts, content[:-1], 0, out)
            else:
                cut = len(content) - 1 - self.max_line_bytes
                self.stats.truncated += 1
                self._emit(stream, ts, content[: self.max_line_bytes], cut, out)
        else:
            if partial.active:
                self.stats.partials_joined += 1
            else:
                partial.active = True
                partial.ts = ts
                self._partials_open += 1
            self._append(partial, content)

    def _append(self, partial: _Partial, content: bytes) -> None:
        room = self.max_line_bytes - partial.size
        if len(content) <= room:
            partial.parts.append(content)
            partial.size += len(content)
        else:
            if room > 0:
                partial.parts.append(content[:room])
                partial.size += room
            partial.cut += len(content) - max(room, 0)

    def _complete(self, stream: int, partial: _Partial, out: list[Line]) -> None:
        if partial.cut:
            self.stats.truncated += 1
        self._emit(stream, partial.ts, b"".join(partial.parts), partial.cut, out)
        partial.parts = []
        partial.size = partial.cut = 0
        partial.active = False
        self._partials_open -= 1

    def _feed_tty(self, buf: bytes, out: list[Line]) -> bytes:
        lines = buf.split(b"\n")
        rest = lines.pop()
        for raw in lines:
            self._tty_line(raw, out)
        if len(rest) > self.max_line_bytes + 64 * 1024:
            # An endless line without a newline: keep its head, count the rest, and go on reading.
            partial = self._partial[STDOUT]
            if not partial.active:
                space = rest.find(b" ", 0, 40)
                ts = self._timestamp(rest[:space]) if space > 0 else None
                partial.active = True
                self._partials_open += 1
                partial.ts = ts if ts is not None else self._last_ts[STDOUT]
                rest = rest[space + 1 :] if ts is not None else rest
            self._append(partial, rest)
            return b""
        return rest

    def _tty_line(self, raw: bytes, out: list[Line]) -> None:
        partial = self._partial[STDOUT]
        if partial.active:
            # The tail of an over-long line that was cut while it streamed.
            self._append(partial, raw[:-1] if raw.endswith(b"\r") else raw)
            self._complete(STDOUT, partial, out)
            return
        space = raw.find(b" ", 0, 40)
        ts = self._timestamp(raw[:space]) if space > 0 else None
        if ts is None:
            self.stats.bad_timestamps += 1
            ts, content = self._last_ts[STDOUT], raw
        else:
            self._last_ts[STDOUT] = ts
            content = raw[space + 1 :]
            if len(content) > PARTIAL_SIZE:
                content = self._unglue(raw[: space + 1], content)
        if content.endswith(b"\r"):
            content = content[:-1]
        cut = 0
        if len(content) > self.max_line_bytes:
            cut = len(content) - self.max_line_bytes
            content = content[: self.max_line_bytes]
            self.stats.truncated += 1
        self._emit(STDOUT, ts, content, cut, out)

    def _unglue(self, prefix: bytes, content: bytes) -> bytes:
        """On a TTY, Docker writes each 16 KiB partial message with its own copy of the line's timestamp."""
        if content.find(prefix, PARTIAL_SIZE, PARTIAL_SIZE + len(prefix)) != PARTIAL_SIZE:
            return content
        parts = []
        pos = 0
        while content.startswith(prefix, pos + PARTIAL_SIZE):
            parts.append(content[pos : pos + PARTIAL_SIZE])
            pos += PARTIAL_SIZE + len(prefix)
            self.stats.partials_joined += 1
        parts.append(content[pos:])
        return b"".join(parts)
