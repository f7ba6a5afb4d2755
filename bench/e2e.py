"""The `end_to_end` and `backlog` benchmarks: real dockerd, a real logpipe process, the Loki test server.

A container replays the realistic Dify corpus (bench/corpus.py) with `cat`, at full speed or at a fixed rate;
logpipe ships it to the Loki test server running in this process. Figures are for the logpipe process only:
CPU seconds from /proc/<pid>/stat, peak RSS from VmHWM, lines per second from the container's first line to
the last acknowledgement, and lag (Docker's timestamp of a line -> the moment Loki stored it) at fixed rates.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker

from bench.corpus import dify_corpus
from bench.discard import DiscardLoki
from bench.jsoncorpus import dify_json_corpus
from tests.dockerkit import Containers, client_or_none, ensure_image
from tests.logpipeproc import LogpipeProcess, peak_rss_mib
from tests.support.lokiserver import LokiServer

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_secs(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def thread_cpu_secs(pid: int) -> dict[str, float]:
    """CPU seconds per thread name (threads of one name summed: push-0, push-1 -> push)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        key = name.rstrip("0123456789_").rstrip("-_") or name
        if key.startswith("follow-"):
            key = "follow"
        out[key] = round(out.get(key, 0.0) + (int(fields[11]) + int(fields[12])) / _TICK, 2)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def write_corpus(directory: Path, lines: int, per_part: int, corpus_name: str = "mixed") -> int:
    """The corpus as part files (one container replays them); returns how many lines Docker will store."""
    directory.mkdir(parents=True, exist_ok=True)
    if corpus_name == "json":
        corpus = dify_json_corpus(lines)
    else:
        corpus = [line for _service, _stream, line in dify_corpus(lines, seed=7)]
    for part, start in enumerate(range(0, len(corpus), per_part)):
        (directory / f"p{part:05d}").write_text("\n".join(corpus[start : start + per_part]) + "\n")
    return len(corpus)


def _wait_shipped(proc: LogpipeProcess, lines: int, timeout: float, poll: float = 0.05) -> float:
    """Until logpipe has read `lines` lines and Loki acknowledged every entry built from them. Each poll is a
    scrape of logpipe's /metrics, which costs logpipe CPU: CPU figures poll rarely."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = proc.metrics()
        read = m.get("logpipe_lines_read_total", 0)
        built = m.get("logpipe_entries_read_total", 0)
        done = m.get("logpipe_entries_sent_total", 0) + sum(
            v for k, v in m.items() if k.startswith("logpipe_entries_dropped_total")
        )
        if read >= lines and done >= built and m.get("logpipe_queue_entries", 1) == 0:
            return time.monotonic()
        time.sleep(poll)
    raise TimeoutError(f"not shipped within {timeout}s")


class Bench:
    def __init__(self, client: docker.DockerClient, workdir: Path) -> None:
        self.client = client
        self.workdir = workdir

    def _logpipe(self, name: str, loki: LokiServer | DiscardLoki, project: str) -> LogpipeProcess:
        directory = self.workdir / name
        directory.mkdir()
        return LogpipeProcess(
            directory, loki.url, project, env={
                "LOGPIPE_LOKI_BATCH_WAIT_SECS": "1.0",
                "LOGPIPE_LOG_LEVEL": "warning",
                # The corpora are written as fast as a container can print: every line is to be shipped.
                "LOGPIPE_SHIP_RATE_LIMIT_LINES_PER_SEC": "0",
                # Experiments: any LOGPIPE_ setting in the bench's environment reaches logpipe.
                **{k: v for k, v in os.environ.items() if k.startswith("LOGPIPE_")},
            }
        )

    def full_speed(self, lines: int) -> dict[str, Any]:
        data = self.workdir / "full-data"
        n = write_corpus(data, lines, per_part=10_000)
        box = Containers(self.client)
        with LokiServer(visibility_delay_secs=0, keep_records=False) as loki:
            proc = self._logpipe("full", loki, box.project).start()
            try:
                assert proc.proc is not None
                cpu0 = cpu_secs(proc.proc.pid)
                started = time.monotonic()
                box.run("api", "cat /data/p*", volumes={str(data): {"bind": "/data", "mode": "ro"}})
                finished = _wait_shipped(proc, n, 600)
                cpu = cpu_secs(proc.proc.pid) - cpu0
                return {
                    "lines": n,
                    "lines_per_sec": round(n / (finished - started)),
                    "cpu_secs_per_million_lines": round(cpu / n * 1e6, 1),
                    "peak_rss_mib": round(peak_rss_mib(proc.proc.pid), 1),
                }
            finally:
                proc.stop()
                box.remove_all()

    def fixed_rate(self, rate: int, seconds: int) -> dict[str, Any]:
        data = self.workdir / f"rate-{rate}"
        per_part = max(rate // 10, 1)
        n = write_corpus(data, rate * seconds, per_part=per_part)
        box = Containers(self.client)
        with LokiServer(visibility_delay_secs=0) as loki:
            proc = self._logpipe(f"rate{rate}", loki, box.project).start()
            try:
                assert proc.proc is not None
                cpu0 = cpu_secs(proc.proc.pid)
                started = time.monotonic()
                box.run(
                    "api",
                    "for f in /data/p*; do cat $f; sleep 0.1; done",
                    volumes={str(data): {"bind": "/data", "mode": "ro"}},
                )
                finished = _wait_shipped(proc, n, seconds * 5 + 60)
                cpu = cpu_secs(proc.proc.pid) - cpu0
                lags = sorted(e.received_at - e.ts_ns / 1e9 for e in loki.entries())
                return {
                    "target_lines_per_sec": rate,
                    "lines": n,
                    "achieved_lines_per_sec": round(n / (finished - started)),
                    "lag_p50_secs": round(statistics.median(lags), 3),
                    "lag_p99_secs": round(lags[int(len(lags) * 0.99) - 1], 3),
                    "cpu_secs_per_million_lines": round(cpu / n * 1e6, 1),
                    "peak_rss_mib": round(peak_rss_mib(proc.proc.pid), 1),
                    "thread_cpu_secs": thread_cpu_secs(proc.proc.pid),
                }
            finally:
                proc.stop()
                box.remove_all()

    def backlog(self, lines: int, corpus_name: str = "mixed") -> dict[str, Any]:
        """A fresh start against a container whose `lines` are already in Docker's log, shipping to a Loki that
        answers 204 and keeps nothing; CPU of the whole logpipe process (every thread) from its start."""
        data = self.workdir / f"backlog-{corpus_name}"
        n = write_corpus(data, lines, per_part=50_000, corpus_name=corpus_name)
        box = Containers(self.client)
        with DiscardLoki() as loki:
            container = box.run("api", "cat /data/p*", volumes={str(data): {"bind": "/data", "mode": "ro"}})
            container.wait(timeout=600)
            proc = self._logpipe(f"backlog-{corpus_name}-{lines}", loki, box.project)
            try:
                started = time.monotonic()
                proc.start()
                assert proc.proc is not None
                finished = _wait_shipped(proc, n, 1200, poll=0.5)
                cpu = cpu_secs(proc.proc.pid)
                threads = thread_cpu_secs(proc.proc.pid)
                return {
                    "lines": n,
                    "catch_up_secs": round(finished - started, 1),
                    "lines_per_sec": round(n / (finished - started)),
                    "lines_per_cpu_sec": round(n / cpu),
                    "cpu_secs_per_million_lines": round(cpu / n * 1e6, 1),
                    "peak_rss_mib": round(peak_rss_mib(proc.proc.pid), 1),
                    "thread_cpu_secs": threads,
                }
            finally:
                proc.stop()
                box.remove_all()


def cases(b: Bench, short: bool) -> dict[str, Callable[[], dict[str, Any]]]:
    if short:
        return {
            "json_backlog": lambda: b.backlog(20_000, "json"),
            "mixed_backlog": lambda: b.backlog(20_000),
            "full_speed": lambda: b.full_speed(20_000),
            "rate_1k": lambda: b.fixed_rate(1_000, 3),
        }
    return {
        "json_backlog": lambda: b.backlog(300_000, "json"),  # the headline: what Dify prints in JSON mode
        "mixed_backlog": lambda: b.backlog(300_000),
        "json_backlog_1m": lambda: b.backlog(1_000_000, "json"),
        "mixed_backlog_1m": lambda: b.backlog(1_000_000),
        "full_speed": lambda: b.full_speed(300_000),
        "rate_1k": lambda: b.fixed_rate(1_000, 20),
        "rate_10k": lambda: b.fixed_rate(10_000, 20),
    }


def bench(short: bool, only: list[str] | None = None) -> dict[str, Any]:
    client = client_or_none()
    if client is None:
        return {"skipped": "no Docker engine"}
    ensure_image(client)
    workdir = Path(tempfile.mkdtemp(prefix="logpipe-bench-"))
    try:
        b = Bench(client, workdir)
        return {name: run() for name, run in cases(b, short).items() if not only or name in only}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        client.close()
