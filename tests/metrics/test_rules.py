"""Operator rules: matching, values, labels and their caps."""

from __future__ import annotations

import math

import pytest

from logpipe.config import MetricRule, RuleMatch
from logpipe.metrics.rules import DEFAULT_RULE_BUCKETS

from .support import buckets, dropped, event, series


def test_counter_plus_one_with_labels(make, registry):
    m = make(rules=(MetricRule(name="app_lines", labels={"svc": "service", "lvl": "level"}),))
    m.observe(event())
    m.observe(event())
    m.observe(event(service="worker", level="error"))
    assert series(registry, "app_lines_total") == {
        (("lvl", "info"), ("svc", "api")): 2.0,
        (("lvl", "error"), ("svc", "worker")): 1.0,
    }


def test_counter_adds_numeric_value_field(make, registry):
    m = make(rules=(MetricRule(name="app_tokens", value_field="total_tokens"),))
    for tokens in (100, 250, 7):
        m.observe(event(total_tokens=tokens))
    assert registry.get_sample_value("app_tokens_total") == 357


def test_equals_compares_as_strings(make, registry):
    rule = MetricRule(name="app_5xx", match=RuleMatch(equals={"http_status": "503", "http_method": "GET"}))
    m = make(rules=(rule,))
    m.observe(event(http_status=503, http_method="GET"))
    m.observe(event(http_status=503, http_method="POST"))
    m.observe(event(http_status=500, http_method="GET"))
    m.observe(event(http_method="GET"))  # absent status matches nothing
    assert registry.get_sample_value("app_5xx_total") == 1


def test_regex_searches_the_string_value(make, registry):
    rule = MetricRule(name="app_chat", match=RuleMatch(regex={"http_path": r"/chat-messages$", "http_status": "^5"}))
    m = make(rules=(rule,))
    m.observe(event(http_path="/v1/chat-messages", http_status=502))
    m.observe(event(http_path="/v1/chat-messages", http_status=200))
    m.observe(event(http_path="/v1/chat-messages/stop", http_status=500))
    m.observe(event(http_status=500))
    assert registry.get_sample_value("app_chat_total") == 1


def test_present_requires_not_none(make, registry):
    m = make(rules=(MetricRule(name="app_traced", match=RuleMatch(present=("trace_id", "req_id"))),))
    m.observe(event(trace_id="t", req_id="r"))
    m.observe(event(trace_id="t"))
    m.observe(event(trace_id="", req_id=""))  # present, even if empty
    assert registry.get_sample_value("app_traced_total") == 2


def test_services_filter(make, registry):
    m = make(rules=(MetricRule(name="app_worker_lines", services=("worker", "worker_beat")),))
    for service in ("worker", "api", "worker_beat", "worker"):
        m.observe(event(service=service))
    assert registry.get_sample_value("app_worker_lines_total") == 3


def test_gauge_is_set_to_the_last_value(make, registry):
    m = make(
        rules=(MetricRule(name="app_queue_depth", type="gauge", value_field="total_tokens", labels={"svc": "service"}),)
    )
    m.observe(event(total_tokens=5))
    m.observe(event(total_tokens=3))
    m.observe(event(service="worker", total_tokens=-2))
    assert series(registry, "app_queue_depth") == {(("svc", "api"),): 3.0, (("svc", "worker"),): -2.0}


def test_histogram_with_and_without_buckets(make, registry):
    rules = (
        MetricRule(name="app_size", type="histogram", value_field="completion_tokens", buckets=(10.0, 100.0)),
        MetricRule(name="app_latency", type="histogram", value_field="duration_seconds"),
    )
    m = make(rules=rules)
    for tokens in (5, 10, 50, 5000):
        m.observe(event(completion_tokens=tokens))
    m.observe(event(duration_seconds=0.2))
    assert buckets(registry, "app_size", {}) == {"10.0": 2, "100.0": 3, "+Inf": 4}
    assert registry.get_sample_value("app_size_sum") == 5065
    assert registry.get_sample_value("app_size_count") == 4
    latency = buckets(registry, "app_latency", {})
    assert list(latency) == [*(str(float(b)) for b in DEFAULT_RULE_BUCKETS), "+Inf"]
    assert latency["0.25"] == 1 and latency["0.1"] == 0


@pytest.mark.parametrize("value", [None, "12", math.nan, math.inf])
def test_missing_or_non_numeric_value_skips_the_event(make, registry, value):
    rules = (
        MetricRule(name="app_c", value_field="message"),
        MetricRule(name="app_g", type="gauge", value_field="message"),
        MetricRule(name="app_h", type="histogram", value_field="message"),
    )
    m = make(rules=rules)
    m.observe(event(message=value))
    assert registry.get_sample_value("app_c_total") is None
    assert registry.get_sample_value("app_g") is None
    assert registry.get_sample_value("app_h_count") is None


def test_counter_skips_negative_values(make, registry):
    m = make(rules=(MetricRule(name="app_tokens", value_field="total_tokens"),))
    m.observe(event(total_tokens=10))
    m.observe(event(total_tokens=-4))
    assert registry.get_sample_value("app_tokens_total") == 10


def test_label_value_limit_folds_into_other_and_counts(make, registry):
    rule = MetricRule(name="app_by_path", labels={"path": "http_path", "svc": "service"}, label_value_limit=2)
    m = make(rules=(rule,))
    for path in ("/a", "/b", "/c", "/d", "/a"):
        m.observe(event(http_path=path))
    m.observe(event(service="worker", http_path="/b"))  # a known path, a new service: within both limits
    assert series(registry, "app_by_path_total") == {
        (("path", "/a"), ("svc", "api")): 2.0,
        (("path", "/b"), ("svc", "api")): 1.0,
        (("path", "other"), ("svc", "api")): 2.0,
        (("path", "/b"), ("svc", "worker")): 1.0,
    }
    assert dropped(registry, "app_by_path") == 2


def test_rule_series_cap_folds_the_widest_label(make, registry):
    rule = MetricRule(name="app_pairs", labels={"a": "http_path", "b": "service"}, label_value_limit=1000)
    m = make(series_limit=5, rules=(rule,))
    for i in range(6):
        m.observe(event(http_path=f"/p{i}", service="api"))
    got = series(registry, "app_pairs_total")
    assert len(got) == 5
    assert got[(("a", "other"), ("b", "api"))] == 2
    assert dropped(registry, "app_pairs") == 2


def test_rule_label_from_absent_field_is_unknown(make, registry):
    m = make(rules=(MetricRule(name="app_by_status", labels={"status": "http_status"}),))
    m.observe(event(http_status=200))
    m.observe(event())
    m.observe(event())
    assert series(registry, "app_by_status_total") == {(("status", "200"),): 1.0, (("status", "unknown"),): 2.0}
