"""The dashboard with many hosts (docs/fleet.md): a `host` variable filters every query, nothing merges two hosts'
containers, and a Hosts row compares the hosts."""

from __future__ import annotations

import re

from tests.stack import promql
from tests.stack.stackkit import grafana_to_promql
from tests.stack.test_grafana import dashboard, queries, rows, targets


def variables() -> dict[str, dict]:  # type: ignore[type-arg]
    return {v["name"]: v for v in dashboard()["templating"]["list"]}


def selectors(node: promql.Node) -> list[promql.Selector]:
    if isinstance(node, promql.Selector):
        return [node]
    if isinstance(node, promql.Literal):
        return []
    if isinstance(node, promql.Binary):
        return selectors(node.lhs) + selectors(node.rhs)
    return [s for arg in node.args for s in selectors(arg)]


def test_host_variable_comes_first_and_all_matches_series_without_host() -> None:
    names = [v["name"] for v in dashboard()["templating"]["list"]]
    assert names[0] == "host"
    host = variables()["host"]
    assert host["datasource"]["uid"] == "prometheus"
    assert host["multi"] and host["includeAll"]
    # A single host's series have no `host` label: `.*` matches the empty value, `.+` would hide everything.
    assert host["allValue"] == ".*"
    assert host["definition"] == 'label_values(up{job=~"logpipe|promtail"}, host)'
    # Services offered are those of the chosen hosts.
    assert '{host=~"$host"}' in variables()["service"]["definition"]


def test_every_prometheus_selector_filters_by_host() -> None:
    for title, expr in targets("prometheus"):
        for selector in selectors(promql.parse(grafana_to_promql(expr))):
            assert ("host", "=~", ".+") in selector.matchers, f"{title}: {selector.name} is not filtered by host"
        assert expr.count('host=~"$host"') == len(selectors(promql.parse(grafana_to_promql(expr)))), title


def test_every_loki_selector_filters_by_host_and_stays_valid_for_loki() -> None:
    for title, expr in targets("loki"):
        for selector in re.findall(r"\{([^}]*)\}", expr):
            matchers = re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', selector)
            assert ("host", "=~", "$host") in matchers, f"{title}: {selector}"
            # Loki refuses a selector whose every matcher matches the empty value; with All, host=~".*" does.
            values = {"$host": ".*", "$service": ".+"}
            non_empty = [
                (name, value)
                for name, op, value in matchers
                if (op == "=" and value) or (op == "=~" and not re.fullmatch(values.get(value, value), ""))
            ]
            assert non_empty, f"{title}: {selector} matches the empty label set when All hosts are chosen"


def test_no_query_merges_two_hosts_containers() -> None:
    # Dify's containers are called docker-api-1 on every host: per container means per host and container.
    for _, title, _, expr in queries():
        for grouping in re.findall(r"\bby \(([^)]*)\)", expr):
            labels = {label.strip() for label in grouping.split(",")}
            if "container" in labels:
                assert "host" in labels, f"{title}: by ({grouping})"


def test_hosts_row_compares_hosts_with_either_shipper() -> None:
    (hosts,) = [members for row, members in rows() if row["title"] == "Hosts"]
    titles = {p["title"] for p in hosts}
    assert {"Shipper up by host", "Log entries per second by host", "5xx error rate by host"} <= titles
    assert "Log volume by host (Loki)" in titles
    for panel in hosts:
        for target in panel["targets"]:
            assert "by (host" in target["expr"], panel["title"]
            assert target["legendFormat"].startswith("{{host}}"), panel["title"]
    assert rows()[0][0]["title"] == "Hosts"
