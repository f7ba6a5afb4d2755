"""What is shipped (issue 14): ship rules and the per-stream rate limit, through the parse stage's public interface.

Chunks go into a real `Pipeline` built from TOML the way `logpipe run` builds it; what reaches Loki is what the
lanes hand a sink; what was counted is read from the Prometheus registry. The derived `dify_*` metrics must not
depend on any of it.
"""

from __future__ import annotations

import itertools
import re
import tomllib
import zlib
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from bench.corpus import dify_corpus
from logpipe.config import Config
from logpipe.configload import ConfigError, build, load_config
from logpipe.event import Chunk, ContainerInfo, Position
from logpipe.metrics import LogMetrics
from logpipe.pipeline import Pipeline
from logpipe.sinks.lanes import PASSED, BatchLimits, Lanes
from logpipe.sinks.push import encode
from logpipe.telemetry import Telemetry

REPO = Path(__file__).resolve().parent.parent
T0 = 1_781_260_200_000_000_000
SECOND = 1_000_000_000
NO_LIMIT = "[ship]\nrate_limit_lines_per_sec = 0\n"


def config_of(text: str) -> Config:
    problems: list[str] = []
    config = build(Config, tomllib.loads(text), "", problems)
    assert problems == []
    return config


class Stage:
    """A parse stage with its lanes, metrics and telemetry; `shipped()` is what a sink would push."""

    def __init__(self, config: Config) -> None:
        self.registry = CollectorRegistry()
        self.lanes = Lanes(1 << 40)
        self.pipeline = Pipeline(
            config, self.lanes, LogMetrics(self.registry, config.metrics), Telemetry(self.registry), lambda: "h"
        )
        self.containers: dict[str, ContainerInfo] = {}
        self.now = 100.0
        self.positions: dict[tuple[str, str], Position] = {}

    def feed(self, service: str, lines: list[tuple[int, str]], stream: str = "stdout") -> None:
        info = self.containers.setdefault(
            service, ContainerInfo(f"{service}-id", f"docker-{service}-1", service, "docker", False, True, {})
        )
        self.pipeline.process(Chunk(info, stream, [(ts, 1, text.encode(), 0) for ts, text in lines], 100), self.now)

    def corpus(self, lines: list[tuple[str, str, str]], spacing_ns: int = 1_000_000) -> None:
        """Feed (service, stream, line) in print order, a chunk per run of one stream."""
        ts = T0
        run: list[tuple[int, str]] = []
        key: tuple[str, str] | None = None
        for service, stream, line in lines:
            ts += spacing_ns
            if (service, stream) != key and run:
                assert key is not None
                self.feed(key[0], run, key[1])
                run = []
            key = (service, stream)
            run.append((ts, line))
        if run and key is not None:
            self.feed(key[0], run, key[1])

    def close(self) -> None:
        self.pipeline.flush_all()

    def shipped(self) -> list[tuple[int, str, dict[str, str]]]:
        """(ts, line, labels) of every entry a sink takes (acknowledging them, as Loki would)."""
        out = []
        limits = BatchLimits(1 << 20, 10_000, 0.0)
        while True:
            with self.lanes.cond:
                batch = self.lanes.take(limits, flush=True)
                if batch is None:
                    return out
                for ts, line, _md, labels, _pos, _size in batch.entries:
                    if labels != PASSED:
                        out.append((ts, line, dict(labels)))
                for (lane_key, position) in self.lanes.done(batch):
                    self.positions[lane_key] = position

    def samples(self, prefix: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in self.registry.collect()
            for s in family.samples
            if s.name.startswith(prefix)
        }

    def dropped(self) -> dict[tuple[str, str], float]:
        return {
            (dict(labels)["reason"], dict(labels)["rule"]): value
            for (name, labels), value in self.samples("logpipe_entries_dropped_total").items()
            if value
        }


def api(ts: int, level: str, message: str, trace: str = "") -> tuple[int, str]:
    trace_part = f', "trace_id": "{trace}"' if trace else ""
    return ts, (
        f'{{"ts": "2026-06-12T10:32:01.117Z", "severity": "{level}", "service": "langgenius/dify", '
        f'"caller": "app.py:1", "message": "{message}"{trace_part}}}'
    )


def nginx(ts: int, path: str, status: int = 200) -> tuple[int, str]:
    return ts, f'172.18.0.1 - - [12/Jun/2026:10:32:01 +0000] "GET {path} HTTP/1.1" {status} 12 "-" "curl/8" "-"'


# --- rules ----------------------------------------------------------------------------------------------------


def test_a_drop_rule_drops_what_it_matches_and_counts_it_under_its_name() -> None:
    stage = Stage(config_of(NO_LIMIT + """
[[ship.rules]]
name = "health"
action = "drop"
match = { service = ["nginx"], path = "^/health", status = "^2" }
"""))
    stage.feed("nginx", [nginx(T0 + 1, "/health"), nginx(T0 + 2, "/v1/chat-messages"), nginx(T0 + 3, "/health", 503)])
    stage.feed("api", [api(T0 + 4, "INFO", "GET /health answered")])
    stage.close()
    lines = [line for _, line, _ in stage.shipped()]
    assert len(lines) == 3
    assert "/health HTTP/1.1\" 200" not in "\n".join(lines)
    assert any('"GET /health HTTP/1.1" 503' in line for line in lines), "a failing probe is not what the rule says"
    assert any("GET /health answered" in line for line in lines), "the rule is for nginx only"
    assert stage.dropped() == {("rule", "health"): 1.0}


def test_keep_stops_rule_evaluation_and_the_first_match_decides() -> None:
    stage = Stage(config_of(NO_LIMIT + """
[[ship.rules]]
name = "keep-errors"
action = "keep"
match = { level = ["error", "critical"] }

[[ship.rules]]
name = "drop-api"
action = "drop"
match = { service = ["api"] }

[[ship.rules]]
name = "never-reached"
action = "drop"
match = { contains = "boom" }
"""))
    stage.feed("api", [api(T0 + 1, "INFO", "fine"), api(T0 + 2, "ERROR", "boom"), api(T0 + 3, "WARNING", "boom")])
    stage.close()
    assert [re.search(r'"message": "(\w+)"', line)[1] for _, line, _ in stage.shipped()] == ["boom"]  # type: ignore[index]
    assert stage.dropped() == {("rule", "drop-api"): 2.0}


def test_rules_match_parsed_fields_streams_containers_and_text() -> None:
    stage = Stage(config_of(NO_LIMIT + """
[[ship.rules]]
name = "stderr-of-api"
match = { container = "^docker-api-", stream = "stderr", format = ["dify_json"] }

[[ship.rules]]
name = "by-regex"
match = { regex = "seq=\\\\d+7$" }
"""))
    stage.feed("api", [api(T0 + 1, "INFO", "on stderr")], stream="stderr")
    stage.feed("api", [api(T0 + 2, "INFO", "on stdout")])
    stage.feed("worker", [(T0 + 3, "plain seq=17"), (T0 + 4, "plain seq=18")])
    stage.close()
    shipped = [line for _, line, _ in stage.shipped()]
    assert len(shipped) == 2 and "on stdout" in shipped[0] and shipped[1] == "plain seq=18"
    assert stage.dropped() == {("rule", "stderr-of-api"): 1.0, ("rule", "by-regex"): 1.0}


def test_sampling_keeps_or_drops_a_request_chain_whole_across_services() -> None:
    stage = Stage(config_of(NO_LIMIT + """
[[ship.rules]]
name = "a-third"
action = "sample"
rate = 0.3
match = { service = ["api", "worker"] }
"""))
    traces = [f"{i:032x}" for i in range(1, 401)]  # (an all-zero trace id is no trace id)
    for n, trace in enumerate(traces):
        stage.feed("api", [api(T0 + 2 * n, "INFO", "request", trace)])
        stage.feed("worker", [api(T0 + 2 * n + 1, "INFO", "task", trace)])
    stage.close()
    kept: Counter[str] = Counter()
    for _, line, _ in stage.shipped():
        match = re.search(r'"trace_id": "(\w+)"', line)
        assert match is not None
        kept[match[1]] += 1
    assert set(kept.values()) == {2}, "a chain was split between services"
    assert 0.22 < len(kept) / len(traces) < 0.38
    # The choice is the trace id's, not luck: another run (or a restart re-reading the lines) chooses alike.
    assert set(kept) == {t for t in traces if zlib.crc32(t.encode()) < 0.3 * 2**32}
    assert stage.dropped() == {("sampled", "a-third"): 2.0 * (len(traces) - len(kept))}


def test_the_cursor_passes_records_that_were_not_shipped() -> None:
    # A stream whose last records are all dropped must still acknowledge them: after a restart they must not be
    # read (and counted in the metrics) again.
    stage = Stage(config_of(NO_LIMIT + '[[ship.rules]]\nname = "all"\nmatch = { service = ["nginx"] }\n'))
    stage.feed("nginx", [nginx(T0 + i, "/health") for i in range(1, 6)])
    stage.close()
    assert stage.shipped() == []
    assert stage.positions == {("nginx-id", "stdout"): (T0 + 5, 1)}


def test_entries_standing_for_dropped_records_are_never_pushed() -> None:
    stage = Stage(config_of(NO_LIMIT + '[[ship.rules]]\nname = "all"\nmatch = { service = ["nginx"] }\n'))
    stage.feed("nginx", [nginx(T0 + 1, "/health")])
    stage.close()
    with stage.lanes.cond:
        batch = stage.lanes.take(BatchLimits(1 << 20, 100, 0.0), flush=True)
    assert batch is not None and len(batch.entries) == 1
    push = encode(batch.entries, now_ns=T0, max_age_ns=10**15, too_old="drop", structured_metadata=True, gzip_level=1)
    assert push.entries == 0 and push.probes == ()


# --- the rate limit -------------------------------------------------------------------------------------------


LIMIT = """
[ship]
rate_limit_lines_per_sec = 100
rate_limit_burst = 200
rate_limit_error_lines_per_sec = 10
"""


def summaries(shipped: list[tuple[int, str, dict[str, str]]]) -> list[tuple[int, int, float]]:
    """(ts, records, seconds) of each rate-limit summary entry."""
    out = []
    for ts, line, labels in shipped:
        match = re.match(r"logpipe: dropped (\d+) records over the rate limit in the last ([\d.]+)s", line)
        if match:
            assert labels["level"] == "warning"
            out.append((ts, int(match[1]), float(match[2])))
    return out


def test_a_storm_is_cut_to_the_limit_and_every_dropped_record_is_summarized() -> None:
    stage = Stage(config_of(LIMIT))
    # 5 s of a crash loop at 2,000 records/s of log time, in chunks of 100 as a follower hands them on.
    records = [api(T0 + i * SECOND // 2000, "INFO", f"storm {i}") for i in range(10_000)]
    for start in range(0, len(records), 100):
        stage.feed("api", records[start : start + 100])
    stage.close()
    shipped = stage.shipped()
    storm = [line for _, line, _ in shipped if "storm" in line]
    found = summaries(shipped)
    dropped = stage.dropped()[("rate_limited", "")]
    # The bucket: the burst, then the rate over the 5 s (the first record starts the clock).
    assert 200 + 100 * 4.9 <= len(storm) <= 200 + 100 * 5 + 1
    assert len(storm) + dropped == len(records)
    assert sum(n for _, n, _ in found) == dropped, "every dropped record is in exactly one summary"
    read = stage.samples("logpipe_entries_read_total")[("logpipe_entries_read_total", ())]
    assert read == len(shipped) + dropped, "entries read = sent + dropped, summaries included"
    assert 4 <= len(found) <= 6
    times = [ts for ts, _, _ in found]
    # One a second of log time while the storm lasts; the last comes when the stage closes (a reload or a
    # shutdown summarizes what is pending at once rather than lose it).
    assert all(b - a >= SECOND for a, b in itertools.pairwise(times[:-1])), "more than one summary a second"
    assert all(seconds <= 1.05 for _, _, seconds in found)


def test_errors_pass_a_flood_on_their_own_budget_and_go_last() -> None:
    stage = Stage(config_of(LIMIT))
    records = []
    for i in range(6000):  # 3 s at 2,000 records/s, one in 100 an error
        level = "ERROR" if i % 100 == 99 else "INFO"
        records.append(api(T0 + i * SECOND // 2000, level, f"{level.lower()} {i}"))
    for start in range(0, len(records), 100):
        stage.feed("api", records[start : start + 100])
    stage.close()
    errors = [line for _, line, _ in stage.shipped() if '"ERROR"' in line]
    assert len(errors) == 60, "an error was dropped while its budget (10/s, below the 20/s errors) had room"


def test_a_backlog_read_at_full_speed_is_limited_only_where_the_container_logged_too_fast() -> None:
    # 3,000 records spread over 60 s of log time (50/s, under the limit), all read at once after an outage.
    stage = Stage(config_of(LIMIT))
    stage.feed("api", [api(T0 + i * SECOND // 50, "INFO", f"r{i}") for i in range(3000)])
    stage.close()
    assert len(stage.shipped()) == 3000
    assert stage.dropped() == {}


def test_a_quiet_stream_gets_its_summary_from_the_idle_tick() -> None:
    stage = Stage(config_of(LIMIT))
    stage.feed("api", [api(T0 + i * 1000, "INFO", f"burst {i}") for i in range(250)])  # 250 within 0.25 ms
    assert summaries(stage.shipped()) == []
    stage.pipeline.flush_idle(stage.now + 0.5)
    assert summaries(stage.shipped()) == [], "summarized before its second was over"
    stage.pipeline.flush_idle(stage.now + 1.1)
    assert [n for _, n, _ in summaries(stage.shipped())] == [50]


def test_the_limit_is_per_container_stream() -> None:
    stage = Stage(config_of(LIMIT))
    stage.feed("api", [api(T0 + i, "INFO", "stdout") for i in range(200)])
    stage.feed("api", [api(T0 + i, "INFO", "stderr") for i in range(200)], stream="stderr")
    stage.feed("worker", [api(T0 + i, "INFO", "worker") for i in range(200)])
    stage.close()
    assert len(stage.shipped()) == 600


# --- metrics are computed before any of it --------------------------------------------------------------------


def test_derived_metrics_are_identical_with_and_without_rules_and_limit() -> None:
    corpus = dify_corpus(6000)
    plain = Stage(config_of(NO_LIMIT))
    plain.corpus(corpus)
    plain.close()
    noisy = Stage(config_of("""
[ship]
rate_limit_lines_per_sec = 50
rate_limit_burst = 50
rate_limit_error_lines_per_sec = 1

[[ship.rules]]
name = "info"
match = { level = ["info"], service = ["nginx", "plugin_daemon"] }

[[ship.rules]]
name = "prompts"
match = { format = ["llm_debug"] }

[[ship.rules]]
name = "half"
action = "sample"
rate = 0.5
"""))
    noisy.corpus(corpus)
    noisy.close()
    shipped_plain, shipped_noisy = plain.shipped(), noisy.shipped()
    assert len(shipped_noisy) < len(shipped_plain) / 2, "the rules hardly dropped anything: the test proves nothing"
    dropped = noisy.dropped()
    assert {reason for reason, _ in dropped} == {"rule", "sampled", "rate_limited"}
    derived = plain.samples("dify_")
    assert any(name == "dify_llm_tokens_total" for name, _ in derived), "the corpus must exercise token metrics"
    assert noisy.samples("dify_") == derived


# --- configuration --------------------------------------------------------------------------------------------


def test_the_commented_examples_of_the_shipped_config_are_valid_and_do_what_they_say(tmp_path: Path) -> None:
    text = (REPO / "config/logpipe.toml").read_text()
    rules = re.sub(r"^# (\[\[ship\.rules\]\]|name =|action =|match =|rate =)", r"\1", text, flags=re.M)
    assert rules.count("[[ship.rules]]") >= 4
    path = tmp_path / "logpipe.toml"
    path.write_text(rules)
    config, _ = load_config(path, env={})
    stage = Stage(config)
    stage.feed("plugin_daemon", [(T0 + 1, (REPO / "tests/fixtures/formats/plugin_daemon_json.log").read_text()
                                  .splitlines()[7])])
    stage.feed("nginx", [nginx(T0 + 2, "/health"), nginx(T0 + 3, "/health", 502)])
    stage.feed("api", [
        (T0 + 4, "\x1b[33;1m[on_llm_before_invoke]\x1b[0m"),
        (T0 + 5, "Model: gpt-4o-mini"),
        (T0 + 6, "Prompt messages: my secret question"),
        (T0 + 7, "\x1b[33;1m[on_llm_after_invoke]\x1b[0m"),
        (T0 + 8, "Model: gpt-4o-mini"),
        (T0 + 9, "Usage: prompt_tokens=812 completion_tokens=96 total_tokens=908 latency=1.9"),
    ])
    stage.close()
    shipped = "\n".join(line for _, line, _ in stage.shipped())
    assert "/health/check" not in shipped
    assert '"GET /health HTTP/1.1" 200' not in shipped
    assert '"GET /health HTTP/1.1" 502' in shipped, "a failing probe is kept (it is a warning at least)"
    assert "my secret question" not in shipped
    assert "[on_llm_after_invoke]" in shipped
    assert stage.dropped() == {("rule", "health-probes"): 2.0, ("rule", "llm-prompts"): 1.0}


def test_bad_rules_are_refused_with_every_problem_listed(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("""
[ship]
rate_limit_lines_per_sec = -5

[[ship.rules]]
name = "bad-regex"
match = { regex = "([a-z" }

[[ship.rules]]
name = "unknown-field"
match = { severity = ["error"] }

[[ship.rules]]
name = "zero-rate"
action = "sample"
rate = 0

[[ship.rules]]
name = "over-one"
action = "sample"
rate = 1.5
match = { level = ["loud"], format = ["xml"] }

[[ship.rules]]
name = "burn"
action = "burn"
""")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    problems = caught.value.problems
    expected = [
        "ship.rules[0].match.regex: invalid regex",
        "ship.rules[1].match.severity: unknown key",
        "ship.rules[2].rate: must be > 0 and <= 1",
        "ship.rules[3].rate: must be > 0 and <= 1",
        "ship.rules[3].match.level[0]: must be one of",
        "ship.rules[3].match.format[0]: must be one of",
        "ship.rules[4].action: must be one of drop, keep, sample",
        "ship.rate_limit_lines_per_sec: must be >= 0",
    ]
    for start in expected:
        assert any(p.startswith(start) for p in problems), (start, problems)
    assert len(problems) == len(expected), problems
    # Names must be unique: they label the drop counters.
    path.write_text('[[ship.rules]]\nname = "a"\n[[ship.rules]]\nname = "a"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.problems == ["ship.rules[1].name: duplicate rule name 'a'"]
