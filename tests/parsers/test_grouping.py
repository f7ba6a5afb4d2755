"""Grouping one lane's lines into records: continuations, blank lines, idle and timestamp gaps, caps."""

from __future__ import annotations

from logpipe.parsers import Grouper, RawRecord

S = 10**9
T0 = 1_781_260_000 * S
DIFY = "2026-06-12 10:33:15.004 ERROR [Dummy-22] [base.py:119]  - failed"
DIFY2 = "2026-06-12 10:33:16.000 INFO [Dummy-22] [base.py:120]  - next"
NGINX = '172.18.0.1 - - [12/Jun/2026:10:32:01 +0000] "GET / HTTP/1.1" 200 1 "-" "ua" "-"'
JSON = '{"level":"info","msg":"x","time":"t"}'


class Lane:
    """A grouper fed with positions (ts, ordinal) and a fake clock; 1 ms between lines unless told."""

    def __init__(self, idle_secs: float = 0.5, max_lines: int = 500, max_bytes: int = 262144) -> None:
        self.grouper = Grouper(idle_secs, max_lines, max_bytes)
        self.ts = T0
        self.now = 100.0

    def add(self, line: str, after_ns: int = 1_000_000, after_secs: float = 0.001) -> list[RawRecord]:
        self.ts += after_ns
        self.now += after_secs
        return self.grouper.add(self.ts, (self.ts, 1), line, self.now)

    def pos(self) -> tuple[int, int]:
        return (self.ts, 1)


def test_single_line_formats_close_in_the_same_call() -> None:
    lane = Lane()
    [record] = lane.add(NGINX)
    assert record == RawRecord(lane.ts, lane.pos(), [NGINX], "nginx_access", False)
    [record] = lane.add(JSON)
    assert record.kind == "json"
    assert not lane.grouper.pending


def test_a_continuable_record_stays_open_until_the_next_start() -> None:
    lane = Lane()
    assert lane.add(DIFY) == []
    first_ts = lane.ts
    assert lane.grouper.pending
    assert lane.add("Traceback (most recent call last):") == []
    assert lane.add('  File "x.py", line 1, in f') == []
    assert lane.add("ValueError: bad") == []
    end = lane.pos()
    [record] = lane.add(DIFY2)
    assert record.ts_ns == first_ts
    assert record.end == end
    assert record.lines == [
        DIFY,
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in f',
        "ValueError: bad",
    ]
    assert record.kind == "dify_text"
    assert not record.capped


def test_one_line_can_close_two_records() -> None:
    lane = Lane()
    lane.add(DIFY)
    lane.add("continuation")
    closed, itself = lane.add(NGINX)
    assert closed.lines == [DIFY, "continuation"]
    assert itself.lines == [NGINX]
    assert itself.kind == "nginx_access"
    assert not lane.grouper.pending


def test_blank_lines_inside_are_kept_trailing_ones_dropped_but_counted_in_end() -> None:
    lane = Lane()
    lane.add(DIFY)
    lane.add("Traceback (most recent call last):")
    lane.add("")
    lane.add("During handling of the above exception, another exception occurred:")
    lane.add("")
    lane.add("   ")
    blank_end = lane.pos()
    [record] = lane.add(DIFY2)
    assert record.lines == [
        DIFY,
        "Traceback (most recent call last):",
        "",
        "During handling of the above exception, another exception occurred:",
    ]
    assert record.end == blank_end


def test_blank_lines_with_no_open_record_are_dropped() -> None:
    lane = Lane()
    assert lane.add("") == []
    assert lane.add("\x1b[33;1m\x1b[1;3m") == []
    lane.add(NGINX)
    assert lane.add("") == []
    assert not lane.grouper.pending
    assert lane.grouper.flush() is None


def test_unknown_lines_without_an_open_record_are_raw_records() -> None:
    lane = Lane()
    [one] = lane.add("Running migrations")
    [two] = lane.add("  indented")
    assert (one.kind, one.lines, two.kind, two.lines) == ("raw", ["Running migrations"], "raw", ["  indented"])


def test_a_bare_traceback_starts_a_record_only_when_none_is_open() -> None:
    lane = Lane()
    assert lane.add("Traceback (most recent call last):") == []
    lane.add('  File "x.py", line 1, in f')
    lane.add("KeyError: 'x'")
    record = lane.grouper.flush()
    assert record is not None
    assert record.kind == "traceback"
    assert len(record.lines) == 3


def test_idle_close_by_the_clock() -> None:
    lane = Lane(idle_secs=0.5)
    lane.add(DIFY)
    assert lane.grouper.flush_idle(lane.now + 0.499) is None
    assert lane.grouper.pending
    record = lane.grouper.flush_idle(lane.now + 0.5)
    assert record is not None
    assert record.lines == [DIFY]
    assert not lane.grouper.pending
    assert lane.grouper.flush_idle(lane.now + 10) is None
    # After the idle close, a continuation-looking line is a record of its own.
    [raw] = lane.add("  late continuation", after_secs=10)
    assert raw.kind == "raw"


def test_idle_clock_restarts_with_every_line() -> None:
    lane = Lane(idle_secs=0.5)
    lane.add(DIFY)
    lane.add("more", after_secs=0.4)
    assert lane.grouper.flush_idle(lane.now + 0.3) is None
    record = lane.grouper.flush_idle(lane.now + 0.6)
    assert record is not None
    assert record.lines == [DIFY, "more"]


def test_close_by_docker_timestamp_gap_even_when_read_at_full_speed() -> None:
    lane = Lane(idle_secs=0.5)
    lane.add(DIFY)
    lane.add("Traceback (most recent call last):", after_ns=400_000_000, after_secs=0)
    record, late = lane.add("printed much later", after_ns=600_000_000, after_secs=0)
    assert record.lines == [DIFY, "Traceback (most recent call last):"]
    assert (late.kind, late.lines) == ("raw", ["printed much later"])
    assert not lane.grouper.pending


def test_timestamp_gap_then_a_start_returns_both_records() -> None:
    lane = Lane(idle_secs=0.5)
    lane.add(DIFY)
    closed, itself = lane.add(NGINX, after_ns=2 * S)
    assert closed.lines == [DIFY]
    assert itself.lines == [NGINX]


def test_a_slow_reader_does_not_split_what_docker_stamped_together() -> None:
    lane = Lane(idle_secs=0.5)
    lane.add(DIFY)
    assert lane.add("Traceback (most recent call last):", after_ns=1000, after_secs=5.0) == []
    assert lane.grouper.pending


def test_line_cap_closes_and_continues_in_a_new_raw_record() -> None:
    lane = Lane(max_lines=3)
    lane.add(DIFY)
    lane.add("a")
    lane.add("b")
    [capped] = lane.add("c")
    assert capped.lines == [DIFY, "a", "b"]
    assert capped.capped
    lane.add("d")
    lane.add("e")
    [second] = lane.add("f")
    assert second.lines == ["c", "d", "e"]
    assert second.kind == "raw"
    assert second.capped
    last = lane.grouper.flush()
    assert last is not None
    assert (last.lines, last.capped) == (["f"], False)


def test_blank_lines_count_towards_the_line_cap() -> None:
    lane = Lane(max_lines=3)
    lane.add(DIFY)
    lane.add("")
    lane.add("")
    blank_end = lane.pos()
    [capped] = lane.add("x")
    assert capped.lines == [DIFY]
    assert capped.end == blank_end
    assert capped.capped


def test_byte_cap_counts_utf8_bytes_and_newlines() -> None:
    lane = Lane(max_bytes=20)
    lane.add("Traceback (most recent call last):")  # 34 bytes: alone over the cap, still one record
    [capped] = lane.add("x")
    assert capped.lines == ["Traceback (most recent call last):"]
    assert capped.capped
    lane.add("é" * 4)  # 8 bytes: "x\néééé" is 10
    lane.add("ab" * 4)  # 10 + 1 + 8 = 19
    [capped] = lane.add("y")  # 19 + 2 = 21 > 20
    assert capped.lines == ["x", "é" * 4, "ab" * 4]


def test_a_single_line_over_the_byte_cap_is_one_record() -> None:
    lane = Lane(max_bytes=1024)
    big = '{"message":"' + "x" * 5000 + '"}'
    [record] = lane.add(big)
    assert record.lines == [big]
    assert not record.capped


def test_flush_closes_whatever_is_open() -> None:
    lane = Lane()
    assert lane.grouper.flush() is None
    lane.add(DIFY)
    lane.add("x")
    record = lane.grouper.flush()
    assert record is not None
    assert record.lines == [DIFY, "x"]
    assert lane.grouper.flush() is None
    assert not lane.grouper.pending


def test_gorm_pairs_group_and_the_leading_blank_line_ends_the_previous_record() -> None:
    lane = Lane()
    lane.add("2026-06-12T10:32:01.1Z ERROR dify-plugin-daemon x.go:1 boom")
    lane.add("")
    blank_end = lane.pos()
    [plugin] = lane.add("2026/06/12 10:33:05 /app/internal/db/executor.go:259 record not found")
    assert plugin.lines == ["2026-06-12T10:32:01.1Z ERROR dify-plugin-daemon x.go:1 boom"]
    assert plugin.end == blank_end
    lane.add("[0.342ms] [rows:0] SELECT 1")
    gorm = lane.grouper.flush()
    assert gorm is not None
    assert (gorm.kind, len(gorm.lines)) == ("gorm", 2)


def test_a_timestamp_going_backwards_does_not_close_the_record() -> None:
    lane = Lane(idle_secs=0.5)
    lane.add(DIFY)
    assert lane.add("continuation", after_ns=-3 * S) == []
    record = lane.grouper.flush()
    assert record is not None
    assert record.lines == [DIFY, "continuation"]


def test_blank_lines_not_shipped_are_counted() -> None:
    lane = Lane()
    lane.add("")  # outside any record
    lane.add("   ")
    lane.add(DIFY)
    lane.add("Traceback (most recent call last):")
    lane.add("")  # inside: kept if a continuation follows
    lane.add('  File "x.py", line 1, in <module>')
    lane.add("")  # trailing: dropped when the next record starts
    lane.add("")
    [record] = lane.add(DIFY2)
    assert record.lines[-1] == '  File "x.py", line 1, in <module>'
    assert "" in record.lines
    assert lane.grouper.blanks_skipped == 4
