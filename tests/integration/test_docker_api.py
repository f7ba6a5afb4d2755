"""The Docker boundary against the real dockerd: log streams (TTY and not), follow, since, events, 404s,
closing from another thread, and DOCKER_HOST=tcp:// with TLS through a real TLS proxy in front of the socket."""

from __future__ import annotations

import shutil
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from logpipe.config import DockerConfig
from logpipe.sources.docker import DockerSource
from logpipe.sources.dockerapi import DockerAddress, DockerStreams
from logpipe.sources.engine import ContainerGone, DockerEngine, DockerUnavailable, EventStream, LogStream
from logpipe.sources.frames import TimestampParser
from tests.dockerkit import Containers, wait_until
from tests.integration.test_docker_source import Recorder
from tests.logpipeproc import LogpipeProcess
from tests.support.lokiserver import LokiServer
from tests.tlsproxy import CertDir, TlsDockerProxy, make_ca, make_certs

pytestmark = pytest.mark.docker


@pytest.fixture
def engine(docker_client: Any) -> Iterator[DockerEngine]:
    engine = DockerEngine()
    yield engine
    engine.close()


def read_all(stream: LogStream) -> bytes:
    parts = []
    try:
        while data := stream.read():
            parts.append(data)
    finally:
        stream.close()
    return b"".join(parts)


def frames(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """(stream, timestamp, content) per frame of a non-TTY log stream."""
    out = []
    pos = 0
    while pos < len(data):
        stream, length = struct.unpack_from(">BxxxL", data, pos)
        ts, _, content = data[pos + 8 : pos + 8 + length].partition(b" ")
        out.append((stream, ts, content))
        pos += 8 + length
    assert pos == len(data), "the stream ended inside a frame"
    return out


def since_of(ts: bytes, plus_ns: int = 0) -> str:
    ns = TimestampParser().parse(ts)
    assert ns is not None
    ns += plus_ns
    return f"{ns // 10**9}.{ns % 10**9:09d}"


def collect_events(events: EventStream, until: Any, timeout: float) -> list[dict[str, Any]]:
    """Iterate on a thread (iteration blocks) until `until(seen)` holds or `timeout`, then close the stream."""
    seen: list[dict[str, Any]] = []
    done = threading.Event()

    def run() -> None:
        for event in events:
            seen.append(event)
            if until(seen):
                break
        done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    done.wait(timeout)
    events.close()
    thread.join(5)
    assert not thread.is_alive(), "closing the events stream did not end its iteration"
    return seen


def test_a_non_tty_containers_log_is_framed_per_stream_with_timestamps(
    engine: DockerEngine, containers: Containers
) -> None:
    box = containers.run("api", "echo out1; echo err1 >&2; echo out2")
    box.wait(timeout=10)
    stream = engine.open_logs(box.id, "0", follow=False)
    got = frames(read_all(stream))
    assert [c for s, _, c in got if s == 1] == [b"out1\n", b"out2\n"]
    assert [c for s, _, c in got if s == 2] == [b"err1\n"]
    assert all(TimestampParser().parse(ts) for _, ts, _ in got)


def test_a_tty_containers_log_has_no_frame_headers(engine: DockerEngine, containers: Containers) -> None:
    box = containers.run("tty", "echo hello; echo world >&2", tty=True)
    box.wait(timeout=10)
    lines = read_all(engine.open_logs(box.id, "0", follow=False)).split(b"\n")[:-1]
    assert [line.partition(b" ")[2] for line in lines] == [b"hello\r", b"world\r"]
    assert all(TimestampParser().parse(line.partition(b" ")[0]) for line in lines)


def test_a_long_line_comes_as_16k_partial_frames_with_one_timestamp(
    engine: DockerEngine, containers: Containers
) -> None:
    box = containers.run("long", "head -c 40000 /dev/zero | tr '\\0' x; echo; echo next")
    box.wait(timeout=10)
    got = frames(read_all(engine.open_logs(box.id, "0", follow=False)))
    assert len(got) == 4
    assert len({ts for _, ts, _ in got[:3]}) == 1
    assert [c.endswith(b"\n") for _, _, c in got] == [False, False, True, True]
    assert b"".join(c for _, _, c in got[:3]) == b"x" * 40000 + b"\n"


def test_follow_streams_lines_as_printed_and_ends_when_the_container_exits(
    engine: DockerEngine, containers: Containers
) -> None:
    box = containers.run("api", "echo first; sleep 1.5; echo second; sleep 0.5")
    assert wait_until(lambda: b"first" in read_all(engine.open_logs(box.id, "0", follow=False)), 10)
    stream = engine.open_logs(box.id, "0", follow=True)
    arrived: dict[bytes, float] = {}
    data = b""
    try:
        while chunk := stream.read():
            data += chunk
            for word in (b"first", b"second"):
                if word in data:
                    arrived.setdefault(word, time.monotonic())
    finally:
        stream.close()
    ended = time.monotonic()
    assert [c for _, _, c in frames(data)] == [b"first\n", b"second\n"]
    assert arrived[b"second"] - arrived[b"first"] > 0.5, "the lines came together, not as printed"
    assert ended - arrived[b"second"] < 5, "the stream did not end when the container exited"


def test_since_has_nanosecond_precision(engine: DockerEngine, containers: Containers) -> None:
    box = containers.run("api", "echo a; echo b; echo c")
    box.wait(timeout=10)
    got = frames(read_all(engine.open_logs(box.id, "0", follow=False)))
    ts_b = got[1][1]
    assert [c for _, _, c in frames(read_all(engine.open_logs(box.id, since_of(ts_b), follow=False)))] == [
        b"b\n",
        b"c\n",
    ]
    after_b = frames(read_all(engine.open_logs(box.id, since_of(ts_b, plus_ns=1), follow=False)))
    assert [c for _, _, c in after_b] == [b"c\n"]


def test_events_report_container_starts_and_deaths(engine: DockerEngine, containers: Containers) -> None:
    events = engine.events()
    box = containers.run("api", "echo hi")

    def died(seen: list[dict[str, Any]]) -> bool:
        return any(e.get("id") == box.id and e.get("Action") == "die" for e in seen)

    seen = collect_events(events, died, 15)
    actions = [e.get("Action") for e in seen if e.get("id") == box.id]
    assert "start" in actions
    assert "die" in actions
    assert all(e.get("Type") == "container" for e in seen)


def test_a_missing_container_is_container_gone(engine: DockerEngine, containers: Containers) -> None:
    with pytest.raises(ContainerGone, match="No such container"):
        engine.open_logs("logpipe-no-such-container", "0", follow=True)
    box = containers.run("api", "echo bye")
    box.wait(timeout=10)
    box.remove()
    with pytest.raises(ContainerGone):
        engine.open_logs(box.id, "0", follow=False)
    with pytest.raises(ContainerGone):
        engine.inspect(box.id)


def test_close_from_another_thread_unblocks_a_follow_read(engine: DockerEngine, containers: Containers) -> None:
    box = containers.run("quiet", "echo hi; sleep 60")
    assert wait_until(lambda: b"hi" in read_all(engine.open_logs(box.id, "0", follow=False)), 10)
    stream = engine.open_logs(box.id, "0", follow=True)
    assert b"hi\n" in stream.read()
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(stream.read()), daemon=True)
    reader.start()
    time.sleep(0.5)
    assert reader.is_alive(), "read() returned while the container printed nothing"
    started = time.monotonic()
    stream.close()
    reader.join(5)
    assert not reader.is_alive()
    assert time.monotonic() - started < 1
    assert got == [b""]


# DOCKER_HOST=tcp:// with TLS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertDir:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    return make_certs(tmp_path_factory.mktemp("docker-tls"))


@pytest.fixture
def tls_proxy(certs: CertDir, docker_client: Any) -> Iterator[TlsDockerProxy]:
    with TlsDockerProxy(certs) as proxy:
        yield proxy


def tls_env(proxy: TlsDockerProxy, cert_path: Path) -> dict[str, str]:
    return {"DOCKER_HOST": proxy.docker_host, "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(cert_path)}


def test_docker_host_tcp_with_tls_verify(
    tls_proxy: TlsDockerProxy, certs: CertDir, containers: Containers, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in tls_env(tls_proxy, certs.path).items():
        monkeypatch.setenv(name, value)
    # requests lets this replace a session's CA; the CA of DOCKER_CERT_PATH must still be the one used.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ssl.get_default_verify_paths().openssl_cafile)
    engine = DockerEngine()
    try:
        assert engine.ping()
        assert engine.api_version == "1.41"
        events = engine.events()
        box = containers.run("api", "seq 1 20000")  # enough bytes to span many TLS records
        seen = collect_events(events, lambda s: any(e.get("id") == box.id and e.get("Action") == "die" for e in s), 15)
        assert any(e.get("id") == box.id and e.get("Action") == "start" for e in seen)
        assert engine.inspect(box.id).name == f"{containers.project}-api-1"
        got = frames(read_all(engine.open_logs(box.id, "0", follow=True)))
        assert [c for _, _, c in got] == [b"%d\n" % i for i in range(1, 20001)]
    finally:
        engine.close()
    assert tls_proxy.connections >= 3  # the SDK's calls, the events stream and the log stream all went through it


def test_tls_with_the_wrong_ca_is_refused(
    tls_proxy: TlsDockerProxy, certs: CertDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = make_ca(tmp_path / "wrong", "some-other-ca")
    for name in ("cert.pem", "key.pem"):  # a good client certificate: only the server check can fail
        shutil.copy(certs.path / name, wrong / name)
    for name, value in tls_env(tls_proxy, wrong).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(DockerUnavailable):
        DockerEngine()
    streams = DockerStreams(DockerAddress.resolve(), "1.41", timeout_secs=5)
    with pytest.raises(DockerUnavailable, match="certificate verify failed"):
        streams.events()
    # The right CA through the same code path works, so the refusal above was the certificate's doing.
    monkeypatch.setenv("DOCKER_CERT_PATH", str(certs.path))
    DockerStreams(DockerAddress.resolve(), "1.41", timeout_secs=5).events().close()


def test_logpipe_ships_through_a_tls_docker_host(
    tls_proxy: TlsDockerProxy, certs: CertDir, containers: Containers, tmp_path: Path
) -> None:
    with LokiServer(visibility_delay_secs=0) as loki:
        proc = LogpipeProcess(tmp_path, loki.url, containers.project, env=tls_env(tls_proxy, certs.path)).start()
        try:
            containers.run("api", "echo over tls; sleep 30")
            assert wait_until(lambda: loki.lines(container=f"{containers.project}-api-1") == ["over tls"], 20)
        finally:
            proc.stop()
    assert tls_proxy.connections >= 2


def test_streams_resume_exactly_after_the_daemon_connection_drops(
    tls_proxy: TlsDockerProxy, certs: CertDir, containers: Containers, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in tls_env(tls_proxy, certs.path).items():
        monkeypatch.setenv(name, value)
    containers.run("ticker", "i=0; while [ $i -lt 40 ]; do i=$((i+1)); echo $i; sleep 0.1; done; sleep 60")
    rec = Recorder()
    config = DockerConfig(compose_project=containers.project, read_coalesce_secs=0.0, reconnect_max_backoff_secs=0.5)
    source = DockerSource(DockerEngine, config, rec, rec.emit, rec)
    source.start()
    try:
        ticker_name = f"{containers.project}-ticker-1"
        assert wait_until(lambda: len(rec.texts(ticker_name)) >= 5, 15)
        tls_proxy.interrupt(1.0)  # mid-stream: the log and events streams break, calls fail for a second
        assert wait_until(lambda: not source.connected.is_set(), 5)
        assert wait_until(source.connected.is_set, 15), "the events stream did not come back"
        containers.run("late", "echo started after the reconnect; sleep 60")
        assert wait_until(lambda: rec.texts(f"{containers.project}-late-1") == ["started after the reconnect"], 15)
        assert wait_until(lambda: len(rec.texts(ticker_name)) >= 40, 15)
        assert rec.texts(ticker_name) == [str(i) for i in range(1, 41)]  # no gap, no line twice
    finally:
        source.stop(5)
