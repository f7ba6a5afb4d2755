"""A real Prometheus (Debian's package) scrapes a running logpipe; derived metrics come back through its API,
and the shipped alert rules evaluate without errors against them."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests.dockerkit import Containers, require, wait_until
from tests.logpipeproc import REPO, LogpipeProcess, free_port
from tests.stack.stackkit import grafana_to_promql
from tests.stack.test_grafana import queries
from tests.support.lokiserver import LokiServer

pytestmark = [pytest.mark.docker, pytest.mark.prometheus]

NGINX = [
    '172.18.0.1 - - [12/Jun/2026:10:32:01 +0000] "POST /v1/chat-messages HTTP/1.1" 200 5123 "-" "curl/8" "-"',
    '172.18.0.1 - - [12/Jun/2026:10:32:02 +0000] "POST /v1/chat-messages HTTP/1.1" 500 12 "-" "curl/8" "-"',
    '172.18.0.1 - - [12/Jun/2026:10:32:03 +0000] "GET /console/api/apps/05eaafb0-1c3b-4d4f-9a55-0c1e2d3f4a5b HTTP/1.1" '
    '504 0 "-" "curl/8" "-"',
]


@pytest.fixture
def prometheus(tmp_path: Path) -> tuple[str, Path]:
    """Where a real Prometheus will listen, and its working directory."""
    if shutil.which("prometheus") is None:
        require("the prometheus binary (Debian package prometheus) is needed")
    directory = tmp_path / "prom"
    directory.mkdir()
    return f"http://127.0.0.1:{free_port()}", directory


def start_prometheus(directory: Path, web: str, target: str) -> subprocess.Popen[bytes]:
    rules = sorted(str(p) for p in (REPO / "prometheus" / "rules").glob("*.yml"))
    config = directory / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files: {rules}\n"
        "scrape_configs:\n  - job_name: logpipe\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    with open(directory / "prometheus.log", "wb") as log:
        return subprocess.Popen(
            [
                shutil.which("prometheus") or "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address={web.removeprefix('http://')}",
            ],
            stdout=log,
            stderr=log,
        )


def dashboard_queries() -> list[tuple[str, str, str, str]]:
    """The dashboard's Prometheus queries, with every host selected (the single-host stack has no host label)."""
    return queries(lambda expr: grafana_to_promql(expr.replace("$host", ".*")))


def query_when_up(web: str, promql: str) -> dict[str, float]:
    try:
        return query(web, promql)
    except (httpx.HTTPError, ValueError, KeyError):
        return {}  # not listening yet, or still starting ("Service Unavailable" in plain text)


def query(web: str, promql: str) -> dict[str, float]:
    data = httpx.get(f"{web}/api/v1/query", params={"query": promql}, timeout=5).json()
    out = {}
    for item in data["data"]["result"]:
        labels = {k: v for k, v in item["metric"].items() if k not in ("instance", "job", "__name__")}
        out[",".join(f"{k}={v}" for k, v in sorted(labels.items()))] = float(item["value"][1])
    return out


def test_prometheus_reads_the_derived_metrics(
    tmp_path: Path, prometheus: tuple[str, Path], containers: Containers, docker_client: docker.DockerClient
) -> None:
    web, directory = prometheus
    with LokiServer(visibility_delay_secs=0) as loki:
        proc = LogpipeProcess(tmp_path, loki.url, containers.project)
        proc.start()
        script = "; ".join(f"echo '{line}'" for line in NGINX) + "; sleep 60"
        containers.run("nginx", script)
        assert wait_until(lambda: len(loki.lines(service="nginx")) == 3, 15)
        server = start_prometheus(directory, web, f"127.0.0.1:{proc.port}")
        try:
            assert wait_until(lambda: len(query_when_up(web, "dify_http_requests_total")) == 3, 30, interval=0.5), (
                directory / "prometheus.log"
            ).read_text()[-2000:]
            requests = query(web, "dify_http_requests_total")
            assert requests == {
                "method=POST,service=nginx,status=200": 1.0,
                "method=POST,service=nginx,status=500": 1.0,
                "method=GET,service=nginx,status=504": 1.0,
            }
            assert query(web, "dify_timeouts_total") == {"kind=upstream_timeout,service=nginx": 1.0}
            assert query(web, "sum(dify_log_entries_total)") == {"": 3.0}
            assert query(web, "logpipe_containers_followed") == {"": 1.0}
            # every shipped rule evaluates against live data without errors
            def rule_groups() -> list[dict[str, Any]]:
                return list(httpx.get(f"{web}/api/v1/rules", timeout=5).json()["data"]["groups"])

            def all_evaluated() -> bool:
                rules = [r for g in rule_groups() for r in g["rules"]]
                return bool(rules) and all(r["health"] != "unknown" for r in rules)

            assert wait_until(all_evaluated, 30, interval=0.5), "the rules were never evaluated"
            groups = rule_groups()
            unhealthy = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"] if r["health"] == "err"]
            assert unhealthy == []
            # Issue 14: on a healthy logpipe every shipper-health panel reads 0, not "No data" (counters are
            # exported at 0 for every known label value from the start).
            time.sleep(2)  # two scrapes after the start, so that rate() and increase() have samples to compare
            empty = [
                f"{panel} / {legend or expr}"
                for _, panel, legend, expr in dashboard_queries()
                if "logpipe_" in expr and "dify_" not in expr and not legend.endswith("(Promtail)")
                and not query(web, expr)
            ]  # fmt: skip
            assert empty == []
        finally:
            server.terminate()
            server.wait(10)
            proc.stop()
