"""Series caps, folding into `other`, the dropped counter, label value hygiene and idle expiry."""

from __future__ import annotations

import math

from logpipe.metrics.store import COUNTER, MAX_LABEL_LEN, Family

from .support import dropped, event, series


def test_series_cap_folds_the_high_cardinality_label_then_drops(make, registry):
    limit = 10
    ordinary = limit - math.ceil(limit / 10)  # the rest is kept for `other` series
    m = make(series_limit=limit)
    types = [f"Error{i}" for i in range(ordinary + 3)]
    for t in types:
        m.observe(event(level="error", error_type=t))
    got = series(registry, "dify_errors_total")
    assert len(got) == ordinary + 1
    for t in types[:ordinary]:
        assert got[(("error_type", t), ("service", "api"))] == 1
    assert got[(("error_type", "other"), ("service", "api"))] == 3
    assert dropped(registry, "dify_errors_total") == 3

    # An existing series keeps counting at the cap.
    m.observe(event(level="error", error_type=types[0]))
    assert registry.get_sample_value("dify_errors_total", {"service": "api", "error_type": types[0]}) == 2
    assert dropped(registry, "dify_errors_total") == 3

    # At the hard cap a new `other` series is impossible too: the observation is dropped, and counted.
    m.observe(event(service="worker", level="error", error_type="Boom"))
    assert len(series(registry, "dify_errors_total")) == limit
    m.observe(event(service="worker2", level="error", error_type="Boom"))
    assert len(series(registry, "dify_errors_total")) == limit
    assert registry.get_sample_value("dify_errors_total", {"service": "worker2", "error_type": "other"}) is None
    assert dropped(registry, "dify_errors_total") == 5
    # Other metrics have their own caps.
    assert dropped(registry, "dify_log_entries_total") == 0


def test_fold_label_per_metric(make, registry):
    m = make(series_limit=2)  # one ordinary series, one `other`
    for i in range(3):
        m.observe(event(model=f"model-{i}", llm_latency_seconds=1.0, task_name=f"task-{i}", task_state="received"))
    assert registry.get_sample_value("dify_llm_request_duration_seconds_count", {"model": "other"}) == 2
    assert registry.get_sample_value("dify_celery_tasks_total", {"task": "other", "state": "received"}) == 2
    assert dropped(registry, "dify_llm_request_duration_seconds") == 2
    assert dropped(registry, "dify_celery_tasks_total") == 2


def test_label_values_are_bounded_and_canonical(make, registry):
    m = make()
    long_model = "m" * (MAX_LABEL_LEN * 10)
    m.observe(event(model=long_model, prompt_tokens=5))
    m.observe(event(model=long_model + "x", prompt_tokens=7))  # same prefix: same series
    m.observe(event(service="bad\udcff", level="info"))  # a lone surrogate must not break the exposition
    m.observe(event(service="", level="info"))
    assert registry.get_sample_value("dify_llm_tokens_total", {"model": "m" * MAX_LABEL_LEN, "type": "prompt"}) == 12
    assert registry.get_sample_value("dify_log_entries_total", {"service": "bad?", "level": "info"}) == 1
    assert registry.get_sample_value("dify_log_entries_total", {"service": "unknown", "level": "info"}) == 1


def test_alias_path_counts_like_the_direct_path(make, registry):
    m = make()
    for _ in range(5):
        m.observe(event(level="error", error_type="E" * (MAX_LABEL_LEN + 1)))
    assert registry.get_sample_value("dify_errors_total", {"service": "api", "error_type": "E" * MAX_LABEL_LEN}) == 5


def test_expire_removes_idle_series_only(make, registry, clock):
    m = make(series_idle_secs=60)
    m.observe(event(service="old"))
    clock.advance(30)
    m.observe(event(service="new"))
    clock.advance(30)
    assert m.expire() == 0  # exactly the idle period: not yet idle for longer
    clock.advance(1)
    assert m.expire() == 1
    assert series(registry, "dify_log_entries_total") == {(("level", "info"), ("service", "new")): 1.0}
    clock.advance(30)
    assert m.expire() == 1
    assert series(registry, "dify_log_entries_total") == {}


def test_expired_series_restarts_from_zero_and_frees_cap(make, registry, clock):
    m = make(series_limit=2, series_idle_secs=10)
    m.observe(event(level="error", error_type="A"))
    m.observe(event(level="error", error_type="B"))  # folded: the cap keeps one slot for `other`
    assert registry.get_sample_value("dify_errors_total", {"service": "api", "error_type": "other"}) == 1
    clock.advance(11)
    assert m.expire() == 3  # log entries {api, error}; errors {api, A} and {api, other}
    m.observe(event(level="error", error_type="B"))
    assert registry.get_sample_value("dify_errors_total", {"service": "api", "error_type": "B"}) == 1
    assert registry.get_sample_value("dify_errors_total", {"service": "api", "error_type": "A"}) is None


def test_histogram_series_layout_and_expiry_of_every_kind(make, registry, clock):
    m = make(series_idle_secs=5)
    m.observe(
        event(
            http_method="GET",
            http_status=200,
            duration_seconds=0.1,
            model="x",
            llm_latency_seconds=2.0,
            prompt_tokens=10,
            completion_tokens=1,
            cost=0.1,
            task_name="t",
            task_state="succeeded",
            task_runtime_seconds=1.0,
            model_type="llm",
            level="error",
            timeout_kind="read_timeout",
        )
    )
    before = sum(len(series(registry, n)) for n in _EVERY_SAMPLE)
    assert before == len(_EVERY_SAMPLE) + 1  # one series each, two for tokens (prompt, completion)
    clock.advance(6)
    assert m.expire() == before
    assert sum(len(series(registry, n)) for n in _EVERY_SAMPLE) == 0
    assert registry.get_sample_value("dify_llm_cost_budget_usd") == 100  # config, not a series: never expires


_EVERY_SAMPLE = (
    "dify_log_entries_total",
    "dify_errors_total",
    "dify_timeouts_total",
    "dify_http_requests_total",
    "dify_http_request_duration_seconds_count",
    "dify_llm_tokens_total",
    "dify_llm_cost_usd_total",
    "dify_llm_request_duration_seconds_count",
    "dify_plugin_invoke_duration_seconds_count",
    "dify_llm_prompt_tokens_count",
    "dify_celery_tasks_total",
    "dify_celery_task_duration_seconds_count",
)


def test_family_without_labels_never_folds():
    family = Family("x_total", "x", COUNTER, (), limit=1)
    table = family.active
    for now in range(3):
        table.inc((), float(now))
    collected = family.collect()
    assert [(s.name, s.labels, s.value) for s in collected.samples] == [("x_total", {}, 3.0)]
    assert family.dropped == [0.0]
