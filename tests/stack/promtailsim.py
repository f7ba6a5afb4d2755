"""A model of Promtail 3.6's pipeline stages, to check promtail/promtail.yaml without a Promtail binary.

Two views of one pipeline:

- `analyse()` walks the stages once and tracks which labels and extracted keys can exist at each point. It
  reports what can never work: a `match` selector on a label that is not set there (the selector then sees ""),
  a metric whose source no earlier stage extracts (it never counts), a stage nothing can reach, a `labels`,
  `labeldrop`, `template` or `structured_metadata` stage that refers to nothing.
- `Pipeline.run()` replays one record through the stages and records the metric samples it would produce.

The semantics were read from grafana/loki's source (v3.x, clients/pkg/logentry/):
- stages/pipeline.go: every pipeline, a match stage's nested one included, copies the entry's labels into the
  extracted map when the entry enters it.
- stages/match.go: the selector's matchers see the entry's labels only (a missing label is ""), the line filters
  see the line; entries that do not match skip the nested stages; `action: drop` drops the matching entries.
- stages/regex.go: a match sets every named group, "" for a group that took no part; no match changes nothing.
- stages/json.go: a line that is not a JSON object changes nothing; a JMESPath result is kept as it is (numbers
  as floats, null as nil).
- stages/template.go: the template sees the extracted values as strings, `.Value` (the source's) and `.Entry`;
  an empty result deletes the source key; an execution error changes nothing.
- stages/labels.go, labeldrop.go, structuredmetadata.go: labels come from extracted keys that exist.
- stages/metrics.go: a metric's `source` defaults to the metric's own name; a counter with `match_all: true`
  counts every entry reaching it, any other metric only entries whose extracted map has its source; `inc`
  ignores the value, `add` and histograms parse it as a float or, failing that, a Go duration in seconds.
- logentry/metric/metricvec.go: a series' labels are the entry's labels at that stage, minus names starting
  with "__".
Records are fed whole: the multiline stage is not modelled (tests/stack/test_promtail.py checks its regex).
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import yaml

from tests.stack import gotemplate

ALWAYS = "always"
MAYBE = "maybe"

#: Stage types whose effect on labels and extracted keys is modelled (anything else is reported).
NO_OP_STAGES = frozenset({"decolorize", "multiline", "timestamp", "output", "limit", "sampling"})

_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_LINE_FILTER = re.compile(r'(\|=|!=|\|~|!~)\s*(?:"((?:[^"\\]|\\.)*)"|`([^`]*)`)')
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_GO_DURATION = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


# --- selectors ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str
    value: str

    def matches(self, label: str) -> bool:
        if self.op in ("=", "!="):
            return (label == self.value) == (self.op == "=")
        # Label regex matchers are anchored at both ends (Prometheus' FastRegexMatcher).
        found = re.fullmatch(self.value, label, re.ASCII | re.DOTALL) is not None
        return found == (self.op == "=~")


@dataclass(frozen=True)
class Selector:
    matchers: tuple[Matcher, ...]
    line_filters: tuple[tuple[str, str], ...]

    def matches(self, labels: dict[str, str], line: str) -> bool:
        if not all(m.matches(labels.get(m.name, "")) for m in self.matchers):
            return False
        for op, value in self.line_filters:
            found = value in line if op in ("|=", "!=") else re.search(value, line, re.ASCII) is not None
            if found != (op in ("|=", "|~")):
                return False
        return True


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def parse_selector(text: str) -> Selector:
    """A match stage's LogQL selector: `{name op "value", ...}` and line filters (`|=`, `!=`, `|~`, `!~`)."""
    match = re.fullmatch(r"\s*\{(.*?)\}(.*)", text, re.DOTALL)
    if match is None:
        raise ValueError(f"not a selector: {text!r}")
    body, rest = match.groups()
    matchers = tuple(Matcher(n, op, _unquote(v)) for n, op, v in _MATCHER.findall(body))
    if not matchers or _MATCHER.sub("", body).replace(",", "").strip():
        raise ValueError(f"cannot read the matchers of {text!r}")
    filters = tuple((op, _unquote(q) if q or not raw else raw) for op, q, raw in _LINE_FILTER.findall(rest))
    if _LINE_FILTER.sub("", rest).strip():
        raise ValueError(f"cannot read the line filters of {text!r}")
    return Selector(matchers, filters)


# --- values as Promtail converts them ----------------------------------------------------------------------


def go_string(value: Any) -> str | None:
    """stages/util.go getString: None where Promtail cannot convert."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):  # strconv.FormatFloat(f, 'f', -1, 64): shortest, never an exponent
        if math.isinf(value) or math.isnan(value):
            return {"inf": "+Inf", "-inf": "-Inf"}.get(repr(value), "NaN")
        text = format(Decimal(repr(value)), "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    if isinstance(value, int):
        return str(value)
    return None


def go_duration_seconds(text: str) -> float | None:
    """time.ParseDuration, in seconds."""
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if body == "0":
        return 0.0
    total, pos = 0.0, 0
    for match in _GO_DURATION.finditer(body):
        number = match.group(1)
        if match.start() != pos or number in ("", "."):
            return None
        total += float(number) * _GO_UNITS[match.group(2)]
        pos = match.end()
    return sign * total if pos and pos == len(body) else None


def go_float(value: Any) -> float | None:
    """stages/metrics.go getFloat: a number, or a Go duration in seconds; None where Promtail gives up."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return go_duration_seconds(value)
    return None


def _jmespath(expression: str, data: dict[str, Any]) -> Any:
    """The JMESPath subset the config uses: identifiers, dotted paths, `a || b`."""
    value: Any = None
    for alternative in expression.split("||"):
        value = data
        for part in alternative.strip().split("."):
            if not re.fullmatch(r"[A-Za-z_]\w*", part):
                raise NotImplementedError(f"JMESPath {expression!r}")
            value = value.get(part) if isinstance(value, dict) else None
        if value not in (None, "", [], {}, False):
            return value
    return value


def _regex(expression: str) -> re.Pattern[str]:
    # RE2's \d, \w, \s and \b are ASCII-only.
    return re.compile(expression, re.ASCII)


# --- replay -------------------------------------------------------------------------------------------------


@dataclass
class Entry:
    labels: dict[str, str]
    line: str
    extracted: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    dropped: bool = False


@dataclass
class Registry:
    """Samples the metrics stages produced: counters and histogram observations, by name and label set."""

    counters: dict[str, dict[frozenset[tuple[str, str]], float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float))
    )
    observations: dict[str, dict[frozenset[tuple[str, str]], list[float]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )

    def label_names(self, name: str) -> set[frozenset[str]]:
        series = {**self.counters.get(name, {}), **self.observations.get(name, {})}
        return {frozenset(k for k, _ in labels) for labels in series}

    def total(self, name: str, **match: str) -> float:
        """Sum of a counter over the series whose labels include `match`."""
        return sum(v for labels, v in self.counters.get(name, {}).items() if set(match.items()) <= labels)

    def by(self, name: str, *labels: str) -> dict[tuple[str, ...], float]:
        """A counter summed by the given labels, as `sum by (...)` would."""
        out: dict[tuple[str, ...], float] = defaultdict(float)
        for series, value in self.counters.get(name, {}).items():
            values = dict(series)
            out[tuple(values.get(label, "") for label in labels)] += value
        return dict(out)

    def observed(self, name: str, **match: str) -> list[float]:
        return [
            v
            for labels, values in self.observations.get(name, {}).items()
            if set(match.items()) <= labels
            for v in values
        ]


class Pipeline:
    """The stages of one scrape config, replayed on records."""

    def __init__(self, stages: list[dict[str, Any]]) -> None:
        self.stages = stages
        self.registry = Registry()

    def run(self, labels: dict[str, str], line: str) -> Entry:
        """Push one record, with the labels relabel_configs gave it, through the pipeline."""
        entry = Entry(dict(labels), line)
        self._run(self.stages, entry)
        return entry

    def _run(self, stages: list[dict[str, Any]], entry: Entry) -> None:
        entry.extracted.update(entry.labels)  # pipeline.go Run
        for stage in stages:
            if entry.dropped:
                return
            ((kind, cfg),) = stage.items()
            getattr(self, f"_{kind}")(cfg or {}, entry)

    # Stage types, named as in the YAML.
    def _decolorize(self, cfg: dict[str, Any], entry: Entry) -> None:
        entry.line = _ANSI.sub("", entry.line)

    def _multiline(self, cfg: dict[str, Any], entry: Entry) -> None:
        pass  # records are fed whole

    def _json(self, cfg: dict[str, Any], entry: Entry) -> None:
        text = self._source(cfg, entry)
        if text is None:
            return
        try:
            data = json.loads(text)
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        for name, expression in cfg["expressions"].items():
            value = _jmespath(expression or name, data)
            if isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            elif isinstance(value, (dict, list)):
                value = json.dumps(value, separators=(",", ":"))
            entry.extracted[name] = value

    def _regex(self, cfg: dict[str, Any], entry: Entry) -> None:
        text = self._source(cfg, entry)
        if text is None:
            return
        match = _regex(cfg["expression"]).search(text)
        if match is not None:
            entry.extracted.update({k: v or "" for k, v in match.groupdict().items()})

    def _source(self, cfg: dict[str, Any], entry: Entry) -> str | None:
        if "source" not in cfg:
            return entry.line
        return go_string(entry.extracted.get(cfg["source"]))

    def _template(self, cfg: dict[str, Any], entry: Entry) -> None:
        source = cfg["source"]
        data: dict[str, Any] = {}
        for key, value in entry.extracted.items():
            text = go_string(value)
            if text is not None:
                data[key] = text
                if key == source:
                    data["Value"] = text
        data["Entry"] = entry.line
        try:
            out = gotemplate.execute(cfg["template"], data)
        except gotemplate.TemplateError:
            return
        if out:
            entry.extracted[source] = out
        else:
            entry.extracted.pop(source, None)

    def _labels(self, cfg: dict[str, Any], entry: Entry) -> None:
        entry.labels.update(_from_extracted(cfg, entry.extracted))

    def _structured_metadata(self, cfg: dict[str, Any], entry: Entry) -> None:
        entry.metadata.update(_from_extracted(cfg, entry.extracted))

    def _labeldrop(self, cfg: list[str], entry: Entry) -> None:
        for name in cfg:
            entry.labels.pop(name, None)

    def _match(self, cfg: dict[str, Any], entry: Entry) -> None:
        if not parse_selector(cfg["selector"]).matches(entry.labels, entry.line):
            return
        if cfg.get("action", "keep") == "drop":
            entry.dropped = True
        else:
            self._run(cfg["stages"], entry)

    def _drop(self, cfg: dict[str, Any], entry: Entry) -> None:
        # drop.go shouldDrop: every condition given must hold.
        if "older_than" in cfg:
            raise NotImplementedError("drop older_than: timestamps are not modelled")
        if "longer_than" in cfg and len(entry.line.encode()) <= _bytes(cfg["longer_than"]):
            return
        if "source" in cfg:
            if cfg["source"] not in entry.extracted:
                return
            value = entry.extracted[cfg["source"]]
            if "value" in cfg and "expression" not in cfg and value != cfg["value"]:
                return
        if "expression" in cfg:
            text = go_string(entry.extracted[cfg["source"]]) if "source" in cfg else entry.line
            if text is None or _regex(cfg["expression"]).search(text) is None:
                return
        entry.dropped = True

    def _metrics(self, cfg: dict[str, Any], entry: Entry) -> None:
        labels = frozenset((k, v) for k, v in entry.labels.items() if not k.startswith("__"))
        for name, metric in cfg.items():
            full = metric.get("prefix") or "promtail_custom_"
            full += name
            kind = metric["type"].lower()
            config = metric.get("config") or {}
            if kind == "counter" and config.get("match_all"):
                step = float(len(entry.line)) if config.get("count_entry_bytes") else 1.0
                self.registry.counters[full][labels] += step
                continue
            source = metric.get("source", name)
            if source not in entry.extracted:
                continue
            value = entry.extracted[source]
            if "value" in config and go_string(value) != config["value"]:
                continue
            if kind == "counter":
                if config["action"] == "inc":
                    self.registry.counters[full][labels] += 1.0
                    continue
                number = go_float(value)
                if number is None or math.isnan(number):
                    continue
                if number < 0:
                    raise AssertionError(f"{full}: Add({number}) panics in client_golang")
                self.registry.counters[full][labels] += number
            elif kind == "histogram":
                number = go_float(value)
                if number is not None:
                    self.registry.observations[full][labels].append(number)
            else:
                raise NotImplementedError(f"metric type {kind}")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") and name[1:] in NO_OP_STAGES:
            return lambda cfg, entry: None
        raise NotImplementedError(f"stage {name[1:]} is not modelled in tests/stack/promtailsim.py")


def _bytes(text: str | int) -> int:
    """dskit's flagext.ByteSize: a number with an optional KB/MB/GB (powers of 1024) unit."""
    match = re.fullmatch(r"(\d+)\s*([KMG]i?B?)?", str(text).strip(), re.IGNORECASE)
    if match is None:
        raise ValueError(f"byte size {text!r}")
    unit = (match.group(2) or "").upper()[:1]
    return int(match.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[unit]


def _from_extracted(cfg: dict[str, str | None], extracted: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for name, source in cfg.items():
        if (source or name) in extracted:
            text = go_string(extracted[source or name])
            if text is not None:
                yield name, text


# --- static analysis ----------------------------------------------------------------------------------------


@dataclass
class State:
    labels: dict[str, str]  # name -> ALWAYS | MAYBE
    extracted: dict[str, str]
    reachable: bool = True


@dataclass(frozen=True)
class Finding:
    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


@dataclass(frozen=True)
class MetricSite:
    """One metrics-stage definition: where it is and which labels its series can carry."""

    path: str
    name: str
    kind: str
    always: frozenset[str]
    maybe: frozenset[str]


@dataclass
class Analysis:
    findings: list[Finding] = field(default_factory=list)
    metrics: list[MetricSite] = field(default_factory=list)

    def problems(self) -> list[str]:
        return [str(f) for f in self.findings]


def _merge(a: dict[str, str], b: dict[str, str]) -> dict[str, str]:
    return {k: ALWAYS if a.get(k) == ALWAYS and b.get(k) == ALWAYS else MAYBE for k in a.keys() | b.keys()}


def _set(presence: dict[str, str], key: str, how: str) -> None:
    if presence.get(key) != ALWAYS:
        presence[key] = how


def analyse(stages: list[dict[str, Any]], initial_labels: set[str]) -> Analysis:
    """Walk the stages with the labels relabel_configs always sets, and report what can never work."""
    result = Analysis()
    state = State({name: ALWAYS for name in initial_labels}, {})
    _walk(stages, state, "pipeline_stages", result)
    return result


def _walk(stages: list[dict[str, Any]], state: State, path: str, result: Analysis) -> None:
    for name, how in state.labels.items():  # pipeline.go: labels are copied into the extracted map
        _set(state.extracted, name, how)
    for index, stage in enumerate(stages):
        ((kind, cfg),) = stage.items()
        here = f"{path}[{index}].{kind}"

        def report(problem: str, where: str = here) -> None:
            result.findings.append(Finding(where, problem))

        if not state.reachable:
            report("no entry can reach this stage")
        if kind in NO_OP_STAGES:
            continue
        if kind in ("json", "regex") and "source" in cfg and cfg["source"] not in state.extracted:
            report(f"source {cfg['source']!r} is never extracted before this stage")
        if kind == "json":
            for key in cfg["expressions"]:
                _set(state.extracted, key, MAYBE)
        elif kind == "regex":
            for key in _regex(cfg["expression"]).groupindex:
                _set(state.extracted, key, MAYBE)
        elif kind == "template":
            unknown = gotemplate.fields(cfg["template"]) - set(state.extracted) - {"Value", "Entry"}
            if unknown:
                report(f"the template reads {sorted(unknown)}, which no earlier stage extracts")
            state.extracted[cfg["source"]] = MAYBE  # an empty result deletes the key
        elif kind in ("labels", "structured_metadata"):
            for label, source in cfg.items():
                how = state.extracted.get(source or label)
                if how is None:
                    report(f"{label}: source {source or label!r} is never extracted before this stage")
                elif kind == "labels":
                    _set(state.labels, label, how)
        elif kind == "labeldrop":
            for label in cfg:
                if label not in state.labels:
                    report(f"label {label!r} is not set at this point")
                state.labels.pop(label, None)
        elif kind == "match":
            _walk_match(cfg, state, here, result, report)
        elif kind == "metrics":
            for name, metric in cfg.items():
                site = f"{here}.{name}"
                full = (metric.get("prefix") or "promtail_custom_") + name
                config = metric.get("config") or {}
                counts_all = metric["type"].lower() == "counter" and config.get("match_all")
                source = metric.get("source", name)
                if not counts_all and source not in state.extracted:
                    report(
                        f"{full} counts only entries whose extracted map has {source!r}"
                        + (" (a metric's source defaults to its own name)" if "source" not in metric else "")
                        + ", and no earlier stage extracts it: it can never change",
                        site,
                    )
                always = frozenset(k for k, v in state.labels.items() if v == ALWAYS and not k.startswith("__"))
                maybe = frozenset(k for k, v in state.labels.items() if v == MAYBE and not k.startswith("__"))
                result.metrics.append(MetricSite(site, full, metric["type"].lower(), always, maybe))
        elif kind == "drop":
            _walk_drop(cfg, state, report)
        else:
            report(f"stage type {kind!r} is not modelled in tests/stack/promtailsim.py")


def _walk_drop(cfg: dict[str, Any], state: State, report: Any) -> None:
    """drop.go: all the conditions given must hold; a stage whose conditions always hold drops everything."""
    if not {"source", "expression", "older_than", "longer_than"} & cfg.keys():
        report("a drop stage needs source, expression, older_than or longer_than (Promtail refuses to start)")
        return
    if "source" in cfg and cfg["source"] not in state.extracted:
        report(f"source {cfg['source']!r} is never extracted before this stage: it never drops anything")
        return
    always = True
    if "source" in cfg:
        always = state.extracted[cfg["source"]] == ALWAYS and "value" not in cfg
    if "expression" in cfg:
        always = always and _regex(cfg["expression"]).search("") is not None
    if always and not {"older_than", "longer_than"} & cfg.keys():
        state.reachable = False


def _walk_match(cfg: dict[str, Any], state: State, here: str, result: Analysis, report: Any) -> None:
    selector = parse_selector(cfg["selector"])
    can_match = state.reachable
    for matcher in selector.matchers:
        if matcher.name not in state.labels:
            report(
                f"the selector reads label {matcher.name!r}, which is not set at this point "
                f"(set: {', '.join(sorted(state.labels))})"
            )
            if not matcher.matches(""):
                can_match = False
    if cfg.get("action", "keep") == "drop":
        if cfg.get("stages"):
            report("a match stage with action drop cannot have stages")
        catch_all = not selector.line_filters and all(
            state.labels.get(m.name) == ALWAYS and m.op == "=~" and m.value in (".*", ".+") for m in selector.matchers
        )
        if catch_all:
            state.reachable = False
        return
    inner = State(dict(state.labels), dict(state.extracted), can_match)
    _walk(cfg.get("stages") or [], inner, f"{here}.stages", result)
    state.labels = _merge(state.labels, inner.labels)
    state.extracted = _merge(state.extracted, inner.extracted)


def relabelled_labels(relabel_configs: list[dict[str, Any]]) -> set[str]:
    """The target labels relabel_configs sets on every entry (Docker always provides their sources)."""
    return {rule["target_label"] for rule in relabel_configs if rule.get("action", "replace") == "replace"}


def expand_env(text: str, env: dict[str, str]) -> str:
    """drone/envsubst as Promtail runs it: ${VAR}, ${VAR:-default}; `$$` -> `$`; backslash before / or \\ dropped."""

    def var(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(3)
        return env.get(name) or (default or "")

    text = re.sub(r"\$\{(\w+)(:-([^}]*))?\}", var, text)
    text = text.replace("$$", "$")
    return re.sub(r"\\([/\\])", r"\1", text)


def main(argv: list[str]) -> int:
    """`python -m tests.stack.promtailsim FILE...`: what can never work in each Promtail config (exit 1 if any)."""
    failed = False
    for path in argv:
        with open(path, encoding="utf-8") as f:
            cfg = yaml.safe_load(expand_env(f.read(), {}))
        for job in cfg["scrape_configs"]:
            analysis = analyse(job["pipeline_stages"], relabelled_labels(job.get("relabel_configs", [])))
            for problem in analysis.problems():
                print(f"{path}: {job['job_name']}: {problem}")
                failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
