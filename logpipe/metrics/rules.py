"""Operator-defined metrics (``metrics.rules``): matching, values and labels, compiled once per configuration.

A rule matches an event when its service is listed (or `services` is empty), every `present` field is not None,
every `equals` field's value, as a string, equals the expected string, and every `regex` pattern is found
(`re.search`) in the field's value as a string. A field that is None matches neither `equals` nor `regex`.
A counter adds 1, or the numeric `value_field` (negative values skipped); a gauge is set to `value_field`; a
histogram observes it. An event whose `value_field` is None, non-numeric or not finite is skipped.

Labels come from event fields. Each label keeps at most `label_value_limit` distinct values among living series
(further values become ``other``), and the metric has the series cap of every metric (over it, the label with the
most distinct values becomes ``other``); both are counted as folded.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from operator import attrgetter
from typing import Any

from logpipe.config import MetricRule
from logpipe.event import Event
from logpipe.metrics.derived import HTTP_DURATION_BUCKETS
from logpipe.metrics.store import COUNTER, GAUGE, HISTOGRAM, WIDEST, Family, Table

#: Buckets of a histogram rule that names none: 5 ms to 5 min, suiting durations in seconds.
DEFAULT_RULE_BUCKETS = HTTP_DURATION_BUCKETS

Getter = Callable[[Event], Any]
_NUMBERS = frozenset((int, float, bool))


def schema(config: MetricRule) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """The label names (sorted) and bucket bounds of a rule's series; a change starts a new table."""
    buckets = (config.buckets or DEFAULT_RULE_BUCKETS) if config.type == HISTOGRAM else ()
    return tuple(sorted(config.labels)), tuple(buckets)


class Rule:
    """One configured rule bound to the table its new series go to."""

    __slots__ = (
        "_equals",
        "_key",
        "_present",
        "_regex",
        "_services",
        "_table",
        "_update",
        "_value",
        "_wrap",
        "config",
        "family",
    )

    def __init__(self, config: MetricRule, family: Family) -> None:
        self.config = config
        self.family = family
        labelnames, buckets = schema(config)
        fields = [config.labels[name] for name in labelnames]
        self._table: Table = family.use(labelnames, buckets)
        self._services = frozenset(config.services) or None
        self._present = tuple(attrgetter(f) for f in config.match.present)
        self._equals = tuple((attrgetter(f), expected) for f, expected in config.match.equals.items())
        self._regex = tuple((attrgetter(f), re.compile(p).search) for f, p in config.match.regex.items())
        self._value: Getter | None = attrgetter(config.value_field) if config.value_field else None
        # Keys are tuples; attrgetter gives a tuple for two or more fields, a bare value for one.
        self._key: Getter | None = attrgetter(*fields) if fields else None
        self._wrap = len(fields) == 1
        table = self._table
        self._update: Callable[[tuple[object, ...], float, float], None] = {
            COUNTER: table.add,
            GAUGE: table.set,
            HISTOGRAM: table.observe,
        }[config.type]

    def observe(self, ev: Event, now: float) -> None:
        """Update this rule's metric from one event if the event matches (cheapest rejections first)."""
        value: Any = None
        if self._value is not None:
            value = self._value(ev)
            if type(value) not in _NUMBERS:
                return
        if self._services is not None and ev.service not in self._services:
            return
        for get in self._present:
            if get(ev) is None:
                return
        for get, expected in self._equals:
            v = get(ev)
            if v is None or (v if type(v) is str else str(v)) != expected:
                return
        for get, search in self._regex:
            v = get(ev)
            if v is None or search(v if type(v) is str else str(v)) is None:
                return
        key = () if self._key is None else self._key(ev)
        if self._wrap:
            key = (key,)
        if value is None:
            table = self._table
            series = table.series.get(key) or table.slow(key, now)
            if series is not None:
                series[0] = now
                series[1] += 1.0
        else:
            self._update(key, value, now)


def build_rules(
    configs: tuple[MetricRule, ...],
    current: Mapping[str, Rule],
    limit: int,
    dropped: dict[str, list[float]],
) -> tuple[Rule, ...]:
    """Compile `configs`, reusing the family of a current rule with the same name and type (its series live on).

    A rule whose type changed gets a new, empty family; a rule no longer configured is simply not returned.
    `dropped` holds each rule name's folded/dropped counter cell, kept across reloads so it never goes backwards.
    """
    rules = []
    for config in configs:
        old = current.get(config.name)
        cell = dropped.setdefault(config.name, [0.0])
        help = config.help or f"Operator rule {config.name}."
        if old is not None and old.config.type == config.type:
            family = old.family
            family.help = help
            family.limit = limit
            family.value_limit = config.label_value_limit
        else:
            labelnames, buckets = schema(config)
            family = Family(
                config.name,
                help,
                config.type,
                labelnames,
                limit=limit,
                fold=WIDEST,
                bounds=buckets,
                value_limit=config.label_value_limit,
                dropped=cell,
            )
        rules.append(Rule(config, family))
    return tuple(rules)
