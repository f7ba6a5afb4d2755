"""docker-compose.yml: valid for Compose, with and without the promtail profile, and wired the way the docs say."""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from logpipe.configload import load_config
from tests.stack.stackkit import REPO, clean_env, run, tool


def compose_config(*args: str, **env: str) -> dict[str, Any]:
    """`docker-compose config`: the file as Compose resolves it (interpolated, normalised)."""
    return copy.deepcopy(_compose_config(args, tuple(sorted(env.items()))))


@functools.cache
def _compose_config(args: tuple[str, ...], env: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    proc = run([tool("docker-compose"), "-f", "docker-compose.yml", *args, "config"], env=clean_env(**dict(env)))
    return yaml.safe_load(proc.stdout)


def seconds(duration: str) -> float:
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration):
        total += float(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


@pytest.mark.parametrize("profile", [[], ["--profile", "promtail"]], ids=["default", "promtail"])
def test_compose_file_is_valid(profile: list[str]) -> None:
    run([tool("docker-compose"), "-f", "docker-compose.yml", *profile, "config", "-q"], env=clean_env())


def test_logpipe_is_the_default_shipper_and_promtail_needs_its_profile() -> None:
    services = compose_config()["services"]
    assert "profiles" not in services["logpipe"]
    assert services["promtail"]["profiles"] == ["promtail"]
    for name in ("loki", "logpipe", "prometheus", "alertmanager", "grafana"):
        assert "profiles" not in services[name], name


def test_every_image_is_pinned() -> None:
    for name, service in compose_config()["services"].items():
        if "build" in service:
            continue
        image = service["image"]
        assert re.search(r":v?\d+\.\d+\.\d+$", image), f"{name}: {image} is not pinned to a release"


def test_logpipe_reads_the_socket_read_only_as_its_group_and_keeps_state() -> None:
    logpipe = compose_config(DOCKER_GID="998")["services"]["logpipe"]
    assert logpipe["build"]["context"] == str(REPO)
    assert [str(g) for g in logpipe["group_add"]] == ["998"]
    volumes = logpipe["volumes"]
    assert "/var/run/docker.sock:/var/run/docker.sock:ro" in volumes
    assert any(str(v).startswith("logpipe-state:/var/lib/logpipe") for v in volumes), volumes
    assert logpipe["environment"]["LOGPIPE_STATE_DIR"] == "/var/lib/logpipe"


def test_logpipe_gets_time_to_drain() -> None:
    logpipe = compose_config()["services"]["logpipe"]
    # logpipe drains for up to 8 s after SIGTERM; Docker must not SIGKILL it before.
    assert seconds(logpipe["stop_grace_period"]) > 8
    assert logpipe.get("stop_signal", "SIGTERM") == "SIGTERM"
    assert "healthz" in " ".join(logpipe["healthcheck"]["test"])


def test_logpipe_environment_is_a_valid_logpipe_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no config/logpipe.toml from the work tree
    env = compose_config(DIFY_PROJECT="dify", LLM_DAILY_BUDGET_USD="250")["services"]["logpipe"]["environment"]
    config, used = load_config(env={k: str(v) for k, v in env.items()})
    assert used is None
    assert config.docker.compose_project == "dify"
    assert config.loki.url == "http://loki:3100"
    assert config.metrics.addr == "0.0.0.0:9108"
    assert config.metrics.llm_daily_budget_usd == 250.0
    assert config.state.dir == "/var/lib/logpipe"


def test_both_shippers_follow_dify_default_project() -> None:
    services = compose_config("--profile", "promtail")["services"]
    assert services["logpipe"]["environment"]["LOGPIPE_COMPOSE_PROJECT"] == "docker"
    assert services["promtail"]["environment"]["DIFY_PROJECT"] == "docker"
    promtail = (REPO / "promtail/promtail.yaml").read_text(encoding="utf-8")
    assert '"com.docker.compose.project=${DIFY_PROJECT:-docker}"' in promtail


def test_both_shippers_follow_a_renamed_project() -> None:
    services = compose_config("--profile", "promtail", DIFY_PROJECT="dify")["services"]
    assert services["logpipe"]["environment"]["LOGPIPE_COMPOSE_PROJECT"] == "dify"
    assert services["promtail"]["environment"]["DIFY_PROJECT"] == "dify"


def test_published_ports_default_to_this_host_only() -> None:
    for name, service in compose_config("--profile", "promtail")["services"].items():
        for port in service.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", f"{name}: {port}"


def test_mounted_config_files_exist() -> None:
    for name, service in compose_config("--profile", "promtail")["services"].items():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else str(volume).split(":")[0]
            if source.startswith(str(REPO)):
                assert Path(source).exists(), f"{name}: {source}"
