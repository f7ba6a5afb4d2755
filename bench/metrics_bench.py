"""How fast `LogMetrics.observe` is on a realistic mix of Dify events.

Run with ``python -m bench.metrics_bench``. The mix: mostly plain info lines, some HTTP access lines, some LLM
usage, some Celery task lines and some errors, spread over a few services, models and tasks so the series dicts
look like a real stack's. Reports events/s and mean microseconds per event, with and without operator rules.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from prometheus_client import CollectorRegistry

from logpipe.config import MetricRule, MetricsConfig, ModelPrice, RuleMatch
from logpipe.event import Event
from logpipe.metrics import LogMetrics

SERVICES = ("api", "worker", "plugin_daemon", "nginx", "sandbox", "web")
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet", "deepseek-chat", "qwen-max")
TASKS = ("tasks.document_indexing_task", "tasks.mail_invite_member_task", "tasks.clean_dataset_task")
PATHS = ("/console/api/apps", "/v1/chat-messages", "/v1/workflows/run", "/healthz")
ERRORS = ("ValueError", "KeyError", "openai.APITimeoutError", "InvokeRateLimitError")

#: (share of events, kind) -- mostly plain lines, as in a real Dify stack.
MIX = ((0.70, "plain"), (0.15, "http"), (0.05, "usage"), (0.05, "celery"), (0.05, "error"))


def make_events(n: int, seed: int = 1) -> list[Event]:
    rng = random.Random(seed)
    kinds = [kind for share, kind in MIX for _ in range(int(share * 100))]
    events = []
    for i in range(n):
        kind = rng.choice(kinds)
        service = rng.choice(SERVICES)
        ev = Event(ts_ns=i, text="line", service=service, level="info", format="json")
        if kind == "plain":
            ev.level = rng.choice(("info", "info", "info", "debug", "warning"))
        elif kind == "http":
            ev.http_method = rng.choice(("GET", "POST"))
            ev.http_path = rng.choice(PATHS)
            ev.http_status = rng.choice((200, 200, 200, 201, 304, 400, 404, 500))
            ev.duration_seconds = rng.expovariate(5.0)
            if service == "plugin_daemon":
                ev.model_type = "llm"
        elif kind == "usage":
            ev.model = rng.choice(MODELS)
            ev.prompt_tokens = rng.randint(50, 20000)
            ev.completion_tokens = rng.randint(10, 2000)
            ev.llm_latency_seconds = rng.expovariate(0.3)
            if rng.random() < 0.5:
                ev.cost, ev.currency = rng.random() / 10, "USD"
        elif kind == "celery":
            ev.task_name = rng.choice(TASKS)
            ev.task_id = f"{rng.getrandbits(64):016x}"
            ev.task_state = rng.choice(("received", "succeeded", "succeeded", "failed"))
            if ev.task_state != "received":
                ev.task_runtime_seconds = rng.expovariate(0.1)
        else:
            ev.level = rng.choice(("error", "error", "critical"))
            ev.error_type = rng.choice(ERRORS)
            if rng.random() < 0.2:
                ev.timeout_kind = "read_timeout"
        events.append(ev)
    return events


RULES = (
    MetricRule(
        name="app_chat_requests", labels={"status": "http_status"}, match=RuleMatch(regex={"http_path": r"^/v1/chat"})
    ),
    MetricRule(name="app_worker_warnings", services=("worker",), match=RuleMatch(equals={"level": "warning"})),
    MetricRule(
        name="app_completion_tokens",
        type="histogram",
        value_field="completion_tokens",
        buckets=(10.0, 100.0, 1000.0, 10000.0),
        labels={"model": "model"},
    ),
)


def run(config: MetricsConfig, events: list[Event], rounds: int, chunk: int = 2_000) -> tuple[float, float]:
    """Seconds per event through `observe`: (best, median) over `rounds` passes of `chunk`-event slices.

    Short slices and the best of many filter out a noisy neighbour on a shared machine; the median shows what
    a pass typically cost.
    """
    metrics = LogMetrics(CollectorRegistry(), config)
    observe = metrics.observe
    for ev in events:  # warm up: create every series once
        observe(ev)
    slices = [events[i : i + chunk] for i in range(0, len(events), chunk)]
    timings = []
    for r in range(rounds):
        part = slices[r % len(slices)]
        start = time.thread_time()
        for ev in part:
            observe(ev)
        timings.append((time.thread_time() - start) / len(part))
    return min(timings), statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=500)
    args = parser.parse_args()
    events = make_events(args.events)
    prices = {m: ModelPrice(0.001, 0.002) for m in MODELS}
    for label, config in (
        ("built-in metrics", MetricsConfig(prices=prices)),
        (f"built-in + {len(RULES)} rules", MetricsConfig(prices=prices, rules=RULES)),
    ):
        best, median = run(config, events, args.rounds)
        print(
            f"{label:<26} best {1 / best:>10,.0f} events/s ({best * 1e6:.2f} us/event)"
            f"   median {1 / median:>10,.0f} events/s ({median * 1e6:.2f} us/event)"
        )


if __name__ == "__main__":
    main()
