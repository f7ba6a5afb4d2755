"""The parse stage between the Docker readers and the sinks: decode, group, parse, redact, count, decide, enqueue.

`Pipeline` is everything a configuration decides about turning lines into entries (parsers, grouping, redaction,
labels, metric rules, what is shipped); it is rebuilt on reload and swapped in by the pipeline thread
(`runner.PipelineRunner`) between two chunks. Lines are bytes until here: invalid UTF-8 is replaced (never
dropped), NUL bytes are replaced, over-long lines carry a visible truncation mark.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from logpipe.config import Config
from logpipe.event import Chunk, Event, Position, SourceLine
from logpipe.metrics import LogMetrics
from logpipe.parsers import Grouper, Parser, RawRecord
from logpipe.redact import Redactor
from logpipe.shipping import Shipping, StreamShipping
from logpipe.sinks.lanes import PASSED, Entry, LabelKey, LaneKey, Lanes
from logpipe.telemetry import Telemetry

#: An entry's size for batching: its text plus what the push body adds (timestamp, quoting, metadata), roughly.
_ENTRY_OVERHEAD = 64
#: Bytes kept free at the end of a cut line for its truncation mark, so the marked line stays within the limit.
_MARK_ROOM = 64
#: A container stream's parse state (its grouper, its label sets) is dropped after this long without a line and
#: with no record open: containers come and go, and their state must not pile up. A stream that speaks again just
#: gets a fresh one, which loses nothing.
STATE_IDLE_SECS = 300.0


def marked(text: str, cut: int) -> str:
    return f"{text} …[logpipe: truncated {cut} bytes]"


def fit(text: str, limit: int) -> str:
    """`text` cut (and marked) to at most `limit` UTF-8 bytes: Loki rejects longer entries outright."""
    if len(text) * 4 <= limit:
        return text
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return text
    keep = raw[: limit - _MARK_ROOM].decode("utf-8", "ignore")
    return marked(keep, len(raw) - len(keep.encode("utf-8", "surrogatepass")))


def metadata_of(event: Event) -> dict[str, str] | None:
    """The event's ids that go to Loki as structured metadata (`event.METADATA_FIELDS`), or None without any.
    Written out field by field: it runs for every record, and a loop over the names costs three times as much."""
    metadata: dict[str, str] = {}
    if event.trace_id:
        metadata["trace_id"] = event.trace_id
    if event.span_id:
        metadata["span_id"] = event.span_id
    if event.req_id:
        metadata["req_id"] = event.req_id
    if event.tenant_id:
        metadata["tenant_id"] = event.tenant_id
    if event.app_id:
        metadata["app_id"] = event.app_id
    if event.task_id:
        metadata["task_id"] = event.task_id
    return metadata or None


def tune_gc() -> None:
    """Make the cyclic garbage collector run rarely: the hot path allocates many short-lived containers (events,
    metadata dicts, entries), all freed by reference counting; default thresholds spend ~15 % of the pipeline's
    time collecting them. Startup objects are frozen out of every collection."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 10, 10)


@dataclass(slots=True)
class _LaneState:
    grouper: Grouper
    service: str
    container: str
    stream: str
    project: str
    ship: StreamShipping
    labels: dict[str, LabelKey] = field(default_factory=dict)
    seen: float = 0.0  # monotonic time of the last chunk
    end: Position | None = None  # where the last record put on the lane ended


class Pipeline:
    """Turns chunks into entries on the lanes, for one configuration. Used by the pipeline thread only."""

    def __init__(
        self,
        config: Config,
        lanes: Lanes,
        metrics: LogMetrics | None,
        telemetry: Telemetry,
        host: Callable[[], str],
    ) -> None:
        self.config = config
        self._lanes = lanes
        self._metrics = metrics
        self._telemetry = telemetry
        self._host = host
        self._parser = Parser(config.pipeline, on_parse_error=telemetry.parse_error)
        redact = config.redact
        self._redactor = Redactor(redact, on_redact=telemetry.redacted) if redact.enabled else None
        self._static_labels = dict(config.loki.labels)
        self._metadata = config.loki.structured_metadata
        self._max_line = config.loki.max_line_bytes
        self._shipping = Shipping(config.ship, telemetry.entries_dropped)
        telemetry.ship_rules({rule.name: rule.action for rule in config.ship.rules})
        self._state: dict[LaneKey, _LaneState] = {}

    def process(self, chunk: Chunk, now: float) -> None:
        info = chunk.container
        key = (info.id, chunk.stream)
        state = self._state.get(key)
        if state is None:
            state = self._state[key] = _LaneState(
                self._parser.grouper(),
                info.service,
                info.name,
                chunk.stream,
                info.project,
                self._shipping.stream(info.service, info.name, chunk.stream),
            )
        elif state.container != info.name:  # renamed
            state.container, state.labels = info.name, {}
            state.ship = self._shipping.stream(info.service, info.name, chunk.stream)
        state.seen = now
        lines = chunk.lines
        texts = self._texts(lines)
        records = state.grouper.feed(lines, texts, now)
        self._telemetry.lines_read(len(lines))
        self._count_blanks(state)
        if records:
            self._ship(key, state, records, now)

    def _texts(self, lines: list[SourceLine]) -> list[str]:
        """The lines as text: one decode for the whole chunk when it is clean UTF-8 (the usual case); line by
        line, repairing and counting, when a line is invalid, holds NUL or CR, or was cut."""
        if len(lines) > 1 and not any(line[3] for line in lines):
            try:
                whole = b"\n".join([line[2] for line in lines]).decode("utf-8")
            except UnicodeDecodeError:
                whole = ""
            if whole and "\x00" not in whole and "\r" not in whole:
                return whole.split("\n")
        texts: list[str] = []
        sanitized_utf8 = sanitized_nul = 0
        for _ts, _n, raw, cut in lines:
            if cut:
                raw, cut = raw[:-_MARK_ROOM], cut + min(_MARK_ROOM, len(raw))
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("utf-8", "replace")
                sanitized_utf8 += 1
            if "\x00" in text:
                text = text.replace("\x00", "\ufffd")
                sanitized_nul += 1
            if text.endswith("\r"):
                text = text.rstrip("\r")
            if cut:
                text = marked(text, cut)
            texts.append(text)
        if sanitized_utf8:
            self._telemetry.lines_sanitized("invalid_utf8", sanitized_utf8)
        if sanitized_nul:
            self._telemetry.lines_sanitized("nul_byte", sanitized_nul)
        return texts

    def _count_blanks(self, state: _LaneState) -> None:
        if state.grouper.blanks_skipped:
            self._telemetry.lines_skipped("blank", state.grouper.blanks_skipped)
            state.grouper.blanks_skipped = 0

    def flush_idle(self, now: float) -> None:
        """Close records whose lanes went quiet; forget streams idle for `STATE_IDLE_SECS`."""
        idle: list[LaneKey] = []
        for key, state in self._state.items():
            if state.grouper.pending:
                record = state.grouper.flush_idle(now)
                self._count_blanks(state)
                if record is not None:
                    self._ship(key, state, [record], now)
            elif now - state.seen >= STATE_IDLE_SECS:
                idle.append(key)
            self._summarize(key, state, now)  # long before the stream is forgotten
        for key in idle:
            del self._state[key]

    @property
    def streams(self) -> int:
        """Container streams whose parse state is held."""
        return len(self._state)

    def flush_all(self) -> None:
        """Close every open record (reload, shutdown)."""
        now = time.monotonic()
        for key, state in self._state.items():
            record = state.grouper.flush()
            self._count_blanks(state)
            if record is not None:
                self._ship(key, state, [record], now)
            self._summarize(key, state, now, force=True)

    def _ship(self, key: LaneKey, state: _LaneState, records: list[RawRecord], now: float) -> None:
        parse = self._parser.parse
        service, container, stream = state.service, state.container, state.stream
        events = [parse(record, service, container, stream) for record in records]
        if self._redactor is not None:
            texts = [event.text for event in events]
            redacted = self._redactor.redact_batch(texts)
            if redacted is not texts:
                for event, text in zip(events, redacted, strict=True):
                    event.text = text
        max_line = self._max_line
        for event in events:
            if len(event.text) * 4 > max_line:  # Loki refuses longer entries outright
                event.text = fit(event.text, max_line)
        if self._metrics is not None:
            self._metrics.observe_all(events)  # every record counts, whatever is shipped
        verdicts = state.ship.decide(events, now)
        entries: list[Entry] = []
        append = entries.append
        size = 0
        label_sets = state.labels
        metadata_on = self._metadata
        dropped_at: Event | None = None
        summaries = 0
        for i, (event, record) in enumerate(zip(events, records, strict=True)):
            text = event.text
            level = event.level
            metadata = metadata_of(event) if metadata_on else None
            if verdicts is not None and (verdict := verdicts[i]) is not None:
                if not verdict:  # dropped: only its position is kept (below), so that the cursor passes it
                    dropped_at = event
                    continue
                text, level, metadata = verdict, "warning", None  # a rate-limit summary in its place
                summaries += 1
            dropped_at = None
            labels = label_sets.get(level)
            if labels is None:
                labels = label_sets[level] = self._labels(state, level)
            entry_size = len(text) + _ENTRY_OVERHEAD
            append((event.ts_ns, text, metadata, labels, record.end, entry_size))
            size += entry_size
        if dropped_at is not None:
            append((dropped_at.ts_ns, "", None, PASSED, records[-1].end, _ENTRY_OVERHEAD))
            size += _ENTRY_OVERHEAD
        state.end = records[-1].end
        self._telemetry.entries_read(len(events) + summaries)  # read = sent + dropped, exactly
        if not self._lanes.put(key, state.container, entries, size):
            raise PipelineClosed

    def _summarize(self, key: LaneKey, state: _LaneState, now: float, force: bool = False) -> None:
        """Ship the rate limit's summary of a stream that went quiet (or at a reload or shutdown)."""
        summary = state.ship.due_summary(now, force)
        if summary is None or state.end is None:
            return
        ts, text = summary
        labels = state.labels.get("warning") or state.labels.setdefault("warning", self._labels(state, "warning"))
        size = len(text) + _ENTRY_OVERHEAD
        self._telemetry.entries_read(1)
        if not self._lanes.put(key, state.container, [(ts, text, None, labels, state.end, size)], size):
            raise PipelineClosed

    def _labels(self, state: _LaneState, level: str) -> LabelKey:
        labels = dict(self._static_labels)
        labels.update(
            service=state.service,
            container=state.container,
            compose_project=state.project,
            stream=state.stream,
            host=self._host(),
            level=level,
        )
        return tuple(sorted((k, v) for k, v in labels.items() if v))


class PipelineClosed(Exception):
    """The lanes refused entries because logpipe is shutting down."""
