"""A small PromQL parser, to ask of a dashboard query or rule which shipper's series it can return, and with
which labels.

It reads the PromQL the dashboards and rules here are written in (selectors, ranges, offsets, functions,
aggregations with `by`/`without`, binary operators with `bool`/`on`/`ignoring`/`group_*`), and is run only on
expressions promtool has accepted. `Series` says which metric names a shipper serves and their label names;
`returns_data()` and `result_labels()` answer per shipper, and `problems()` lists the label names an expression
uses that the series it reads do not have.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

#: Labels Prometheus adds to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})
#: Labels every series carries in a central Prometheus of many hosts (docs/fleet.md): `host`, from the host's
#: Prometheus agent (external_labels) or the central scrape config (per target). On a single host they are absent,
#: which PromQL treats as the empty value: grouping by them is harmless there, and the rules' texts allow for it.
FLEET_LABELS = frozenset({"host"})

AGGREGATIONS = frozenset(
    {"sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values"}
)
#: Functions whose result has the labels of their (last vector) argument.
_KEEP_LABELS = frozenset(
    {
        "rate", "irate", "increase", "delta", "idelta", "deriv", "abs", "ceil", "floor", "round", "clamp",
        "clamp_min", "clamp_max", "sort", "sort_desc", "sum_over_time", "avg_over_time", "max_over_time",
        "min_over_time", "count_over_time", "last_over_time", "resets", "changes", "exp", "ln", "sqrt",
    }
)  # fmt: skip

_TOKEN = re.compile(
    r"""\s*(?:
    (?P<num>\d+(?:\.\d+)?(?:e[+-]?\d+)?(?![\w:])|0x[0-9a-f]+)
   |(?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
   |(?P<range>\[[^\]]*\])
   |(?P<op>==|!=|>=|<=|=~|!~|[-+*/%^<>=(),{}])
   |(?P<ident>[a-zA-Z_:][\w:]*)
    )""",
    re.VERBOSE,
)
_PRECEDENCE = [("or",), ("and", "unless"), ("==", "!=", ">", "<", ">=", "<="), ("+", "-"), ("*", "/", "%"), ("^",)]


@dataclass(frozen=True)
class Selector:
    name: str
    matchers: tuple[tuple[str, str, str], ...]  # (label, op, value)


@dataclass(frozen=True)
class Literal:
    value: str


@dataclass
class Call:
    fn: str
    args: list[Node]


@dataclass
class Aggregation:
    op: str
    args: list[Node]
    grouping: tuple[str, ...] | None = None
    without: bool = False


@dataclass
class Binary:
    op: str
    lhs: Node
    rhs: Node
    on: tuple[str, ...] | None = None
    ignoring: tuple[str, ...] | None = None


Node = Selector | Literal | Call | Aggregation | Binary


class ParseError(ValueError):
    pass


def _tokens(text: str) -> list[tuple[str, str]]:
    out = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise ParseError(f"cannot read {text[pos : pos + 20]!r} in {text!r}")
        kind = match.lastgroup
        assert kind is not None
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.pos = 0

    def peek(self, offset: int = 0) -> tuple[str, str]:
        index = self.pos + offset
        return self.tokens[index] if index < len(self.tokens) else ("end", "")

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if value is not None and token[1] != value:
            raise ParseError(f"expected {value!r}, got {token[1]!r} in {self.text!r}")
        self.pos += 1
        return token

    def parse(self) -> Node:
        node = self.expr(0)
        if self.peek()[0] != "end":
            raise ParseError(f"unexpected {self.peek()[1]!r} in {self.text!r}")
        return node

    def expr(self, level: int) -> Node:
        if level == len(_PRECEDENCE):
            return self.unary()
        node = self.expr(level + 1)
        while self.peek()[1] in _PRECEDENCE[level]:
            op = self.take()[1]
            on = ignoring = None
            if self.peek()[1] == "bool":
                self.take()
            if self.peek()[1] in ("on", "ignoring"):
                kind = self.take()[1]
                labels = self.label_list()
                on, ignoring = (labels, None) if kind == "on" else (None, labels)
            if self.peek()[1] in ("group_left", "group_right"):
                self.take()
                if self.peek()[1] == "(":
                    self.label_list()
            rhs = self.expr(level + 1 if op != "^" else level)
            node = Binary(op, node, rhs, on, ignoring)
        return node

    def unary(self) -> Node:
        if self.peek()[1] in ("-", "+"):
            self.take()
            return Binary("*", Literal("-1"), self.unary())
        node = self.primary()
        while True:
            if self.peek()[0] == "range":
                self.take()
            elif self.peek()[1] == "offset":
                self.take()
                self.take()
            else:
                return node

    def label_list(self) -> tuple[str, ...]:
        self.take("(")
        labels = []
        while self.peek()[1] != ")":
            labels.append(self.take()[1])
            if self.peek()[1] == ",":
                self.take()
        self.take(")")
        return tuple(labels)

    def args(self) -> list[Node]:
        self.take("(")
        args = []
        while self.peek()[1] != ")":
            args.append(self.expr(0))
            if self.peek()[1] == ",":
                self.take()
        self.take(")")
        return args

    def matchers(self) -> tuple[tuple[str, str, str], ...]:
        self.take("{")
        found = []
        while self.peek()[1] != "}":
            label = self.take()[1]
            op = self.take()[1]
            value = self.take()[1][1:-1]
            found.append((label, op, value))
            if self.peek()[1] == ",":
                self.take()
        self.take("}")
        return tuple(found)

    def primary(self) -> Node:
        kind, value = self.peek()
        if value == "(":
            self.take()
            node = self.expr(0)
            self.take(")")
            return node
        if kind in ("num", "str"):
            self.take()
            return Literal(value)
        if value == "{":
            return Selector("", self.matchers())
        if kind != "ident":
            raise ParseError(f"unexpected {value!r} in {self.text!r}")
        self.take()
        if value in AGGREGATIONS:
            grouping, without = None, False
            if self.peek()[1] in ("by", "without"):
                without = self.take()[1] == "without"
                grouping = self.label_list()
            args = self.args()
            if self.peek()[1] in ("by", "without"):
                without = self.take()[1] == "without"
                grouping = self.label_list()
            return Aggregation(value, args, grouping, without)
        if self.peek()[1] == "(":
            return Call(value, self.args())
        if value in ("inf", "nan", "Inf", "NaN"):
            return Literal(value)
        return Selector(value, self.matchers() if self.peek()[1] == "{" else ())


def parse(expr: str) -> Node:
    return _Parser(expr).parse()


@dataclass
class Series:
    """What one shipper serves: metric name -> label names (None: not checked), and its scrape job."""

    job: str
    labels: Mapping[str, frozenset[str] | None]


@dataclass
class _Result:
    data: bool
    labels: frozenset[str] | None  # None: unknown (not checked)
    problems: list[str] = field(default_factory=list)


def _selector(node: Selector, series: Series) -> _Result:
    if node.name not in series.labels:
        return _Result(False, frozenset())
    for label, op, value in node.matchers:
        if label == "job" and not _matches(op, value, series.job):
            return _Result(False, frozenset())
    known = series.labels[node.name]
    if known is None:
        return _Result(True, None)
    labels = known | TARGET_LABELS | FLEET_LABELS
    problems = [f"{node.name} has no label {label!r}" for label, _, _ in node.matchers if label not in labels]
    return _Result(True, labels, problems)


def _matches(op: str, value: str, text: str) -> bool:
    if op in ("=", "!="):
        return (text == value) == (op == "=")
    return (re.fullmatch(value, text) is not None) == (op == "=~")


def _eval(node: Node, series: Series) -> _Result:
    if isinstance(node, Literal):
        return _Result(True, frozenset())
    if isinstance(node, Selector):
        return _selector(node, series)
    if isinstance(node, Aggregation):
        inner = [_eval(a, series) for a in node.args]
        vector = inner[-1]
        problems = [p for r in inner for p in r.problems]
        if node.grouping is None:
            labels: frozenset[str] | None = frozenset()
        elif node.without:
            labels = None if vector.labels is None else vector.labels - set(node.grouping)
        else:
            labels = frozenset(node.grouping)
            if vector.data and vector.labels is not None:
                missing = labels - vector.labels
                if missing:
                    problems.append(f"{node.op} by {sorted(missing)}: not a label of what it aggregates")
        if node.op in ("topk", "bottomk"):
            labels = vector.labels
        return _Result(vector.data, labels, problems)
    if isinstance(node, Call):
        inner = [_eval(a, series) for a in node.args]
        problems = [p for r in inner for p in r.problems]
        vectors = [r for a, r in zip(node.args, inner, strict=True) if not isinstance(a, Literal)]
        data = all(r.data for r in vectors)
        if node.fn in ("vector", "time", "scalar"):
            return _Result(True, frozenset(), problems)
        if node.fn == "absent":
            return _Result(True, frozenset(), problems)
        if not vectors:
            raise ParseError(f"{node.fn}() without a vector argument")
        labels = vectors[-1].labels
        if node.fn == "histogram_quantile":
            if data and labels is not None and "le" not in labels:
                problems.append("histogram_quantile over series without an le label")
            labels = None if labels is None else labels - {"le"}
        elif node.fn == "label_replace":
            dst = node.args[1]
            assert isinstance(dst, Literal)
            labels = None if labels is None else labels | {dst.value[1:-1]}
        elif node.fn not in _KEEP_LABELS:
            raise ParseError(f"function {node.fn} is not modelled in tests/stack/promql.py")
        return _Result(data, labels, problems)
    lhs, rhs = _eval(node.lhs, series), _eval(node.rhs, series)
    problems = lhs.problems + rhs.problems
    if node.op == "or":
        if lhs.data and rhs.data:
            both = None if lhs.labels is None or rhs.labels is None else lhs.labels | rhs.labels
            return _Result(True, both, problems)
        return _Result(lhs.data or rhs.data, lhs.labels if lhs.data else rhs.labels, problems)
    if node.op == "unless":
        return _Result(lhs.data, lhs.labels, problems)
    for side in (lhs, rhs):
        if node.on and side.data and side.labels:
            missing = set(node.on) - side.labels
            if missing:
                problems.append(f"on({', '.join(node.on)}): {sorted(missing)} missing on one side")
    return _Result(lhs.data and rhs.data, lhs.labels if lhs.labels else rhs.labels, problems)


def returns_data(expr: str, series: Series) -> bool:
    """Whether the expression can return anything when only `series` exist."""
    return _eval(parse(expr), series).data


def result_labels(expr: str, series: Series) -> frozenset[str] | None:
    """The label names of the expression's result under `series` (None where not checked)."""
    return _eval(parse(expr), series).labels


def problems(expr: str, series: Series) -> list[str]:
    """Label names the expression selects or groups by that the series it reads do not carry."""
    return _eval(parse(expr), series).problems


def metric_names(expr: str) -> Iterator[str]:
    def walk(node: Node) -> Iterator[str]:
        if isinstance(node, Selector):
            yield node.name
        elif isinstance(node, (Call, Aggregation)):
            for arg in node.args:
                yield from walk(arg)
        elif isinstance(node, Binary):
            yield from walk(node.lhs)
            yield from walk(node.rhs)

    return walk(parse(expr))
