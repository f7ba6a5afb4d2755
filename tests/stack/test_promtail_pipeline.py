"""promtail/promtail.yaml stage by stage, with tests/stack/promtailsim.py's model of Promtail's stages.

First what can be said of the pipeline whatever the logs: every match selector reads labels that exist at that
point, every metric can count, nothing refers to a label or key that is not there. Then records in every format
of shared/dify-log-formats.md pushed through it, with the samples each metric must get.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.stack import promtailsim
from tests.stack.stackkit import promtail_config


def job() -> dict[str, Any]:
    (scrape,) = promtail_config()["scrape_configs"]
    return scrape


def analysis(stages: list[dict[str, Any]] | None = None) -> promtailsim.Analysis:
    scrape = job()
    labels = promtailsim.relabelled_labels(scrape["relabel_configs"])
    return promtailsim.analyse(scrape["pipeline_stages"] if stages is None else stages, labels)


# --- what can never work ------------------------------------------------------------------------------------


def test_every_stage_can_do_its_work() -> None:
    # Selectors on labels present at that point, metrics whose source is extracted before them, labels,
    # labeldrops, templates and structured metadata that refer to something, no stage after a drop-all.
    assert analysis().problems() == []


def test_relabelling_sets_the_labels_the_pipeline_starts_from() -> None:
    assert promtailsim.relabelled_labels(job()["relabel_configs"]) == {
        "container",
        "service",
        "compose_project",
        "stream",
        "host",
    }


def stages_of(text: str) -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = yaml.safe_load(text)
    return loaded


# The error block as shipped until issue 16: under the level label it selects on, a counter without `source`
# (which then defaults to "errors_total") and without `match_all`.
ISSUE_16_ERRORS = """
- regex:
    expression: '(?P<level>ERROR|INFO)'
- labels:
    level:
- match:
    selector: '{level=~"error|critical|ERROR"}'
    stages:
      - metrics:
          errors_total:
            type: Counter
            prefix: dify_
            description: Log entries at level error or critical.
            config:
              action: inc
"""


def test_the_check_catches_issue_16s_error_counter() -> None:
    (problem,) = analysis(stages_of(ISSUE_16_ERRORS)).problems()
    assert "dify_errors_total counts only entries whose extracted map has 'errors_total'" in problem
    assert "defaults to its own name" in problem
    fixed = ISSUE_16_ERRORS.replace("action: inc", "match_all: true\n              action: inc")
    assert analysis(stages_of(fixed)).problems() == []


def test_the_check_catches_a_selector_on_a_dropped_or_later_label() -> None:
    dropped = """
- regex: {expression: '(?P<level>ERROR)'}
- labels: {level: }
- labeldrop: [level]
- match:
    selector: '{level="ERROR"}'
    stages:
      - metrics:
          errors_total: {type: Counter, prefix: dify_, description: x, config: {match_all: true, action: inc}}
"""
    problems = analysis(stages_of(dropped)).problems()
    assert "reads label 'level', which is not set at this point" in problems[0]
    assert problems[1].endswith("metrics: no entry can reach this stage")
    later = """
- match:
    selector: '{level="ERROR"}'
    stages:
      - regex: {expression: '(?P<x>.)'}
- regex: {expression: '(?P<level>ERROR)'}
- labels: {level: }
"""
    assert "reads label 'level', which is not set at this point" in analysis(stages_of(later)).problems()[0]


def test_the_check_catches_counters_after_a_drop_of_everything() -> None:
    drop_all = """
- regex: {expression: '(?P<msg>.*)'}
- drop: {expression: '.*'}
- metrics:
    log_entries_total: {type: Counter, prefix: dify_, description: x, config: {match_all: true, action: inc}}
"""
    assert analysis(stages_of(drop_all)).problems() == ["pipeline_stages[2].metrics: no entry can reach this stage"]
    some = drop_all.replace("expression: '.*'", "expression: '^DEBUG'")
    assert analysis(stages_of(some)).problems() == []


def test_the_check_catches_references_to_nothing() -> None:
    stale = """
- labels: {kind: timeout_kind}
- labeldrop: [status]
- template: {source: x, template: '{{ .http_method }}'}
- metrics:
    timeouts_total: {type: Counter, prefix: dify_, source: timeout_kind, description: x, config: {action: inc}}
"""
    problems = analysis(stages_of(stale)).problems()
    assert [p.split(": ", 1)[1] for p in problems] == [
        "kind: source 'timeout_kind' is never extracted before this stage",
        "label 'status' is not set at this point",
        "the template reads ['http_method'], which no earlier stage extracts",
        "dify_timeouts_total counts only entries whose extracted map has 'timeout_kind', and no earlier stage "
        "extracts it: it can never change",
    ]


def test_an_unmodelled_stage_is_reported_not_ignored() -> None:
    assert "not modelled" in analysis(stages_of("- geoip: {db: x}")).problems()[0]
    with pytest.raises(NotImplementedError):
        promtailsim.Pipeline(stages_of("- geoip: {db: x}")).run({}, "x")
