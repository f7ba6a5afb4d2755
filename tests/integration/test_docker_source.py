"""The Docker source against a real dockerd: discovery, restarts, short-lived containers, exact resume."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from logpipe.config import DockerConfig
from logpipe.sources.docker import DockerSource
from logpipe.sources.engine import DockerEngine
from logpipe.state import Resume
from tests.dockerkit import Containers, wait_until
from tests.support.sourcekit import Recorder

pytestmark = pytest.mark.docker


@pytest.fixture
def source_for(containers: Containers) -> Iterator:
    started: list[DockerSource] = []

    def make(recorder: Recorder, **overrides: object) -> DockerSource:
        config = DockerConfig(compose_project=containers.project, read_coalesce_secs=0.0, **overrides)  # type: ignore[arg-type]
        source = DockerSource(DockerEngine, config, recorder, recorder.emit, recorder)
        source.start()
        assert source.connected.wait(10), "the source did not connect to dockerd"
        started.append(source)
        return source

    yield make
    for source in started:
        source.stop(5)


def test_follows_running_and_new_containers_from_their_start_event(
    containers: Containers, source_for, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="logpipe.source")
    containers.run("api", "echo before; sleep 60")
    rec = Recorder()
    source_for(rec)
    assert wait_until(lambda: rec.texts(f"{containers.project}-api-1") == ["before"], 10)
    containers.run("worker", "echo hello from worker; sleep 60")
    worker = f"{containers.project}-worker-1"
    assert wait_until(lambda: rec.texts(worker) == ["hello from worker"], 10)
    found = [r.__dict__.get("found_by") for r in caplog.records if r.__dict__.get("container") == worker]
    assert found == ["start event"], "the new container was not followed on its start event"


def test_short_lived_container_is_read(containers: Containers, source_for) -> None:
    rec = Recorder()
    source_for(rec)
    containers.run("oneshot", "echo only; echo me")
    assert wait_until(lambda: rec.texts(f"{containers.project}-oneshot-1") == ["only", "me"], 10)


def test_container_that_exited_before_logpipe_looked(containers: Containers, source_for) -> None:
    box = containers.run("early", "echo I was quick")
    box.wait(timeout=10)
    rec = Recorder()
    source_for(rec)
    assert wait_until(lambda: rec.texts(f"{containers.project}-early-1") == ["I was quick"], 10)


def test_docker_restart_continues_without_rereading(containers: Containers, source_for, docker_client) -> None:
    box = containers.run("api", "echo run; sleep 60")
    rec = Recorder()
    source = source_for(rec)
    name = f"{containers.project}-api-1"
    assert wait_until(lambda: rec.texts(name) == ["run"], 10)
    box.restart(timeout=1)
    assert wait_until(lambda: rec.texts(name) == ["run", "run"], 15)
    assert source.stop(5)  # nothing can arrive after this
    assert rec.texts(name) == ["run", "run"]


def test_rm_and_run_again_with_the_same_name(containers: Containers, source_for) -> None:
    first = containers.run("api", "echo first incarnation; sleep 60")
    rec = Recorder()
    source_for(rec)
    name = f"{containers.project}-api-1"
    assert wait_until(lambda: rec.texts(name) == ["first incarnation"], 10)
    first.remove(force=True)
    assert wait_until(lambda: first.id in rec.gone, 10)
    containers.run("api", "echo second incarnation; sleep 60")
    assert wait_until(lambda: rec.texts(name) == ["first incarnation", "second incarnation"], 10)


def test_tty_container_and_partial_lines(containers: Containers, source_for) -> None:
    rec = Recorder()
    source_for(rec)
    big = "dd if=/dev/zero bs=40000 count=1 2>/dev/null | tr '\\0' x; echo"
    containers.run("tty", f"echo one; {big}; echo two", tty=True)
    containers.run("plain", f"echo one; {big}; echo two >&2")
    for service in ("tty", "plain"):
        name = f"{containers.project}-{service}-1"
        assert wait_until(lambda n=name: len(rec.texts(n)) == 3, 10)
    assert rec.texts(f"{containers.project}-tty-1") == ["one", "x" * 40_000, "two"]
    # Docker copies stdout and stderr separately: their order relative to each other is not kept.
    assert rec.stream_texts(f"{containers.project}-plain-1", "stdout") == ["one", "x" * 40_000]
    assert rec.stream_texts(f"{containers.project}-plain-1", "stderr") == ["two"]
    assert rec.stats.partials_joined == 4


def test_resume_from_positions_reads_nothing_twice(containers: Containers, source_for) -> None:
    box = containers.run("api", "for i in 1 2 3 4 5; do echo line$i; echo err$i >&2; done; sleep 60")
    first = Recorder()
    source = source_for(first)
    name = f"{containers.project}-api-1"
    assert wait_until(lambda: len(first.texts(name)) == 10, 10)
    source.stop(5)
    # Pretend only the first 3 stdout and 2 stderr lines were acknowledged.
    by_stream = {
        s: [(ts, n) for nm, st, _t, ts, n, _ in first.lines if nm == name and st == s] for s in ("stdout", "stderr")
    }
    resume = Resume(first.followed[box.id], {"stdout": by_stream["stdout"][2], "stderr": by_stream["stderr"][1]})
    second = Recorder({box.id: resume})
    again = source_for(second)
    assert wait_until(lambda: len(second.texts(name)) == 5, 10)
    assert again.stop(5)  # nothing can arrive after this
    assert sorted(second.texts(name)) == ["err3", "err4", "err5", "line4", "line5"]


def test_filters_project_and_never_itself(containers: Containers, source_for, docker_client) -> None:
    other = Containers(docker_client)
    try:
        other.run("api", "echo not mine; sleep 60")
        me = containers.run("logpipe", "echo this would be logpipe itself; sleep 60")
        containers.run("api", "echo mine; sleep 60")
        rec = Recorder()
        source = source_for(rec, self_container_id=me.id)  # returns once the first reconciliation is done
        assert wait_until(lambda: rec.texts(f"{containers.project}-api-1") == ["mine"], 10)
        assert [info.name for info in source.followed()] == [f"{containers.project}-api-1"]
        assert source.stop(5)
        assert rec.texts(f"{other.project}-api-1") == []
        assert rec.texts(f"{containers.project}-logpipe-1") == []
    finally:
        other.remove_all()


def test_a_truncated_line_read_again_on_resume_is_not_counted_again(containers: Containers, source_for) -> None:
    # 300 KiB without a newline inside, past the 256 KiB limit, then one short line.
    box = containers.run("api", "head -c 307200 /dev/zero | tr '\\0' 'x'; echo; echo after; sleep 60")
    first = Recorder()
    source = source_for(first)
    name = f"{containers.project}-api-1"
    assert wait_until(lambda: len(first.texts(name)) == 2, 10)
    source.stop(5)
    assert first.stats.truncated == 1
    long_line = [(ts, n) for nm, _s, text, ts, n, _ in first.lines if nm == name and text.startswith("xxx")]
    second = Recorder({box.id: Resume(first.followed[box.id], {"stdout": long_line[0]})})
    again = source_for(second)
    assert wait_until(lambda: second.texts(name) == ["after"], 10)
    assert again.stop(5)
    assert second.stats.truncated == 0  # decoded again to find the resume point, but not shipped again
