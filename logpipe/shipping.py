"""What goes to Loki: the ship rules and the per-stream rate limit, decided after the metrics counted every record.

`Shipping` holds a configuration's compiled rules; `StreamShipping` decides for one container stream, chunk by
chunk. Rules are tried in order and the first that matches decides: `drop`, `keep` (ship, stop trying), or
`sample` (ship a fraction, chosen by a hash of the trace id, so that a request chain is kept or dropped whole on
every service; a record without one is hashed by its timestamp and text, so the choice survives a re-read).

The rate limit is a token bucket per stream on the stream's own log time (Docker's timestamps), so a backlog read
at full speed after an outage is limited only where the container itself logged too fast, and a re-read decides
alike. Once the bucket is empty, error and critical records draw on a second, smaller bucket: they are the last
to go. Every record the limit drops is counted, and at most once per second of log time a summary entry takes the
place of one of them ("logpipe: dropped N records over the rate limit in the last 1.0s"), so the gap shows in
Loki where it happened; the rest of a storm is summarized by the idle tick once the stream calms down.

Deciding costs nothing for a stream no rule applies to while its bucket holds enough for the whole chunk. Rules
whose service, container and stream conditions do not hold for a stream are set aside once, and the rest are
indexed by (level, format), so a record is checked only against the rules that can match it.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from logpipe.config import ShipConfig, ShipRule
from logpipe.event import Event

#: Summary entries of one stream are at least this far apart in log time.
SUMMARY_EVERY_NS = 1_000_000_000
#: What `decide` puts for a record that is dropped (a summary text, also a str, ships in its place).
DROPPED = ""
_NO_RULES: tuple[_Rule, ...] = ()
_SEVERE = frozenset({"error", "critical"})
#: Regex syntax whose meaning a search in newline-joined texts could change: anchors to the whole string and
#: lookarounds (which could see the newline or the next text).
_UNSAFE_IN_CHUNK = re.compile(r"\\[AZz]|\(\?<?[=!]")

#: Called with (reason, records, rule name or "") for records not shipped.
OnDrop = Callable[[str, int, str], None]


@dataclass(frozen=True, slots=True, eq=False)
class _Rule:
    name: str
    action: str
    threshold: int  # sample: a hash below this ships
    levels: frozenset[str] | None
    formats: frozenset[str] | None
    status: re.Pattern[str] | None
    path: re.Pattern[str] | None
    contains: str
    regex: re.Pattern[str] | None
    # For a whole chunk at once: the rule's line conditions searched in the chunk's texts joined by newlines. Only
    # ever too hopeful (it may find what no single text holds), never too strict: a regex is searched there only
    # without anchors and lookarounds that the joining could defeat, `^`/`$` matching at every line.
    in_chunk: re.Pattern[str] | None

    @classmethod
    def compile(cls, rule: ShipRule) -> _Rule:
        m = rule.match

        def pattern(text: str) -> re.Pattern[str] | None:
            return re.compile(text) if text else None

        in_chunk = None
        if m.regex and not _UNSAFE_IN_CHUNK.search(m.regex):
            in_chunk = re.compile(m.regex, re.MULTILINE)
        return cls(
            rule.name,
            rule.action,
            int(rule.rate * 2**32) if rule.action == "sample" else 0,
            frozenset(m.level) if m.level else None,
            frozenset(m.format) if m.format else None,
            pattern(m.status),
            pattern(m.path),
            m.contains,
            pattern(m.regex),
            in_chunk,
        )

    @property
    def needs_http(self) -> bool:
        return self.status is not None or self.path is not None

    def absent_from(self, joined: str) -> bool:
        """Whether no text of a chunk (joined by newlines) can match the rule's line conditions."""
        if self.contains and self.contains not in joined:
            return True
        return self.in_chunk is not None and self.in_chunk.search(joined) is None

    def holds(self, event: Event) -> bool:
        """The conditions left once the stream, level, format and the presence of HTTP fields are known to match."""
        if self.status is not None and (event.http_status is None or not self.status.search(str(event.http_status))):
            return False
        if self.path is not None and (event.http_path is None or not self.path.search(event.http_path)):
            return False
        if self.contains and self.contains not in event.text:
            return False
        return self.regex is None or self.regex.search(event.text) is not None

    def sampled_out(self, event: Event) -> bool:
        if event.trace_id:
            h = zlib.crc32(event.trace_id.encode())
        else:
            h = zlib.crc32(event.text.encode("utf-8", "surrogatepass"), event.ts_ns & 0xFFFFFFFF)
        return h >= self.threshold


class Shipping:
    """A configuration's ship section, compiled. Used by the pipeline thread only."""

    def __init__(self, config: ShipConfig, on_drop: OnDrop) -> None:
        self.config = config
        self._rules = [(rule, _Rule.compile(rule)) for rule in config.rules]
        self._on_drop = on_drop

    def stream(self, service: str, container: str, stream: str) -> StreamShipping:
        """The decider for one container stream (rules that cannot apply to it are set aside here)."""
        applicable: list[_Rule] = []
        for rule, compiled in self._rules:
            m = rule.match
            if m.service and service not in m.service:
                continue
            if m.stream and m.stream != stream:
                continue
            if m.container and not re.search(m.container, container):
                continue
            applicable.append(compiled)
        return StreamShipping(self.config, tuple(applicable), self._on_drop)


class StreamShipping:
    """Decides for one container stream, in order. Used by the pipeline thread only."""

    def __init__(self, config: ShipConfig, rules: tuple[_Rule, ...], on_drop: OnDrop) -> None:
        self._rules = rules
        self._text_rules = tuple(rule for rule in rules if rule.contains or rule.in_chunk is not None)
        self._plans: dict[tuple[str, str, bool], tuple[_Rule, ...]] = {}
        self._on_drop = on_drop
        self._rate = config.rate_limit_lines_per_sec / 1e9  # tokens per ns
        self._burst = config.rate_limit_burst
        self._tokens = config.rate_limit_burst
        seconds_of_burst = config.rate_limit_burst / config.rate_limit_lines_per_sec if self._rate else 0.0
        self._error_rate = config.rate_limit_error_lines_per_sec / 1e9
        self._error_burst = config.rate_limit_error_lines_per_sec * seconds_of_burst
        if config.rate_limit_error_lines_per_sec:
            self._error_burst = max(self._error_burst, 1.0)
        self._error_tokens = self._error_burst
        self._last_ts = 0
        self._limit_text = (
            f"limit {config.rate_limit_lines_per_sec:g} lines/s, burst {config.rate_limit_burst:g}; errors pass up "
            f"to {config.rate_limit_error_lines_per_sec:g} lines/s"
        )
        # records dropped by the rate limit and not yet summarized
        self._limited = 0
        self._window_ts = 0  # log time of the first of them
        self._last_limited_ts = 0
        self._window_opened = 0.0  # monotonic time it was first seen

    def decide(self, events: list[Event], now: float) -> list[str | None] | None:
        """None: every record ships. Otherwise one item per record: None ships it, `DROPPED` drops it, and any
        other text is a summary entry to ship in the place of the dropped record."""
        verdicts: list[str | None] | None = None
        if self._rules:
            verdicts = self._apply_rules(events)
        if self._rate:
            verdicts = self._limit(events, verdicts, now)
        return verdicts

    def due_summary(self, now: float, force: bool = False) -> tuple[int, str] | None:
        """(log time, text) of a summary of the records the limit dropped, once their window is a second old
        (`force`: now, at a reload or shutdown); None when there is none to give."""
        if not self._limited or (not force and now - self._window_opened < SUMMARY_EVERY_NS / 1e9):
            return None
        return self._last_limited_ts, self._summary(self._last_limited_ts)

    # -- rules
    def _apply_rules(self, events: list[Event]) -> list[str | None] | None:
        rules, plans = self._rules, self._plans
        if self._text_rules:
            # Rules whose substring or regex occurs nowhere in the chunk are out for all of its records: one
            # search of the chunk instead of one per record (most chunks hold no health probe at all).
            joined = "\n".join([event.text for event in events])
            absent = [rule for rule in self._text_rules if rule.absent_from(joined)]
            if absent:
                rules = tuple(rule for rule in rules if rule not in absent)
                if not rules:
                    return None
                plans = {}
        verdicts: list[str | None] | None = None
        drops: Counter[tuple[str, str]] = Counter()
        for i, event in enumerate(events):
            key = (event.level, event.format, event.http_status is not None or event.http_path is not None)
            plan = plans.get(key)
            if plan is None:
                plan = plans[key] = self._plan(rules, *key)
            for rule in plan:
                if not rule.holds(event):
                    continue
                if rule.action == "keep" or (rule.action == "sample" and not rule.sampled_out(event)):
                    break
                if verdicts is None:
                    verdicts = [None] * len(events)
                verdicts[i] = DROPPED
                drops["rule" if rule.action == "drop" else "sampled", rule.name] += 1
                break
        for (reason, rule_name), n in drops.items():
            self._on_drop(reason, n, rule_name)
        return verdicts

    @staticmethod
    def _plan(rules: tuple[_Rule, ...], level: str, fmt: str, http: bool) -> tuple[_Rule, ...]:
        """The rules that can match a record of this level and format, with or without HTTP fields."""
        plan = tuple(
            rule
            for rule in rules
            if (rule.levels is None or level in rule.levels)
            and (rule.formats is None or fmt in rule.formats)
            and (http or not rule.needs_http)
        )
        return plan or _NO_RULES

    # -- rate limit
    def _limit(self, events: list[Event], verdicts: list[str | None] | None, now: float) -> list[str | None] | None:
        last = events[-1].ts_ns
        elapsed = max(last - self._last_ts, 0) if self._last_ts else 0
        if self._tokens + elapsed * self._rate >= len(events):
            # The whole chunk fits (refilled once, at its last record): nothing to decide record by record.
            self._tokens = min(self._burst, self._tokens + elapsed * self._rate) - len(events)
            self._error_tokens = min(self._error_burst, self._error_tokens + elapsed * self._error_rate)
            self._last_ts = max(self._last_ts, last)
            return verdicts
        limited = 0
        for i, event in enumerate(events):
            if verdicts is not None and verdicts[i] is not None:
                continue  # dropped by a rule: not counted against the limit
            ts = event.ts_ns
            if ts > self._last_ts:
                if self._last_ts:
                    gap = ts - self._last_ts
                    self._tokens = min(self._burst, self._tokens + gap * self._rate)
                    self._error_tokens = min(self._error_burst, self._error_tokens + gap * self._error_rate)
                self._last_ts = ts
            if self._tokens >= 1:
                self._tokens -= 1
                continue
            if event.level in _SEVERE and self._error_tokens >= 1:
                self._error_tokens -= 1
                continue
            if verdicts is None:
                verdicts = [None] * len(events)
            limited += 1
            if not self._limited:
                self._window_ts, self._window_opened = ts, now
            self._limited += 1
            self._last_limited_ts = ts
            if ts - self._window_ts >= SUMMARY_EVERY_NS:
                verdicts[i] = self._summary(ts)
            else:
                verdicts[i] = DROPPED
        if limited:
            self._on_drop("rate_limited", limited, "")
        return verdicts

    def _summary(self, ts: int) -> str:
        """The summary text for the records dropped since the window opened (which this closes)."""
        seconds = max(ts - self._window_ts, 0) / 1e9
        text = (
            f"logpipe: dropped {self._limited} records over the rate limit in the last {seconds:.1f}s "
            f"({self._limit_text})"
        )
        self._limited = 0
        return text
