"""Noise control end to end (issue 14): logpipe run against real Docker containers and the Loki test server.

Ship rules and their live reload, the rate limit's summaries in Loki, and a quiet container's error line while
another container floods a Loki that rate-limits ingestion (4 MB/s, Loki's default).
"""

from __future__ import annotations

import os
import re
import statistics
import time
from pathlib import Path

import pytest

from tests.dockerkit import Containers, wait_until
from tests.logpipeproc import LogpipeProcess
from tests.support.lokiserver import LokiServer

pytestmark = pytest.mark.docker

NGINX = '172.18.0.1 - - [12/Jun/2026:10:32:01 +0000] "GET {path} HTTP/1.1" 200 12 "-" "curl/8" "seq={seq}"'
HEALTH_RULE = """
[[ship.rules]]
name = "health"
action = "drop"
match = { service = ["nginx"], path = "^/health$" }
"""


def write(directory: Path, parts: list[list[str]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for i, lines in enumerate(parts):
        (directory / f"p{i:05d}").write_text("\n".join(lines) + "\n")


def replace_file(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".swp")
    tmp.write_text(text)
    os.replace(tmp, path)


def seq(line: str) -> int:
    match = re.search(r"seq=(\d+)", line)
    assert match is not None, line
    return int(match[1])


def test_rules_drop_what_they_match_and_a_reload_changes_them_without_losing_or_resetting_anything(
    tmp_path: Path, containers: Containers
) -> None:
    # 3,000 nginx lines, every other one a health probe, printed over ~6 s; the drop rule is removed mid-way.
    parts = [
        [NGINX.format(path="/health" if n % 2 else "/v1/chat-messages", seq=n) for n in range(p * 50, p * 50 + 50)]
        for p in range(60)
    ]
    write(tmp_path / "data", parts)
    with LokiServer(visibility_delay_secs=0) as loki:
        proc = LogpipeProcess(tmp_path, loki.url, containers.project, config_text=HEALTH_RULE)
        del proc.env["LOGPIPE_SHIP_RATE_LIMIT_LINES_PER_SEC"]  # logpipe's default limit, as users run it
        proc.start()
        try:
            containers.run(
                "nginx",
                "for f in /data/p*; do cat $f; sleep 0.1; done; sleep 3600",
                volumes={str(tmp_path / "data"): {"bind": "/data", "mode": "ro"}},
            )
            assert wait_until(lambda: len(loki.lines(service="nginx")) >= 300, 20)
            assert proc.config_path is not None
            replace_file(proc.config_path, "# the health rule is gone\n")
            assert wait_until(lambda: proc.metric("logpipe_config_reloads_total", result="success") == 1, 10)
            assert wait_until(lambda: any(seq(line) >= 2999 for line in loki.lines(service="nginx")), 30)
            proc.wait_settled()
            shipped = [seq(line) for line in loki.lines(service="nginx")]
            metrics = proc.metrics()
        finally:
            proc.stop()
    assert loki.duplicates() == []
    # Every request line arrived; of the probes, those before the reload were dropped and those after it shipped:
    # one cut, no probe after it missing.
    assert {n for n in shipped if n % 2 == 0} == set(range(0, 3000, 2))
    probes = sorted(n for n in shipped if n % 2)
    first = probes[0]
    assert 300 < first < 2999, "the reload must come while lines flow"
    assert probes == list(range(first, 3000, 2))
    dropped = metrics['logpipe_entries_dropped_total{reason="rule",rule="health"}']
    assert dropped == len(range(1, first, 2))
    # The metrics saw every line, before and after the reload: no reset, nothing missing.
    requests = sum(v for k, v in metrics.items() if k.startswith("dify_http_requests_total{"))
    assert requests == 3000
    assert metrics["logpipe_entries_read_total"] == metrics["logpipe_entries_sent_total"] + dropped


def test_a_storm_is_cut_to_the_rate_limit_with_its_gaps_marked_in_loki_and_its_errors_kept(
    tmp_path: Path, containers: Containers
) -> None:
    # A crash loop: 40,000 records as fast as the container can print them, one in 200 an error.
    lines = [
        '{"ts":"2026-06-12T10:32:01.117Z","severity":"' + ("ERROR" if n % 200 == 199 else "INFO") + '",'
        f'"service":"langgenius/dify","caller":"app.py:1","message":"storm seq={n}"}}'
        for n in range(40_000)
    ]
    write(tmp_path / "data", [lines[i : i + 10_000] for i in range(0, len(lines), 10_000)])
    env = {
        "LOGPIPE_SHIP_RATE_LIMIT_LINES_PER_SEC": "1000",
        "LOGPIPE_SHIP_RATE_LIMIT_BURST": "2000",
        "LOGPIPE_SHIP_RATE_LIMIT_ERROR_LINES_PER_SEC": "200",
    }
    with LokiServer(visibility_delay_secs=0) as loki:
        proc = LogpipeProcess(tmp_path, loki.url, containers.project, env=env).start()
        try:
            containers.run(
                "api", "cat /data/p*; sleep 3600", volumes={str(tmp_path / "data"): {"bind": "/data", "mode": "ro"}}
            )
            assert wait_until(lambda: proc.metric("logpipe_lines_read_total") >= 40_000, 60)
            time.sleep(1.5)  # the idle tick summarizes the end of the storm
            proc.wait_settled()
            metrics = proc.metrics()
            entries = loki.entries(service="api")
        finally:
            proc.stop()
    assert loki.duplicates() == []
    storm = [e for e in entries if "storm seq=" in e.line]
    summaries = [e for e in entries if e.line.startswith("logpipe: dropped ")]
    dropped = metrics['logpipe_entries_dropped_total{reason="rate_limited",rule=""}']
    assert dropped > 20_000, "the container printed slower than the test needs: nothing to limit"
    assert len(storm) + dropped == 40_000
    counted = [int(re.match(r"logpipe: dropped (\d+) records", e.line)[1]) for e in summaries]  # type: ignore[index]
    assert sum(counted) == dropped, "every dropped record is in one summary entry"
    assert all(dict(e.labels)["level"] == "warning" for e in summaries)
    # A summary sits where its records were dropped: between the shipped records around the gap.
    first_kept, last_kept = min(e.ts_ns for e in storm), max(e.ts_ns for e in storm)
    assert all(first_kept <= e.ts_ns <= last_kept + 10**9 for e in summaries)
    # Errors went last: at a storm of 1 error per 200 records, their own budget keeps every one.
    errors = [e for e in storm if '"severity":"ERROR"' in e.line]
    assert len(errors) == 200
    # And the derived metrics counted all 40,000.
    assert metrics['dify_log_entries_total{level="info",service="api"}'] == 39_800
    assert metrics['dify_errors_total{error_type="unknown",service="api"}'] == 200


def test_a_quiet_containers_error_is_not_held_behind_a_flood_that_loki_rate_limits(
    tmp_path: Path, containers: Containers
) -> None:
    # ~20,000 lines/s of ~400 bytes (8 MB/s) against Loki's default 4 MB/s per tenant: Loki answers 429 all along
    # and the flood falls further behind every second. logpipe's own rate limit is off (Loki's limit is what is
    # tested) and the backoff is the production default (0.5 s doubling to 60 s).
    noise = "n" * 300
    parts = [
        [
            '{"ts":"2026-06-12T10:32:01.117Z","severity":"INFO","service":"langgenius/dify","caller":"app.py:1",'
            f'"message":"flood seq={p * 2000 + i} {noise}"}}'
            for i in range(2000)
        ]
        for p in range(120)
    ]
    write(tmp_path / "flood", parts)
    env = {
        "LOGPIPE_SHIP_RATE_LIMIT_LINES_PER_SEC": "0",
        "LOGPIPE_LOKI_MIN_BACKOFF_SECS": "0.5",
        "LOGPIPE_LOKI_MAX_BACKOFF_SECS": "60",
        "LOGPIPE_LOKI_BATCH_WAIT_SECS": "1",
    }
    with LokiServer(visibility_delay_secs=0, ingestion_rate_mb=4, ingestion_burst_size_mb=6) as loki:
        proc = LogpipeProcess(tmp_path, loki.url, containers.project, env=env).start()
        try:
            for k in range(3):  # three flooding workers, each reading every third part
                containers.run(
                    "worker",
                    f"i=0; for f in /data/p*; do [ $((i % 3)) = {k} ] && {{ cat $f; sleep 0.3; }}; i=$((i+1)); done; "
                    "sleep 3600",
                    name=f"{containers.project}-worker-{k + 1}",
                    volumes={str(tmp_path / "flood"): {"bind": "/data", "mode": "ro"}},
                )
            assert wait_until(lambda: proc.metric("logpipe_loki_responses_total", status="429") >= 3, 30)
            quiet: list[float] = []
            for n in range(5):  # one error line every 1.5 s on another container, while Loki refuses the flood
                line = f"2026-06-12 10:32:01.117 ERROR [MainThread] [app.py:1]  - quiet error {n}"
                containers.run("api", f"echo '{line}'; sleep 3600", name=f"{containers.project}-api-{n + 1}")
                written = time.time()
                assert wait_until(lambda n=n: any(f"quiet error {n}" in x for x in loki.lines(service="api")), 60)
                (entry,) = [e for e in loki.entries(service="api") if f"quiet error {n}" in e.line]
                quiet.append(entry.received_at - written)
                time.sleep(1.5)
            refused = proc.metric("logpipe_loki_responses_total", status="429")
            # How far behind the flood was meanwhile: its lines' Docker time against when Loki stored them.
            flood = loki.entries(service="worker")
            flood_lag = [e.received_at - e.ts_ns / 1e9 for e in flood[-2000:]]
        finally:
            proc.stop()
    print(
        f"\nquiet error line to Loki: {min(quiet):.2f}..{max(quiet):.2f} s (median {statistics.median(quiet):.2f} s); "
        f"flood lag {statistics.median(flood_lag):.1f} s; {refused:.0f} pushes refused with 429"
    )
    assert refused >= 5, "Loki never rate-limited the flood: the test measures nothing"
    assert statistics.median(flood_lag) > 2 * max(quiet), "the flood was not behind: nothing to overtake"
    assert max(quiet) < 3.0, f"a quiet container's error waited behind the flood: {quiet}"
