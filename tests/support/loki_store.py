"""What the test Loki keeps: every stored entry, every rejected one, per-stream state and Loki's per-entry checks.

`Store.ingest` applies, in Loki's order, the distributor's checks (label limits, too old, too new, line too long,
structured metadata too large or too many: `pkg/distributor/validator.go`) and the ingester's out-of-order window
(`pkg/ingester/stream.go`: an entry older than the stream's newest accepted timestamp minus the window is "too far
behind"). Valid entries are stored even when others are refused, and the answer is what Loki answers then.

Deliberately unlike Loki: an exact duplicate (same tenant, stream, timestamp and line) is stored again, so a test
sees a shipper that re-sends. `report_every_stream=True` (default) answers one "total ignored" block per affected
stream; real Loki's ingester (`instance.Push`) keeps only the last stream's result, which
`report_every_stream=False` reproduces.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

from tests.support.loki_logql import Query
from tests.support.loki_wire import PushBody, PushStream, go_time_string, render_labels, rfc3339

_EMPTY: Mapping[str, str] = MappingProxyType({})
_SECOND = 1_000_000_000
_SM_HINT = "Please see `limits_config.{}` or contact your Loki administrator to increase it."


@dataclass(frozen=True, slots=True)
class Limits:
    """Loki's per-tenant limits that decide acceptance, with Loki's defaults (every field is a `LokiServer`
    keyword)."""

    out_of_order_window_secs: float = 3600.0  # max_chunk_age (2h) / 2
    creation_grace_secs: float = 600.0
    reject_old_samples: bool = True
    reject_old_samples_max_age_secs: float = 7 * 86400.0
    max_line_size_bytes: int = 256 * 1024  # 0 disables
    max_structured_metadata_bytes: int = 64 * 1024
    max_structured_metadata_entries: int = 128
    max_label_names_per_series: int = 15
    max_label_name_length: int = 1024
    max_label_value_length: int = 2048
    max_returned_stream_errors: int = 10
    max_entries_limit_per_query: int = 5000
    # Loki's default is 4 MB/s (burst 6 MB) per tenant; here 0 means no limit, so that benchmarks and tests that
    # are not about it can push as fast as they like. A push over it is refused whole with 429, nothing stored.
    ingestion_rate_mb: float = 0.0
    ingestion_burst_size_mb: float = 6.0


_MB = 1 << 20


class Entry(NamedTuple):
    """One stored entry. `labels` and `metadata` are read-only mappings; `received_at` is wall-clock seconds."""

    tenant: str
    labels: Mapping[str, str]
    ts_ns: int
    line: str
    metadata: Mapping[str, str]
    push_seq: int
    received_at: float


class Rejected(NamedTuple):
    """One refused entry: `reason` is Loki's discard reason (`too_far_behind`, `line_too_long`, ...), `message`
    the text Loki gave for it."""

    tenant: str
    labels: Mapping[str, str]
    ts_ns: int
    line: str
    metadata: Mapping[str, str]
    push_seq: int
    received_at: float
    reason: str
    message: str


class Outcome(NamedTuple):
    status: int
    body: str
    stored: int
    rejected: int


class _Stream:
    __slots__ = ("highest", "key", "labels", "records", "tenant")

    def __init__(self, tenant: str, key: str, labels: dict[str, str]) -> None:
        self.tenant, self.key, self.labels = tenant, key, MappingProxyType(dict(labels))
        self.highest: int | None = None
        self.records: list[Entry] = []


def grouped_errors(messages: list[str]) -> str:
    """Loki's `util.GroupedErrors`: identical messages counted, groups joined with `; `."""
    counts = Counter(messages)
    many = len(counts) > 1
    return "; ".join(f"{n} errors like: {m}" if many or n > 1 else m for m, n in counts.items())


class Store:
    """Thread-safe record of everything pushed. `clock()` (epoch seconds) drives the too-old/too-new checks."""

    def __init__(self, limits: Limits, clock: Callable[[], float], *, keep_records: bool = True,
                 report_every_stream: bool = True) -> None:  # fmt: skip
        self.limits, self.clock = limits, clock
        self.keep_records, self.report_every_stream = keep_records, report_every_stream
        self.changed = threading.Condition(threading.RLock())
        self.clear()

    def admit(self, tenant: str, size: int) -> bool:
        """The distributor's ingestion rate limiter (Go's `rate.Limiter.AllowN`, one bucket per tenant): False
        when `size` bytes (lines plus structured metadata) do not fit now; a refused push takes no tokens."""
        rate = self.limits.ingestion_rate_mb * _MB
        if not rate:
            return True
        burst = self.limits.ingestion_burst_size_mb * _MB
        with self.changed:
            now = time.monotonic()
            tokens, last = self._buckets.get(tenant, (burst, now))
            tokens = min(burst, tokens + (now - last) * rate)
            if size > tokens:
                self._buckets[tenant] = (tokens, now)
                return False
            self._buckets[tenant] = (tokens - size, now)
            return True

    def clear(self) -> None:
        with self.changed:
            self._buckets: dict[str, tuple[float, float]] = {}
            self._streams: dict[tuple[str, str], _Stream] = {}
            self.entries: list[Entry] = []
            self.rejected: list[Rejected] = []
            self.stored_count = self.rejected_count = self.duplicate_count = 0
            self._seen: set[int] = set()  # hashes of (stream, ts, line) when records are not kept

    def ingest(self, tenant: str, body: PushBody, push_seq: int) -> Outcome:
        """Validate and store one decoded push; returns Loki's answer for it."""
        lim = self.limits
        now_ns = int(self.clock() * _SECOND)
        oldest = now_ns - int(lim.reject_old_samples_max_age_secs * _SECOND) if lim.reject_old_samples else -(2**63)
        newest = now_ns + int(lim.creation_grace_secs * _SECOND)
        window = int(lim.out_of_order_window_secs * _SECOND)
        max_line = lim.max_line_size_bytes or 2**62
        quick_line = max_line // 4  # a line of at most this many characters is within the byte limit
        errors: list[str] = []
        blocks: list[str | None] = []
        stored = rejected = 0
        with self.changed:
            received_at = time.time()
            for pushed in body.streams:
                if not pushed.entries:
                    continue
                label_error = self._label_error(pushed)
                if label_error is not None:
                    errors.append(label_error[1])
                    view = MappingProxyType(dict(pushed.labels))
                    for ts, line, md in pushed.entries:
                        self._reject(tenant, view, ts, line, md, push_seq, received_at, *label_error)
                    rejected += len(pushed.entries)
                    continue
                stream = self._stream(tenant, pushed)
                passed = []
                for entry in pushed.entries:
                    ts, line, md = entry
                    if oldest <= ts <= newest and len(line) <= quick_line and md is None:
                        passed.append(entry)
                        continue
                    problem = self._entry_error(pushed.key, ts, line, md, oldest, newest, max_line)
                    if problem is None:
                        passed.append(entry)
                    else:
                        errors.append(problem[1])
                        self._reject(tenant, stream.labels, ts, line, md, push_seq, received_at, *problem)
                        rejected += 1
                if passed:
                    accepted, behind = self._append(stream, passed, window, push_seq, received_at)
                    stored += accepted
                    rejected += len(behind)
                    blocks.append(self._block(stream, behind, len(passed)) if behind else None)
            self.stored_count += stored
            self.rejected_count += rejected
            self.changed.notify_all()
        failed = [b for b in blocks if b] if self.report_every_stream else blocks[-1:]
        if failed and failed[-1] is not None:
            return Outcome(400, "\n".join(b for b in failed if b), stored, rejected)
        if errors:
            return Outcome(400, grouped_errors(errors), stored, rejected)
        return Outcome(204, "", stored, rejected)

    def _stream(self, tenant: str, pushed: PushStream) -> _Stream:
        stream = self._streams.get((tenant, pushed.key))
        if stream is None:
            stream = self._streams[(tenant, pushed.key)] = _Stream(tenant, pushed.key, pushed.labels)
        return stream

    def _label_error(self, pushed: PushStream) -> tuple[str, str] | None:
        lim, labels, key = self.limits, pushed.labels, pushed.key
        if not labels:
            return "missing_labels", "error at least one label pair is required per stream"
        names = len(labels) - ("service_name" in labels)
        if names > lim.max_label_names_per_series:
            limit = lim.max_label_names_per_series
            return "max_label_names_per_series", f"entry for stream '{key}' has {names} label names; limit {limit}"
        for name in sorted(labels):
            if len(name.encode()) > lim.max_label_name_length:
                return "label_name_too_long", f"stream '{key}' has label name too long: '{name}'"
            if len(labels[name].encode()) > lim.max_label_value_length:
                return "label_value_too_long", f"stream '{key}' has label value too long: '{labels[name]}'"
        return None

    def _entry_error(self, key: str, ts: int, line: str, md: dict[str, str] | None, oldest: int, newest: int,
                     max_line: int) -> tuple[str, str] | None:  # fmt: skip
        lim = self.limits
        if ts < oldest:
            msg = f"entry for stream '{key}' has timestamp too old: {rfc3339(ts)}, oldest acceptable timestamp is: "
            return "greater_than_max_sample_age", msg + rfc3339(oldest)
        if ts > newest:
            return "too_far_in_future", f"entry for stream '{key}' has timestamp too new: {rfc3339(ts)}"
        size = len(line.encode()) if len(line) > max_line // 4 else 0
        if size > max_line:
            msg = f"Max entry size '{max_line}' bytes exceeded for stream '{key}' while adding an entry with length"
            return "line_too_long", f"{msg} '{size}' bytes"
        if md:
            md_size = sum(len(k.encode()) + len(v.encode()) for k, v in md.items())
            if lim.max_structured_metadata_bytes and md_size > lim.max_structured_metadata_bytes:
                msg = f"stream '{key}' has structured metadata too large: '{md_size}' bytes, limit: "
                msg += f"'{lim.max_structured_metadata_bytes}' bytes. "
                return "structured_metadata_too_large", msg + _SM_HINT.format("max_structured_metadata_size")
            count, limit = len(md), lim.max_structured_metadata_entries
            if limit and count > limit:
                msg = f"stream '{key}' has too many structured metadata labels: '{count}', limit: '{limit}'. "
                return "structured_metadata_too_many", msg + _SM_HINT.format("max_structured_metadata_entries_count")
        return None

    def _append(self, stream: _Stream, passed: list[tuple[int, str, dict[str, str] | None]], window: int,
                push_seq: int, received_at: float) -> tuple[int, list[tuple[int, int]]]:  # fmt: skip
        """The ingester's part: the out-of-order window, then storage. Returns (stored, [(ts, cutoff)])."""
        behind: list[tuple[int, int]] = []
        highest = stream.highest
        tenant, labels = stream.tenant, stream.labels
        new: list[Entry] = []
        for ts, line, md in passed:
            if highest is not None and ts < highest - window:
                behind.append((ts, highest - window))
                message = f"entry too far behind, entry timestamp is: {rfc3339(ts)}, oldest acceptable timestamp is: "
                self._reject(tenant, labels, ts, line, md, push_seq, received_at, "too_far_behind",
                             message + rfc3339(highest - window))  # fmt: skip
                continue
            if highest is None or ts > highest:
                highest = ts
            new.append(Entry(tenant, labels, ts, line, _EMPTY if md is None else MappingProxyType(md), push_seq,
                             received_at))  # fmt: skip
        stream.highest = highest
        if self.keep_records:
            stream.records.extend(new)
            self.entries.extend(new)
        else:
            seen, sid = self._seen, id(stream)
            for entry in new:
                key = hash((sid, entry.ts_ns, entry.line))
                self.duplicate_count += key in seen
                seen.add(key)
        return len(new), behind

    def _reject(self, tenant: str, labels: Mapping[str, str], ts: int, line: str, md: dict[str, str] | None,
                push_seq: int, received_at: float, reason: str, message: str) -> None:  # fmt: skip
        if self.keep_records:
            meta = _EMPTY if md is None else MappingProxyType(md)
            self.rejected.append(Rejected(tenant, labels, ts, line, meta, push_seq, received_at, reason, message))

    def _block(self, stream: _Stream, behind: list[tuple[int, int]], total: int) -> str:
        """The ingester's `errorForFailedEntries` text for one stream."""
        limit = self.limits.max_returned_stream_errors or len(behind)
        lines = [
            f"entry with timestamp {go_time_string(ts)} ignored, reason: 'entry too far behind, entry timestamp is: "
            f"{rfc3339(ts)}, oldest acceptable timestamp is: {rfc3339(cutoff)}',\n"
            for ts, cutoff in behind[:limit]
        ]
        tail = f"user '{stream.tenant}', total ignored: {len(behind)} out of {total} for stream: {stream.key}"
        return "".join(lines) + tail

    def duplicates(self) -> list[Entry]:
        """Entries whose (tenant, labels, timestamp, line) had already been stored, in arrival order."""
        with self.changed:
            seen: set[tuple[str, int, int, str]] = set()
            out = []
            for e in self.entries:
                key = (e.tenant, id(e.labels), e.ts_ns, e.line)
                if key in seen:
                    out.append(e)
                seen.add(key)
            return out

    def stream_count(self) -> int:
        with self.changed:
            return len(self._streams)

    def streams(self, tenant: str) -> Iterator[_Stream]:
        with self.changed:
            return iter([s for s in self._streams.values() if s.tenant == tenant])

    def query(self, tenant: str, query: Query, start_ns: int, end_ns: int, visible_before: float) -> list[Entry]:
        """Visible entries of `tenant` matching `query` with start <= ts < end, in arrival order."""
        hits: list[Entry] = []
        for stream in self.streams(tenant):
            if not query.selects(stream.labels):
                continue
            with self.changed:
                records = list(stream.records)
            hits.extend(
                e
                for e in records
                if start_ns <= e.ts_ns < end_ns
                and e.received_at <= visible_before
                and query.keeps(e.line, e.labels, e.metadata)
            )
        return hits


def result_streams(hits: list[Entry], limit: int, forward: bool, categorize: bool) -> list[dict[str, object]]:
    """Loki's `streams` result: the first `limit` entries in time order (per direction), grouped by stream.

    Without `categorize` (the `categorize-labels` encoding flag) structured metadata is merged into the stream
    labels, as Loki 3 does; with it, each value carries `{"structuredMetadata": {...}}` as a third element."""
    ordered = sorted(hits, key=lambda e: e.ts_ns, reverse=not forward)[:limit]
    groups: dict[str, dict[str, object]] = {}
    for e in ordered:
        merged = e.labels if categorize or not e.metadata else {**e.labels, **e.metadata}
        labels = dict(sorted(merged.items()))  # Go encodes maps with sorted keys
        group = groups.setdefault(render_labels(labels), {"stream": labels, "values": []})
        value: list[object] = [str(e.ts_ns), e.line]
        if categorize and e.metadata:
            value.append({"structuredMetadata": dict(e.metadata)})
        group["values"].append(value)  # type: ignore[attr-defined]
    return list(groups.values())
