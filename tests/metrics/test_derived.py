"""The built-in metrics: exact values from known events."""

from __future__ import annotations

import math

import pytest

from logpipe.config import ModelPrice
from logpipe.metrics.derived import (
    HTTP_DURATION_BUCKETS,
    LLM_DURATION_BUCKETS,
    PROMPT_TOKEN_BUCKETS,
    TASK_DURATION_BUCKETS,
)

from .support import buckets, event, series


def test_log_entries_by_service_and_level(make, registry):
    m = make()
    for service, level in [("api", "info"), ("api", "info"), ("api", "warning"), ("worker", "info")]:
        m.observe(event(service=service, level=level))
    assert series(registry, "dify_log_entries_total") == {
        (("level", "info"), ("service", "api")): 2.0,
        (("level", "warning"), ("service", "api")): 1.0,
        (("level", "info"), ("service", "worker")): 1.0,
    }


def test_errors_count_error_and_critical_with_unknown_type(make, registry):
    m = make()
    m.observe(event(level="error", error_type="ValueError"))
    m.observe(event(level="critical", error_type="ValueError"))
    m.observe(event(level="error"))
    m.observe(event(level="warning", error_type="ValueError"))
    assert series(registry, "dify_errors_total") == {
        (("error_type", "ValueError"), ("service", "api")): 2.0,
        (("error_type", "unknown"), ("service", "api")): 1.0,
    }


def test_timeouts_by_kind(make, registry):
    m = make()
    m.observe(event(level="error", timeout_kind="worker_timeout"))
    m.observe(event(level="error", timeout_kind="worker_timeout"))
    m.observe(event(service="nginx", timeout_kind="upstream_timeout"))
    m.observe(event(service="nginx", timeout_kind="not_a_kind"))
    assert series(registry, "dify_timeouts_total") == {
        (("kind", "worker_timeout"), ("service", "api")): 2.0,
        (("kind", "upstream_timeout"), ("service", "nginx")): 1.0,
        (("kind", "other"), ("service", "nginx")): 1.0,
    }


def test_http_requests_and_duration_histogram(make, registry):
    m = make()
    durations = [0.004, 0.005, 0.3, 7.0, 400.0]
    for d in durations:
        m.observe(event(http_method="GET", http_path="/x", http_status=200, duration_seconds=d))
    m.observe(event(http_method="POST", http_status=500))  # no duration: counted, not timed
    m.observe(event(http_status=404))  # no method
    assert series(registry, "dify_http_requests_total") == {
        (("method", "GET"), ("service", "api"), ("status", "200")): 5.0,
        (("method", "POST"), ("service", "api"), ("status", "500")): 1.0,
        (("method", "unknown"), ("service", "api"), ("status", "404")): 1.0,
    }
    labels = {"service": "api", "method": "GET"}
    got = buckets(registry, "dify_http_request_duration_seconds", labels)
    assert list(got) == [*(str(float(b)) for b in HTTP_DURATION_BUCKETS), "+Inf"]
    for le, count in got.items():
        assert count == sum(1 for d in durations if d <= float(le)), le
    assert got["0.005"] == 2  # a value equal to a bound falls in that bucket
    assert registry.get_sample_value("dify_http_request_duration_seconds_count", labels) == len(durations)
    assert registry.get_sample_value("dify_http_request_duration_seconds_sum", labels) == pytest.approx(sum(durations))
    assert registry.get_sample_value("dify_http_request_duration_seconds_count", {**labels, "method": "POST"}) is None


def test_junk_http_method_becomes_other_without_counting_a_fold(make, registry):
    m = make()
    m.observe(event(http_method="\x16\x03\x01", http_status=400))
    assert (
        registry.get_sample_value("dify_http_requests_total", {"service": "api", "method": "other", "status": "400"})
        == 1
    )
    assert registry.get_sample_value("logpipe_metric_series_dropped_total", {"metric": "dify_http_requests_total"}) == 0


def test_llm_tokens_add_by_value(make, registry):
    m = make()
    usage = [("gpt-4o", 1200, 300), ("gpt-4o", 800, 50), (None, 10, None)]
    for model, prompt, completion in usage:
        m.observe(event(model=model, prompt_tokens=prompt, completion_tokens=completion))
    assert series(registry, "dify_llm_tokens_total") == {
        (("model", "gpt-4o"), ("type", "prompt")): 2000.0,
        (("model", "gpt-4o"), ("type", "completion")): 350.0,
        (("model", "unknown"), ("type", "prompt")): 10.0,
    }


def test_llm_cost_logged_usd_wins_over_price_table(make, registry):
    m = make(prices={"gpt-4o": ModelPrice(prompt_usd_per_1k=0.005, completion_usd_per_1k=0.015)})
    m.observe(event(model="gpt-4o", prompt_tokens=1000, completion_tokens=1000, cost=0.25, currency="USD"))
    m.observe(event(model="gpt-4o", prompt_tokens=1000, completion_tokens=1000, cost=0.5))  # no currency: USD
    m.observe(event(model="gpt-4o", prompt_tokens=1000, completion_tokens=1000, cost=0.125, currency="usd"))
    assert registry.get_sample_value("dify_llm_cost_usd_total", {"model": "gpt-4o"}) == 0.875


def test_llm_cost_from_price_table(make, registry):
    prompt_price, completion_price = 0.005, 0.015
    m = make(prices={"gpt-4o": ModelPrice(prompt_price, completion_price)})
    m.observe(event(model="gpt-4o", prompt_tokens=1200, completion_tokens=300))
    m.observe(event(model="gpt-4o", prompt_tokens=400, completion_tokens=None))
    # a cost in another currency is not USD: the price table applies
    m.observe(event(model="gpt-4o", prompt_tokens=2000, completion_tokens=100, cost=3.0, currency="CNY"))
    expected = ((1200 + 400 + 2000) * prompt_price + (300 + 100) * completion_price) / 1000
    assert registry.get_sample_value("dify_llm_cost_usd_total", {"model": "gpt-4o"}) == pytest.approx(expected)


def test_llm_cost_unknown_price_adds_nothing(make, registry):
    m = make(prices={"gpt-4o": ModelPrice(0.005, 0.015)})
    m.observe(event(model="mystery-model", prompt_tokens=1000, completion_tokens=1000))
    m.observe(event(model="mystery-model", prompt_tokens=1000, cost=2.0, currency="EUR"))
    assert series(registry, "dify_llm_cost_usd_total") == {}
    assert registry.get_sample_value("dify_llm_tokens_total", {"model": "mystery-model", "type": "prompt"}) == 2000


def test_llm_latency_and_prompt_size_histograms(make, registry):
    m = make()
    calls = [("gpt-4o", 0.8, 90), ("gpt-4o", 45.0, 3000), ("gpt-4o", 900.0, 200_000)]
    for model, latency, prompt in calls:
        m.observe(event(model=model, llm_latency_seconds=latency, prompt_tokens=prompt))
    labels = {"model": "gpt-4o"}
    latency = buckets(registry, "dify_llm_request_duration_seconds", labels)
    assert list(latency) == [*(str(float(b)) for b in LLM_DURATION_BUCKETS), "+Inf"]
    assert latency == {le: float(sum(1 for c in calls if c[1] <= float(le))) for le in latency}
    assert registry.get_sample_value("dify_llm_request_duration_seconds_sum", labels) == sum(c[1] for c in calls)
    prompt = buckets(registry, "dify_llm_prompt_tokens", labels)
    assert list(prompt) == [*(str(float(b)) for b in PROMPT_TOKEN_BUCKETS), "+Inf"]
    assert prompt == {le: float(sum(1 for c in calls if c[2] <= float(le))) for le in prompt}
    assert registry.get_sample_value("dify_llm_prompt_tokens_count", labels) == len(calls)
    assert registry.get_sample_value("dify_llm_prompt_tokens_sum", labels) == sum(c[2] for c in calls)


def test_plugin_invoke_duration_by_model_type(make, registry):
    m = make()
    m.observe(
        event(
            service="plugin_daemon",
            http_method="POST",
            http_path="/plugin/x/dispatch/llm/invoke",
            http_status=200,
            model_type="llm",
            duration_seconds=2.0,
        )
    )
    m.observe(event(service="plugin_daemon", model_type="text-embedding", duration_seconds=0.2))
    m.observe(event(service="plugin_daemon", model_type="llm"))  # no duration: not timed
    assert registry.get_sample_value("dify_plugin_invoke_duration_seconds_count", {"model_type": "llm"}) == 1
    assert registry.get_sample_value("dify_plugin_invoke_duration_seconds_sum", {"model_type": "llm"}) == 2.0
    assert (
        registry.get_sample_value(
            "dify_plugin_invoke_duration_seconds_bucket", {"model_type": "text-embedding", "le": "0.25"}
        )
        == 1
    )


def test_celery_tasks_and_runtime(make, registry):
    m = make()
    task = "tasks.document_indexing_task"
    m.observe(event(service="worker", task_name=task, task_id="a", task_state="received"))
    m.observe(event(service="worker", task_name=task, task_id="a", task_state="succeeded", task_runtime_seconds=12.5))
    m.observe(event(service="worker", task_name=task, task_id="b", task_state="succeeded", task_runtime_seconds=700.0))
    m.observe(event(service="worker", task_state="failed"))
    assert series(registry, "dify_celery_tasks_total") == {
        (("state", "received"), ("task", task)): 1.0,
        (("state", "succeeded"), ("task", task)): 2.0,
        (("state", "failed"), ("task", "unknown")): 1.0,
    }
    got = buckets(registry, "dify_celery_task_duration_seconds", {"task": task})
    assert list(got) == [*(str(float(b)) for b in TASK_DURATION_BUCKETS), "+Inf"]
    assert got["10.0"] == 0 and got["30.0"] == 1 and got["600.0"] == 1 and got["1800.0"] == 2
    assert registry.get_sample_value("dify_celery_task_duration_seconds_sum", {"task": task}) == 712.5


def test_budget_gauge_and_namespace(make, registry):
    make(namespace="acme", llm_daily_budget_usd=42.5)
    assert registry.get_sample_value("acme_llm_cost_budget_usd") == 42.5
    assert registry.get_sample_value("dify_llm_cost_budget_usd") is None


@pytest.mark.parametrize("bad", [-5, math.nan, math.inf, -math.inf])
def test_counters_ignore_negative_and_non_finite_values(make, registry, bad):
    m = make(prices={"m": ModelPrice(1.0, 1.0)})
    m.observe(event(model="m", prompt_tokens=100, completion_tokens=100, cost=1.0, llm_latency_seconds=1.0))
    m.observe(
        event(
            model="m",
            prompt_tokens=bad,
            completion_tokens=bad,
            cost=bad,
            llm_latency_seconds=bad,
            http_status=200,
            duration_seconds=bad,
            task_state="succeeded",
            task_runtime_seconds=bad,
        )
    )
    assert registry.get_sample_value("dify_llm_tokens_total", {"model": "m", "type": "prompt"}) == 100
    assert registry.get_sample_value("dify_llm_tokens_total", {"model": "m", "type": "completion"}) == 100
    assert registry.get_sample_value("dify_llm_cost_usd_total", {"model": "m"}) == 1.0
    assert registry.get_sample_value("dify_llm_request_duration_seconds_count", {"model": "m"}) == 1
    assert registry.get_sample_value("dify_llm_prompt_tokens_count", {"model": "m"}) == 1
    assert (
        registry.get_sample_value("dify_http_request_duration_seconds_count", {"service": "api", "method": "unknown"})
        is None
    )
    assert registry.get_sample_value("dify_celery_task_duration_seconds_count", {"task": "unknown"}) is None
