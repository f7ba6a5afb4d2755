"""Multi-line grouping: turns one lane's lines into records (a traceback, a Go stack, an LLM block is one record).

A lane is one container's stdout or its stderr; each has its own `Grouper`. Lines arrive in order. A record
starts at a line `detect.classify` recognises; single-line formats close at once, the others collect
continuation lines until the next record start, a pause, or a cap. Nothing here reads fields.
"""

from __future__ import annotations

from dataclasses import dataclass

from logpipe.event import Position
from logpipe.parsers.detect import BLANK, JSON, RAW, SINGLE_LINE, TRACEBACK, classify


@dataclass(slots=True)
class RawRecord:
    """One grouped record, not yet parsed.

    `ts_ns` is the Docker timestamp of the first line; `end` the position of the last line consumed into it
    (trailing blank lines included, so a checkpoint after it never re-reads them); `lines` the lines as received
    (ANSI codes kept) without trailing blank lines; `kind` the format tag detected on the first line (`json` for
    any JSON object: the parse stage refines it); `capped` is True when a line or byte cap closed it.
    """

    ts_ns: int
    end: Position
    lines: list[str]
    kind: str
    capped: bool = False


def _utf8_len(line: str) -> int:
    # surrogatepass: arbitrary str (tests, odd decoders) must never make the byte count raise.
    return len(line) if line.isascii() else len(line.encode("utf-8", "surrogatepass"))


class Grouper:
    """Groups the lines of one lane into records.

    `add` returns the records a line closed, in input order: none, one, or two (the open record the line ended,
    then the line itself when it is a complete single-line record). Every non-blank line ends up in exactly one
    record, in order; blank lines are kept inside a record, dropped at its end and when no record is open. A
    record also closes when a line's Docker timestamp is more than `idle_secs` after the previous line's, so a
    backlog read at full speed groups like live data. `now` (a monotonic clock, in seconds) is only remembered
    for `flush_idle`: a slow reader must not split a traceback whose lines Docker stamped together.
    """

    __slots__ = (
        "_blanks",
        "_bytes",
        "_end",
        "_idle_ns",
        "_idle_secs",
        "_kind",
        "_last_now",
        "_last_ts",
        "_lines",
        "_max_bytes",
        "_max_lines",
        "_ts",
        "blanks_skipped",
    )

    def __init__(self, idle_secs: float, max_lines: int, max_bytes: int) -> None:
        self._idle_secs = idle_secs
        self._idle_ns = int(idle_secs * 1e9)
        self._max_lines = max_lines
        self._max_bytes = max_bytes
        self._kind = ""  # the open record's kind; "" when none is open
        self._lines: list[str] = []
        self._blanks: list[str] = []  # blank lines after the open record's last line
        self._bytes = 0  # UTF-8 size of the open record's lines joined with newlines
        self._ts = 0
        self._end: Position = (0, 0)
        self._last_ts = 0
        self._last_now = 0.0
        #: Blank lines not shipped (outside a record, or trailing one); the caller reads and resets it.
        self.blanks_skipped = 0

    @property
    def pending(self) -> bool:
        """True while a record is open (waiting for continuation lines)."""
        return bool(self._kind)

    def feed(self, stamps: list[tuple[int, int, bytes, int]], lines: list[str], now: float) -> list[RawRecord]:
        """`add` for each line of a chunk: `stamps[i]` holds line i's (timestamp, ordinal, ...). The records the
        chunk closed, in order. A single-line record with nothing open is closed here without a call."""
        out: list[RawRecord] = []
        add = self.add
        for (ts_ns, n, _raw, _cut), line in zip(stamps, lines, strict=True):
            if not self._kind and line[:1] == "{":
                out.append(RawRecord(ts_ns, (ts_ns, n), [line], JSON))
            else:
                out.extend(add(ts_ns, (ts_ns, n), line, now))
        return out

    def add(self, ts_ns: int, pos: Position, line: str, now: float) -> list[RawRecord]:
        """Feed the lane's next line (decoded, without its newline); return the records it closed, in order."""
        # The hot path of the whole daemon: one call per line, so the common cases are inlined.
        out: list[RawRecord] = []
        is_open = bool(self._kind)
        if is_open and ts_ns - self._last_ts > self._idle_ns:
            out.append(self._close(False))
            is_open = False
        kind = classify(line)
        if kind is None or kind == TRACEBACK:
            if is_open:
                self._continue(ts_ns, pos, line, now, out)
            elif kind is None:
                out.append(RawRecord(ts_ns, pos, [line], RAW))
            else:
                self._open(ts_ns, pos, line, TRACEBACK, now)
            return out
        if kind == BLANK:
            if is_open:
                self._blanks.append(line)
                self._end = pos
                self._last_ts = ts_ns
                self._last_now = now
            else:
                self.blanks_skipped += 1
            return out
        if is_open:
            # _close, inlined: a new start closing the previous record is the most common event of all.
            out.append(RawRecord(self._ts, self._end, self._lines, self._kind))
            self._kind = ""
            if self._blanks:
                self.blanks_skipped += len(self._blanks)
                self._blanks = []
        if kind in SINGLE_LINE:
            out.append(RawRecord(ts_ns, pos, [line], kind))
        else:
            self._kind = kind
            self._lines = [line]
            self._bytes = -1
            self._ts = self._last_ts = ts_ns
            self._end = pos
            self._last_now = now
        return out

    def flush_idle(self, now: float) -> RawRecord | None:
        """Close the open record if no line came for `idle_secs` (by `now`); None when nothing closed."""
        if self._kind and now - self._last_now >= self._idle_secs:
            return self._close(False)
        return None

    def flush(self) -> RawRecord | None:
        """Close whatever is open (shutdown, reload, end of stream); None when nothing was open."""
        return self._close(False) if self._kind else None

    def _open(self, ts_ns: int, pos: Position, line: str, kind: str, now: float) -> None:
        self._kind = kind
        self._lines = [line]
        self._bytes = -1  # computed when a continuation line arrives: most records never get one
        self._ts = self._last_ts = ts_ns
        self._end = pos
        self._last_now = now

    def _continue(self, ts_ns: int, pos: Position, line: str, now: float, out: list[RawRecord]) -> None:
        if self._bytes < 0:
            self._bytes = _utf8_len(self._lines[0])
        size = _utf8_len(line)
        blanks = self._blanks
        blank_bytes = sum(_utf8_len(blank) + 1 for blank in blanks) if blanks else 0
        if len(self._lines) + len(blanks) >= self._max_lines or self._bytes + blank_bytes + size + 1 > self._max_bytes:
            out.append(self._close(True))
            # The rest of an over-long record stays together, as a raw record that still takes continuations.
            self._open(ts_ns, pos, line, RAW, now)
            return
        if blanks:
            self._lines.extend(blanks)
            self._bytes += blank_bytes
            self._blanks = []
        self._lines.append(line)
        self._bytes += size + 1
        self._end = pos
        self._last_ts = ts_ns
        self._last_now = now

    def _close(self, capped: bool) -> RawRecord:
        record = RawRecord(self._ts, self._end, self._lines, self._kind, capped)
        self._kind = ""
        if self._blanks:
            self.blanks_skipped += len(self._blanks)
            self._blanks = []
        return record
