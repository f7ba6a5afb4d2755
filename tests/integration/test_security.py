"""Security: logpipe only reads the Docker socket, secrets are redacted before Loki, credentials never leak."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.dockerkit import Containers, wait_until
from tests.dockerproxy import ReadOnlyDockerProxy
from tests.logpipeproc import REPO, LogpipeProcess
from tests.support.lokiserver import LokiServer

pytestmark = pytest.mark.docker


@pytest.fixture
def loki() -> Iterator[LokiServer]:
    with LokiServer(visibility_delay_secs=0, basic_auth=("shipper", "s3cret-pass")) as server:
        yield server


def test_logpipe_never_writes_to_the_docker_socket(
    tmp_path: Path, loki: LokiServer, containers: Containers, docker_client: docker.DockerClient
) -> None:
    with ReadOnlyDockerProxy(tmp_path / "docker.sock") as proxy:
        proc = LogpipeProcess(
            tmp_path,
            loki.url,
            containers.project,
            env={
                "DOCKER_HOST": proxy.docker_host,
                "LOGPIPE_LOKI_USERNAME": "shipper",
                "LOGPIPE_LOKI_PASSWORD": "s3cret-pass",
            },
        )
        proc.start()
        try:
            box = containers.run("api", "echo hello; sleep 60")
            name = f"{containers.project}-api-1"
            assert wait_until(lambda: loki.lines(container=name) == ["hello"], 15)
            box.restart(timeout=1)  # restart and removal happen through the real socket, not logpipe
            assert wait_until(lambda: loki.lines(container=name) == ["hello", "hello"], 15)
            containers.run("oneshot", "echo bye")
            assert wait_until(lambda: loki.lines(container=f"{containers.project}-oneshot-1") == ["bye"], 15)
        finally:
            proc.stop()
        assert proxy.seen, "logpipe did not go through the proxy"
        assert proxy.refused == [], f"logpipe tried to change Docker: {proxy.refused}"
        assert {line.split(" ", 1)[0] for line in proxy.seen} <= {"GET", "HEAD"}
        assert "s3cret-pass" not in proc.log_text()


def test_secrets_are_redacted_before_loki(
    tmp_path: Path, loki: LokiServer, containers: Containers, docker_client: docker.DockerClient
) -> None:
    proc = LogpipeProcess(
        tmp_path,
        loki.url,
        containers.project,
        env={
            "LOGPIPE_LOKI_USERNAME": "shipper",
            "LOGPIPE_LOKI_PASSWORD": "s3cret-pass",
        },
    )
    proc.start()
    try:
        containers.run(
            "api",
            "echo 'Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlX2hlcmU'; "
            "echo 'calling with key sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789'; "
            "echo 'db at postgresql://postgres:difyai123456@db:5432/dify'; "
            'echo \'{"severity":"INFO","message":"login","password":"hunter2"}\'; '
            "echo 'Usage: prompt_tokens=812 completion_tokens=96 total_tokens=908'; sleep 30",
        )
        name = f"{containers.project}-api-1"
        assert wait_until(lambda: len(loki.lines(container=name)) == 5, 15)
        shipped = "\n".join(loki.lines(container=name))
        for secret in (
            "c2lnbmF0dXJlX2hlcmU",
            "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
            "difyai123456",
            "hunter2",
        ):
            assert secret not in shipped
        assert "prompt_tokens=812 completion_tokens=96 total_tokens=908" in shipped  # not a secret
        assert proc.metric("logpipe_redactions_total", rule="url_password") == 1
    finally:
        proc.stop()


def test_check_never_prints_credentials(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("very-secret-token\n")
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(REPO),
        "LOGPIPE_LOKI_URL": "http://127.0.0.1:9",
        "LOGPIPE_LOKI_BEARER_TOKEN_FILE": str(token),
        "LOGPIPE_METRICS_BASIC_AUTH_USERNAME": "admin",
        "LOGPIPE_METRICS_BASIC_AUTH_PASSWORD": "another-secret",
        "LOGPIPE_LOKI_BATCH_MAX_BYTES": "-5",
    }
    bad = subprocess.run(
        [sys.executable, "-m", "logpipe", "check"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 78
    assert "loki.batch_max_bytes (from LOGPIPE_LOKI_BATCH_MAX_BYTES): must be > 0, got -5" in bad.stderr
    del env["LOGPIPE_LOKI_BATCH_MAX_BYTES"]
    started = time.monotonic()
    unreachable = subprocess.run(
        [sys.executable, "-m", "logpipe", "check"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert unreachable.returncode == 69
    assert "loki: NOT READY at http://127.0.0.1:9" in unreachable.stdout
    assert time.monotonic() - started < 30
    for output in (bad.stdout, bad.stderr, unreachable.stdout, unreachable.stderr):
        assert "very-secret-token" not in output
        assert "another-secret" not in output
