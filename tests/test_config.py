"""Configuration: defaults, TOML, environment, every problem at once with its dotted path, the shipped examples."""

from __future__ import annotations

from pathlib import Path

import pytest

from logpipe.cli import run_cli
from logpipe.config import restart_only
from logpipe.configload import ConfigError, env_settings, load_config

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "config").rglob("*.toml"))


def test_runs_on_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no config/logpipe.toml here
    config, used = load_config(None, env={})
    assert used is None
    assert config.loki.url == "http://localhost:3100"
    assert config.metrics.addr == "0.0.0.0:9108"
    assert config.docker.compose_project == ""
    assert config.sink == "loki"
    assert config.loki.batch_max_bytes == 1 << 20 and config.loki.batch_wait_secs == 1.0
    assert config.docker.max_line_bytes == 256 * 1024


def test_default_file_is_used_when_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "logpipe.toml").write_text('[loki]\nurl = "http://from-file:3100"\n')
    monkeypatch.chdir(tmp_path)
    config, used = load_config(None, env={})
    assert used == Path("config/logpipe.toml")
    assert config.loki.url == "http://from-file:3100"


@pytest.mark.parametrize("path", EXAMPLES, ids=[str(p.relative_to(REPO)) for p in EXAMPLES])
def test_every_shipped_config_loads(path: Path) -> None:
    config, used = load_config(path, env={})
    assert used == path
    assert config.loki.url.startswith("http")


def test_the_issue_environment_variables(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    env = {
        "DOCKER_HOST": "tcp://docker:2375",
        "LOGPIPE_LOKI_URL": "http://loki:3100",
        "LOGPIPE_METRICS_ADDR": "127.0.0.1:9999",
        "LOGPIPE_STATE_DIR": "/var/lib/somewhere",
        "LOGPIPE_COMPOSE_PROJECT": "dify",
        "LOGPIPE_INCLUDE": "^dify-(api|worker)-",
        "LOGPIPE_EXCLUDE": "-db-",
        "LOGPIPE_LOKI_TENANT": "team-a",
        "LOGPIPE_LOKI_BEARER_TOKEN_FILE": str(token),
        "LOGPIPE_CONFIG": "ignored-here",
    }
    config, _ = load_config(None, env=env)
    assert config.docker.host == "tcp://docker:2375"
    assert config.loki.url == "http://loki:3100"
    assert config.metrics.addr == "127.0.0.1:9999"
    assert config.state.dir == "/var/lib/somewhere"
    assert config.docker.compose_project == "dify"
    assert config.docker.include == ("^dify-(api|worker)-",)
    assert config.docker.exclude == ("-db-",)
    assert config.loki.tenant == "team-a"
    assert config.loki.bearer_token_file == str(token)
    basic, _ = load_config(None, env={"LOGPIPE_LOKI_USERNAME": "u", "LOGPIPE_LOKI_PASSWORD": "p"})
    assert (basic.loki.username, basic.loki.password) == ("u", "p")


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[loki]\nurl = "http://file:3100"\nbatch_wait_secs = 2.5\n')
    config, _ = load_config(path, env={"LOGPIPE_LOKI_URL": "http://env:3100"})
    assert config.loki.url == "http://env:3100"
    assert config.loki.batch_wait_secs == 2.5


def test_every_problem_at_once_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        """
sink = "kafka"
[loki]
batch_max_bytes = -1
urll = "typo"
[spool]
full_policy = "pray"
[[metrics.rules]]
name = "x"
type = "summary"
labels = { "bad-label" = "level", ok = "no_such_field" }
[[pipeline.json_mappings]]
fields = { tokens = "usage.total" }
"""
    )
    with pytest.raises(ConfigError) as err:
        load_config(path, env={"LOGPIPE_DOCKER_INITIAL_LOOKBACK_SECS": "soon", "LOGPIPE_LOKI_ULR": "x"})
    problems = err.value.problems
    for expected in (
        "sink: must be one of loki, stdout, got 'kafka'",
        "loki.batch_max_bytes: must be > 0, got -1",
        "loki.urll: unknown key",
        "spool.full_policy: must be one of block, drop_oldest, got 'pray'",
        "metrics.rules[0].type: must be one of counter, gauge, histogram, got 'summary'",
        "metrics.rules[0].labels.bad-label: not a valid label name",
        "metrics.rules[0].labels.ok: unknown event field 'no_such_field'",
        "pipeline.json_mappings[0].fields.tokens: not a mappable event field",
        "docker.initial_lookback_secs (from LOGPIPE_DOCKER_INITIAL_LOOKBACK_SECS): expected a number, got 'soon'",
        "LOGPIPE_LOKI_ULR: unknown setting in the environment",
    ):
        assert expected in problems
    assert len(problems) == 10


def test_broken_toml_is_one_clear_problem(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[loki\nurl=")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert len(err.value.problems) == 1 and "not valid TOML" in err.value.problems[0]


def test_secrets_stay_out_of_reprs() -> None:
    config, _ = load_config(
        None,
        env={
            "LOGPIPE_LOKI_USERNAME": "u",
            "LOGPIPE_LOKI_PASSWORD": "hunter2",
            "LOGPIPE_METRICS_BASIC_AUTH_USERNAME": "m",
            "LOGPIPE_METRICS_BASIC_AUTH_PASSWORD": "swordfish",
        },
    )
    assert "hunter2" not in repr(config) and "swordfish" not in repr(config)


def test_every_scalar_setting_has_an_environment_variable() -> None:
    names = env_settings()
    assert names["LOGPIPE_LOKI_URL"] == "loki.url"
    assert names["LOGPIPE_METRICS_ADDR"] == "metrics.addr"
    assert names["LOGPIPE_STATE_DIR"] == "state.dir"
    assert len(names) > 60


def test_check_offline_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text("[loki]\nbatch_wait_secs = 0.5\n")
    assert run_cli(["check", "--offline", "--config", str(good)], env={}) == 0
    assert "ok" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text("[loki]\nbatch_wait_secs = 0\ngzip_level = 11\n")
    assert run_cli(["check", "--offline", "--config", str(bad)], env={}) == 78
    err = capsys.readouterr().err
    assert "2 problem(s)" in err
    assert "loki.batch_wait_secs: must be > 0, got 0.0" in err
    assert "loki.gzip_level: must be between 0 and 9, got 11" in err


@pytest.mark.parametrize("raw", ["nan", "NaN", "inf", "-inf", "Infinity"])
def test_a_float_setting_must_be_finite_from_the_environment(raw: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, env={"LOGPIPE_LOKI_BATCH_WAIT_SECS": raw})
    assert caught.value.problems == [
        f"loki.batch_wait_secs (from LOGPIPE_LOKI_BATCH_WAIT_SECS): must be a finite number, got {float(raw)!r}"
    ]


def test_float_settings_must_be_finite_and_in_range_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "logpipe.toml"
    path.write_text(
        "[docker]\nread_coalesce_secs = nan\nreconnect_max_backoff_secs = 86400.0\n"
        "[loki]\nbatch_wait_secs = inf\ntimeout_secs = -inf\nmax_backoff_secs = 7200\n"
        '[[metrics.rules]]\nname = "x"\ntype = "histogram"\n'
        'value_field = "llm_latency_seconds"\nbuckets = [1.0, inf]\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert sorted(caught.value.problems) == sorted([
        "docker.read_coalesce_secs: must be a finite number, got nan",
        "docker.reconnect_max_backoff_secs: must be <= 3600, got 86400.0",
        "loki.batch_wait_secs: must be a finite number, got inf",
        "loki.timeout_secs: must be a finite number, got -inf",
        "loki.max_backoff_secs: must be <= 3600, got 7200.0",
        "metrics.rules[0].buckets[1]: must be a finite number, got inf",
    ])


def test_check_lists_every_bad_float(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli(["check", "--offline"], env={"LOGPIPE_LOKI_BATCH_WAIT_SECS": "nan", "LOGPIPE_STATE_DIR": "inf"})
    assert code == 78
    err = capsys.readouterr().err
    assert "loki.batch_wait_secs (from LOGPIPE_LOKI_BATCH_WAIT_SECS): must be a finite number, got nan" in err


def test_settings_that_need_a_restart_are_marked_in_the_schema() -> None:
    marked = restart_only()
    assert {"loki.url", "docker.max_line_bytes", "metrics.addr", "spool", "state", "sink"} <= set(marked)
    assert "docker.reconnect_max_backoff_secs" not in marked  # reloadable: followers take it at once
    assert "loki.batch_wait_secs" not in marked
