"""The `pipeline` benchmark: decode + group + parse + redact + metrics + encode (+ gzip), one core, no I/O.

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
from logpipe.config import Config
from logpipe.event import Chunk, ContainerInfo
from logpipe.metrics import LogMetrics
from logpipe.pipeline import Pipeline, tune_gc
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
    config = Config()
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
    }
    return {name: case() for name, case in found.items() if not only or name in only}
