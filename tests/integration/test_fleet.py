"""Many hosts, one Loki (docs/fleet.md): several real logpipe processes, each a separate "host" (its own state dir,
host label, tenant and compose project on the shared dockerd), push into ONE Loki test server while one of them
is SIGKILLed and restarted mid-stream.

Ground truth is what Docker stored for each container. Every line must reach Loki exactly once, under its own
host's label and tenant and no other; the derived dify_* metrics of every host must equal what its containers
printed, and add up across hosts. Each host's metrics also travel the way deploy/host ships them: a Prometheus
agent started by deploy/host/prometheus/run-agent.sh with deploy/host/prometheus/agent.yml remote-writes to a
central Prometheus (the remote-write receiver, the shipped rules), where `sum by (host)` must give the same
figures. The figures are printed for the closing note of issue 15.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests.dockerkit import Containers, docker_lines, require, wait_until
from tests.logpipeproc import REPO, LogpipeProcess, free_port, replay_command, write_parts
from tests.support.lokiserver import LokiServer

pytestmark = [pytest.mark.docker, pytest.mark.prometheus]

#: host label -> tenant (environment). Two hosts share production; staging is a tenant of its own.
HOSTS = {"dify-a": "production", "dify-b": "production", "dify-c": "staging"}
KILLED = "dify-b"
API_LINES, API_PER_PART, API_PAUSE_SECS = 3000, 100, 0.12
#: nginx access lines each host prints after the restart: status -> count (different per host, to tell them apart).
NGINX = {
    "dify-a": {"200": 40, "500": 4, "504": 1},
    "dify-b": {"200": 25, "502": 6},
    "dify-c": {"200": 12, "500": 2, "504": 3},
}


@dataclass
class Host:
    name: str
    tenant: str
    box: Containers
    proc: LogpipeProcess
    containers: dict[str, Any] = field(default_factory=dict)  # service -> container

    def container_name(self, service: str) -> str:
        return f"{self.box.project}-{service}-1"


@pytest.fixture
def loki() -> Iterator[LokiServer]:
    # Queries see an entry a second after it was stored, as on Loki: the restarted host's read-back must cope.
    with LokiServer(visibility_delay_secs=1.0) as server:
        yield server


@pytest.fixture
def fleet(tmp_path: Path, loki: LokiServer, docker_client: docker.DockerClient) -> Iterator[dict[str, Host]]:
    hosts: dict[str, Host] = {}
    try:
        for name, tenant in HOSTS.items():
            box = Containers(docker_client)  # a compose project of its own: this host's Dify stack
            workdir = tmp_path / name
            workdir.mkdir()
            env = {"LOGPIPE_DOCKER_HOST_LABEL": name, "LOGPIPE_LOKI_TENANT": tenant}
            hosts[name] = Host(name, tenant, box, LogpipeProcess(workdir, loki.url, box.project, env=env))
        yield hosts
    finally:
        for host in hosts.values():
            if host.proc.alive():
                host.proc.stop()
            host.box.remove_all()


def nginx_lines(host: str) -> list[str]:
    return [
        f'172.18.0.1 - - [12/Jun/2026:10:32:01 +0000] "POST /v1/chat-messages/{host}-{status}-{i} HTTP/1.1" '
        f'{status} 12 "-" "curl/8" "-"'
        for status, count in NGINX[host].items()
        for i in range(count)
    ]


def docker_timestamps(client: docker.DockerClient, container_id: str) -> list[float]:
    """Docker's timestamp of every stored line, in epoch seconds."""
    raw: bytes = client.api.logs(container_id, stdout=True, stderr=True, timestamps=True)
    out = []
    for line in raw.decode("utf-8", "replace").splitlines():
        stamp = line.split(" ", 1)[0]  # 2026-12-04T15:54:05.123456789Z
        seconds, _, fraction = stamp.rstrip("Z").partition(".")
        out.append(time.mktime(time.strptime(seconds, "%Y-%m-%dT%H:%M:%S")) - time.timezone + float(f"0.{fraction}"))
    return out


# --- the hosts' metrics through Prometheus agents into a central Prometheus ------------------------------------


class Prometheus:
    """A central Prometheus with the remote-write receiver and the shipped rules, and one agent per host started
    through deploy/host/prometheus/run-agent.sh."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.web = f"127.0.0.1:{free_port()}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.binary = self._binary()

    def _binary(self) -> str:
        """Prometheus 3 has --agent; Debian's 2.x takes it as a feature flag, and expands ${VAR} in external
        labels only with another: a shim translates, so the shipped script runs unchanged."""
        version = subprocess.run(["prometheus", "--version"], capture_output=True, text=True, check=True)
        if "version 2." not in version.stdout + version.stderr:
            return "prometheus"
        shim = self.directory / "prometheus-agent-shim"
        shim.write_text(
            "#!/bin/sh\n"
            'for a; do shift; if [ "$a" = --agent ]; then set -- "$@" '
            '--enable-feature=agent,expand-external-labels; else set -- "$@" "$a"; fi; done\n'
            'exec prometheus "$@"\n'
        )
        shim.chmod(0o755)
        return str(shim)

    def _start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        with open(self.directory / f"{name}.log", "wb") as log:
            self.procs.append(
                subprocess.Popen(args, cwd=self.directory, env=env, stdout=log, stderr=log, start_new_session=True)
            )

    def start_central(self) -> None:
        rules = sorted(str(p) for p in (REPO / "prometheus" / "rules").glob("*.yml"))
        config = self.directory / "central.yml"
        config.write_text(f"global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: {rules}\n")
        self._start(
            "central",
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={self.directory / 'central-data'}",
                f"--web.listen-address={self.web}",
                "--web.enable-remote-write-receiver",
            ],
        )

    def start_agent(self, host: str, logpipe_port: int) -> None:
        """The shipped agent config with this test's logpipe address and a 1 s scrape interval."""
        shipped = (REPO / "deploy/host/prometheus/agent.yml").read_text(encoding="utf-8")
        assert shipped.count('"logpipe:9108"]') == 1 and shipped.count("scrape_interval: 15s") == 1
        template = self.directory / f"agent-{host}.template.yml"
        template.write_text(
            shipped.replace('"logpipe:9108"]', f'"127.0.0.1:{logpipe_port}"]').replace(
                "scrape_interval: 15s", "scrape_interval: 1s"
            )
        )
        env = {
            "PATH": os.environ["PATH"],
            "HOST_LABEL": host,
            "REMOTE_WRITE_URL": f"http://{self.web}/api/v1/write",
            "AGENT_CONFIG_TEMPLATE": str(template),
            "AGENT_CONFIG": str(self.directory / f"agent-{host}.yml"),
            "PROMETHEUS": self.binary,
        }
        script = str(REPO / "deploy/host/prometheus/run-agent.sh")
        args = [
            f"--storage.agent.path={self.directory / f'agent-{host}'}",
            f"--web.listen-address=127.0.0.1:{free_port()}",
        ]
        self._start(f"agent-{host}", ["sh", script, *args], env)

    def query(self, promql: str) -> dict[str, float]:
        try:
            data = httpx.get(f"http://{self.web}/api/v1/query", params={"query": promql}, timeout=5).json()
            result = data["data"]["result"]
        except (httpx.HTTPError, ValueError, KeyError):
            return {}  # not up yet
        return {",".join(f"{k}={v}" for k, v in sorted(r["metric"].items())): float(r["value"][1]) for r in result}

    def rule_errors(self) -> list[tuple[str, str]]:
        groups = httpx.get(f"http://{self.web}/api/v1/rules", timeout=5).json()["data"]["groups"]
        assert groups, "no rule groups loaded"
        return [(r["name"], r.get("lastError", "")) for g in groups for r in g["rules"] if r["health"] == "err"]

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-1500:] for p in sorted(self.directory.glob("*.log")))

    def stop(self) -> None:
        # Agents first: an agent whose central Prometheus is gone waits to flush its remote-write queue.
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    if subprocess.run(["sh", "-c", "command -v prometheus"], capture_output=True, check=False).returncode != 0:
        require("the prometheus binary (Debian package prometheus) is needed")
    directory = tmp_path / "prometheus"
    directory.mkdir()
    server = Prometheus(directory)
    yield server
    server.stop()


# --- the test ---------------------------------------------------------------------------------------------------


def test_hosts_ship_into_one_loki_exactly_once_with_one_killed_and_metrics_add_up(
    tmp_path: Path,
    loki: LokiServer,
    fleet: dict[str, Host],
    prometheus: Prometheus,
    docker_client: docker.DockerClient,
) -> None:
    started = time.monotonic()
    for host in fleet.values():
        host.proc.start(wait_ready=False)
    for host in fleet.values():
        host.proc.wait_metrics()
    prometheus.start_central()
    for host in fleet.values():
        prometheus.start_agent(host.name, host.proc.port)

    # Phase 1: every host's api container prints its lines in bursts, to stdout and stderr.
    written: dict[str, list[str]] = {}
    for name, host in fleet.items():
        data = tmp_path / f"{name}-api"
        written[name] = write_parts(data, name, lines=API_LINES, per_part=API_PER_PART, stderr_every=4)
        host.containers["api"] = host.box.run(
            "api", replay_command(API_PAUSE_SECS), volumes={str(data): {"bind": "/data", "mode": "ro"}}
        )

    # Kill one host's logpipe while its container (and the others') keep writing, then bring it back.
    killed = fleet[KILLED]
    api_b = killed.container_name("api")
    assert wait_until(lambda: len(loki.lines(host=KILLED, container=api_b)) >= 600, 30), "dify-b shipped nothing"
    shipped_before_kill = len(loki.lines(host=KILLED, container=api_b))
    killed.proc.kill()
    killed_at = time.monotonic()
    time.sleep(0.5)  # the container keeps writing while no logpipe reads it
    restart_wall = time.time()
    killed.proc.start()
    downtime = time.monotonic() - killed_at

    # Phase 2: after the restart, every host's nginx prints access lines with statuses known per host.
    for name, host in fleet.items():
        data = tmp_path / f"{name}-nginx"
        data.mkdir()
        (data / "p00000.o").write_text("\n".join(nginx_lines(name)) + "\n")
        host.containers["nginx"] = host.box.run(
            "nginx", replay_command(0), volumes={str(data): {"bind": "/data", "mode": "ro"}}
        )

    # Everything Docker stored reaches Loki, then nothing more is on its way.
    truth: dict[tuple[str, str], Counter[str]] = {}
    for name, host in fleet.items():
        for service, box in host.containers.items():
            box.wait(timeout=60)
            truth[(name, service)] = Counter(docker_lines(docker_client, box.id))
            container = host.container_name(service)
            want = sum(truth[(name, service)].values())
            assert wait_until(lambda c=container, n=name, w=want: len(loki.lines(host=n, container=c)) >= w, 60), (
                f"{name}/{service}: {len(loki.lines(host=name, container=container))} of {want} lines arrived"
            )
    for host in fleet.values():
        host.proc.wait_settled()
    shipped_secs = time.monotonic() - started

    # 1. Every line exactly once, under its own host and tenant.
    losses = duplicates = 0
    for (name, service), expected in truth.items():
        host = fleet[name]
        got = Counter(loki.lines(tenant=host.tenant, host=name, container=host.container_name(service)))
        missing, extra = expected - got, got - expected
        losses += sum(missing.values())
        duplicates += sum(extra.values())
        assert not missing, f"{name}/{service}: {sum(missing.values())} lines lost, e.g. {list(missing)[:2]}"
        assert not extra, f"{name}/{service}: {sum(extra.values())} lines duplicated, e.g. {list(extra)[:2]}"
    assert sorted(truth[(KILLED, "api")].elements()) == sorted(written[KILLED])
    assert loki.duplicates() == []
    assert loki.rejected() == []

    # 2. Streams never collide: each host's label covers exactly its own containers, in its own tenant, and the
    #    store holds nothing else (each logpipe sees every container of the shared dockerd and must pick its own).
    entries = loki.entries()
    assert len(entries) == sum(sum(c.values()) for c in truth.values())
    streams: dict[str, set[tuple[tuple[str, str], ...]]] = {name: set() for name in fleet}
    for entry in entries:
        labels = dict(entry.labels)
        host = fleet[labels["host"]]
        assert entry.tenant == host.tenant, labels
        assert labels["compose_project"] == host.box.project, labels
        assert labels["container"] in {host.container_name(s) for s in host.containers}, labels
        streams[host.name].add(tuple(sorted(labels.items())))
    for name, labelsets in streams.items():
        assert {dict(s)["stream"] for s in labelsets if dict(s)["service"] == "api"} == {"stdout", "stderr"}, name
    assert {e.tenant for e in entries} == set(HOSTS.values())

    # 3. Derived metrics, per host (each logpipe's /metrics) and summed across hosts.
    per_host_http: dict[str, dict[str, float]] = {}
    for name, host in fleet.items():
        metrics = host.proc.metrics()
        http = {
            key.split('status="')[1].split('"')[0]: value
            for key, value in metrics.items()
            if key.startswith("dify_http_requests_total{") and 'service="nginx"' in key
        }
        per_host_http[name] = http
        assert http == {status: float(count) for status, count in NGINX[name].items()}, name
        nginx_entries = sum(v for k, v in metrics.items() if k.startswith("dify_log_entries_total{") and "nginx" in k)
        assert nginx_entries == sum(truth[(name, "nginx")].values()), name
    fleet_http = Counter[str]()
    for http in per_host_http.values():
        fleet_http.update(http)
    want_fleet = Counter[str]()
    for counts in NGINX.values():
        want_fleet.update({status: float(count) for status, count in counts.items()})
    assert fleet_http == want_fleet

    api_counted: dict[str, float] = {}
    for name, host in fleet.items():
        api_counted[name] = sum(
            v for k, v in host.proc.metrics().items() if k.startswith("dify_log_entries_total{") and "api" in k
        )
        if name != KILLED:
            assert api_counted[name] == API_LINES, name
    # The killed logpipe's counters started again from zero: the new process counted what it read from its
    # checkpoint on, i.e. at least every line written after it started and at most the container's whole log.
    after_restart = sum(1 for ts in docker_timestamps(docker_client, killed.containers["api"].id) if ts > restart_wall)
    assert after_restart <= api_counted[KILLED] <= API_LINES

    # 4. The same figures through the shipped agents and the central Prometheus, told apart by `host` although
    #    every agent's target is the same instance (logpipe:9108).
    expected_by_host = {f"host={name}": float(sum(NGINX[name].values())) for name in fleet}
    by_host = 'sum by (host) (dify_http_requests_total{service="nginx"})'
    assert wait_until(lambda: prometheus.query(by_host) == expected_by_host, 45, interval=0.5), (
        f"{prometheus.query(by_host)} != {expected_by_host}\n{prometheus.logs()}"
    )
    by_status = 'sum by (status) (dify_http_requests_total{service="nginx"})'
    assert prometheus.query(by_status) == {f"status={s}": v for s, v in want_fleet.items()}
    assert prometheus.query('count by (host, instance) (up{job="logpipe"} == 1)') == {
        f"host={name},instance=logpipe:9108": 1.0 for name in fleet
    }
    assert prometheus.query("sum by (host) (dify_log_entries_total)") == {
        f"host={name}": api_counted[name] + sum(truth[(name, "nginx")].values()) for name in fleet
    }
    assert prometheus.rule_errors() == []

    lines_per_host = {name: sum(sum(truth[(name, s)].values()) for s in ("api", "nginx")) for name in fleet}
    print(
        f"\n[fleet] hosts={len(fleet)} ({', '.join(f'{n}:{t}' for n, t in HOSTS.items())}), "
        f"containers={len(truth)}, streams={sum(len(s) for s in streams.values())}, "
        f"lines={sum(lines_per_host.values())} ({', '.join(f'{n}={c}' for n, c in lines_per_host.items())}), "
        f"loki entries={len(entries)}, duplicates={duplicates}, losses={losses}, pushes={len(loki.pushes())}"
        f"\n[fleet] restart: {KILLED} SIGKILLed after {shipped_before_kill} of {API_LINES} api lines had arrived, "
        f"down {downtime:.1f} s; its new process counted {api_counted[KILLED]:.0f} api lines "
        f"({after_restart} written after it started)"
        f"\n[fleet] dify_http_requests_total{{service=nginx}} by host (each /metrics = central Prometheus): "
        f"{ {n: sum(h.values()) for n, h in per_host_http.items()} }, by status across hosts: {dict(want_fleet)}"
        f"\n[fleet] all shipped and settled {shipped_secs:.1f} s after start; samples on each /metrics: "
        f"{ {n: len(h.proc.metrics()) for n, h in fleet.items()} }"
    )
