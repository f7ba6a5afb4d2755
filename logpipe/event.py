"""The types that flow between the stages: a source's `Chunk` of lines, and the one record type, `Event`.

An `Event` is one log record: a single line, or several lines grouped into one entry (a traceback, a Go stack,
an LLM debug block). The source and the parse stage fill it; the Loki sink ships `text` with `ts_ns`; the metrics
stage counts it. Fields the record does not carry stay `None`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

#: A line's place in its container stream: (Docker timestamp in ns, ordinal among that stream's lines with exactly
#: that timestamp, from 1). Positions order the lines of one stream and survive re-reading the log from Docker.
Position = tuple[int, int]

#: A line as the source hands it on: (Docker timestamp ns, ordinal at that timestamp, content, bytes cut off).
SourceLine = tuple[int, int, bytes, int]


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """What logpipe needs to know about a container to follow it and label its lines."""

    id: str
    name: str
    service: str
    project: str
    tty: bool
    running: bool
    labels: Mapping[str, str]
    finished_ns: int = 0


@dataclass(slots=True)
class Chunk:
    """Consecutive lines of one container stream, in order: what the source hands to the parse stage."""

    container: ContainerInfo
    stream: str
    lines: list[SourceLine]
    size: int  # bytes the lines took on the wire (what the chunk queue counts)


LEVELS = ("debug", "info", "warning", "error", "critical", "unknown")

#: Every value `Event.format` can take (the parse stage's format tags; metrics use them as label values).
FORMATS = (
    "dify_text",
    "dify_json",
    "celery_text",
    "celery_banner",
    "gunicorn",
    "plugin_text",
    "plugin_json",
    "gorm",
    "go_log",
    "gin",
    "sandbox_json",
    "nginx_access",
    "nginx_error",
    "squid",
    "postgres",
    "redis",
    "weaviate_json",
    "json",
    "llm_debug",
    "traceback",
    "raw",
)

TIMEOUT_KINDS = (
    "worker_timeout",
    "upstream_timeout",
    "read_timeout",
    "connect_timeout",
    "request_timeout",
    "task_time_limit",
)

TASK_STATES = ("received", "succeeded", "failed", "retry")

#: Fields sent to Loki as structured metadata (high cardinality, never stream labels).
METADATA_FIELDS = ("trace_id", "span_id", "req_id", "tenant_id", "app_id", "task_id")


@dataclass(init=False)
class Event:
    """One parsed log record.

    `ts_ns` is Docker's timestamp of the record's first line, in nanoseconds since the epoch; `text` is what is
    shipped (lines joined with ``\\n``). `service`, `container` and `stream` come from the source.

    Every record builds one, so it is cheap: the constructor sets the source's fields and any fields given by
    keyword; every other field reads its class-level default until a reader sets it.
    """

    ts_ns: int
    text: str
    service: str = ""
    container: str = ""
    stream: str = "stdout"
    lines: int = 1
    truncated: bool = False

    level: str = "unknown"
    format: str = "raw"
    message: str | None = None
    logger_caller: str | None = None

    trace_id: str | None = None
    span_id: str | None = None
    req_id: str | None = None
    tenant_id: str | None = None
    user_id: str | None = None
    app_id: str | None = None
    workflow_id: str | None = None
    node_id: str | None = None

    http_method: str | None = None
    http_path: str | None = None
    http_status: int | None = None
    duration_seconds: float | None = None

    model: str | None = None
    model_type: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cost: float | None = None
    currency: str | None = None
    llm_latency_seconds: float | None = None

    task_name: str | None = None
    task_id: str | None = None
    task_state: str | None = None
    task_runtime_seconds: float | None = None

    error_type: str | None = None
    timeout_kind: str | None = None

    def __init__(
        self,
        ts_ns: int,
        text: str,
        service: str = "",
        container: str = "",
        stream: str = "stdout",
        lines: int = 1,
        truncated: bool = False,
        **more: object,
    ) -> None:
        self.ts_ns = ts_ns
        self.text = text
        self.service = service
        self.container = container
        self.stream = stream
        self.lines = lines
        self.truncated = truncated
        for name, value in more.items():
            if name not in _OPTIONAL_FIELDS:
                raise TypeError(f"Event has no field {name!r}")
            setattr(self, name, value)


#: Every field name of `Event`, for configuration that refers to fields by name (mappings, metric rules).
EVENT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Event))
_OPTIONAL_FIELDS = frozenset(EVENT_FIELDS[7:])

#: Fields an operator may set from their own JSON lines, with the type each expects.
MAPPABLE_FIELDS: dict[str, type] = {
    f.name: {"str | None": str, "int | None": int, "float | None": float}[str(f.type)]
    for f in fields(Event)
    if str(f.type) in ("str | None", "int | None", "float | None")
}
