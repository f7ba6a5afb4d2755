"""promtail/promtail.yaml stage by stage, with tests/stack/promtailsim.py's model of Promtail's stages.

First what can be said of the pipeline whatever the logs: every match selector reads labels that exist at that
point, every metric can count, nothing refers to a label or key that is not there. Then records in every format
of shared/dify-log-formats.md pushed through it, with the samples each metric must get.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from logpipe.metrics.derived import SPECS
from tests.stack import gotemplate, promtailsim
from tests.stack.stackkit import REPO, STREAM_LABELS, promtail_config


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


# --- records replayed -----------------------------------------------------------------------------------------

TRACE = "6f0b1c3e8a7d4f2e9c4b0a1d2e3f4a5b"
TENANT = "7c75135d-52f5-4e24-b5f3-6f69dcb64461"
TASK = "c14c96c2-1b7e-4a5f-9d2e-3f4a5b6c7d8e"
TRACEBACK = 'Traceback (most recent call last):\n  File "/app/api/core/plugin/impl/base.py", line 143, in _request\n'


def dify(level: str, message: str, trace: str = TRACE) -> str:
    return f"2026-06-12 10:33:00.001 {level} [Dummy-3] [app.py:875] {trace} - {message}"


def gin(status: int, latency: str, method: str = "POST", path: str = "/v1/sandbox/run") -> str:
    return f'[GIN] 2026/06/12 - 10:33:00 | {status:>3} | {latency:>13} |      172.19.0.7 | {method:<7} "{path}"'


#: (service, record, level the Loki stream gets): one record per entry, as the multiline stage hands them on.
RECORDS: list[tuple[str, str, str]] = [
    (
        "api",
        dify("INFO", f'HTTP Request: POST http://plugin_daemon:5002/plugin/{TENANT}/dispatch/llm/invoke "200"'),
        "info",
    ),
    ("api", dify("WARNING", "MAIL_TYPE is not set", trace=""), "warning"),
    ("api", dify("ERROR", f"Exception on /v1/chat-messages [POST]\n{TRACEBACK}ValueError: bad input"), "error"),
    (
        "api",
        dify("ERROR", f"Request to Plugin Daemon Service failed\n{TRACEBACK}httpx.ReadTimeout: timed out"),
        "error",
    ),
    ("api", "[2026-06-12 10:40:12 +0000] [1] [CRITICAL] WORKER TIMEOUT (pid:35)", "critical"),
    (
        "api",
        "[2026-06-12 10:40:13 +0000] [1] [ERROR] Worker (pid:35) was sent SIGKILL! Perhaps out of memory?",
        "error",
    ),
    ("api", "[2026-06-12 10:40:13 +0000] [39] [INFO] Booting worker with pid: 39", "info"),
    (
        "api",
        '{"ts":"2026-06-12T10:38:00.912Z","severity":"ERROR","service":"langgenius/dify","caller":"app.py:875",'
        f'"message":"Exception on /v1/workflows/run [POST]","trace_id":"{TRACE}","stack_trace":"Traceback ..."}}',
        "error",
    ),
    (
        "api",
        "2026-06-12 10:33:00.001 INFO [Dummy-3] [ext_request_logging.py:73]  - POST /v1/chat-messages 500 35.112 ",
        "info",
    ),
    ("worker", dify("INFO", f"Task tasks.document_indexing_task[{TASK}] received", trace=""), "info"),
    ("worker", dify("INFO", f"Task tasks.document_indexing_task[{TASK}] succeeded in 0.52s: None", trace=""), "info"),
    (
        "worker",
        dify(
            "ERROR",
            f"Task tasks.mail_task.send_mail_task[{TASK}] raised unexpected: ConnectTimeout('timed out')\n"
            f"{TRACEBACK}httpx.ConnectTimeout: timed out",
        ),
        "error",
    ),
    ("worker", dify("ERROR", f"Soft time limit (300s) exceeded for tasks.document_indexing_task[{TASK}]"), "error"),
    (
        "plugin_daemon",
        f"2026-06-12T10:32:01.118204551Z INFO dify-plugin-daemon middleware.go:83 trace_id={TRACE} "
        f"tenant_id={TENANT} HTTP request status=200 latency_ms=2417 client_ip=172.25.0.9 method=POST "
        f"path=/plugin/{TENANT}/dispatch/llm/invoke",
        "info",
    ),
    (
        "plugin_daemon",
        f"2026-06-12T10:32:40.3001Z ERROR dify-plugin-daemon generic.go:141 trace_id={TRACE} plugin returned "
        "error response action=invoke_llm error_type=InvokeConnectionError "
        'message="[models] Connection Error, Request timed out."',
        "error",
    ),
    (
        "plugin_daemon",
        '{"attributes":{"client_ip":"172.25.0.9","latency_ms":31,"method":"GET","path":"/plugin/x/management/list",'
        '"status":502},"caller":"middleware.go:83","message":"HTTP request","service":"dify-plugin-daemon",'
        f'"severity":"ERROR","trace_id":"{TRACE}","ts":"2026-06-12T10:32:01.118204551Z"}}',
        "error",
    ),
    ("plugin_daemon", "2025/08/26 08:22:33 pool.go:32: \x1b[32m[INFO]init routine pool, size: 10000\x1b[0m", "info"),
    ("plugin_daemon", gin(200, "14.364958ms", "POST", f"/plugin/{TENANT}/dispatch/text_embedding/invoke"), "info"),
    (
        "sandbox",
        '{"time":"2026-06-12T10:33:00.402118Z","level":"ERROR","msg":"process finished with error",'
        f'"status":"signal: killed","trace_id":"{TRACE}","span_id":"1a2b3c4d5e6f7081","tenant_id":"","user_id":""}}',
        "error",
    ),
    (
        "sandbox",
        "2025/05/07 17:53:01 output_capture.go:141: [ERROR]process finished with status: signal: killed",
        "error",
    ),
    (
        "sandbox",
        '{"time":"2026-06-12T10:33:00.1Z","level":"INFO","msg":"running code","trace_id":"' + TRACE + '"}',
        "info",
    ),
    ("sandbox", gin(200, "15.002947331s"), "info"),
    ("sandbox", gin(500, "512µs"), "error"),
    ("sandbox", gin(404, "1m2.5s", "GET", "/v1/sandbox/dependencies"), "warning"),
    (
        "nginx",
        '172.18.0.1 - - [12/Jun/2026:10:32:01 +0000] "POST /v1/chat-messages HTTP/1.1" 200 5123 "-" "py" "-"',
        "info",
    ),
    (
        "nginx",
        '172.18.0.1 - - [12/Jun/2026:10:32:02 +0000] "GET /console/api/apps HTTP/1.1" 502 150 "-" "py" "-"',
        "error",
    ),
    (
        "nginx",
        "2026/06/12 11:33:20 [error] 30#30: *902 upstream timed out (110: Connection timed out) while reading "
        'upstream, client: 10.0.0.5, server: _, request: "POST /v1/workflows/run HTTP/1.1"',
        "error",
    ),
    (
        "ssrf_proxy",
        "1781260380.402  60011 172.19.0.9 TCP_MISS/504 3960 GET http://10.0.0.111:10002/v1/models - HIER_DIRECT",
        "error",
    ),
    (
        "ssrf_proxy",
        "1781260380.402    151 172.19.0.9 TCP_TUNNEL/200 3960 CONNECT api.openai.com:443 - HIER_DIRECT",
        "info",
    ),
    (
        "ssrf_proxy",
        "1781260380.402      0 172.19.0.9 NONE/000 0 - error:transaction-end-before-headers - HIER_NONE",
        "info",
    ),
    ("db", '2026-06-12 10:40:01.456 UTC [88] ERROR:  duplicate key value violates unique constraint "x"', "error"),
    ("redis", "1:M 12 Jun 2026 10:31:20.321 # WARNING Memory overcommit must be enabled!", "warning"),
    ("weaviate", '{"action":"startup","level":"info","msg":"Serving weaviate","time":"2026-06-12T10:31:20Z"}', "info"),
    (
        "api",
        "[on_llm_after_invoke]\nContent: Hello!\nModel: gpt-4o-mini\nUsage: prompt_tokens=812 completion_tokens=96 "
        "total_price=Decimal('0.0001794') currency='USD' latency=1.912\nSystem Fingerprint: fp_0aa8d3e20b",
        "debug",
    ),
]


def replay(records: list[tuple[str, str, str]]) -> tuple[promtailsim.Pipeline, list[promtailsim.Entry]]:
    pipeline = promtailsim.Pipeline(job()["pipeline_stages"])
    entries = []
    for service, record, _ in records:
        labels = {
            "service": service,
            "container": f"docker-{service}-1",
            "compose_project": "docker",
            "stream": "stdout",
            "host": "dify-host",
        }
        entries.append(pipeline.run(labels, record))
    return pipeline, entries


def test_every_record_gets_its_level() -> None:
    _, entries = replay(RECORDS)
    got = [(service, entry.labels["level"]) for (service, _, _), entry in zip(RECORDS, entries, strict=True)]
    assert got == [(service, level) for service, _, level in RECORDS]


def test_loki_gets_only_the_stream_labels() -> None:
    # Metric labels (error_type, kind, method, status, model, type, model_type, task, state) are dropped after
    # their metrics stage: a leak would make every such value a Loki stream.
    _, entries = replay(RECORDS)
    for (service, record, _), entry in zip(RECORDS, entries, strict=True):
        assert set(entry.labels) == STREAM_LABELS, (service, record[:60])


def test_every_error_record_counts_once_in_its_service() -> None:
    pipeline, _ = replay(RECORDS)
    expected: dict[tuple[str, ...], float] = {}
    for service, _, level in RECORDS:
        if level in ("error", "critical"):
            expected[(service,)] = expected.get((service,), 0) + 1
    assert pipeline.registry.by("dify_errors_total", "service") == expected
    entries = pipeline.registry.by("dify_log_entries_total", "service", "level")
    assert sum(entries.values()) == len(RECORDS)


def test_errors_are_typed_by_exception_class_or_plugin_error_type() -> None:
    pipeline, _ = replay(RECORDS)
    types = pipeline.registry.by("dify_errors_total", "service", "error_type")
    assert types[("api", "ValueError")] == 1
    assert types[("api", "httpx.ReadTimeout")] == 1
    assert types[("worker", "httpx.ConnectTimeout")] == 1
    assert types[("plugin_daemon", "InvokeConnectionError")] == 1
    assert types[("sandbox", "unknown")] == 3


def test_every_sandbox_gin_line_is_an_http_request() -> None:
    # Issue 16: 100 gin access lines of the sandbox, 0 in dify_http_requests_total{service="sandbox"}.
    latencies = ["15.002947331s", "14.364958ms", "512µs", "1m2.5s", "0s"]
    seconds = [15.002947331, 0.014364958, 0.000512, 62.5, 0.0]
    statuses = [200] * 80 + [400] * 5 + [500] * 15
    records = [
        ("sandbox", gin(status, latencies[i % 5], "GET" if i % 4 == 0 else "POST"), "")
        for i, status in enumerate(statuses)
    ]
    pipeline, _ = replay(records)
    registry = pipeline.registry
    assert registry.total("dify_http_requests_total", service="sandbox") == 100
    assert registry.by("dify_http_requests_total", "status") == {("200",): 80, ("400",): 5, ("500",): 15}
    assert registry.by("dify_http_requests_total", "method") == {("GET",): 25, ("POST",): 75}
    observed = registry.observed("dify_http_request_duration_seconds", service="sandbox")
    assert sorted(observed) == pytest.approx(sorted(seconds[i % 5] for i in range(100)))
    # A 5xx access line is an error record, as logpipe counts it.
    assert registry.by("dify_errors_total", "service") == {("sandbox",): 15}


def test_http_requests_from_every_access_format() -> None:
    pipeline, _ = replay(RECORDS)
    requests = pipeline.registry.by("dify_http_requests_total", "service", "method", "status")
    assert requests == {
        ("api", "POST", "500"): 1,
        ("plugin_daemon", "POST", "200"): 2,
        ("plugin_daemon", "GET", "502"): 1,
        ("sandbox", "POST", "200"): 1,
        ("sandbox", "POST", "500"): 1,
        ("sandbox", "GET", "404"): 1,
        ("nginx", "POST", "200"): 1,
        ("nginx", "GET", "502"): 1,
        ("ssrf_proxy", "GET", "504"): 1,
        ("ssrf_proxy", "CONNECT", "200"): 1,
    }
    durations = pipeline.registry.observed
    assert durations("dify_http_request_duration_seconds", service="api") == [pytest.approx(0.035112)]
    assert durations("dify_http_request_duration_seconds", service="ssrf_proxy") == [60.011, 0.151]
    assert durations("dify_plugin_invoke_duration_seconds", model_type="llm") == [pytest.approx(2.417)]
    assert durations("dify_plugin_invoke_duration_seconds", model_type="text_embedding") == [pytest.approx(0.014364958)]


def test_timeouts_celery_and_llm_usage() -> None:
    pipeline, _ = replay(RECORDS)
    registry = pipeline.registry
    assert registry.by("dify_timeouts_total", "service", "kind") == {
        ("api", "read_timeout"): 1,
        ("api", "worker_timeout"): 1,
        ("worker", "connect_timeout"): 1,
        ("worker", "task_time_limit"): 1,
        ("plugin_daemon", "request_timeout"): 1,
        ("nginx", "upstream_timeout"): 1,
    }
    assert registry.by("dify_celery_tasks_total", "task", "state") == {
        ("tasks.document_indexing_task", "received"): 1,
        ("tasks.document_indexing_task", "succeeded"): 1,
        ("tasks.mail_task.send_mail_task", "failed"): 1,
    }
    assert registry.observed("dify_celery_task_duration_seconds") == [0.52]
    assert registry.by("dify_llm_tokens_total", "model", "type") == {
        ("gpt-4o-mini", "prompt"): 812,
        ("gpt-4o-mini", "completion"): 96,
    }
    assert registry.total("dify_llm_cost_usd_total", model="gpt-4o-mini") == pytest.approx(0.0001794)


def test_every_metric_has_one_set_of_label_names_the_stream_labels_plus_logpipes() -> None:
    # client_golang refuses series of one metric with different label names; the dashboards and rules group by
    # logpipe's labels, which every Promtail series must therefore carry too.
    pipeline, _ = replay(RECORDS)
    registry = pipeline.registry
    seen = set(registry.counters) | set(registry.observations)
    expected = {f"dify_{spec.suffix}": frozenset(spec.labels) | STREAM_LABELS for spec in SPECS}
    assert seen == set(expected)
    for name in sorted(seen):
        assert registry.label_names(name) == {expected[name]}, name


# --- the model itself -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("15.002947331s", 15.002947331),
        ("14.364958ms", 0.014364958),
        ("512µs", 0.000512),
        ("1m2.5s", 62.5),
        ("1h0m0s", 3600.0),
        ("0s", 0.0),
        ("0", 0.0),
        ("2417", None),
        ("ms", None),
        ("1.5", None),
    ],
)
def test_go_durations_parse_as_time_parse_duration(text: str, seconds: float | None) -> None:
    assert promtailsim.go_duration_seconds(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_go_templates_as_text_template_runs_them() -> None:
    run = gotemplate.execute
    assert run("{{ if .Value }}{{ .Value }}{{ else }}unknown{{ end }}", {}) == "unknown"
    assert run("{{ .missing }}", {}) == "<no value>"
    assert run("a {{- if .x -}} b {{- end -}} c", {"x": "1"}) == "abc"
    assert run('{{- $l := ToLower .Value -}}{{ if or (eq $l "warn") (hasPrefix "w" $l) }}w{{ end }}', {"Value": "WARN"})
    assert run("{{ if and .a .b }}{{ .b }}{{ end }}", {"a": "1"}) == ""
    assert run('{{ eq (ToUpper (toString .c)) "USD" }}', {}) == "false"
    with pytest.raises(gotemplate.TemplateError):
        run("{{ ToLower .missing }}", {})
    with pytest.raises(gotemplate.Unsupported):
        run("{{ range .x }}{{ end }}", {})


def test_an_empty_template_result_deletes_the_key() -> None:
    pipeline = promtailsim.Pipeline(stages_of("- template: {source: level, template: '{{ if .x }}y{{ end }}'}"))
    assert "level" not in pipeline.run({"level": "info"}, "line").extracted


# --- cutting noise (issue 14) ---------------------------------------------------------------------------------


def noise_stages() -> list[dict[str, Any]]:
    """The commented noise stages at the end of promtail/promtail.yaml, uncommented."""
    text = promtail_text()
    block = text[text.index("# --- Cutting noise") :]
    yaml_lines = [re.sub(r"^\s*# ", "", line) for line in block.splitlines() if re.match(r"^\s*# (- |\s)", line)]
    stages: list[dict[str, Any]] = yaml.safe_load("\n".join(yaml_lines))
    return stages


def promtail_text() -> str:
    return (REPO / "promtail/promtail.yaml").read_text(encoding="utf-8")


NOISE = [
    ("plugin_daemon", '{"attributes":{"path":"/health/check","status":200,"method":"GET","latency_ms":0},"caller":'
     '"middleware.go:83","message":"HTTP request","service":"dify-plugin-daemon","severity":"INFO",'
     '"ts":"2026-06-12T10:34:00Z"}', "info"),
    ("nginx", '172.18.0.1 - - [12/Jun/2026:10:32:01 +0000] "GET /health HTTP/1.1" 200 2 "-" "curl/8" "-"', "info"),
    ("api", "[on_llm_before_invoke]\nModel: gpt-4o-mini\nPrompt messages: my secret question", "unknown"),
]  # fmt: skip


def test_the_promtail_noise_stages_drop_what_they_say_and_change_no_metric() -> None:
    stages = noise_stages()
    assert [next(iter(s)) for s in stages] == ["match", "match", "match", "limit"]
    full = job()["pipeline_stages"] + stages
    assert analysis(full).problems() == []
    records = RECORDS + NOISE
    plain, _ = replay(records)
    noisy = promtailsim.Pipeline(full)
    shipped = []
    for service, record, _ in records:
        labels = {"service": service, "container": f"docker-{service}-1", "compose_project": "docker",
                  "stream": "stdout", "host": "dify-host"}  # fmt: skip
        entry = noisy.run(labels, record)
        if not entry.dropped:
            shipped.append(entry.line)
    assert len(shipped) == len(RECORDS), "the noise records were shipped, or real records were dropped"
    assert noisy.registry.counters == plain.registry.counters
    assert noisy.registry.observations == plain.registry.observations
