"""The README's cookbooks are what users paste into Grafana: every PromQL query parses (promtool) and names
metrics logpipe exports; every LogQL query selects on labels logpipe ships and filters on metadata it sends."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from logpipe.event import METADATA_FIELDS
from tests.stack.stackkit import REPO, SERIES_NAMES, STREAM_LABELS, promql_metric_names, recording_rules, run, tool

README = (REPO / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    start = README.index(f"## {title}")
    end = README.find("\n## ", start + 1)
    return README[start : end if end > 0 else None]


def promql_queries() -> list[str]:
    rows = re.findall(r"^\| [^|]+ \| `(.+)` (?:\([^)]*\) )?\|$", _section("PromQL cookbook"), re.MULTILINE)
    return [row.replace(r"\|", "|") for row in rows]


def logql_queries() -> list[str]:
    blocks = re.findall(r"```logql\n(.+?)\n```", _section("LogQL cookbook"), re.DOTALL)
    return [" ".join(block.split()) for block in blocks]


def test_promql_cookbook_parses(tmp_path: Path) -> None:
    queries = promql_queries()
    assert len(queries) >= 15
    rules = {
        "groups": [{"name": "readme", "rules": [{"record": f"readme:q{i}", "expr": q} for i, q in enumerate(queries)]}]
    }
    path = tmp_path / "readme.yml"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    run([tool("promtool"), "check", "rules", str(path)])


def test_promql_cookbook_uses_exported_metrics() -> None:
    known = SERIES_NAMES | recording_rules()
    for query in promql_queries():
        unknown = promql_metric_names(query) - known
        assert not unknown, f"{query}: unknown metrics {unknown}"


def test_logql_cookbook_uses_shipped_labels_and_metadata() -> None:
    queries = logql_queries()
    assert len(queries) >= 10
    for query in queries:
        selector = re.search(r"\{([^}]*)\}", query)
        assert selector is not None, query
        for name in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", selector.group(1)):
            assert name in STREAM_LABELS, f"{query}: {name} is not a stream label"
        # Label filters before any parser stage can only see structured metadata.
        before_parser = re.split(r"\| (?:json|logfmt|regexp|pattern)\b", query[selector.end() :])[0]
        for name in re.findall(r"\|\s*(\w+)\s*(?:=~|!~|!=|=|>|<)", before_parser):
            assert name in METADATA_FIELDS, f"{query}: {name} is not sent as structured metadata"
