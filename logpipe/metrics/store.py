"""Capped, expiring series for log-derived metrics: counters, gauges and histograms.

A `Family` is one metric (name, type, help). Its series live in `Table`s, one per set of label names (and bucket
bounds): a reload that changes a rule's labels starts a new table while the old one lives on until its series
expire, so no living series is ever reset. A series is a plain list, updated in place by the pipeline thread:
``[last_update, value]`` for a counter or gauge, ``[last_update, sum, bucket_0, ..., bucket_+Inf]`` (counts per
bucket, not cumulative) for a histogram.

Concurrency: the hot path (`Table.inc`/`add`/`set`/`observe`) takes no lock and allocates nothing once a series
exists; a scrape copies dicts and lists, which is atomic under the GIL, so it never sees a torn dict. A histogram's
``_count`` is derived from its buckets, so count and buckets always agree; ``_sum`` may lag by the one observation
in flight. `Family.expire` may race with an observation of the very series it removes; that one observation can
be lost (the series had been idle for the whole expiry period).
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_left
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Final, cast

from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString as _untyped_float_to_go_string

log = logging.getLogger(__name__)

COUNTER: Final = "counter"
GAUGE: Final = "gauge"
HISTOGRAM: Final = "histogram"

#: The value a label folds into when its metric or its label is over its cap.
OTHER: Final = "other"
#: The value of a label whose event field is absent (None or empty).
UNKNOWN: Final = "unknown"
#: Label values are cut to this many characters (model names are the longest legitimate ones, ~100).
MAX_LABEL_LEN: Final = 128
#: `fold` value that folds whichever label has the most distinct values (operator rules).
WIDEST: Final = -1

_INF = math.inf
_float_to_go_string = cast(Callable[[float], str], _untyped_float_to_go_string)
_isfinite = math.isfinite

Key = tuple[object, ...]
Series = list[float]


class Table:
    """The series of one family that share label names and bucket bounds; the hot-path entry points."""

    __slots__ = ("alias", "bounds", "family", "labelnames", "les", "series", "values")

    def __init__(self, family: Family, labelnames: tuple[str, ...], bounds: tuple[float, ...]) -> None:
        self.family = family
        self.labelnames = labelnames
        self.bounds = bounds
        self.les = tuple(_float_to_go_string(b) for b in (*bounds, _INF))
        self.series: dict[Key, Series] = {}
        #: Raw event keys whose canonical form differs (None, long or non-str values) -> their series.
        self.alias: dict[Key, Series] = {}
        #: Distinct values per label among living series (`OTHER` excluded), for value caps and folding.
        self.values: list[set[object]] = [set() for _ in labelnames]

    def inc(self, key: Key, now: float) -> None:
        """Add 1 to a counter series."""
        s = self.series.get(key) or self.alias.get(key) or self.family.resolve(self, key, now)
        if s is not None:
            s[0] = now
            s[1] += 1.0

    def add(self, key: Key, amount: float, now: float) -> None:
        """Add `amount` to a counter series; a negative or non-finite amount is ignored (a counter never drops)."""
        if not 0.0 <= amount < _INF:
            return
        s = self.series.get(key) or self.alias.get(key) or self.family.resolve(self, key, now)
        if s is not None:
            s[0] = now
            s[1] += amount

    def set(self, key: Key, value: float, now: float) -> None:
        """Set a gauge series; a non-finite value is ignored."""
        if not _isfinite(value):
            return
        s = self.series.get(key) or self.alias.get(key) or self.family.resolve(self, key, now)
        if s is not None:
            s[0] = now
            s[1] = value

    def observe(self, key: Key, value: float, now: float) -> None:
        """Observe `value` in a histogram series; a non-finite value is ignored."""
        if not _isfinite(value):
            return
        s = self.series.get(key) or self.alias.get(key) or self.family.resolve(self, key, now)
        if s is not None:
            s[0] = now
            s[2 + bisect_left(self.bounds, value)] += 1
            s[1] += value

    def slow(self, key: Key, now: float) -> Series | None:
        """The series for a key not found in `series` (an alias, a new series, a fold, or None when dropped)."""
        return self.alias.get(key) or self.family.resolve(self, key, now)

    def new_series(self, now: float) -> Series:
        if self.family.kind == HISTOGRAM:
            return [now, 0.0] + [0.0] * (len(self.bounds) + 1)
        return [now, 0.0]


class Family:
    """One metric: its tables, its series cap and how it folds labels when over the cap.

    The cap (`limit`) counts the series of all tables. New ordinary label sets are admitted up to 90 % of it; the
    rest is kept for label sets whose `fold` label was replaced by `other`, so folding still works once the cap is
    reached. A rule's `value_limit` caps the distinct values of each label the same way. Every folded or dropped
    observation is counted in `dropped` (a cell shared across reloads).
    """

    __slots__ = (
        "_warned",
        "active",
        "dropped",
        "fold",
        "help",
        "kind",
        "limit",
        "name",
        "tables",
        "value_limit",
        "vocab",
    )

    def __init__(
        self,
        name: str,
        help: str,
        kind: str,
        labelnames: Sequence[str],
        *,
        limit: int,
        fold: int | None = None,
        bounds: Sequence[float] = (),
        value_limit: int | None = None,
        vocab: Mapping[int, Collection[str]] | None = None,
        dropped: list[float] | None = None,
    ) -> None:
        self.name = name
        self.help = help
        self.kind = kind
        self.limit = limit
        self.fold = fold
        self.value_limit = value_limit
        #: Label position -> the values it may take; anything else becomes `other` (not counted as a fold).
        self.vocab = dict(vocab or {})
        self.dropped = dropped if dropped is not None else [0.0]
        self.active = Table(self, tuple(labelnames), tuple(float(b) for b in bounds))
        self.tables = [self.active]
        self._warned = False

    def use(self, labelnames: Sequence[str], bounds: Sequence[float] = ()) -> Table:
        """Make the table with these label names and bounds the active one (new series go there) and return it."""
        names, bnds = tuple(labelnames), tuple(float(b) for b in bounds)
        for table in self.tables:
            if table.labelnames == names and table.bounds == bnds:
                break
        else:
            table = Table(self, names, bnds)
            self.tables = [*self.tables, table]
        self.active = table
        return table

    def size(self) -> int:
        return sum(len(t.series) for t in self.tables)

    def resolve(self, table: Table, key: Key, now: float) -> Series | None:
        """The slow path of an update: find or create the series for a raw key, folding or dropping over the caps."""
        canon = self._canonical(key)
        series = table.series
        s = series.get(canon)
        if s is not None:
            if canon != key and len(table.alias) < self.limit:
                table.alias[key] = s
            return s
        folded = False
        if self.value_limit is not None:
            canon, folded = self._cap_values(table, canon)
            if folded and (s := series.get(canon)) is not None:
                self.dropped[0] += 1
                return s
        size = self.size()
        if not folded and size < max(1, self.limit - math.ceil(self.limit / 10)):
            return self._create(table, canon, now)
        if not folded or size >= self.limit:
            i = self._fold_index(table)
            if i is not None and canon[i] != OTHER:
                canon = (*canon[:i], OTHER, *canon[i + 1 :])
                folded = True
                if (s := series.get(canon)) is not None:
                    self.dropped[0] += 1
                    return s
        self.dropped[0] += 1
        if not self._warned:
            self._warned = True
            log.warning(
                "Metric over its series cap; folding labels into 'other'. metric=%s limit=%d", self.name, self.limit
            )
        if folded and size < self.limit:
            return self._create(table, canon, now)
        return None

    def _canonical(self, key: Key) -> Key:
        out: list[object] = []
        for i, v in enumerate(key):
            if type(v) is not int:
                if v is None or v == "":
                    v = UNKNOWN
                elif type(v) is not str:
                    v = str(v)
                assert isinstance(v, str)
                if len(v) > MAX_LABEL_LEN:
                    v = v[:MAX_LABEL_LEN]
                if not v.isascii():
                    v = v.encode("utf-8", "replace").decode("utf-8")  # lone surrogates would break the scrape
                allowed = self.vocab.get(i)
                if allowed is not None and v not in allowed and v != UNKNOWN:
                    v = OTHER
            out.append(v)
        return tuple(out)

    def _cap_values(self, table: Table, key: Key) -> tuple[Key, bool]:
        limit = self.value_limit
        assert limit is not None
        out, folded = list(key), False
        for i, v in enumerate(key):
            seen = table.values[i]
            if v != OTHER and v not in seen and len(seen) >= limit:
                out[i], folded = OTHER, True
        return (tuple(out), True) if folded else (key, False)

    def _fold_index(self, table: Table) -> int | None:
        if not table.labelnames:
            return None
        if self.fold == WIDEST:
            return max(range(len(table.values)), key=lambda i: len(table.values[i]))
        return self.fold

    def _create(self, table: Table, key: Key, now: float) -> Series:
        s = table.new_series(now)
        for i, v in enumerate(key):
            if v != OTHER:
                table.values[i].add(v)
        return table.series.setdefault(key, s)

    def expire(self, cutoff: float) -> int:
        """Remove the series last updated before `cutoff` and empty inactive tables; return how many were removed."""
        removed = 0
        for table in self.tables:
            gone = 0
            for key, s in table.series.copy().items():  # see collect()
                if s[0] < cutoff:
                    table.series.pop(key, None)
                    if s[0] >= cutoff:  # updated while we looked: keep it
                        table.series.setdefault(key, s)
                    else:
                        gone += 1
            if gone:
                table.alias.clear()
                keys = list(table.series)
                table.values = [{k[i] for k in keys if k[i] != OTHER} for i in range(len(table.labelnames))]
                removed += gone
        self.tables = [t for t in self.tables if t.series or t is self.active]
        return removed

    def collect(self) -> Metric:
        """A snapshot of every series as a prometheus_client `Metric` (called on the scrape thread)."""
        kind, name = self.kind, self.name
        if kind == COUNTER:
            base = name.removesuffix("_total")
            metric, sample = Metric(base, self.help, COUNTER), base + "_total"
        else:
            metric, sample = Metric(name, self.help, kind), name
        add = metric.add_sample
        for table in list(self.tables):
            names = table.labelnames
            les = table.les
            # A copy first: `list(d.items())` allocates a tuple per item while iterating, an allocation can run the
            # garbage collector and a finalizer, and the pipeline thread can then add a series mid-iteration
            # ("dictionary changed size during iteration": seen once in the scrape property test). `copy()`
            # takes the entries in one step.
            for key, s in table.series.copy().items():
                labels = dict(zip(names, [v if type(v) is str else str(v) for v in key], strict=False))
                if kind != HISTOGRAM:
                    add(sample, labels, s[1])
                    continue
                snap = list(s)
                total = 0.0
                for le, count in zip(les, snap[2:], strict=True):
                    total += count
                    add(name + "_bucket", {**labels, "le": le}, total)
                add(name + "_count", labels, total)
                add(name + "_sum", labels, snap[1])
        return metric
