"""Live reload: no living series is ever reset."""

from __future__ import annotations

from logpipe.config import MetricRule, MetricsConfig, ModelPrice, RuleMatch

from .support import dropped, event, series


def test_reconfigure_keeps_builtin_values(make, registry):
    m = make()
    m.observe(event(level="error", error_type="E"))
    m.reconfigure(MetricsConfig(series_limit=50, llm_daily_budget_usd=7))
    m.observe(event(level="error", error_type="E"))
    assert registry.get_sample_value("dify_errors_total", {"service": "api", "error_type": "E"}) == 2
    assert registry.get_sample_value("dify_llm_cost_budget_usd") == 7


def test_namespace_change_renames_and_keeps_values(make, registry):
    m = make(series_limit=2)
    for t in ("A", "B", "C"):
        m.observe(event(level="error", error_type=t))
    assert dropped(registry, "dify_errors_total") == 2
    m.reconfigure(MetricsConfig(namespace="acme", series_limit=2))
    m.observe(event(level="error", error_type="A"))
    assert registry.get_sample_value("acme_errors_total", {"service": "api", "error_type": "A"}) == 2
    assert registry.get_sample_value("dify_errors_total", {"service": "api", "error_type": "A"}) is None
    assert registry.get_sample_value("acme_log_entries_total", {"service": "api", "level": "error"}) == 4
    assert dropped(registry, "acme_errors_total") == 2
    assert registry.get_sample_value("acme_llm_cost_budget_usd") == 100


def test_new_prices_apply_to_future_events_only(make, registry):
    m = make(prices={"gpt": ModelPrice(1.0, 0.0)})
    m.observe(event(model="gpt", prompt_tokens=1000))
    m.reconfigure(MetricsConfig(prices={"gpt": ModelPrice(3.0, 0.0)}))
    m.observe(event(model="gpt", prompt_tokens=1000))
    assert registry.get_sample_value("dify_llm_cost_usd_total", {"model": "gpt"}) == 4.0
    m.reconfigure(MetricsConfig())  # price removed: the series lives on, nothing more is added
    m.observe(event(model="gpt", prompt_tokens=1000))
    assert registry.get_sample_value("dify_llm_cost_usd_total", {"model": "gpt"}) == 4.0


def test_rule_kept_with_same_name_and_type_keeps_series(make, registry):
    rule = MetricRule(name="app_errors", labels={"svc": "service"}, match=RuleMatch(equals={"level": "error"}))
    m = make(rules=(rule,))
    m.observe(event(level="error"))
    changed = MetricRule(
        name="app_errors", help="Errors.", labels={"svc": "service"}, match=RuleMatch(regex={"level": "error|critical"})
    )
    m.reconfigure(MetricsConfig(rules=(changed,)))
    m.observe(event(level="critical"))
    assert registry.get_sample_value("app_errors_total", {"svc": "api"}) == 2


def test_rule_whose_labels_change_keeps_old_series_until_they_expire(make, registry, clock):
    m = make(series_idle_secs=60, rules=(MetricRule(name="app_lines", labels={"svc": "service"}),))
    m.observe(event())
    m.observe(event())
    m.reconfigure(
        MetricsConfig(
            series_idle_secs=60, rules=(MetricRule(name="app_lines", labels={"svc": "service", "lvl": "level"}),)
        )
    )
    m.observe(event())
    assert series(registry, "app_lines_total") == {
        (("svc", "api"),): 2.0,
        (("lvl", "info"), ("svc", "api")): 1.0,
    }
    clock.advance(30)
    m.observe(event())
    clock.advance(31)
    assert m.expire() == 1  # the old-label series; the new one was updated 31 s ago
    assert series(registry, "app_lines_total") == {(("lvl", "info"), ("svc", "api")): 2.0}


def test_labels_changing_back_reuse_the_living_series(make, registry):
    one = MetricRule(name="app_lines", labels={"svc": "service"})
    two = MetricRule(name="app_lines", labels={"svc": "service", "lvl": "level"})
    m = make(rules=(one,))
    m.observe(event())
    m.reconfigure(MetricsConfig(rules=(two,)))
    m.observe(event())
    m.reconfigure(MetricsConfig(rules=(one,)))
    m.observe(event())
    assert series(registry, "app_lines_total") == {
        (("svc", "api"),): 2.0,
        (("lvl", "info"), ("svc", "api")): 1.0,
    }


def test_removed_rule_disappears_and_type_change_starts_a_new_family(make, registry):
    rules = (
        MetricRule(name="app_gone", labels={"svc": "service"}),
        MetricRule(name="app_size", value_field="total_tokens"),
    )
    m = make(rules=rules)
    m.observe(event(total_tokens=5))
    assert registry.get_sample_value("app_gone_total", {"svc": "api"}) == 1
    assert registry.get_sample_value("app_size_total") == 5
    m.reconfigure(MetricsConfig(rules=(MetricRule(name="app_size", type="gauge", value_field="total_tokens"),)))
    assert series(registry, "app_gone_total") == {}
    assert dropped(registry, "app_gone") is None
    assert registry.get_sample_value("app_size_total") is None
    assert registry.get_sample_value("app_size") is None  # the new gauge has no series yet
    m.observe(event(total_tokens=3))
    assert registry.get_sample_value("app_size") == 3


def test_lowered_series_limit_removes_nothing(make, registry):
    m = make()
    for t in "ABCDE":
        m.observe(event(level="error", error_type=t))
    m.reconfigure(MetricsConfig(series_limit=2))
    m.observe(event(level="error", error_type="F"))
    got = series(registry, "dify_errors_total")
    assert len(got) == 5 and all(v == 1 for v in got.values())
    assert dropped(registry, "dify_errors_total") == 1
