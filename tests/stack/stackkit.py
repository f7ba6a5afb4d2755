"""Helpers for the stack tests: repository paths, external tools, and the metric names rules may use."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from logpipe.metrics.derived import SPECS
from tests.dockerkit import require
from tests.stack import promql, promtailsim

REPO = Path(__file__).resolve().parents[2]

#: Every metric logpipe serves (namespace `dify`), as the issue defines them. Rules and dashboards may use only
#: these (histograms through their _bucket/_sum/_count series), Prometheus' own `up`, and the recording rules
#: defined in prometheus/rules/.
COUNTERS = {
    "dify_log_entries_total",
    "dify_errors_total",
    "dify_timeouts_total",
    "dify_http_requests_total",
    "dify_llm_tokens_total",
    "dify_llm_cost_usd_total",
    "dify_celery_tasks_total",
    "logpipe_lines_read_total",
    "logpipe_entries_read_total",
    "logpipe_entries_sent_total",
    "logpipe_entries_dropped_total",
    "logpipe_entries_retried_total",
    "logpipe_entries_spooled_total",
    "logpipe_sent_bytes_total",
    "logpipe_loki_responses_total",
    "logpipe_partial_frames_joined_total",
    "logpipe_lines_truncated_total",
    "logpipe_parse_errors_total",
    "logpipe_stream_reconnects_total",
    "logpipe_config_reloads_total",
    "logpipe_metric_series_dropped_total",
    "logpipe_redactions_total",
}
GAUGES = {
    "dify_llm_cost_budget_usd",
    "logpipe_containers_followed",
    "logpipe_container_lag_seconds",
    "logpipe_queue_bytes",
    "logpipe_spool_bytes",
    "logpipe_spool_oldest_age_seconds",
    "logpipe_build_info",
}
HISTOGRAMS = {
    "dify_http_request_duration_seconds",
    "dify_llm_request_duration_seconds",
    "dify_plugin_invoke_duration_seconds",
    "dify_llm_prompt_tokens",
    "dify_celery_task_duration_seconds",
    "logpipe_loki_push_duration_seconds",
}
SERIES_NAMES = frozenset(
    COUNTERS | GAUGES | {f"{h}{suffix}" for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")} | {"up"}
)

#: Loki stream labels both shippers produce.
STREAM_LABELS = frozenset({"service", "container", "compose_project", "stream", "host", "level"})

#: Promtail's own metrics under promtail/promtail.yaml (docker_sd_configs only), with their label names, as
#: grafana/loki v3.6 registers them: clients/pkg/promtail/client/client.go (`host` is the Loki URL's host, not
#: the stream label), clients/pkg/promtail/targets/docker/metrics.go, clients/pkg/logentry/stages/match.go and
#: drop.go (logentry_dropped_lines_total), clients/cmd/promtail/main.go (the build info collector).
#: promtail_read_lines_total, promtail_targets_active_total and promtail_files_active_total belong to file
#: targets and are registered only when a scrape config uses them (clients/pkg/promtail/targets/manager.go).
PROMTAIL_OWN: dict[str, frozenset[str]] = {
    "promtail_sent_entries_total": frozenset({"host"}),
    "promtail_sent_bytes_total": frozenset({"host"}),
    "promtail_encoded_bytes_total": frozenset({"host"}),
    "promtail_dropped_entries_total": frozenset({"host", "tenant", "reason"}),
    "promtail_dropped_bytes_total": frozenset({"host", "tenant", "reason"}),
    "promtail_mutated_entries_total": frozenset({"host", "tenant", "reason"}),
    "promtail_mutated_bytes_total": frozenset({"host", "tenant", "reason"}),
    "promtail_batch_retries_total": frozenset({"host", "tenant"}),
    "promtail_request_duration_seconds_bucket": frozenset({"status_code", "host", "le"}),
    "promtail_request_duration_seconds_sum": frozenset({"status_code", "host"}),
    "promtail_request_duration_seconds_count": frozenset({"status_code", "host"}),
    "promtail_docker_target_entries_total": frozenset(),
    "promtail_docker_target_parsing_errors_total": frozenset(),
    "promtail_build_info": frozenset({"version", "revision", "branch", "goversion", "goos", "goarch", "tags"}),
    "logentry_dropped_lines_total": frozenset({"reason"}),
}
#: File-target metrics people expect from Promtail but that this config does not produce.
PROMTAIL_FILE_TARGET_ONLY = frozenset(
    {
        "promtail_read_lines_total",
        "promtail_read_bytes_total",
        "promtail_targets_active_total",
        "promtail_files_active_total",
    }
)
#: Series Prometheus itself records for every scrape target.
PER_TARGET = {name: frozenset() for name in ("up", "scrape_samples_scraped", "scrape_series_added")}

_PROMQL_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
        "atan2",
    }
)


def promtail_config(**env: str) -> dict[str, Any]:
    """promtail/promtail.yaml as Promtail reads it after -config.expand-env."""
    text = (REPO / "promtail/promtail.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(promtailsim.expand_env(text, env))


def logpipe_series() -> promql.Series:
    """What logpipe serves: the dify_* families with their labels (logpipe/metrics/derived.py), logpipe_* (labels
    not checked here)."""
    labels: dict[str, frozenset[str] | None] = {name: None for name in SERIES_NAMES}
    for spec in SPECS:
        name = f"dify_{spec.suffix}"
        if spec.kind == "histogram":
            labels[f"{name}_bucket"] = frozenset(spec.labels) | {"le"}
            labels[f"{name}_sum"] = labels[f"{name}_count"] = frozenset(spec.labels)
        else:
            labels[name] = frozenset(spec.labels)
    labels.update(PER_TARGET)
    return _with_recording_rules(promql.Series("logpipe", labels))


def promtail_series() -> promql.Series:
    """What Promtail serves with promtail/promtail.yaml: the dify_* metrics its stages define, with the labels the
    entry can carry at each metrics stage, and its own metrics."""
    (job,) = promtail_config()["scrape_configs"]
    analysis = promtailsim.analyse(job["pipeline_stages"], promtailsim.relabelled_labels(job["relabel_configs"]))
    labels: dict[str, frozenset[str] | None] = {}

    def add(name: str, names: frozenset[str]) -> None:
        before = labels.get(name)
        labels[name] = names if before is None else before | names

    for site in analysis.metrics:
        names = site.always | site.maybe
        if site.kind == "histogram":
            add(f"{site.name}_bucket", names | {"le"})
            add(f"{site.name}_sum", names)
            add(f"{site.name}_count", names)
        else:
            add(site.name, names)
    labels.update(PROMTAIL_OWN)
    labels.update(PER_TARGET)
    return _with_recording_rules(promql.Series("promtail", labels))


def _with_recording_rules(series: promql.Series) -> promql.Series:
    """The series plus the recording rules of prometheus/rules/ that return data from them."""
    labels = dict(series.labels)
    for path in sorted((REPO / "prometheus" / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            for rule in group["rules"]:
                if "record" in rule and promql.returns_data(rule["expr"], promql.Series(series.job, labels)):
                    labels[rule["record"]] = promql.result_labels(rule["expr"], promql.Series(series.job, labels))
    return promql.Series(series.job, labels)


def tool(name: str) -> str:
    """Path of an external binary; fails under CI=true when it is missing, skips elsewhere."""
    path = shutil.which(name)
    if path is None:
        require(f"{name} is not installed")
    assert path is not None
    return path


def run(args: list[str], env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a tool from the repository root and assert it succeeded, showing its output if not."""
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def clean_env(**extra: str) -> dict[str, str]:
    """A minimal environment for tools whose output depends on it (compose interpolation)."""
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "LC_ALL") if key in os.environ}
    env.update(extra)
    return env


def load_yaml(relpath: str) -> Any:
    return yaml.safe_load((REPO / relpath).read_text(encoding="utf-8"))


def recording_rules() -> set[str]:
    names = set()
    for path in sorted((REPO / "prometheus" / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            names.update(rule["record"] for rule in group["rules"] if "record" in rule)
    return names


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (functions, keywords, labels and durations excluded).

    A tokenizer, not a parser: it is run only on expressions promtool has accepted, and it errs towards
    reporting a name, so that a misspelt metric cannot hide.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word in _PROMQL_KEYWORDS:
            continue
        names.add(word)
    return names


def grafana_to_promql(expr: str) -> str:
    """Replace Grafana's template variables by values Prometheus accepts."""
    for var, value in (("$__rate_interval", "5m"), ("$__interval", "1m"), ("$__range", "1h")):
        expr = expr.replace(var, value)
    return re.sub(r"\$\{?\w+\}?", ".+", expr)
