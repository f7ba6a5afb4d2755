"""The HTTP client for Docker's streams, against a scripted server on a real Unix socket (no dockerd needed)."""

from __future__ import annotations

import gc
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from logpipe.sources.dockerapi import (
    READ_BYTES,
    ContainerGone,
    DockerAddress,
    DockerStreams,
    DockerUnavailable,
    HttpStream,
)

HOLD = "hold"  # keep the connection open (as dockerd does after a chunked body) until the test ends

CHUNKED_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


class ScriptedDocker:
    """Answers each connection with the next script: bytes to send, floats to pause, HOLD to keep it open."""

    def __init__(self, path: Path | None, scripts: list[list[bytes | float | str]]) -> None:
        self.path = path
        self.scripts = scripts
        self.requests: list[bytes] = []
        if path is None:  # TCP on 127.0.0.1
            self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._server.bind(("127.0.0.1", 0))
            self.docker_host = f"tcp://127.0.0.1:{self._server.getsockname()[1]}"
        else:
            self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._server.bind(str(path))
            self.docker_host = f"unix://{path}"
        self._server.listen(8)
        self._done = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        for script in self.scripts:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self._conns.append(conn)
            head = b""
            while b"\r\n\r\n" not in head:
                data = conn.recv(65536)
                if not data:
                    break
                head += data
            self.requests.append(head)
            hold = False
            for step in script:
                if isinstance(step, float):
                    time.sleep(step)
                elif step == HOLD:
                    hold = True
                else:
                    assert isinstance(step, bytes)
                    try:
                        conn.sendall(step)
                    except OSError:
                        break
            if not hold:
                conn.close()

    def close(self) -> None:
        self._server.close()
        for conn in self._conns:
            conn.close()
        self._thread.join(2)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    servers: list[ScriptedDocker] = []

    def make(*scripts: list[bytes | float | str], tcp: bool = False) -> DockerStreams:
        server = ScriptedDocker(None if tcp else tmp_path / f"docker{len(servers)}.sock", list(scripts))
        servers.append(server)
        return DockerStreams(DockerAddress.resolve(server.docker_host, {"UNRELATED": "1"}), "1.41", timeout_secs=5)

    make.servers = servers  # type: ignore[attr-defined]
    yield make
    for server in servers:
        server.close()


def read_all(stream: HttpStream) -> tuple[bytes, int]:
    parts = []
    while data := stream.read():
        parts.append(data)
    stream.close()
    return b"".join(parts), len(parts)


def test_the_request_is_a_versioned_get_with_the_query(serve) -> None:
    streams = serve([CHUNKED_HEAD, chunked(b"x")])
    read_all(streams.logs("abc123", "1718012345.000000005", follow=True))
    head = serve.servers[0].requests[0]
    # HTTP/1.0 for logs: dockerd then sends the frames without wrapping each line in a chunk.
    assert head.startswith(
        b"GET /v1.41/containers/abc123/logs?stdout=1&stderr=1&timestamps=1&follow=1&since=1718012345.000000005 "
        b"HTTP/1.0\r\n"
    )
    assert b"\r\nHost: docker\r\n" in head


def test_plain_tcp_sends_host_and_port(serve) -> None:
    streams = serve([CHUNKED_HEAD + chunked(b"over tcp\n")], tcp=True)
    assert read_all(streams.logs("c", "0", follow=False))[0] == b"over tcp\n"
    port = serve.servers[0].docker_host.rsplit(":", 1)[1]
    assert f"\r\nHost: 127.0.0.1:{port}\r\n".encode() in serve.servers[0].requests[0]
    assert DockerAddress.resolve("tcp://[::1]:2375", {"UNRELATED": "1"}).authority == "[::1]:2375"


def test_a_chunked_body_is_decoded_whatever_the_packet_boundaries(serve) -> None:
    body = chunked(b"first frame\n", b"second", b" frame\n" * 3)
    # The head and the body arrive split at awkward places: inside a size line, inside the CRLFs.
    raw = CHUNKED_HEAD + body
    pieces: list[bytes | float | str] = []
    for cut in range(0, len(raw), 7):
        pieces += [raw[cut : cut + 7], 0.002]
    streams = serve([*pieces, HOLD])
    data, _ = read_all(streams.logs("c", "0", follow=False))
    assert data == b"first frame\nsecond" + b" frame\n" * 3


def test_the_stream_ends_at_the_last_chunk_while_dockerd_keeps_the_connection(serve) -> None:
    streams = serve([CHUNKED_HEAD + chunked(b"only line\n"), HOLD])
    stream = streams.logs("c", "0", follow=True)
    assert stream.read() == b"only line\n"
    assert stream.read() == b""  # at once: the terminating chunk ends it, not the connection
    stream.close()


def test_content_length_and_close_delimited_bodies(serve) -> None:
    streams = serve(
        [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", HOLD],
        [b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil ", b"the end"],
    )
    assert read_all(streams.logs("a", "0", follow=False))[0] == b"hello"
    assert read_all(streams.logs("b", "0", follow=False))[0] == b"until the end"


def test_a_chunked_stream_cut_short_is_a_broken_stream(serve) -> None:
    streams = serve([CHUNKED_HEAD + b"a\r\n0123456789\r\n5\r\n012"])
    stream = streams.logs("c", "0", follow=True)
    assert stream.read() == b"0123456789012"
    with pytest.raises(DockerUnavailable, match="closed the stream"):
        stream.read()
    stream.close()


def test_a_stream_closes_its_connection_when_it_ends_or_breaks(serve) -> None:
    # The events loop drops a broken stream without closing it; the socket must not be left to the collector.
    streams = serve([CHUNKED_HEAD + chunked(b"a"), HOLD], [CHUNKED_HEAD + b"5\r\nab"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ended = streams.logs("c", "0", follow=True)
        assert read_all_unclosed(ended) == b"a"
        broken = streams.logs("c", "0", follow=True)
        with pytest.raises(DockerUnavailable):
            read_all_unclosed(broken)
        del ended, broken
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


def read_all_unclosed(stream: HttpStream) -> bytes:
    parts = []
    while data := stream.read():
        parts.append(data)
    return b"".join(parts)


def test_a_bad_chunk_size_is_a_broken_stream(serve) -> None:
    streams = serve([CHUNKED_HEAD + b"zz\r\nnot a chunk\r\n", HOLD])
    stream = streams.logs("c", "0", follow=True)
    with pytest.raises(DockerUnavailable, match="chunk"):
        stream.read()
    stream.close()


def test_404_is_container_gone_with_dockerds_message(serve) -> None:
    message = b'{"message":"No such container: nope"}\n'
    head = b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(message)
    streams = serve([head, message])
    with pytest.raises(ContainerGone, match="No such container: nope"):
        streams.logs("nope", "0", follow=True)


def test_other_errors_are_docker_unavailable(serve) -> None:
    streams = serve(
        [b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b'{"message":"boom"}')],
        [b"HTTP/1.1 400 Bad Request\r\nContent-Length: 9\r\n\r\nnot json!"],
        [b"SSH-2.0-OpenSSH\r\n\r\n"],
        [],
    )
    with pytest.raises(DockerUnavailable, match=r"500 .*boom"):
        streams.logs("c", "0", follow=True)
    with pytest.raises(DockerUnavailable, match=r"400 .*not json!"):
        streams.logs("c", "0", follow=True)
    with pytest.raises(DockerUnavailable, match="not an HTTP response"):
        streams.logs("c", "0", follow=True)
    with pytest.raises(DockerUnavailable, match="before answering"):
        streams.logs("c", "0", follow=True)


def test_no_dockerd_is_docker_unavailable(tmp_path: Path) -> None:
    streams = DockerStreams(DockerAddress.resolve(f"unix://{tmp_path}/absent.sock"), "1.41", timeout_secs=1)
    with pytest.raises(DockerUnavailable, match="cannot connect"):
        streams.events()


def test_a_head_that_never_comes_times_out(serve) -> None:
    server_streams = serve([HOLD])
    streams = DockerStreams(DockerAddress.resolve(serve.servers[0].docker_host), "1.41", timeout_secs=0.3)
    del server_streams
    started = time.monotonic()
    with pytest.raises(DockerUnavailable):
        streams.logs("c", "0", follow=True)
    assert time.monotonic() - started < 2


def test_close_from_another_thread_unblocks_a_read(serve) -> None:
    streams = serve([CHUNKED_HEAD + chunked(b"x")[:-5], HOLD])  # one chunk, then nothing: a quiet container
    stream = streams.logs("c", "0", follow=True)
    assert stream.read() == b"x"
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(stream.read()))
    reader.start()
    time.sleep(0.3)
    assert reader.is_alive(), "read() should block while the container is quiet"
    stream.close()
    reader.join(2)
    assert not reader.is_alive()
    assert got == [b""]
    assert stream.read() == b""
    stream.close()  # twice is fine


def test_a_backlog_is_read_in_large_reads_not_per_frame(serve) -> None:
    frames = [b"\x01\x00\x00\x00\x00\x00\x01\x20" + b"x" * 288 for _ in range(20_000)]  # ~6 MB in 20,000 chunks
    streams = serve([CHUNKED_HEAD + chunked(*frames)])
    data, reads = read_all(streams.logs("c", "0", follow=False))
    assert data == b"".join(frames)
    assert reads <= 4 * len(data) // READ_BYTES + 20


def test_events_are_json_lines_across_reads(serve) -> None:
    body = b'{"Action":"start","id":"a"}\n\n{"Action":"die",' + b'"id":"a"}\n'
    streams = serve([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", chunked(body[:20], body[20:])])
    events = streams.events(since=1718012345.5)
    assert list(events) == [{"Action": "start", "id": "a"}, {"Action": "die", "id": "a"}]
    events.close()
    head = serve.servers[0].requests[0]
    assert head.startswith(b"GET /v1.41/events?filters=%7B%22type%22%3A+%5B%22container%22%5D%7D&since=1718012345.5")


def test_a_bad_event_is_docker_unavailable(serve) -> None:
    streams = serve([CHUNKED_HEAD + chunked(b"{not json}\n")])
    events = streams.events()
    with pytest.raises(DockerUnavailable, match="bad event"):
        list(events)
    events.close()


class TestAddress:
    """DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH as the docker CLI and SDK read them."""

    @pytest.fixture
    def cert_path(self, tmp_path: Path) -> Path:
        for name in ("ca.pem", "cert.pem", "key.pem"):
            (tmp_path / name).write_text("not checked here")
        return tmp_path

    def test_the_default_is_the_local_socket(self) -> None:
        address = DockerAddress.resolve("", {"UNRELATED": "1"})
        assert (address.unix_path, address.tls, address.base_url) == ("/var/run/docker.sock", None, "")

    def test_plain_tcp(self) -> None:
        address = DockerAddress.resolve("", {"DOCKER_HOST": "tcp://10.0.0.5:2375"})
        assert (address.unix_path, address.host, address.port, address.tls) == ("", "10.0.0.5", 2375, None)

    def test_tls_verify_takes_the_certificates_from_the_cert_path(self, cert_path: Path) -> None:
        env = {"DOCKER_HOST": "tcp://docker.example:2376", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(cert_path)}
        address = DockerAddress.resolve("", env)
        assert (address.host, address.port) == ("docker.example", 2376)
        assert address.tls is not None
        assert address.tls.verify is True
        assert address.tls.ca_cert == str(cert_path / "ca.pem")
        assert address.tls.cert == (str(cert_path / "cert.pem"), str(cert_path / "key.pem"))

    def test_the_host_setting_wins_over_docker_host_and_keeps_tls(self, cert_path: Path) -> None:
        env = {"DOCKER_HOST": "tcp://other:1", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(cert_path)}
        address = DockerAddress.resolve("tcp://127.0.0.1:2376", env)
        assert (address.host, address.port, address.base_url) == ("127.0.0.1", 2376, "tcp://127.0.0.1:2376")
        assert address.tls is not None

    def test_an_empty_tls_verify_means_tls_without_verification(self, cert_path: Path) -> None:
        env = {"DOCKER_HOST": "tcp://h:2376", "DOCKER_TLS_VERIFY": "", "DOCKER_CERT_PATH": str(cert_path)}
        address = DockerAddress.resolve("", env)
        assert address.tls is not None
        assert not address.tls.verify

    def test_an_explicit_http_url_stays_plain(self, cert_path: Path) -> None:
        env = {"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(cert_path)}
        assert DockerAddress.resolve("http://h:2375", env).tls is None

    def test_files_that_are_not_certificates_are_reported(self, cert_path: Path) -> None:
        env = {"DOCKER_HOST": "tcp://h:2376", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(cert_path)}
        with pytest.raises(DockerUnavailable, match="TLS files"):
            DockerAddress.resolve("", env).ssl_context()

    def test_missing_certificates_and_unsupported_schemes_are_reported(self, tmp_path: Path) -> None:
        with pytest.raises(DockerUnavailable, match="bad Docker address"):
            DockerAddress.resolve("tcp://h:2376", {"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(tmp_path)})
        with pytest.raises(DockerUnavailable, match="unsupported"):
            DockerAddress.resolve("ssh://user@h", {"UNRELATED": "1"})
        with pytest.raises(DockerUnavailable, match="bad Docker address"):
            DockerAddress.resolve("tcp://no-port", {"UNRELATED": "1"})
