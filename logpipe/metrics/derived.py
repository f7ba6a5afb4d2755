"""The built-in metrics every Dify stack gets: log volume, errors, timeouts, HTTP, LLM usage and cost, Celery.

Names are ``<namespace>_<suffix>`` (namespace ``dify`` by default); a namespace change renames the families and
keeps their series. Each family has a series cap; over it, the label named in `FOLD` becomes ``other``. Labels
with a fixed vocabulary (level, timeout kind, task state, HTTP method) map unknown values to ``other`` up front.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from logpipe.event import LEVELS, TASK_STATES, TIMEOUT_KINDS, Event
from logpipe.metrics.store import COUNTER, HISTOGRAM, UNKNOWN, Family

#: HTTP request durations: 5 ms to 5 min (streaming chat responses run for minutes).
HTTP_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
#: LLM calls and plugin invocations: 100 ms to 10 min.
LLM_DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
#: Celery tasks: 10 ms to 30 min (dataset indexing is slow).
TASK_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
#: Prompt size per call: 100 to 128k tokens, roughly doubling.
PROMPT_TOKEN_BUCKETS = (100.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0, 16000.0, 32000.0, 64000.0, 128000.0)

HTTP_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"))


@dataclass(frozen=True)
class Spec:
    suffix: str
    kind: str
    help: str
    labels: tuple[str, ...]
    fold: str | None
    buckets: tuple[float, ...] = ()
    vocab: tuple[tuple[str, frozenset[str]], ...] = ()


_LEVEL = (("level", frozenset(LEVELS)),)
_ERROR_LEVELS = ("error", "critical")

#: The built-in families. `fold` is the label that becomes ``other`` when a family is over its series cap.
SPECS = (
    Spec("log_entries_total", COUNTER, "Log entries observed.", ("service", "level"), "service", vocab=_LEVEL),
    Spec("errors_total", COUNTER, "Log entries at level error or critical.", ("service", "error_type"), "error_type"),
    Spec(
        "timeouts_total",
        COUNTER,
        "Log entries reporting a timeout.",
        ("service", "kind"),
        "service",
        vocab=(("kind", frozenset(TIMEOUT_KINDS)),),
    ),
    Spec(
        "http_requests_total",
        COUNTER,
        "HTTP requests seen in access logs.",
        ("service", "method", "status"),
        "status",
        vocab=(("method", HTTP_METHODS),),
    ),
    Spec(
        "http_request_duration_seconds",
        HISTOGRAM,
        "HTTP request duration from access logs.",
        ("service", "method"),
        "service",
        HTTP_DURATION_BUCKETS,
        (("method", HTTP_METHODS),),
    ),
    Spec(
        "llm_tokens_total",
        COUNTER,
        "LLM tokens used, by model and type (prompt or completion).",
        ("model", "type"),
        "model",
    ),
    Spec(
        "llm_cost_usd_total",
        COUNTER,
        "LLM cost in USD: as logged, else from the configured price table.",
        ("model",),
        "model",
    ),
    Spec("llm_request_duration_seconds", HISTOGRAM, "LLM call latency.", ("model",), "model", LLM_DURATION_BUCKETS),
    Spec(
        "plugin_invoke_duration_seconds",
        HISTOGRAM,
        "Plugin daemon invocation duration.",
        ("model_type",),
        "model_type",
        LLM_DURATION_BUCKETS,
    ),
    Spec("llm_prompt_tokens", HISTOGRAM, "Prompt tokens per LLM call.", ("model",), "model", PROMPT_TOKEN_BUCKETS),
    Spec(
        "celery_tasks_total",
        COUNTER,
        "Celery task events, by task and state.",
        ("task", "state"),
        "task",
        vocab=(("state", frozenset(TASK_STATES)),),
    ),
    Spec("celery_task_duration_seconds", HISTOGRAM, "Celery task runtime.", ("task",), "task", TASK_DURATION_BUCKETS),
)

#: Model -> (USD per 1K prompt tokens, USD per 1K completion tokens).
Prices = Mapping[str, tuple[float, float]]


class Builtins:
    """The built-in families and how one event updates them."""

    def __init__(self, namespace: str, limit: int) -> None:
        self.families: dict[str, Family] = {}
        for spec in SPECS:
            self.families[spec.suffix] = Family(
                f"{namespace}_{spec.suffix}",
                spec.help,
                spec.kind,
                spec.labels,
                limit=limit,
                fold=spec.labels.index(spec.fold) if spec.fold else None,
                bounds=spec.buckets,
                vocab={spec.labels.index(label): values for label, values in spec.vocab},
            )
        f = {suffix: family.active for suffix, family in self.families.items()}
        self._entries = f["log_entries_total"]
        self._entries_series = self._entries.series  # every event updates it: skip a call
        self._errors = f["errors_total"]
        self._timeouts = f["timeouts_total"]
        self._http = f["http_requests_total"]
        self._http_duration = f["http_request_duration_seconds"]
        self._tokens = f["llm_tokens_total"]
        self._cost = f["llm_cost_usd_total"]
        self._llm_duration = f["llm_request_duration_seconds"]
        self._plugin_duration = f["plugin_invoke_duration_seconds"]
        self._prompt_tokens = f["llm_prompt_tokens"]
        self._tasks = f["celery_tasks_total"]
        self._task_duration = f["celery_task_duration_seconds"]

    def reconfigure(self, namespace: str, limit: int) -> None:
        for suffix, family in self.families.items():
            family.name = f"{namespace}_{suffix}"
            family.limit = limit

    def observe(self, ev: Event, now: float, prices: Prices) -> None:
        """Update the built-in families from one event (the hot path: most events touch one series)."""
        service = ev.service
        level = ev.level
        key = (service, level)
        s = self._entries_series.get(key) or self._entries.slow(key, now)
        if s is not None:
            s[0] = now
            s[1] += 1.0
        if level in _ERROR_LEVELS:
            self._errors.inc((service, ev.error_type or UNKNOWN), now)
        if ev.timeout_kind is not None:
            self._timeouts.inc((service, ev.timeout_kind), now)
        status = ev.http_status
        duration = ev.duration_seconds
        if status is not None:
            method = ev.http_method or UNKNOWN
            self._http.inc((service, method, status), now)
            if duration is not None and duration >= 0:
                self._http_duration.observe((service, method), duration, now)
        if ev.model_type is not None and duration is not None and duration >= 0:
            self._plugin_duration.observe((ev.model_type,), duration, now)
        if (
            ev.prompt_tokens is not None
            or ev.completion_tokens is not None
            or ev.cost is not None
            or ev.llm_latency_seconds is not None
        ):
            self._llm(ev, now, prices)
        state, runtime = ev.task_state, ev.task_runtime_seconds
        if state is not None or runtime is not None:
            task = ev.task_name or UNKNOWN
            if state is not None:
                self._tasks.inc((task, state), now)
            if runtime is not None and runtime >= 0:
                self._task_duration.observe((task,), runtime, now)

    def _llm(self, ev: Event, now: float, prices: Prices) -> None:
        model = ev.model or UNKNOWN
        prompt, completion = ev.prompt_tokens, ev.completion_tokens
        if prompt is not None:
            self._tokens.add((model, "prompt"), prompt, now)
            if prompt >= 0:
                self._prompt_tokens.observe((model,), prompt, now)
        if completion is not None:
            self._tokens.add((model, "completion"), completion, now)
        currency = ev.currency
        if ev.cost is not None and (currency is None or currency.upper() == "USD"):
            self._cost.add((model,), ev.cost, now)
        elif prompt is not None or completion is not None:
            price = prices.get(model)
            if price is not None:
                cost = (max(prompt or 0, 0) * price[0] + max(completion or 0, 0) * price[1]) / 1000
                if cost > 0:
                    self._cost.add((model,), cost, now)
        latency = ev.llm_latency_seconds
        if latency is not None and latency >= 0:
            self._llm_duration.observe((model,), latency, now)
