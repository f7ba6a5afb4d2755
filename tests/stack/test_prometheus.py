"""Prometheus config, alert rules and their unit tests, checked by promtool; Alertmanager's routing by amtool."""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import pytest

from tests.stack import promql
from tests.stack.stackkit import (
    REPO,
    SERIES_NAMES,
    load_yaml,
    logpipe_series,
    promql_metric_names,
    promtail_series,
    recording_rules,
    run,
    tool,
)

RULE_FILES = sorted(str(p.relative_to(REPO)) for p in (REPO / "prometheus/rules").glob("*.yml"))
TEST_FILES = sorted(str(p.relative_to(REPO)) for p in (REPO / "prometheus/tests").glob("*.yml"))
SEVERITIES = ("critical", "warning", "info")


def all_rules() -> list[dict[str, Any]]:
    rules = []
    for relpath in RULE_FILES:
        for group in load_yaml(relpath)["groups"]:
            rules.extend(group["rules"])
    return rules


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in all_rules() if "alert" in rule}


def test_prometheus_config_is_valid() -> None:
    run([tool("promtool"), "check", "config", "prometheus/prometheus.yml"])


def test_prometheus_loads_the_rules_compose_mounts() -> None:
    config = load_yaml("prometheus/prometheus.yml")
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    mounts = load_yaml("docker-compose.yml")["services"]["prometheus"]["volumes"]
    assert "./prometheus/rules:/etc/prometheus/rules:ro" in mounts
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]


def test_prometheus_scrapes_both_shippers_by_their_metrics_port() -> None:
    jobs = {job["job_name"]: job for job in load_yaml("prometheus/prometheus.yml")["scrape_configs"]}
    assert jobs["logpipe"]["dns_sd_configs"][0]["port"] == 9108
    assert (
        jobs["promtail"]["dns_sd_configs"][0]["port"]
        == load_yaml("promtail/promtail.yaml")["server"]["http_listen_port"]
    )


def test_rules_are_valid() -> None:
    assert RULE_FILES
    run([tool("promtool"), "check", "rules", *RULE_FILES])


def test_rule_unit_tests_pass() -> None:
    assert TEST_FILES
    run([tool("promtool"), "test", "rules", *TEST_FILES], timeout=120)


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    fired: dict[str, int] = defaultdict(int)
    quiet: dict[str, int] = defaultdict(int)
    for relpath in TEST_FILES:
        for case in load_yaml(relpath)["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet)[check["alertname"]] += 1
    for name in alerts():
        assert fired[name], f"{name}: no test where it fires"
        assert quiet[name], f"{name}: no test where it stays quiet"


@pytest.mark.parametrize("name", sorted(alerts()))
def test_alert_is_actionable(name: str) -> None:
    rule = alerts()[name]
    assert rule["labels"]["severity"] in SEVERITIES
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    # a `for:` avoids paging on one bad scrape
    assert rule.get("for", "0s") not in ("0s", "0m")


def test_rules_use_only_known_metrics() -> None:
    known = SERIES_NAMES | set(promtail_series().labels) | recording_rules()
    for rule in all_rules():
        unknown = promql_metric_names(rule["expr"]) - known
        assert not unknown, f"{rule.get('alert') or rule.get('record')}: unknown metrics {unknown}"


#: logpipe's alerts that read logpipe's own metrics, and the alert of promtail.yml that watches the same risk.
PROMTAIL_EQUIVALENT = {
    "LogpipeDown": "PromtailDown",
    "LogpipeDroppingEntries": "PromtailDroppingEntries",
    "LogpipeLagging": "PromtailPushesFailing",
    "LogpipeSpoolNearLokiWindow": "PromtailPushesFailing",
    "LogpipeMetricSeriesCapped": "PromtailMetricSeriesHigh",
    "LogpipeRateLimiting": "PromtailRateLimiting",
}


def test_every_alert_can_fire_with_either_shipper_or_has_an_equivalent() -> None:
    # Issue 16: an alert that can never fire under Promtail is worse than none, unless another one covers it.
    logpipe, promtail = logpipe_series(), promtail_series()
    rules = alerts()
    for name, rule in rules.items():
        with_logpipe = promql.returns_data(rule["expr"], logpipe)
        with_promtail = promql.returns_data(rule["expr"], promtail)
        if name.startswith("Dify") or name.startswith("LogShipper"):
            assert with_logpipe and with_promtail, name
        elif name in PROMTAIL_EQUIVALENT:
            assert with_logpipe and not with_promtail, name
            equivalent = rules[PROMTAIL_EQUIVALENT[name]]
            assert promql.returns_data(equivalent["expr"], promtail), PROMTAIL_EQUIVALENT[name]
        else:
            assert name.startswith("Promtail") and with_promtail and not with_logpipe, name
            assert name in PROMTAIL_EQUIVALENT.values(), f"{name}: which logpipe alert does it stand in for?"
    promtail_rules = (REPO / "prometheus/rules/promtail.yml").read_text(encoding="utf-8")
    for logpipe_alert, promtail_alert in PROMTAIL_EQUIVALENT.items():
        assert re.search(rf"{logpipe_alert} +-> {promtail_alert}\b", promtail_rules), "promtail.yml's header"


def test_rules_select_and_group_by_labels_their_series_carry() -> None:
    for series in (logpipe_series(), promtail_series()):
        for rule in all_rules():
            name = rule.get("alert") or rule.get("record")
            assert promql.problems(rule["expr"], series) == [], f"{series.job}: {name}"


def test_annotations_name_labels_of_the_result() -> None:
    for name, rule in alerts().items():
        text = " ".join(rule["annotations"].values())
        wanted = set(re.findall(r"\$labels\.(\w+)", text))
        for series in (logpipe_series(), promtail_series()):
            if promql.returns_data(rule["expr"], series):
                labels = promql.result_labels(rule["expr"], series)
                assert labels is None or wanted <= labels, (series.job, name, labels)


def test_metric_name_check_catches_a_typo() -> None:
    assert promql_metric_names(
        'sum by (service) (rate(dify_http_request_total{status=~"5.."}[5m])) / on() group_left max(up) > 0.05'
    ) - SERIES_NAMES == {"dify_http_request_total"}
    assert promql_metric_names("histogram_quantile(0.95, sum by (le) (rate(x_bucket[$__rate_interval])))") == {
        "x_bucket"
    }


def test_alertmanager_config_is_valid() -> None:
    run([tool("amtool"), "check-config", "alertmanager/alertmanager.yml"])


@pytest.mark.parametrize(
    ("severity", "receiver"),
    [("critical", "oncall-placeholder"), ("warning", "team-placeholder"), ("info", "blackhole")],
)
def test_alertmanager_routes_by_severity(severity: str, receiver: str) -> None:
    proc = run(
        [
            tool("amtool"),
            "config",
            "routes",
            "test",
            "--config.file=alertmanager/alertmanager.yml",
            f"severity={severity}",
            "alertname=Any",
            "service=api",
        ]
    )
    assert proc.stdout.strip() == receiver


def test_every_severity_used_by_a_rule_has_a_route() -> None:
    routes = load_yaml("alertmanager/alertmanager.yml")["route"]["routes"]
    routed = {m for route in routes for m in route["matchers"]}
    for rule in alerts().values():
        assert f'severity="{rule["labels"]["severity"]}"' in routed
