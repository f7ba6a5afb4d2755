"""promtail/promtail.yaml: what Promtail would see after -config.expand-env, and its regexes on real formats.

No Promtail binary is available here, so the file is checked statically: env expansion as Promtail's envsubst
does it, RE2-compatible regexes (compiled with Python's `re`, which accepts the same syntax for what is used),
the regex stages replayed on lines in every format of shared/dify-log-formats.md, and the metric and label
names against logpipe's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from logpipe.event import METADATA_FIELDS
from tests.stack.promtailsim import expand_env
from tests.stack.stackkit import REPO, SERIES_NAMES, STREAM_LABELS

RAW = (REPO / "promtail/promtail.yaml").read_text(encoding="utf-8")

TRACE = "6f0b1c3e8a7d4f2e9c4b0a1d2e3f4a5b"
TENANT = "7c75135d-52f5-4e24-b5f3-6f69dcb64461"


def config(**env: str) -> dict[str, Any]:
    return yaml.safe_load(expand_env(RAW, env))


def stages(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every stage, nested match stages included, in pipeline order."""
    for stage in items:
        yield stage
        if "match" in stage:
            yield from stages(stage["match"].get("stages", []))


def pipeline() -> list[dict[str, Any]]:
    (job,) = config()["scrape_configs"]
    return job["pipeline_stages"]


def regexes() -> list[str]:
    found = [s["regex"]["expression"] for s in stages(pipeline()) if "regex" in s]
    found += [s["multiline"]["firstline"] for s in stages(pipeline()) if "multiline" in s]
    return found


def test_env_expansion_changes_only_the_variables() -> None:
    without_vars = re.sub(r"\$\{\w+(:-[^}]*)?\}", "", RAW)
    assert expand_env(without_vars, {}) == without_vars, "a $$ or a backslash escape would be rewritten"


def test_follows_the_dify_project_and_pushes_to_loki() -> None:
    for env, project in (({}, "docker"), ({"DIFY_PROJECT": "dify"}, "dify")):
        cfg = config(**env)
        (sd,) = cfg["scrape_configs"][0]["docker_sd_configs"]
        assert sd["filters"] == [{"name": "label", "values": [f"com.docker.compose.project={project}"]}]
        assert sd["host"] == "unix:///var/run/docker.sock"
    assert config()["clients"][0]["url"] == "http://loki:3100/loki/api/v1/push"
    assert config()["positions"]["filename"].startswith("/var/lib/promtail/")


def test_stream_labels_match_logpipe() -> None:
    (job,) = config()["scrape_configs"]
    relabelled = {rule["target_label"] for rule in job["relabel_configs"]}
    added = {name for s in stages(pipeline()) if "labels" in s for name in s["labels"]}
    dropped = {name for s in stages(pipeline()) if "labeldrop" in s for name in s["labeldrop"]}
    assert relabelled | (added - dropped) == STREAM_LABELS


def test_structured_metadata_matches_logpipe() -> None:
    (meta,) = [s["structured_metadata"] for s in stages(pipeline()) if "structured_metadata" in s]
    assert set(meta) == set(METADATA_FIELDS)


def test_metrics_have_logpipe_names() -> None:
    names = set()
    for stage in stages(pipeline()):
        for key, metric in stage.get("metrics", {}).items():
            # Promtail prefixes "promtail_custom_" unless a prefix is given (an empty one counts as none).
            assert metric["prefix"] == "dify_", key
            name = metric["prefix"] + key
            if metric["type"] == "Histogram":
                assert {f"{name}_bucket", f"{name}_sum", f"{name}_count"} <= SERIES_NAMES, name
            else:
                assert name in SERIES_NAMES, name
            if key in ("llm_tokens_total", "llm_cost_usd_total"):
                assert metric["config"]["action"] == "add", key
            names.add(name)
    assert len(names) >= 10


def test_same_metric_defined_twice_has_one_description() -> None:
    # client_golang refuses series of one name with different help strings.
    help_by_name: dict[str, set[str]] = {}
    for stage in stages(pipeline()):
        for key, metric in stage.get("metrics", {}).items():
            help_by_name.setdefault(key, set()).add(metric["description"])
    assert all(len(h) == 1 for h in help_by_name.values()), help_by_name


@pytest.mark.parametrize("expression", regexes())
def test_regex_is_re2_compatible(expression: str) -> None:
    for construct in ("(?=", "(?!", "(?<=", "(?<!", "(?>", "\\Z", "*+", "++", "?+"):
        assert construct not in expression
    assert not re.search(r"\\[1-9]", expression), "back-references are not RE2"
    re.compile(expression)


def apply_regexes(line: str) -> dict[str, str]:
    """The top-level regex stages applied in order, as Promtail would (later matches overwrite)."""
    extracted: dict[str, str] = {}
    for stage in pipeline():
        if "regex" in stage:
            match = re.search(stage["regex"]["expression"], line)
            if match:
                extracted.update({k: v for k, v in match.groupdict().items() if v is not None})
        if "json" in stage and line.startswith("{"):
            data = json.loads(line)
            extracted["level"] = data.get("severity") or data.get("level")
    return extracted


LEVEL_SAMPLES = [
    (f"2026-06-12 10:32:01.117 INFO [Dummy-14] [_client.py:1025] {TRACE} - HTTP Request: POST http://x", "INFO"),
    ("2024-08-27 15:20:28,976.976 WARNING [MainThread] [ext_mail.py:51] - MAIL_TYPE is not set", "WARNING"),
    ("2026-06-12 10:33:00.001 ERROR [Dummy-3] [strategy.py:161]  - Task tasks.x.y[c14c] failed", "ERROR"),
    ('{"ts":"2026-06-12T10:38:00.912Z","severity":"WARN","service":"langgenius/dify","message":"m"}', "WARN"),
    (f"2026-06-12T10:32:01.118204551Z INFO dify-plugin-daemon middleware.go:83 trace_id={TRACE} HTTP request", "INFO"),
    ("[2026-06-12 10:40:12 +0000] [1] [CRITICAL] WORKER TIMEOUT (pid:35)", "CRITICAL"),
    ("[2024-08-23 06:54:18,106: INFO/MainProcess] Task tasks.x[abc] received", "INFO"),
    ("2026/06/12 11:33:20 [error] 30#30: *902 upstream timed out (110: Connection timed out) while reading", "error"),
    ("2025/08/26 08:22:33 pool.go:32: [INFO]init routine pool, size: 10000", "INFO"),
    ("2025/05/07 17:53:01 output_capture.go:141: [ERROR]process finished with status: signal: killed", "ERROR"),
    ('{"time":"2026-06-12T10:33:00.402118Z","level":"ERROR","msg":"process finished with error"}', "ERROR"),
    ('2026-06-12 10:40:01.456 UTC [88] ERROR:  duplicate key value violates unique constraint "x"', "ERROR"),
    ("1:M 12 Jun 2026 10:31:20.321 * Ready to accept connections tcp", "*"),
    ("1:M 12 Jun 2026 10:31:20.321 # WARNING Memory overcommit must be enabled!", "#"),
]


@pytest.mark.parametrize(("line", "level"), LEVEL_SAMPLES)
def test_level_is_extracted_from_every_format(line: str, level: str) -> None:
    assert apply_regexes(line)["level"] == level


@pytest.mark.parametrize(
    "line",
    [
        '172.18.0.1 - - [12/Jun/2026:10:32:01 +0000] "POST /v1/chat-messages HTTP/1.1" 200 5123 "-" "python" "-"',
        '[GIN] 2026/06/12 - 10:33:00 |     200 | 15.002947331s |      172.19.0.7 | POST     "/v1/sandbox/run"',
        "1781260380.402  60011 172.19.0.9 TCP_MISS/504 3960 GET http://10.0.0.111:10002/v1/models - HIER_DIRECT",
    ],
)
def test_access_lines_are_recognised(line: str) -> None:
    assert "access_line" in apply_regexes(line)


def test_level_template_maps_every_raw_level() -> None:
    (template,) = [s["template"]["template"] for s in pipeline() if s.get("template", {}).get("source") == "level"]
    for raw in {level.lower() for _, level in LEVEL_SAMPLES} | {"warn", "debug", "fatal", "panic", "notice"}:
        assert f'"{raw}"' in template, raw
    for level in ("debug", "info", "warning", "error", "critical", "unknown"):
        assert f"}}}}{level}" in template, level


@pytest.mark.parametrize(
    "line",
    [
        f"2026-06-12 10:32:01.117 INFO [Dummy-14] [_client.py:1025] {TRACE} - HTTP Request: POST x",
        f'{{"severity":"INFO","message":"m","trace_id":"{TRACE}","span_id":"51e2a9c0d8b7f6a5"}}',
        f'{{"severity": "INFO", "message": "m", "trace_id": "{TRACE}"}}',
        f"2026-06-12T10:32:01.1Z INFO dify-plugin-daemon middleware.go:83 trace_id={TRACE} tenant_id={TENANT} x",
        f'{{"attributes":{{"status":200}},"identity":{{"tenant_id":"{TENANT}"}},"trace_id":"{TRACE}"}}',
    ],
)
def test_trace_id_is_extracted_as_metadata(line: str) -> None:
    assert apply_regexes(line)["trace_id"] == TRACE


def test_tenant_and_task_ids_are_extracted() -> None:
    line = f"2026-06-12T10:32:01.1Z INFO dify-plugin-daemon m.go:1 trace_id={TRACE} tenant_id={TENANT} HTTP request"
    assert apply_regexes(line)["tenant_id"] == TENANT
    assert "tenant_id" not in apply_regexes('{"level":"ERROR","msg":"x","tenant_id":"","user_id":""}')
    task = "c14c96c2-1b7e-4a5f-9d2e-3f4a5b6c7d8e"
    done = apply_regexes(
        f"2026-06-12 10:33:00.001 INFO [MainThread] [trace.py:128]  - Task "
        f"tasks.mail_task.send_mail_task[{task}] succeeded in 0.52s: None"
    )
    assert (done["task"], done["task_id"], done["task_event"], done["task_runtime"]) == (
        "tasks.mail_task.send_mail_task",
        task,
        "succeeded",
        "0.52",
    )
    assert apply_regexes("... req_id: 9e1e2daabe PluginInvokeError: {}")["req_id"] == "9e1e2daabe"


def firstline() -> str:
    (expression,) = [s["multiline"]["firstline"] for s in stages(pipeline()) if "multiline" in s]
    return expression


@pytest.mark.parametrize(
    "line",
    [line for line, _ in LEVEL_SAMPLES[:7]]
    + [
        "[on_llm_after_invoke]",
        "2026/06/12 10:33:05 /app/db.go:259 x",
        "INFO  [alembic.runtime.migration] Running upgrade",
    ],
)
def test_multiline_starts_a_record_at_every_record_prefix(line: str) -> None:
    assert re.search(firstline(), line)


@pytest.mark.parametrize(
    "line",
    [
        "Traceback (most recent call last):",
        '  File "/app/api/core/plugin/impl/base.py", line 143, in _request',
        "    ^^^^^^^^^^^^^^^^^^^^^^^^^^",
        "During handling of the above exception, another exception occurred:",
        "httpx.ReadTimeout: timed out",
        "\tgithub.com/langgenius/dify-plugin-daemon/internal/core/plugin_daemon.go:55 +0x1f",
        '[0.342ms] [rows:0] SELECT * FROM "plugin_declarations" WHERE x',
        "Model: gpt-4o-mini",
        "Usage: prompt_tokens=812 completion_tokens=96",
        "",
    ],
)
def test_multiline_keeps_continuations_in_their_record(line: str) -> None:
    assert not re.search(firstline(), line)


def test_llm_usage_block_yields_model_and_tokens() -> None:
    (block_match,) = [s["match"] for s in pipeline() if "on_llm_after_invoke" in s.get("match", {}).get("selector", "")]
    block = "\n".join(
        [
            "[on_llm_after_invoke]",
            "Content: Hello! How can I help?",
            "Model: gpt-4o-mini",
            "Usage: prompt_tokens=812 prompt_unit_price=Decimal('0.15') prompt_price_unit=Decimal('0.000001') "
            "prompt_price=Decimal('0.0001218') completion_tokens=96 completion_unit_price=Decimal('0.6') "
            "completion_price_unit=Decimal('0.000001') completion_price=Decimal('0.0000576') total_tokens=908 "
            "total_price=Decimal('0.0001794') currency='USD' latency=1.912 time_to_first_token=0.41 "
            "time_to_generate=1.5",
            "System Fingerprint: fp_0aa8d3e20b",
        ]
    )
    extracted: dict[str, str] = {}
    for stage in block_match["stages"]:
        if "regex" in stage:
            match = re.search(stage["regex"]["expression"], block)
            assert match, stage["regex"]["expression"]
            extracted.update(match.groupdict())
    assert extracted == {
        "model": "gpt-4o-mini",
        "prompt_tokens": "812",
        "completion_tokens": "96",
        "llm_cost": "0.0001794",
        "llm_currency": "USD",
        "llm_latency": "1.912",
    }


def test_plugin_daemon_request_lines_yield_http_fields() -> None:
    (daemon,) = [s["match"] for s in pipeline() if 'service="plugin_daemon"' in s.get("match", {}).get("selector", "")]
    text = (
        f"2026-06-12T10:32:01.118204551Z INFO dify-plugin-daemon middleware.go:83 trace_id={TRACE} HTTP request "
        f"status=200 latency_ms=2417 client_ip=172.25.0.9 method=POST path=/plugin/{TENANT}/dispatch/llm/invoke"
    )
    as_json = json.dumps(
        {
            "attributes": {
                "client_ip": "172.25.0.9",
                "latency_ms": 2417,
                "method": "POST",
                "path": f"/plugin/{TENANT}/dispatch/llm/invoke",
                "status": 200,
            },
            "message": "HTTP request",
            "severity": "INFO",
        },
        separators=(",", ":"),
    )
    for line in (text, as_json):
        extracted: dict[str, str] = {}
        for stage in daemon["stages"]:
            match = re.search(stage["regex"]["expression"], line)
            assert match, (stage["regex"]["expression"], line)
            extracted.update(match.groupdict())
        assert extracted == {"http_status": "200", "http_method": "POST", "http_duration": "2417", "model_type": "llm"}
