"""The dashboard: every query parses, uses known metrics and labels, and points at a provisioned datasource."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.stack import promql
from tests.stack.stackkit import (
    PROMTAIL_FILE_TARGET_ONLY,
    REPO,
    SERIES_NAMES,
    STREAM_LABELS,
    grafana_to_promql,
    load_yaml,
    logpipe_series,
    promql_metric_names,
    promtail_series,
    recording_rules,
    run,
    tool,
)

DASHBOARD = REPO / "grafana/dashboards/dify-logpipe.json"


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def targets(kind: str) -> list[tuple[str, str]]:
    """(panel title, expression) of every query against datasources of `kind`."""
    found = []
    for panel in panels(dashboard()["panels"]):
        for target in panel.get("targets", []):
            if (target.get("datasource") or panel["datasource"])["type"] == kind:
                found.append((panel["title"], target["expr"]))
    return found


def provisioned() -> dict[str, str]:
    sources = load_yaml("grafana/provisioning/datasources/datasources.yaml")["datasources"]
    return {ds["uid"]: ds["type"] for ds in sources}


def test_panels_and_queries_use_provisioned_datasources() -> None:
    uids = provisioned()
    board = dashboard()
    for panel in panels(board["panels"]):
        refs = [panel.get("datasource")] + [t.get("datasource") for t in panel.get("targets", [])]
        for ref in filter(None, refs):
            assert uids.get(ref["uid"]) == ref["type"], f"{panel['title']}: {ref}"
    for variable in board["templating"]["list"]:
        assert uids.get(variable["datasource"]["uid"]) == variable["datasource"]["type"]


def test_dashboard_covers_what_operators_ask_for() -> None:
    titles = " | ".join(p["title"] for p in panels(dashboard()["panels"])).lower()
    for topic in (
        "requests by status",
        "error rate",
        "timeouts by kind",
        "tokens",
        "cost",
        "latency percentiles",
        "backlog",
        "log volume by service and level",
        "recent errors",
        "lag",
        "dropped",
        "spool",
        "push latency",
    ):
        assert topic in titles, topic
    kinds = {p["type"] for p in panels(dashboard()["panels"])}
    assert "logs" in kinds


def test_panel_ids_are_unique_and_panels_do_not_overlap() -> None:
    items = [p for p in panels(dashboard()["panels"])]
    ids = [p["id"] for p in items]
    assert len(ids) == len(set(ids))
    taken: set[tuple[int, int]] = set()
    for panel in items:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_promql_queries_parse(tmp_path: Path) -> None:
    queries = targets("prometheus")
    assert len(queries) >= 20
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": grafana_to_promql(expr)}
                    for i, (_, expr) in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    run([tool("promtool"), "check", "rules", str(path)])


def test_promql_queries_use_only_known_metrics() -> None:
    known = SERIES_NAMES | set(promtail_series().labels) | recording_rules()
    for title, expr in targets("prometheus"):
        unknown = promql_metric_names(grafana_to_promql(expr)) - known
        assert not unknown, f"{title}: unknown metrics {unknown}"


def test_logql_queries_select_on_shipped_labels() -> None:
    queries = targets("loki")
    assert queries
    for title, expr in queries:
        selectors = re.findall(r"\{([^}]*)\}", expr)
        assert selectors, title
        for selector in selectors:
            for name, op, value in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', selector):
                assert name in STREAM_LABELS, f"{title}: {name} is not a stream label"
                # Loki refuses a selector that can match the empty set of labels.
                if op == "=~":
                    assert not re.fullmatch(value.replace("$service", ".+"), ""), f"{title}: {selector}"


def test_service_variable_never_selects_everything_in_loki() -> None:
    (service,) = [v for v in dashboard()["templating"]["list"] if v["name"] == "service"]
    assert service["includeAll"] and service["allValue"] == ".+"
    assert promql_metric_names(service["definition"].replace("label_values(", "").split(",")[0]) <= SERIES_NAMES


# --- either shipper ---------------------------------------------------------------------------------------------

LOGPIPE_ONLY_ROW = "logpipe only"


def rows() -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each row with the panels under it (rows are not collapsed: their panels follow them by position)."""
    items = sorted(panels(dashboard()["panels"]), key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
    out: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    for panel in items:
        if panel["type"] == "row":
            assert not panel.get("collapsed"), panel["title"]
            out.append((panel, []))
        else:
            out[-1][1].append(panel)
    return out


def queries(convert: Callable[[str], str] = grafana_to_promql) -> list[tuple[str, str, str, str]]:
    """(row title, panel title, legend, PromQL) of every Prometheus query (`convert` fills in Grafana's variables)."""
    found = []
    for row, members in rows():
        for panel in members:
            for target in panel.get("targets", []):
                if (target.get("datasource") or panel["datasource"])["type"] == "prometheus":
                    expr = convert(target["expr"])
                    found.append((row["title"], panel["title"], target.get("legendFormat", ""), expr))
    return found


def test_every_query_returns_data_with_either_shipper() -> None:
    # Issue 16: under Promtail 20 of 44 queries returned data; every shipper-health panel read logpipe_* only.
    # A query returns data under a shipper when every metric it needs (either side of an `or`) is served by it.
    logpipe, promtail = logpipe_series(), promtail_series()
    for row, title, legend, expr in queries():
        where = f"{row} / {title} / {legend or expr}"
        if row.startswith(LOGPIPE_ONLY_ROW):
            assert promql.returns_data(expr, logpipe), where
            assert not promql.returns_data(expr, promtail), f"{where}: works with Promtail, move it up"
            continue
        if not legend.endswith("(Promtail)"):
            assert promql.returns_data(expr, logpipe), f"{where}: no data with logpipe"
        if not legend.endswith("(logpipe)"):
            assert promql.returns_data(expr, promtail), f"{where}: no data with Promtail"


def test_logpipe_only_panels_say_so() -> None:
    (only,) = [members for row, members in rows() if row["title"].startswith(LOGPIPE_ONLY_ROW)]
    assert only
    for panel in only:
        assert panel["description"].startswith("logpipe only."), panel["title"]
        if panel["type"] == "stat":
            assert panel["fieldConfig"]["defaults"]["noValue"] == "logpipe only"


def test_queries_group_and_select_by_labels_their_series_carry() -> None:
    # Promtail's dify_* series carry the entry's stream labels plus the metric's own; logpipe's only the latter.
    for series in (logpipe_series(), promtail_series()):
        for row, title, _, expr in queries():
            assert promql.problems(expr, series) == [], f"{series.job}: {row} / {title}: {expr}"


def test_legends_name_labels_of_the_result() -> None:
    for _, title, legend, expr in queries():
        wanted = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
        if not wanted:
            continue
        for series in (logpipe_series(), promtail_series()):
            if not promql.returns_data(expr, series):
                continue
            labels = promql.result_labels(expr, series)
            # `{{status}}{{status_code}}`: each shipper names the same thing differently.
            assert labels is None or wanted & labels, f"{series.job}: {title}: {legend} but the result has {labels}"


def test_no_query_waits_for_promtail_file_target_metrics() -> None:
    # docker_sd_configs targets do not register them (clients/pkg/promtail/targets/manager.go).
    for _, title, _, expr in queries():
        assert not set(promql.metric_names(expr)) & PROMTAIL_FILE_TARGET_ONLY, title
