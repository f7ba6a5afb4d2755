"""Decoding Docker's log stream: chunked HTTP, frame headers, timestamps, partial lines, truncation."""

from __future__ import annotations

import calendar
import struct
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logpipe.sources.frames import (
    PARTIAL_SIZE,
    STDERR,
    STDOUT,
    ChunkedDecoder,
    Line,
    LogDecoder,
    StreamFormatError,
    TimestampParser,
)

BASE_NS = calendar.timegm(time.strptime("2026-06-12T10:32:01", "%Y-%m-%dT%H:%M:%S")) * 10**9


def ts_text(ns: int) -> bytes:
    sec, frac = divmod(ns, 10**9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)).encode() + b".%09dZ" % frac


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


def docker_frames(stream: int, ns: int, content: bytes) -> bytes:
    """What dockerd sends for one line: 16 KiB partial messages with the same timestamp, the last with \\n."""
    pieces = [content[i : i + PARTIAL_SIZE] for i in range(0, len(content), PARTIAL_SIZE)] or [b""]
    out = b""
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        out += frame(stream, ts_text(ns) + b" " + piece + (b"\n" if last else b""))
    return out


def chunked(body: bytes, sizes: list[int]) -> bytes:
    out = b""
    pos = 0
    for size in sizes:
        part = body[pos : pos + size]
        if not part:
            break
        out += b"%x\r\n" % len(part) + part + b"\r\n"
        pos += len(part)
    if pos < len(body):
        out += b"%x\r\n" % (len(body) - pos) + body[pos:] + b"\r\n"
    return out + b"0\r\n\r\n"


def feed_in_pieces(decoder: LogDecoder, data: bytes, cuts: list[int]) -> dict[int, list[Line]]:
    out: dict[int, list[Line]] = {STDOUT: [], STDERR: []}
    pos = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        for stream, lines in decoder.feed(data[pos:cut]).items():
            out[stream].extend(lines)
        pos = cut
    return out


class TestTimestamps:
    def test_nanoseconds_and_shorter_fractions(self) -> None:
        p = TimestampParser()
        assert p.parse(b"2026-06-12T10:32:01.118204551Z") == BASE_NS + 118204551
        assert p.parse(b"2026-06-12T10:32:01.5Z") == BASE_NS + 500_000_000
        assert p.parse(b"2026-06-12T10:32:01Z") == BASE_NS
        assert p.parse(b"2026-06-12T10:32:02.000000001Z") == BASE_NS + 10**9 + 1

    @pytest.mark.parametrize("bad", [b"", b"hello world", b"2026-06-12 10:32:01.1Z", b"2026-06-12T10:32:01.1+02:00"])
    def test_not_a_timestamp(self, bad: bytes) -> None:
        assert TimestampParser().parse(bad) is None


class TestChunked:
    def test_any_split_reproduces_the_body(self) -> None:
        body = bytes(range(256)) * 50
        wire = chunked(body, [1, 300, 4096, 7])
        for step in (1, 2, 5, 17, 1000, len(wire)):
            d = ChunkedDecoder()
            got = b"".join(d.feed(wire[i : i + step]) for i in range(0, len(wire), step))
            assert got == body
            assert d.done

    def test_chunk_extension_is_ignored(self) -> None:
        d = ChunkedDecoder()
        assert d.feed(b"5;name=value\r\nhello\r\n0\r\n\r\n") == b"hello"

    def test_garbage_size_is_an_error(self) -> None:
        with pytest.raises(StreamFormatError):
            ChunkedDecoder().feed(b"zz\r\nhello\r\n")


class TestFrames:
    def test_lines_per_stream_with_timestamps(self) -> None:
        data = docker_frames(STDOUT, BASE_NS + 1, b"one") + docker_frames(STDERR, BASE_NS + 2, b"two")
        out = LogDecoder(tty=False, max_line_bytes=1 << 20).feed(data)
        assert out[STDOUT] == [(BASE_NS + 1, 1, b"one", 0)]
        assert out[STDERR] == [(BASE_NS + 2, 1, b"two", 0)]

    def test_partial_frames_join_into_one_line(self) -> None:
        content = b"x" * 40_000
        decoder = LogDecoder(tty=False, max_line_bytes=1 << 20)
        out = decoder.feed(docker_frames(STDOUT, BASE_NS, content))
        assert out[STDOUT] == [(BASE_NS, 1, content, 0)]
        assert decoder.stats.partials_joined == 2

    def test_interleaved_partials_of_both_streams(self) -> None:
        a, b = b"a" * 20_000, b"b" * 20_000
        fa, fb = docker_frames(STDOUT, BASE_NS, a), docker_frames(STDERR, BASE_NS + 5, b)
        # first partial of each, then the rest of each
        split_a = 8 + 31 + PARTIAL_SIZE
        split_b = 8 + 31 + PARTIAL_SIZE
        data = fa[:split_a] + fb[:split_b] + fa[split_a:] + fb[split_b:]
        out = LogDecoder(tty=False, max_line_bytes=1 << 20).feed(data)
        assert out[STDOUT] == [(BASE_NS, 1, a, 0)]
        assert out[STDERR] == [(BASE_NS + 5, 1, b, 0)]

    def test_long_line_is_truncated_and_counted(self) -> None:
        decoder = LogDecoder(tty=False, max_line_bytes=20_000)
        out = decoder.feed(docker_frames(STDOUT, BASE_NS, b"y" * 50_000) + docker_frames(STDOUT, BASE_NS + 9, b"z"))
        assert out[STDOUT] == [(BASE_NS, 1, b"y" * 20_000, 30_000), (BASE_NS + 9, 1, b"z", 0)]
        assert decoder.stats.truncated == 1

    def test_unterminated_line_is_flushed_at_the_end(self) -> None:
        decoder = LogDecoder(tty=False, max_line_bytes=1 << 20)
        assert decoder.feed(frame(STDOUT, ts_text(BASE_NS) + b" no newline")) == {STDOUT: [], STDERR: []}
        assert decoder.finish()[STDOUT] == [(BASE_NS, 1, b"no newline", 0)]

    def test_frame_without_timestamp_keeps_its_bytes(self) -> None:
        decoder = LogDecoder(tty=False, max_line_bytes=1 << 20)
        decoder.feed(docker_frames(STDOUT, BASE_NS, b"first"))
        out = decoder.feed(frame(STDOUT, b"garbage without a timestamp\n"))
        assert out[STDOUT] == [(BASE_NS, 2, b"garbage without a timestamp", 0)]  # borrows the last good timestamp
        assert decoder.stats.bad_timestamps == 1

    @settings(max_examples=150, deadline=None)
    @given(
        lines=st.lists(
            st.tuples(st.sampled_from([STDOUT, STDERR]), st.binary(max_size=40_000).filter(lambda b: b"\n" not in b)),
            max_size=8,
        ),
        cuts=st.lists(st.integers(min_value=0, max_value=400_000), max_size=12),
        chunk_sizes=st.lists(st.integers(min_value=1, max_value=70_000), max_size=10),
    )
    def test_any_bytes_any_split_round_trip(
        self, lines: list[tuple[int, bytes]], cuts: list[int], chunk_sizes: list[int]
    ) -> None:
        body = b"".join(docker_frames(s, BASE_NS + i, c) for i, (s, c) in enumerate(lines))
        wire = chunked(body, chunk_sizes)
        dechunk = ChunkedDecoder()
        decoder = LogDecoder(tty=False, max_line_bytes=1 << 20)
        got: dict[int, list[bytes]] = {STDOUT: [], STDERR: []}
        pos = 0
        for cut in [*sorted({c for c in cuts if c < len(wire)}), len(wire)]:
            for stream, decoded in decoder.feed(dechunk.feed(wire[pos:cut])).items():
                got[stream].extend(content for _, _, content, _ in decoded)
            pos = cut
        assert dechunk.done
        for stream in (STDOUT, STDERR):
            assert got[stream] == [c for s, c in lines if s == stream]


    def test_lines_sharing_a_timestamp_are_numbered_per_stream(self) -> None:
        # Docker stamps lines written together with one timestamp: the ordinal tells them apart (the cursor).
        data = (
            docker_frames(STDOUT, BASE_NS, b"a")
            + docker_frames(STDERR, BASE_NS, b"e")
            + docker_frames(STDOUT, BASE_NS, b"b")
            + docker_frames(STDOUT, BASE_NS + 1, b"c")
            + docker_frames(STDOUT, BASE_NS, b"back in time")
        )
        decoder = LogDecoder(tty=False, max_line_bytes=1 << 20)
        out = feed_in_pieces(decoder, data, [50, 51, 120])
        assert out[STDOUT] == [
            (BASE_NS, 1, b"a", 0),
            (BASE_NS, 2, b"b", 0),
            (BASE_NS + 1, 1, b"c", 0),
            (BASE_NS, 1, b"back in time", 0),
        ]
        assert out[STDERR] == [(BASE_NS, 1, b"e", 0)]

    def test_a_line_of_exactly_the_limit_is_not_truncated(self) -> None:
        decoder = LogDecoder(tty=False, max_line_bytes=1024)
        line = b"x" * 1024
        slow = frame(STDOUT, ts_text(BASE_NS)[:19] + b"Z " + line + b"\n")  # no fraction: the general path
        out = decoder.feed(docker_frames(STDOUT, BASE_NS + 5, line) + slow)
        assert [entry[2:] for entry in out[STDOUT]] == [(line, 0), (line, 0)]
        assert decoder.stats.truncated == 0


class TestTty:
    def test_glued_partial_timestamps_are_removed(self) -> None:
        # What dockerd really sends for a 40,000-byte line from a TTY container (verified against 20.10).
        content = b"y" * 40_000
        prefix = ts_text(BASE_NS) + b" "
        pieces = [content[i : i + PARTIAL_SIZE] for i in range(0, len(content), PARTIAL_SIZE)]
        data = b"".join(prefix + p for p in pieces) + b"\r\n" + ts_text(BASE_NS + 7) + b" next\r\n"
        decoder = LogDecoder(tty=True, max_line_bytes=1 << 20)
        out = feed_in_pieces(decoder, data, [5, 16_500, 33_000])
        assert out[STDOUT] == [(BASE_NS, 1, content, 0), (BASE_NS + 7, 1, b"next", 0)]
        assert decoder.stats.partials_joined == 2

    def test_endless_line_stays_bounded(self) -> None:
        decoder = LogDecoder(tty=True, max_line_bytes=10_000)
        decoder.feed(ts_text(BASE_NS) + b" ")
        for _ in range(50):
            assert decoder.feed(b"z" * 100_000)[STDOUT] == []
            assert len(decoder._buf) < 200_000  # memory stays bounded while the line goes on
        out = decoder.feed(b"end\r\n" + ts_text(BASE_NS + 1) + b" after\r\n")
        assert out[STDOUT][0][0] == BASE_NS
        assert out[STDOUT][0][2] == b"z" * 10_000
        assert out[STDOUT][0][3] == 50 * 100_000 + 3 - 10_000
        assert out[STDOUT][1] == (BASE_NS + 1, 1, b"after", 0)
