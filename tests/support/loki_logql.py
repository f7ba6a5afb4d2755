"""The part of LogQL and of Loki's query parameters that a shipper needs to read its own pushes back.

Supported: a stream selector with `=`, `!=`, `=~`, `!~` matchers (regexes fully anchored, as Prometheus does), line
filters `|= != |~ !~`, and label filters `| name="value"` (same four operators) over stream labels and structured
metadata. Not supported (400): parsers (`| json`, `| logfmt`, ...), formatting stages and metric queries.
Time parameters follow `pkg/loghttp`: integers of up to 10 digits are seconds, longer ones nanoseconds, numbers with
a dot float seconds rounded to the millisecond, otherwise RFC3339(Nano). Python's `re` stands in for RE2.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

_TOKEN = re.compile(
    r"""\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<raw>`[^`]*`)|(?P<op>\|=|\|~|!=|!~|=~|=|\||\{|\}|,)"""
    r"""|(?P<ident>[a-zA-Z_][a-zA-Z0-9_]*))"""
)
_GO_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{3}|.)")
_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_DURATION_NS = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9}
_DURATION_NS |= {"w": 7 * _DURATION_NS["d"], "y": 365 * _DURATION_NS["d"]}
_PARSERS = {"json", "logfmt", "regexp", "pattern", "unpack", "line_format", "label_format", "drop", "keep"}
EMPTY_MATCHERS = (
    "queries require at least one regexp or equality matcher that does not have an empty-compatible value. "
    'For instance, app=~".*" does not meet this requirement, but app=~".+" will'
)


class QueryError(Exception):
    """A query Loki answers with 400; the message is the plain-text body."""


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    op: str
    value: str
    regex: re.Pattern[str] | None = None

    def matches(self, value: str) -> bool:
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        found = self.regex.fullmatch(value) is not None  # type: ignore[union-attr]
        return found if self.op == "=~" else not found


@dataclass(frozen=True, slots=True)
class LineFilter:
    op: str
    value: str
    regex: re.Pattern[str] | None = None

    def keeps(self, line: str) -> bool:
        if self.op == "|=":
            return self.value in line
        if self.op == "!=":
            return self.value not in line
        found = self.regex.search(line) is not None  # type: ignore[union-attr]
        return found if self.op == "|~" else not found


@dataclass(frozen=True, slots=True)
class Query:
    matchers: tuple[Matcher, ...]
    line_filters: tuple[LineFilter, ...] = ()
    label_filters: tuple[Matcher, ...] = ()

    def selects(self, labels: Mapping[str, str]) -> bool:
        """Whether a stream with these labels is selected (a missing label matches as the empty string)."""
        return all(m.matches(labels.get(m.name, "")) for m in self.matchers)

    def keeps(self, line: str, labels: Mapping[str, str], metadata: Mapping[str, str]) -> bool:
        if not all(f.keeps(line) for f in self.line_filters):
            return False
        return all(m.matches(metadata.get(m.name, labels.get(m.name, ""))) for m in self.label_filters)


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out, pos = [], 0
    while pos < len(text.rstrip()):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            col = len(text) - len(text[pos:].lstrip()) + 1
            raise QueryError(f"parse error at line 1, col {col}: syntax error: unexpected character")
        kind = match.lastgroup or "op"
        value, col = match.group(kind), match.start(kind) + 1
        if kind == "str":
            kind, value = "string", _GO_ESCAPE.sub(_unescape, value[1:-1])
        elif kind == "raw":
            kind, value = "string", value[1:-1]
        out.append((kind, value, col))
        pos = match.end()
    return out


def _unescape(match: re.Match[str]) -> str:
    code = match.group(1)
    if code[0] in "xuU" and len(code) > 1:
        return chr(int(code[1:], 16))
    if code.isdigit() and len(code) == 3:
        return chr(int(code, 8))
    return _SIMPLE_ESCAPES.get(code, code)


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.pos = 0

    def take(self, kind: str, *values: str) -> str:
        tok = self.toks[self.pos] if self.pos < len(self.toks) else ("end", "end of input", 0)
        if tok[0] != kind or (values and tok[1] not in values):
            raise QueryError(f"parse error at line 1, col {tok[2]}: syntax error: unexpected {tok[1]}")
        self.pos += 1
        return tok[1]

    def peek(self) -> str | None:
        return self.toks[self.pos][1] if self.pos < len(self.toks) else None

    def matcher(self, ops: tuple[str, ...] = ("=", "!=", "=~", "!~")) -> Matcher:
        name = self.take("ident")
        op = self.take("op", *ops)
        value = self.take("string")
        return Matcher(name, op, value, _compile(value) if "~" in op else None)

    def selector(self, ops: tuple[str, ...] = ("=", "!=", "=~", "!~")) -> tuple[Matcher, ...]:
        self.take("op", "{")
        matchers = []
        while self.peek() != "}":
            matchers.append(self.matcher(ops))
            if self.peek() != ",":
                break
            self.take("op", ",")
        self.take("op", "}")
        return tuple(matchers)


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise QueryError(f"error parsing regexp: {exc}: `{pattern}`") from None


def parse_query(text: str) -> Query:
    """Parse a log query; raises `QueryError` with a 400 message for anything else."""
    if text.lstrip()[:1] != "{":
        raise QueryError("logpipe's test Loki serves log queries only (a stream selector and filters), got: " + text)
    parser = _Parser(text)
    matchers = parser.selector()
    line_filters, label_filters = [], []
    while parser.peek() is not None:
        op = parser.take("op", "|=", "!=", "|~", "!~", "|")
        if op != "|":
            value = parser.take("string")
            line_filters.append(LineFilter(op, value, _compile(value) if "~" in op else None))
        elif parser.peek() in _PARSERS:
            raise QueryError(f"logpipe's test Loki does not support the `{parser.peek()}` stage")
        else:
            label_filters.append(parser.matcher())
    if all(m.matches("") for m in matchers):
        raise QueryError(EMPTY_MATCHERS)
    return Query(matchers, tuple(line_filters), tuple(label_filters))


def parse_label_string(text: str) -> dict[str, str]:
    """`syntax.ParseLabels` for the protobuf path: `{a="b", c="d"}` into a dict."""
    return {m.name: m.value for m in _Parser(text).selector(("=",))}


def parse_time(value: str | None, default_ns: int) -> int:
    """A `start`/`end`/`time` parameter in nanoseconds (see the module docstring for the accepted forms)."""
    if not value:
        return default_ns
    if "." in value:
        try:
            seconds = float(value)
        except ValueError:
            pass
        else:
            frac, whole = math.modf(seconds)
            return int(whole) * 10**9 + round(frac * 1000) * 10**6
    if re.fullmatch(r"[+-]?\d+", value):
        number = int(value)
        return number * 10**9 if len(value) <= 10 else number
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise QueryError(f'cannot parse "{value}" to a valid timestamp')
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    whole_seconds = int(dt.datetime.fromisoformat(match.group(1) + zone).timestamp())
    return whole_seconds * 10**9 + int((match.group(2) or "0").ljust(9, "0"))


def parse_duration(value: str) -> int:
    """A Prometheus duration (`90s`, `1h30m`) in nanoseconds."""
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise QueryError(f'cannot parse "{value}" to a valid duration')
    return sum(int(n) * _DURATION_NS[u] for n, u in parts)
