"""deploy/: the per-host and central compose files of a fleet (docs/fleet.md), checked the way the single-host
stack is: Compose resolves both files, the Loki configuration is the simple scalable layout with the limits a
fleet needs (field names checked against Loki's configuration reference), the gateway routes pushes to write
and queries to read, and the Prometheus configurations pass promtool and agree with the compose files."""

from __future__ import annotations

import copy
import functools
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from logpipe.config import DockerConfig, LokiConfig
from logpipe.configload import load_config
from tests.stack.stackkit import REPO, clean_env, load_yaml, run, tool

HOST = "deploy/host/docker-compose.yml"
CENTRAL = "deploy/central/docker-compose.yml"
#: The least each file needs to resolve.
REQUIRED = {
    HOST: {"HOST_LABEL": "dify-prod-1", "LOKI_URL": "http://observability.internal:3100", "LOKI_TENANT": "production"},
    CENTRAL: {"MINIO_ROOT_PASSWORD": "a-long-password"},
}
LOKI_TARGETS = {"loki-read": "read", "loki-write": "write", "loki-backend": "backend"}

#: limits_config fields as Loki 3 documents them (docs/sources/shared/configuration.md in grafana/loki, the
#: `limits_config` block), the subset a fleet configuration may set here. A misspelt field is silently ignored
#: by nothing: Loki refuses to start on an unknown field, which these files cannot test without the image.
LOKI_LIMITS_FIELDS = frozenset(
    {
        "ingestion_rate_strategy", "ingestion_rate_mb", "ingestion_burst_size_mb", "max_label_name_length",
        "max_label_value_length", "max_label_names_per_series", "reject_old_samples", "reject_old_samples_max_age",
        "creation_grace_period", "max_line_size", "max_line_size_truncate", "max_streams_per_user",
        "max_global_streams_per_user", "per_stream_rate_limit", "per_stream_rate_limit_burst", "max_query_series",
        "max_query_lookback", "max_query_length", "max_query_parallelism", "max_entries_limit_per_query",
        "split_queries_by_interval", "query_timeout", "volume_enabled", "retention_period", "retention_stream",
        "shard_streams", "allow_structured_metadata", "max_structured_metadata_size",
        "max_structured_metadata_entries_count",
    }
)  # fmt: skip
#: Top-level blocks of loki.yaml (the same reference).
LOKI_BLOCKS = frozenset(
    {
        "target", "auth_enabled", "server", "common", "memberlist", "schema_config", "ingester", "querier",
        "compactor", "ruler", "runtime_config", "limits_config", "query_range", "analytics", "storage_config",
        "frontend", "query_scheduler", "distributor",
    }
)  # fmt: skip
#: common.storage.s3 fields (the `s3_storage_config` block), as Loki's own examples set them for MinIO.
LOKI_S3_FIELDS = frozenset(
    {"endpoint", "region", "bucketnames", "access_key_id", "secret_access_key", "insecure", "s3forcepathstyle"}
)


def compose_config(relpath: str, *args: str, **env: str) -> dict[str, Any]:
    return copy.deepcopy(_compose_config(relpath, args, tuple(sorted({**REQUIRED[relpath], **env}.items()))))


@functools.cache
def _compose_config(relpath: str, args: tuple[str, ...], env: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    proc = run([tool("docker-compose"), "-f", relpath, *args, "config"], env=clean_env(**dict(env)))
    return yaml.safe_load(proc.stdout)


def services(relpath: str, **env: str) -> dict[str, Any]:
    profile = ["--profile", "agent"] if relpath == HOST else []
    return compose_config(relpath, *profile, **env)["services"]


def loki_config() -> dict[str, Any]:
    return load_yaml("deploy/central/loki/loki.yaml")


def megabytes(value: str | int | float) -> float:
    """Loki's sizes: plain numbers are MB for the *_mb fields; 5MB, 256KB are powers of 1024."""
    if isinstance(value, int | float):
        return float(value)
    number, unit = re.fullmatch(r"(\d+)([KMG]B)", value).groups()  # type: ignore[union-attr]
    return int(number) * {"KB": 1 / 1024, "MB": 1, "GB": 1024}[unit]


# --- both compose files ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("relpath", [HOST, CENTRAL])
def test_compose_file_is_valid(relpath: str) -> None:
    profile = ["--profile", "agent"] if relpath == HOST else []
    run([tool("docker-compose"), "-f", relpath, *profile, "config", "-q"], env=clean_env(**REQUIRED[relpath]))


@pytest.mark.parametrize(
    ("relpath", "name"), [(HOST, "HOST_LABEL"), (HOST, "LOKI_TENANT"), (CENTRAL, "MINIO_ROOT_PASSWORD")]
)
def test_compose_refuses_to_start_without_a_required_setting(relpath: str, name: str) -> None:
    env = clean_env(**{k: v for k, v in REQUIRED[relpath].items() if k != name})
    proc = subprocess.run(
        [tool("docker-compose"), "-f", relpath, "config", "-q"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert name in proc.stderr


@pytest.mark.parametrize("relpath", [HOST, CENTRAL])
def test_every_image_is_pinned(relpath: str) -> None:
    for name, service in services(relpath).items():
        if "build" in service:
            continue
        image = service["image"]
        # Releases: v1.2.3, 1.2.3 (optionally -alpine); MinIO names its releases by date.
        assert re.search(r":(v?\d+\.\d+\.\d+(-alpine)?|RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ)$", image), (
            f"{name}: {image} is not pinned to a release"
        )


@pytest.mark.parametrize("relpath", [HOST, CENTRAL])
def test_published_ports_default_to_this_machine_only(relpath: str) -> None:
    for name, service in services(relpath).items():
        for port in service.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", f"{name}: {port}"


@pytest.mark.parametrize("relpath", [HOST, CENTRAL])
def test_mounted_files_exist(relpath: str) -> None:
    for name, service in services(relpath).items():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else str(volume).split(":")[0]
            if source.startswith(str(REPO)):
                assert Path(source).exists(), f"{name}: {source}"


@pytest.mark.parametrize(
    "relpath", sorted(str(p.relative_to(REPO)) for p in REPO.glob("deploy/**/*") if p.suffix in (".yml", ".yaml"))
)
def test_yaml_parses(relpath: str) -> None:
    (doc,) = yaml.safe_load_all((REPO / relpath).read_text(encoding="utf-8"))
    assert doc is not None


# --- a host --------------------------------------------------------------------------------------------------------


def test_host_runs_logpipe_and_optionally_an_agent_only() -> None:
    host = services(HOST)
    assert set(host) == {"logpipe", "prometheus-agent"}
    assert "profiles" not in host["logpipe"]
    assert host["prometheus-agent"]["profiles"] == ["agent"]


def test_host_environment_is_a_valid_logpipe_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no config/logpipe.toml from the work tree
    env = services(HOST, DIFY_PROJECT="dify", LOKI_USERNAME="dify-prod-1")["logpipe"]["environment"]
    config, used = load_config(env={k: str(v) for k, v in env.items()})
    assert used is None
    assert config.docker.host_label == "dify-prod-1"
    assert config.docker.compose_project == "dify"
    assert config.loki.url == "http://observability.internal:3100"
    assert config.loki.tenant == "production"
    assert config.loki.username == "dify-prod-1"
    assert config.metrics.addr == "0.0.0.0:9108"
    assert config.state.dir == "/var/lib/logpipe"


def test_host_logpipe_is_the_single_host_logpipe() -> None:
    # Same image, socket, state and drain time as docker-compose.yml at the root: only the endpoints differ.
    host = services(HOST)["logpipe"]
    root = yaml.safe_load(run([tool("docker-compose"), "-f", "docker-compose.yml", "config"], env=clean_env()).stdout)[
        "services"
    ]["logpipe"]
    for key in ("build", "image", "volumes", "stop_grace_period", "healthcheck", "group_add"):
        assert host[key] == root[key], key


def test_agent_labels_its_series_with_the_host_logpipe_labels_its_streams_with() -> None:
    agent = load_yaml("deploy/host/prometheus/agent.yml")
    assert agent["global"]["external_labels"] == {"host": "${HOST_LABEL}"}
    (job,) = agent["scrape_configs"]
    assert job["job_name"] == "logpipe"  # what the rules select: up{job="logpipe"}
    assert job["static_configs"] == [{"targets": ["logpipe:9108"]}]
    assert "rule_files" not in agent and "alerting" not in agent  # the rules run centrally
    both = services(HOST, HOST_LABEL="dify-prod-7")
    assert both["logpipe"]["environment"]["LOGPIPE_DOCKER_HOST_LABEL"] == "dify-prod-7"
    assert both["prometheus-agent"]["environment"]["HOST_LABEL"] == "dify-prod-7"
    assert both["prometheus-agent"]["entrypoint"] == ["/bin/sh", "/etc/prometheus/run-agent.sh"]


def test_agent_script_writes_the_remote_write_url_into_a_valid_agent_config(tmp_path: Path) -> None:
    url = "https://central.example:9090/api/v1/write?tenant=a&b=|c"
    env = clean_env(
        HOST_LABEL="dify-prod-1",
        REMOTE_WRITE_URL=url,
        AGENT_CONFIG_TEMPLATE=str(REPO / "deploy/host/prometheus/agent.yml"),
        AGENT_CONFIG=str(tmp_path / "agent.yml"),
        PROMETHEUS="echo",
    )
    proc = run(["sh", "deploy/host/prometheus/run-agent.sh", "--storage.agent.path=/x"], env=env)
    assert proc.stdout.split() == ["--agent", f"--config.file={tmp_path / 'agent.yml'}", "--storage.agent.path=/x"]
    rendered = yaml.safe_load((tmp_path / "agent.yml").read_text())
    assert rendered["remote_write"][0]["url"] == url
    run([tool("promtool"), "check", "config", "--agent", str(tmp_path / "agent.yml")])


def test_agent_script_refuses_to_start_without_a_url(tmp_path: Path) -> None:
    env = clean_env(HOST_LABEL="dify-prod-1", AGENT_CONFIG=str(tmp_path / "agent.yml"), PROMETHEUS="echo")
    proc = subprocess.run(
        ["sh", "deploy/host/prometheus/run-agent.sh"], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode != 0 and "REMOTE_WRITE_URL" in proc.stderr
    assert not (tmp_path / "agent.yml").exists()


# --- the central Loki ------------------------------------------------------------------------------------------------


def test_loki_runs_as_three_targets_of_one_configuration() -> None:
    central = services(CENTRAL)
    for name, target in LOKI_TARGETS.items():
        command = central[name]["command"]
        assert command == ["-config.file=/etc/loki/loki.yaml", "-config.expand-env=true", f"-target={target}"], name
        assert any(str(v).endswith(":/etc/loki:ro") for v in central[name]["volumes"]), name
        assert central[name]["depends_on"]["minio-buckets"]["condition"] == "service_completed_successfully"
    # The stateful targets keep their data on a volume: write its WAL, backend the compactor's work.
    assert any(str(v).startswith("loki-write-data:/loki") for v in central["loki-write"]["volumes"])
    assert any(str(v).startswith("loki-backend-data:/loki") for v in central["loki-backend"]["volumes"])


def test_loki_configuration_uses_only_documented_blocks_and_limits() -> None:
    loki = loki_config()
    assert set(loki) <= LOKI_BLOCKS, set(loki) - LOKI_BLOCKS
    assert set(loki["limits_config"]) <= LOKI_LIMITS_FIELDS, set(loki["limits_config"]) - LOKI_LIMITS_FIELDS
    assert set(loki["common"]["storage"]["s3"]) <= LOKI_S3_FIELDS
    overrides = load_yaml("deploy/central/loki/runtime.yaml")["overrides"]
    for tenant, limits in overrides.items():
        assert set(limits) <= LOKI_LIMITS_FIELDS, (tenant, set(limits) - LOKI_LIMITS_FIELDS)
    assert loki["runtime_config"]["file"] == "/etc/loki/runtime.yaml"


def test_loki_is_multi_tenant_on_object_storage_with_memberlist_rings() -> None:
    loki = loki_config()
    assert loki["auth_enabled"] is True
    assert loki["querier"]["multi_tenant_queries_enabled"] is True  # LOKI_QUERY_TENANTS joins tenants with |
    schema = loki["schema_config"]["configs"][-1]
    assert (schema["store"], schema["schema"], schema["object_store"]) == ("tsdb", "v13", "s3")
    assert loki["common"]["ring"]["kvstore"]["store"] == "memberlist"
    members = {m.split(":")[0] for m in loki["memberlist"]["join_members"]}
    assert members == set(LOKI_TARGETS)
    assert loki["common"]["compactor_address"] == "http://loki-backend:3100"
    assert loki["compactor"]["retention_enabled"] is True
    assert loki["compactor"]["delete_request_store"] == "s3"
    assert loki["ingester"]["max_chunk_age"] == "2h"  # out-of-order window covers logpipe's 55 min age guard


def test_loki_reaches_the_buckets_minio_creates_with_the_credentials_compose_gives_it() -> None:
    loki = loki_config()
    s3 = loki["common"]["storage"]["s3"]
    central = services(CENTRAL, MINIO_ROOT_USER="obs", MINIO_ROOT_PASSWORD="pw-123456789")
    assert s3["endpoint"] == "minio:9000" and "minio" in central
    created = set(re.findall(r"central/([\w-]+)", " ".join(central["minio-buckets"]["command"])))
    assert {s3["bucketnames"], loki["ruler"]["storage"]["s3"]["bucketnames"]} == created
    variables = set(re.findall(r"\$\{(\w+)\}", (REPO / "deploy/central/loki/loki.yaml").read_text()))
    assert variables == {"LOKI_S3_ACCESS_KEY_ID", "LOKI_S3_SECRET_ACCESS_KEY"}
    for name in LOKI_TARGETS:
        env = central[name]["environment"]
        assert env["LOKI_S3_ACCESS_KEY_ID"] == "obs" == central["minio"]["environment"]["MINIO_ROOT_USER"]
        assert env["LOKI_S3_SECRET_ACCESS_KEY"] == "pw-123456789"


def test_fleet_limits_are_set_deliberately_and_explained() -> None:
    limits = loki_config()["limits_config"]
    text = (REPO / "deploy/central/loki/loki.yaml").read_text(encoding="utf-8").splitlines()
    for key in (
        "ingestion_rate_strategy",
        "ingestion_rate_mb",
        "ingestion_burst_size_mb",
        "per_stream_rate_limit",
        "per_stream_rate_limit_burst",
        "max_global_streams_per_user",
    ):
        assert key in limits, key
        (line,) = [i for i, line in enumerate(text) if line.strip().startswith(f"{key}:")]
        # The comment above it, or above the group of settings it belongs to (rate and burst together).
        while text[line - 1].strip() and not text[line - 1].strip().startswith("#"):
            line -= 1
        assert text[line - 1].strip().startswith("#"), f"{key} has no comment saying why"
    assert limits["ingestion_rate_strategy"] == "global"
    # Sized for about 50 hosts (docs/fleet.md): their steady flow (~0.1 MB/s each) plus two hosts catching up at
    # logpipe's full speed (~10 MB/s each); every stream of 50 hosts at the worst case (132 per host).
    assert limits["ingestion_rate_mb"] >= 50 * 0.1 + 2 * 10
    assert limits["max_global_streams_per_user"] >= 50 * 132
    # A burst below one push would refuse that push for ever.
    assert megabytes(limits["ingestion_burst_size_mb"]) > LokiConfig().batch_max_bytes / 2**20
    assert megabytes(limits["per_stream_rate_limit_burst"]) > LokiConfig().batch_max_bytes / 2**20
    # Not lower than what one host gets on its own (loki/loki.yaml): a stream is still one host's.
    single = load_yaml("loki/loki.yaml")["limits_config"]
    assert megabytes(limits["per_stream_rate_limit"]) >= megabytes(single["per_stream_rate_limit"])
    assert megabytes(limits["max_line_size"]) * 2**20 >= DockerConfig().max_line_bytes
    assert limits["allow_structured_metadata"] is True


def test_fleet_limits_are_the_ones_docs_fleet_md_explains() -> None:
    doc = (REPO / "docs/fleet.md").read_text(encoding="utf-8")
    limits = loki_config()["limits_config"]
    for key in ("ingestion_rate_mb", "ingestion_burst_size_mb", "per_stream_rate_limit", "max_global_streams_per_user"):
        assert re.search(rf"`{key}`[^\n]*\b{re.escape(str(limits[key]))}\b", doc), f"{key}: {limits[key]} not in docs"


def test_per_host_capacity_figures_are_the_latest_of_docs_performance_md() -> None:
    # docs/fleet.md derives the fleet's limits from one table of per-host figures; when the benchmark figures in
    # docs/performance.md change, that table must be updated with them (and the limits looked at again).
    fleet = (REPO / "docs/fleet.md").read_text(encoding="utf-8")
    block = fleet.split("<!-- fleet:per-host-figures")[1].split("<!-- /fleet:per-host-figures -->")[0]
    performance = (REPO / "docs/performance.md").read_text(encoding="utf-8")
    for row in ("end_to_end, full speed, 300k lines | lines/s", "backlog, 1 M lines waiting at start"):
        (line,) = [line for line in performance.splitlines() if row in line]
        dash = "\N{EN DASH}"
        low, high = re.findall(rf"([\d,.]+){dash}([\d,.]+)", line)[-1]  # the row's last range: lines/s
        assert re.search(rf"{re.escape(low)}\s*{dash}\s*{re.escape(high)}", block), f"{low} to {high} ({row})"


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a page's headings."""
    return {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", markdown, re.MULTILINE)
    }


def test_the_readme_links_the_fleet_page_and_its_links_resolve() -> None:
    assert "](docs/fleet.md)" in (REPO / "README.md").read_text(encoding="utf-8")
    docs = REPO / "docs"
    for page in ("fleet.md", "stack.md"):
        for target in re.findall(r"\]\(([^)#]+\.md)(?:#([\w-]+))?\)", (docs / page).read_text(encoding="utf-8")):
            path, fragment = target
            assert (docs / path).exists(), f"{page}: {path}"
            if fragment:
                assert fragment in _anchors((docs / path).read_text(encoding="utf-8")), f"{page}: {path}#{fragment}"


# --- the gateway -----------------------------------------------------------------------------------------------------


def nginx_locations() -> list[tuple[str, str, str]]:
    """(modifier, pattern, block body) of each location, in file order."""
    text = re.sub(r"#[^\n]*", "", (REPO / "deploy/central/gateway/nginx.conf").read_text(encoding="utf-8"))
    return [(m, p, body) for m, p, body in re.findall(r"location\s+(=|~|\^~)?\s*(\S+)\s*\{([^}]*)\}", text)]


def route(path: str) -> str:
    """Where nginx sends `path`: exact matches first, then regexes in file order (the gateway has no plain
    prefixes), as nginx chooses a location. Returns the proxied host, or `self` for a location that answers."""
    locations = nginx_locations()
    assert not [p for m, p, _ in locations if m in ("", "^~")], "plain prefix locations are not modelled"
    chosen = next((body for m, p, body in locations if m == "=" and p == path), None)
    if chosen is None:
        chosen = next((body for m, p, body in locations if m == "~" and re.search(p, path)), None)
    assert chosen is not None, f"no location for {path}"
    target = re.search(r"proxy_pass\s+http://([\w-]+):3100\$request_uri;", chosen)
    return target.group(1) if target else "self"


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ("/loki/api/v1/push", "loki-write"),
        ("/api/prom/push", "loki-write"),
        ("/otlp/v1/logs", "loki-write"),
        ("/loki/api/v1/query_range", "loki-read"),  # Grafana, and logpipe's read-back of uncertain pushes
        ("/loki/api/v1/query", "loki-read"),
        ("/loki/api/v1/labels", "loki-read"),
        ("/loki/api/v1/label/host/values", "loki-read"),
        ("/loki/api/v1/series", "loki-read"),
        ("/loki/api/v1/index/volume", "loki-read"),
        ("/loki/api/v1/tail", "loki-read"),
        ("/loki/api/v1/rules", "loki-backend"),
        ("/prometheus/api/v1/rules", "loki-backend"),
        ("/prometheus/api/v1/alerts", "loki-backend"),
        ("/loki/api/v1/delete", "loki-backend"),
        ("/", "self"),
    ],
)
def test_gateway_routes_pushes_to_write_and_queries_to_read(path: str, target: str) -> None:
    assert route(path) == target


def test_gateway_targets_are_loki_services_and_the_gateway_passes_tenants_through() -> None:
    text = (REPO / "deploy/central/gateway/nginx.conf").read_text(encoding="utf-8")
    hosts = set(re.findall(r"proxy_pass\s+http://([\w-]+):3100", text))
    assert hosts == set(LOKI_TARGETS)
    # A variable in proxy_pass makes nginx resolve at request time, through Docker's DNS.
    assert re.search(r"^\s*resolver 127\.0\.0\.11\b", text, re.MULTILINE)
    assert "X-Scope-OrgID" not in re.sub(r"#[^\n]*", "", text)  # the client's tenant header passes unchanged
    (size,) = re.findall(r"client_max_body_size (\d+)m;", text)
    assert int(size) * 2**20 > LokiConfig().batch_max_bytes
    (tail,) = [body for _, p, body in nginx_locations() if p == "/loki/api/v1/tail"]
    assert "Upgrade $http_upgrade" in tail
    assert str(services(CENTRAL)["loki-gateway"]["ports"][0]).startswith("127.0.0.1:3100:3100")


# --- the central Prometheus, Alertmanager and Grafana ---------------------------------------------------------------


def test_central_prometheus_config_is_valid_and_receives_remote_writes() -> None:
    run([tool("promtool"), "check", "config", "deploy/central/prometheus/prometheus.yml"])
    prometheus = services(CENTRAL)["prometheus"]
    assert "--web.enable-remote-write-receiver" in prometheus["command"]
    config = load_yaml("deploy/central/prometheus/prometheus.yml")
    assert "host" not in config["global"].get("external_labels", {})  # only hosts name themselves
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["logpipe"]["file_sd_configs"][0]["files"] == ["/etc/prometheus/targets/*.yml"]
    loki_targets = {t.split(":")[0] for t in jobs["loki"]["static_configs"][0]["targets"]}
    assert loki_targets == set(LOKI_TARGETS)


def test_pull_mode_targets_file_lists_hosts_with_their_host_label() -> None:
    text = (REPO / "deploy/central/prometheus/targets/logpipe.yml").read_text(encoding="utf-8")
    assert yaml.safe_load(text) == []  # shipped empty: no host is scraped until listed
    lines = text.splitlines()
    example = [line.removeprefix("# ") for line in lines[lines.index("# Example:") + 1 :] if line.startswith("# ")]
    groups = yaml.safe_load("\n".join(example))
    assert len(groups) == 2
    for group in groups:
        assert group["labels"]["host"] and group["targets"][0].endswith(":9108")


def test_the_central_stack_reuses_the_single_host_rules_alerts_and_dashboard() -> None:
    central = services(CENTRAL)
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for s in central.values() for v in s.get("volumes", [])}
    assert mounts["/etc/prometheus/rules"] == str(REPO / "prometheus/rules")
    assert mounts["/etc/alertmanager/alertmanager.yml"] == str(REPO / "alertmanager/alertmanager.yml")
    assert mounts["/etc/grafana/dashboards"] == str(REPO / "grafana/dashboards")
    assert mounts["/etc/grafana/provisioning/dashboards"] == str(REPO / "grafana/provisioning/dashboards")


def test_central_grafana_reads_loki_through_the_gateway_with_tenants() -> None:
    sources = {
        ds["uid"]: ds
        for ds in load_yaml("deploy/central/grafana/provisioning/datasources/datasources.yaml")["datasources"]
    }
    single = {ds["uid"]: ds for ds in load_yaml("grafana/provisioning/datasources/datasources.yaml")["datasources"]}
    assert {uid: ds["type"] for uid, ds in sources.items()} == {uid: ds["type"] for uid, ds in single.items()}
    loki = sources["loki"]
    assert loki["url"] == "http://loki-gateway:3100"
    assert loki["jsonData"]["httpHeaderName1"] == "X-Scope-OrgID"
    assert loki["secureJsonData"]["httpHeaderValue1"] == "${LOKI_QUERY_TENANTS}"
    assert loki["jsonData"]["derivedFields"] == single["loki"]["jsonData"]["derivedFields"]
    grafana = services(CENTRAL, LOKI_QUERY_TENANTS="production")["grafana"]
    assert grafana["environment"]["LOKI_QUERY_TENANTS"] == "production"
    assert services(CENTRAL)["grafana"]["environment"]["LOKI_QUERY_TENANTS"] == "production|staging"
    assert sources["prometheus"]["url"] == "http://prometheus:9090"
