"""Every configuration file of the stack parses, and the small invariants no tool checks for us hold."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from logpipe.config import DockerConfig
from tests.stack.stackkit import REPO, load_yaml

YAML_FILES = sorted(
    str(p.relative_to(REPO))
    for pattern in (
        "docker-compose.yml",
        "loki/*.yaml",
        "promtail/*.yaml",
        "prometheus/**/*.yml",
        "alertmanager/*.yml",
        "grafana/provisioning/**/*.yaml",
    )
    for p in REPO.glob(pattern)
)
JSON_FILES = sorted(str(p.relative_to(REPO)) for p in REPO.glob("grafana/dashboards/*.json"))


def test_the_stack_ships_its_files() -> None:
    expected = {
        "docker-compose.yml",
        "loki/loki.yaml",
        "promtail/promtail.yaml",
        "prometheus/prometheus.yml",
        "prometheus/rules/dify.yml",
        "prometheus/rules/logpipe.yml",
        "prometheus/tests/dify_test.yml",
        "prometheus/tests/logpipe_test.yml",
        "alertmanager/alertmanager.yml",
        "grafana/provisioning/datasources/datasources.yaml",
        "grafana/provisioning/dashboards/dashboards.yaml",
    }
    assert expected <= set(YAML_FILES)
    assert JSON_FILES == ["grafana/dashboards/dify-logpipe.json"]


@pytest.mark.parametrize("relpath", YAML_FILES)
def test_yaml_parses_to_a_mapping(relpath: str) -> None:
    docs = list(yaml.safe_load_all((REPO / relpath).read_text(encoding="utf-8")))
    assert len(docs) == 1
    assert isinstance(docs[0], dict) and docs[0]


@pytest.mark.parametrize("relpath", JSON_FILES)
def test_dashboard_json_parses(relpath: str) -> None:
    dashboard = json.loads((REPO / relpath).read_text(encoding="utf-8"))
    assert dashboard["uid"] and dashboard["panels"]


def _byte_size(text: str) -> int:
    """Loki's sizes (flagext.ByteSize): KB, MB are powers of 1024."""
    number, unit = re.fullmatch(r"(\d+)([KMG]B)", text).groups()  # type: ignore[union-attr]
    return int(number) * {"KB": 1024, "MB": 1024**2, "GB": 1024**3}[unit]


def test_loki_stores_structured_metadata_and_enforces_retention() -> None:
    loki = load_yaml("loki/loki.yaml")
    schema = loki["schema_config"]["configs"][-1]
    assert (schema["store"], schema["schema"], schema["object_store"]) == ("tsdb", "v13", "filesystem")
    limits = loki["limits_config"]
    assert limits["allow_structured_metadata"] is True
    assert loki["compactor"]["retention_enabled"] is True
    # Retention needs a delete-request store in Loki 3, or Loki refuses to start.
    assert loki["compactor"]["delete_request_store"] == "filesystem"
    assert limits["retention_period"].endswith("h")
    assert limits["reject_old_samples"] is True
    # logpipe truncates a record at docker.max_line_bytes; Loki must accept what logpipe sends.
    assert _byte_size(limits["max_line_size"]) >= DockerConfig().max_line_bytes
    # The out-of-order window (max_chunk_age / 2) must cover logpipe's spool age guard (55 min).
    assert loki["ingester"]["max_chunk_age"] == "2h"
    for key in (
        "ingestion_rate_mb",
        "ingestion_burst_size_mb",
        "per_stream_rate_limit",
        "per_stream_rate_limit_burst",
        "max_global_streams_per_user",
    ):
        assert key in limits


def test_grafana_datasources_link_a_trace_id_to_its_request_chain() -> None:
    sources = {ds["uid"]: ds for ds in load_yaml("grafana/provisioning/datasources/datasources.yaml")["datasources"]}
    assert sources["prometheus"]["type"] == "prometheus"
    assert sources["loki"]["type"] == "loki"
    (field,) = sources["loki"]["jsonData"]["derivedFields"]
    assert field["matcherType"] == "label"
    assert field["matcherRegex"] == "trace_id"
    assert field["datasourceUid"] == "loki"
    # Grafana expands $VAR in provisioning files: the link's own variable must be escaped as $$.
    assert field["url"] == '{service=~".+"} | trace_id="$${__value.raw}"'


def test_grafana_loads_the_dashboards_directory_compose_mounts() -> None:
    (provider,) = load_yaml("grafana/provisioning/dashboards/dashboards.yaml")["providers"]
    compose = load_yaml("docker-compose.yml")
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts


def test_dockerignore_sends_only_the_package() -> None:
    lines = [
        line
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0] == "*"
    assert {"!pyproject.toml", "!logpipe/"} <= set(lines)
