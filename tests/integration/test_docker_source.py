"""The Docker source against a real dockerd: discovery, restarts, short-lived containers, exact resume."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator

import pytest

from logpipe.config import DockerConfig
from logpipe.event import Position
from logpipe.sources.docker import DockerSource, Resume
from logpipe.sources.engine import ContainerInfo, DockerEngine
from logpipe.sources.follower import Chunk
from logpipe.sources.frames import DecodeStats
from tests.dockerkit import Containers, wait_until

pytestmark = pytest.mark.docker


class Recorder:
    """Plays the checkpoint and the pipeline for the source."""

    def __init__(self, resume: dict[str, Resume] | None = None) -> None:
        self.lines: list[tuple[str, str, str, int, int, float]] = []  # name, stream, text, ts, n, seen_at
        self.resumes = resume or {}
        self.followed: dict[str, int] = {}
        self.gone: list[str] = []
        self.stats = DecodeStats()
        self.lock = threading.Lock()

    # Cursors
    def resume(self, cid: str) -> Resume | None:
        return self.resumes.get(cid)

    def follow(self, info: ContainerInfo, origin_ns: int) -> None:
        self.followed[info.id] = origin_ns

    def destroyed(self, cid: str) -> None:
        self.gone.append(cid)

    def known(self) -> Iterable[str]:
        return list(self.followed)

    # SourceEvents
    def decoded(self, stats: DecodeStats) -> None:
        self.stats.partials_joined += stats.partials_joined
        self.stats.truncated += stats.truncated

    def reconnected(self, stream: str) -> None:
        pass

    def emit(self, chunk: Chunk) -> bool:
        now = time.monotonic()
        with self.lock:
            for ts, n, content, _cut in chunk.lines:
                self.lines.append((chunk.container.name, chunk.stream, content.decode(), ts, n, now))
        return True

    def texts(self, name: str) -> list[str]:
        with self.lock:
            return [line[2] for line in self.lines if line[0] == name]

    def stream_texts(self, name: str, stream: str) -> list[str]:
        with self.lock:
            return [line[2] for line in self.lines if line[0] == name and line[1] == stream]

    def last_positions(self, name: str) -> dict[str, Position]:
        with self.lock:
            out: dict[str, Position] = {}
            for n, stream, _t, ts, k, _ in self.lines:
                if n == name:
                    out[stream] = (ts, k)
            return out


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


def test_follows_running_and_new_containers_quickly(containers: Containers, source_for) -> None:
    containers.run("api", "echo before; sleep 60")
    rec = Recorder()
    source_for(rec)
    assert wait_until(lambda: rec.texts(f"{containers.project}-api-1") == ["before"], 10)
    started = time.monotonic()
    containers.run("worker", "echo hello from worker; sleep 60")
    assert wait_until(lambda: rec.texts(f"{containers.project}-worker-1") == ["hello from worker"], 5)
    assert time.monotonic() - started < 2.0 + 1.0  # container start itself takes a moment


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
    source_for(rec)
    name = f"{containers.project}-api-1"
    assert wait_until(lambda: rec.texts(name) == ["run"], 10)
    box.restart(timeout=1)
    assert wait_until(lambda: rec.texts(name) == ["run", "run"], 15)
    time.sleep(1)
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
    source_for(second)
    assert wait_until(lambda: len(second.texts(name)) == 5, 10)
    time.sleep(0.5)
    assert sorted(second.texts(name)) == ["err3", "err4", "err5", "line4", "line5"]


def test_filters_project_and_never_itself(containers: Containers, source_for, docker_client) -> None:
    other = Containers(docker_client)
    try:
        other.run("api", "echo not mine; sleep 60")
        me = containers.run("logpipe", "echo this would be logpipe itself; sleep 60")
        containers.run("api", "echo mine; sleep 60")
        rec = Recorder()
        source_for(rec, self_container_id=me.id)
        assert wait_until(lambda: rec.texts(f"{containers.project}-api-1") == ["mine"], 10)
        time.sleep(1)
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
    source_for(second)
    assert wait_until(lambda: second.texts(name) == ["after"], 10)
    time.sleep(0.3)
    assert second.stats.truncated == 0  # decoded again to find the resume point, but not shipped again
