"""Hostile input: the grouper and the parser never raise, never lose or reorder a line, keep their caps."""

from __future__ import annotations

import re
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logpipe.config import JsonMapping, PipelineConfig
from logpipe.event import LEVELS, TASK_STATES, TIMEOUT_KINDS, Event
from logpipe.parsers import FORMATS, Parser, RawRecord
from logpipe.parsers.extract import _JSON_READERS, _TEXT_READERS
from tests.parsers.helpers import fixture_lines

# Independent of the implementation's own definition: CSI/OSC/two-character escapes, then whitespace.
_TEST_ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)?|[@-Z\\-_])")


def visible(line: str) -> bool:
    return bool(_TEST_ANSI.sub("", line).strip())


SAMPLES = [
    line
    for name in ("api_text.log", "worker_text.log", "plugin_daemon_text.log", "nginx_access.log", "hostile.log")
    for line in fixture_lines(name)
    if len(line) < 2000
]
FRAGMENTS = [
    "{",
    "}",
    "[",
    "]",
    '"',
    "\\",
    ":",
    ",",
    " ",
    "\t",
    "\x00",
    "\ufffd",
    "\x1b[31m",
    "\x1b[0m",
    "\x1b]0;t\x07",
    "\x1b",
    "Traceback (most recent call last):",
    "2026-06-12 10:32:01.117 INFO [a] [b.py:1]  - ",
    "[on_llm_after_invoke]",
    "Usage: prompt_tokens=",
    "Model: ",
    "2026/06/12 10:33:05 /a.go:1 ",
    "[0.1ms] [rows:1] ",
    "WORKER TIMEOUT",
    '{"a":',
    '{"a":1,"a":2}',
    "1" * 400,
    "1e999999",
    "-" * 14 + " celery@h v5",
    "req_id: 0123456789",
    ' k="v\\"',
    "=",
    '{"severity":"INFO","service":"dify-plugin-daemon","message":"HTTP request","attributes":{"status":"x"}}',
    '{"ts":"t","severity":"INFO","service":"langgenius/dify","caller":"c","message":',
    "2026-06-12T10:32:01Z INFO dify-plugin-daemon m.go:1 HTTP request status=",
    "nan",
    "1e999",
    " latency_ms=",
    "Task t[1] succeeded in 1.2.3s: ",
    "[GIN] 2026/06/12 - 10:33:00 | 200 | ",
    'ms | 1.2.3.4 | GET "/x"',
]


def _nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


lines_strategy = st.one_of(
    st.sampled_from(SAMPLES),
    st.text(alphabet=st.characters(blacklist_characters="\n"), max_size=80),
    st.lists(st.sampled_from(FRAGMENTS), max_size=6).map("".join),
    st.tuples(st.sampled_from(SAMPLES), st.integers(0, 200)).map(lambda pair: pair[0][: pair[1]]),
    st.integers(1, 3000).map(_nested),
    st.sampled_from(["", " ", "\x1b[33;1m\x1b[1;3m"]),
)


@dataclass
class Step:
    line: str
    after_ns: int
    after_secs: float
    idle_check: bool


steps_strategy = st.lists(
    st.builds(
        Step,
        line=lines_strategy,
        after_ns=st.sampled_from([0, 0, 1_000, 1_000_000, 300_000_000, 2_000_000_000]),
        after_secs=st.sampled_from([0.0, 0.001, 0.3, 1.0]),
        idle_check=st.booleans(),
    ),
    max_size=60,
)


def run(steps: list[Step], config: PipelineConfig) -> tuple[list[RawRecord], list[tuple[int, int]]]:
    grouper = Parser(config).grouper()
    records: list[RawRecord] = []
    positions: list[tuple[int, int]] = []
    ts, ordinal, now = 1_781_260_000 * 10**9, 0, 1000.0
    for step in steps:
        new_ts = ts + step.after_ns
        ordinal = ordinal + 1 if new_ts == ts else 1
        ts, now = new_ts, now + step.after_secs
        positions.append((ts, ordinal))
        closed = grouper.add(ts, (ts, ordinal), step.line, now)
        assert len(closed) <= 2
        records.extend(closed)
        if step.idle_check:
            idle = grouper.flush_idle(now)
            if idle is not None:
                records.append(idle)
        assert grouper.pending in (True, False)
    last = grouper.flush()
    if last is not None:
        records.append(last)
    assert not grouper.pending
    return records, positions


def check_event(event: Event, record: RawRecord, strip_ansi: bool = True) -> None:
    assert event.format in FORMATS
    assert event.level in LEVELS
    assert event.timeout_kind is None or event.timeout_kind in TIMEOUT_KINDS
    assert event.task_state is None or event.task_state in TASK_STATES
    assert event.lines == len(record.lines)
    assert event.truncated == record.capped
    assert event.ts_ns == record.ts_ns
    joined = "\n".join(record.lines)
    if strip_ansi:
        assert "\x1b" not in event.text or "\x1b" in _TEST_ANSI.sub("", joined)
    else:
        assert event.text == joined
    if event.error_type is not None:
        assert re.fullmatch(r"[A-Za-z_][\w.]{0,99}", event.error_type)
    if event.http_path is not None:
        assert "?" not in event.http_path


config_strategy = st.builds(
    PipelineConfig,
    group_idle_secs=st.sampled_from([0.5, 0.05]),
    group_max_lines=st.sampled_from([500, 3, 1]),
    group_max_bytes=st.sampled_from([262144, 120]),
    strip_ansi=st.booleans(),
    json_mappings=st.sampled_from(
        [(), (JsonMapping(fields={"prompt_tokens": "a", "model": "a.a", "cost": "msg"}, match={"a": "*"}),)]
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps_strategy, config=config_strategy)
def test_grouper_and_parser_never_raise_lose_or_reorder(steps: list[Step], config: PipelineConfig) -> None:
    records, positions = run(steps, config)

    # Nothing lost, nothing reordered: only blank lines may disappear.
    grouped = [line for record in records for line in record.lines]
    assert [line for line in grouped if visible(line)] == [step.line for step in steps if visible(step.line)]
    # Blank lines that stay are inside a record, never at its end.
    for record in records:
        assert record.lines
        assert visible(record.lines[0])
        assert visible(record.lines[-1])

    # Records close in order, each at the position of the last line it consumed.
    ends = [record.end for record in records]
    assert ends == sorted(ends)
    assert len(set(ends)) == len(ends)
    assert set(ends) <= set(positions)

    # Caps hold, except for a record of one line (a single line is never split).
    for record in records:
        size = len("\n".join(record.lines).encode("utf-8", "surrogatepass"))
        if len(record.lines) > 1:
            assert len(record.lines) <= config.group_max_lines
            assert size <= config.group_max_bytes

    errors: list[str] = []
    parser = Parser(config, errors.append)
    for record in records:
        check_event(parser.parse(record, "api", "docker-api-1", "stdout"), record, config.strip_ansi)
    assert set(errors) <= set(FORMATS)


@settings(max_examples=300, deadline=None)
@given(line=lines_strategy, kind=st.sampled_from([*FORMATS, "bogus"]), extra=st.lists(lines_strategy, max_size=3))
def test_parse_never_raises_whatever_the_kind_claims(line: str, kind: str, extra: list[str]) -> None:
    record = RawRecord(1, (1, 1), [line, *extra], kind, False)
    event = Parser(PipelineConfig(), lambda family: None).parse(record, "svc", "c", "stderr")
    check_event(event, record)


PREFIXES = {
    "dify_text": "2026-06-12 10:32:01.117 INFO [a] [ext_request_logging.py:1] ",
    "celery_text": "[2024-08-23 06:54:18,106: INFO/MainProcess] ",
    "gunicorn": "[2026-06-12 10:40:12 +0000] [1] [ERROR] ",
    "celery_banner": " -------------- celery@h v5 ",
    "plugin_text": "2026-06-12T10:32:01Z INFO dify-plugin-daemon m.go:1 ",
    "gorm": "2026/06/12 10:33:05 /a/b.go:1 ",
    "go_log": "2025/08/26 08:22:33 pool.go:32: ",
    "gin": "[GIN] 2026/06/12 - 10:33:00 | ",
    "nginx_access": '1.2.3.4 - - [12/Jun/2026:10:32:01 +0000] "',
    "nginx_error": "2026/06/12 11:33:20 [error] 1#1: ",
    "squid": "1781260380.402  ",
    "postgres": "2026-06-12 10:40:01.456 UTC [88] ",
    "redis": "1:M 12 Jun 2026 10:31:20.321 ",
    "llm_debug": "[on_llm_after_invoke]\n",
}
tails = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=20)), max_size=8).map("".join)


@settings(max_examples=400, deadline=None)
@given(kind=st.sampled_from(sorted(PREFIXES)), tail=tails, more=st.lists(tails, max_size=2))
def test_text_readers_never_raise(kind: str, tail: str, more: list[str]) -> None:
    text = "\n".join([PREFIXES[kind] + tail, *more])
    event = Event(1, text)
    assert _TEXT_READERS[kind](event, text) in (True, False)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)
KNOWN_KEYS = [
    "ts",
    "severity",
    "service",
    "caller",
    "message",
    "trace_id",
    "span_id",
    "identity",
    "attributes",
    "stack_trace",
    "context",
    "time",
    "level",
    "msg",
    "status",
    "latency_ms",
    "method",
    "path",
    "error_type",
    "tenant_id",
    "user_id",
]


@settings(max_examples=400, deadline=None)
@given(
    obj=st.dictionaries(st.sampled_from(KNOWN_KEYS), json_values, max_size=10),
    service=st.sampled_from(["langgenius/dify", "dify-plugin-daemon", None]),
    family=st.sampled_from(["dify_json", "plugin_json", "sandbox_json", "weaviate_json", "json"]),
)
def test_json_readers_never_raise(obj: dict[str, object], service: str | None, family: str) -> None:
    if service is not None:
        obj["service"] = service
    event = Event(1, "{}")
    _JSON_READERS[family](event, obj, repr(obj))
    assert event.level in LEVELS
