"""The `pipeline` benchmark: decode + group + parse + redact + metrics + encode (+ gzip), one core, no I/O.
`ship_rules`: what deciding what to ship costs per record, without rules and with twenty.

Lines come from the realistic mixed Dify corpus (bench/corpus.py) and enter the real `Pipeline` the way the
Docker source hands them on (chunks of one container stream); the lanes' entries are then encoded into Loki push
bodies with the real encoder. Reported with the derived metrics on and off.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from prometheus_client import CollectorRegistry

from bench.corpus import dify_corpus
from bench.jsoncorpus import dify_json_corpus
from logpipe.config import Config, ShipConfig, ShipMatch, ShipRule
from logpipe.event import Chunk, ContainerInfo, Event
from logpipe.metrics import LogMetrics
from logpipe.pipeline import Pipeline, tune_gc
from logpipe.shipping import Shipping
from logpipe.sinks.lanes import BatchLimits, Lanes
from logpipe.sinks.push import encode
from logpipe.telemetry import Telemetry

CHUNK_LINES = 200  # lines per chunk, as a busy follower hands them on


def chunks_of(lines: int, seed: int = 1, corpus_name: str = "mixed") -> tuple[list[Chunk], int]:
    if corpus_name == "json":
        corpus = [("api", "stdout", line) for line in dify_json_corpus(lines)]
    else:
        corpus = dify_corpus(lines, seed)
    containers: dict[str, ContainerInfo] = {}
    per_lane: dict[tuple[str, str], list[tuple[int, int, bytes, int]]] = {}
    ts = 1_781_260_200_000_000_000
    total_bytes = 0
    for service, stream, line in corpus:
        ts += 50_000
        raw = line.encode("utf-8", "surrogateescape")
        total_bytes += len(raw) + 1
        per_lane.setdefault((service, stream), []).append((ts, 1, raw, 0))
        if service not in containers:
            containers[service] = ContainerInfo(
                id=f"{service}-id",
                name=f"docker-{service}-1",
                service=service,
                project="docker",
                tty=False,
                running=True,
                labels={},
            )
    chunks = []
    # interleave lanes chunk by chunk, as concurrent followers would
    queues = {
        key: [lines_[i : i + CHUNK_LINES] for i in range(0, len(lines_), CHUNK_LINES)]
        for key, lines_ in per_lane.items()
    }
    while any(queues.values()):
        for (service, stream), parts in queues.items():
            if parts:
                part = parts.pop(0)
                chunks.append(Chunk(containers[service], stream, part, sum(len(p[2]) for p in part)))
    return chunks, total_bytes


def run(lines: int, metrics_on: bool, corpus_name: str = "mixed") -> dict[str, Any]:
    chunks, total_bytes = chunks_of(lines, corpus_name=corpus_name)
    config = replace(Config(), ship=ShipConfig(rate_limit_lines_per_sec=0))  # ship every line: the corpus is dense
    registry = CollectorRegistry()
    telemetry = Telemetry(registry)
    lanes = Lanes(1 << 40)  # no backpressure: everything stays in memory for the encode phase
    metrics = LogMetrics(registry, config.metrics) if metrics_on else None
    pipeline = Pipeline(replace(config), lanes, metrics, telemetry, lambda: "bench-host")
    tune_gc()  # as the daemon does once started
    started = time.process_time()
    now = time.monotonic()
    for chunk in chunks:
        pipeline.process(chunk, now)
    pipeline.flush_all()
    parsed = time.process_time()
    limits = BatchLimits(config.loki.batch_max_bytes, config.loki.batch_max_entries, 0.0)
    entries = 0
    body_bytes = 0
    while True:
        with lanes.cond:
            batch = lanes.take(limits, flush=True)
            if batch is None:
                break
        pushed = encode(
            batch.entries,
            now_ns=1_781_260_300_000_000_000,
            max_age_ns=3300 * 10**9,
            too_old="retimestamp",
            structured_metadata=True,
            gzip_level=config.loki.gzip_level,
        )
        entries += pushed.entries
        body_bytes += len(pushed.body)
        with lanes.cond:
            lanes.done(batch)
    finished = time.process_time()
    cpu = finished - started
    return {
        "lines": lines,
        "entries": entries,
        "cpu_secs": round(cpu, 3),
        "parse_cpu_secs": round(parsed - started, 3),
        "encode_cpu_secs": round(finished - parsed, 3),
        "lines_per_sec": round(lines / cpu),
        "records_per_sec": round(entries / cpu),
        "mib_per_sec": round(total_bytes / cpu / (1 << 20), 2),
        "gzip_ratio": round(total_bytes / max(body_bytes, 1), 1),
    }


def bench(short: bool, only: list[str] | None = None) -> dict[str, Any]:
    lines = 20_000 if short else 200_000
    run(2_000, True)  # warm-up: imports, regex caches
    found = {
        "json": lambda: run(lines, True, "json"),
        "metrics_on": lambda: run(lines, True),
        "metrics_off": lambda: run(lines, False),
        "ship_rules": lambda: rules_cost(lines),
    }
    return {name: case() for name, case in found.items() if not only or name in only}


#: Twenty rules of the kinds operators write, none of which matches a line of the JSON corpus: scoped to other
#: services, to levels and formats it does not have, to HTTP paths, and substrings and regexes of the line.
TWENTY_RULES = (
    [ShipRule(f"svc{i}", "drop", match=ShipMatch(service=(s,), path="^/health")) for i, s in
     enumerate(("nginx", "plugin_daemon", "sandbox", "weaviate", "ssrf_proxy"))]
    + [ShipRule(f"lvl{i}", "drop", match=ShipMatch(level=("debug",), format=(f,))) for i, f in
       enumerate(("dify_json", "dify_text", "llm_debug", "plugin_json", "celery_text"))]
    + [ShipRule(f"path{i}", "drop", match=ShipMatch(path=p, status="^2")) for i, p in
       enumerate(("^/health$", "^/healthz$", "^/metrics$", "^/console/api/ping", "^/v1/ping"))]
    + [ShipRule(f"text{i}", "drop", match=ShipMatch(contains=c)) for i, c in
       enumerate(("[on_llm_before_invoke]", "HEALTHCHECK", "kube-probe", "ELB-HealthChecker"))]
    + [ShipRule("regex", "drop", match=ShipMatch(regex=r"GET /(?:health|ready)z? HTTP"))]
)  # fmt: skip


def rules_cost(lines: int) -> dict[str, Any]:
    """Nanoseconds per record that deciding costs: no rules, the 20 rules above (none matching), and the same 20
    rules applying to every stream (the service scope removed): the worst case short of a match."""
    chunks, _ = chunks_of(lines, corpus_name="json")
    parser_config = Config()
    registry = CollectorRegistry()
    telemetry = Telemetry(registry)
    lanes = Lanes(1 << 40)
    pipeline = Pipeline(parser_config, lanes, None, telemetry, lambda: "bench-host")
    for chunk in chunks:  # parse once; decide many times below
        pipeline.process(chunk, time.monotonic())
    pipeline.flush_all()
    events: list[list[Event]] = []
    parser = pipeline._parser
    for chunk in chunks:
        grouper = parser.grouper()
        texts = [line[2].decode() for line in chunk.lines]
        records = grouper.feed(chunk.lines, texts, 0.0) + [r for r in [grouper.flush()] if r is not None]
        events.append([parser.parse(r, "api", "docker-api-1", "stdout") for r in records])
    n = sum(len(e) for e in events)
    unscoped = tuple(ShipRule(r.name, r.action, r.rate, replace(r.match, service=())) for r in TWENTY_RULES)
    out: dict[str, Any] = {"records": n}
    for name, rules in (("none", ()), ("twenty_no_match", TWENTY_RULES), ("twenty_unscoped_no_match", unscoped)):
        shipping = Shipping(ShipConfig(rules=rules, rate_limit_lines_per_sec=5000, rate_limit_burst=1e12),
                            lambda *_: None)  # fmt: skip
        stream = shipping.stream("api", "docker-api-1", "stdout")
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for batch in events:
                stream.decide(batch, 0.0)
            best = min(best, time.perf_counter() - started)
        out[f"{name}_ns_per_record"] = round(best / n * 1e9)
    return out
