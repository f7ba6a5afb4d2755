"""The Dockerfile: what the image promises (user, signal, volume, entry point) and a health check that works."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.stack.stackkit import REPO

TEXT = (REPO / "Dockerfile").read_text(encoding="utf-8")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined = TEXT.replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def final_stage() -> list[tuple[str, str]]:
    items = instructions()
    last_from = max(i for i, (keyword, _) in enumerate(items) if keyword == "FROM")
    return items[last_from:]


def one(keyword: str) -> str:
    (value,) = [rest for k, rest in final_stage() if k == keyword]
    return value


def test_base_is_python_311_slim() -> None:
    assert ("ARG", "PYTHON_IMAGE=python:3.11-slim") in instructions()
    assert all(rest.startswith("${PYTHON_IMAGE}") for k, rest in instructions() if k == "FROM")


def test_installs_the_package_and_runs_logpipe() -> None:
    assert any(k == "RUN" and "pip install --no-compile ." in rest for k, rest in instructions())
    assert json.loads(one("ENTRYPOINT")) == ["logpipe"]
    assert json.loads(one("CMD")) == ["run"]


def test_runs_unprivileged_with_state_on_a_volume() -> None:
    user = one("USER")
    assert user.split(":")[0] not in ("root", "0")
    assert json.loads(one("VOLUME")) == ["/var/lib/logpipe"]
    assert "LOGPIPE_STATE_DIR=/var/lib/logpipe" in one("ENV")
    assert one("STOPSIGNAL") == "SIGTERM"
    assert one("EXPOSE") == "9108"


def healthcheck_command() -> list[str]:
    options, _, command = one("HEALTHCHECK").partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    argv = json.loads(command)
    assert argv[0] == "python"  # the venv's python: there is no curl in a slim image
    return [sys.executable, *argv[1:]]


@contextmanager
def http_server(status: int) -> Iterator[int]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def check(addr: str) -> int:
    proc = subprocess.run(
        healthcheck_command(), env={"LOGPIPE_METRICS_ADDR": addr}, capture_output=True, timeout=30, check=False
    )
    return proc.returncode


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1", ""])
def test_healthcheck_passes_when_healthz_answers_200(host: str) -> None:
    with http_server(200) as port:
        assert check(f"{host}:{port}") == 0


def test_healthcheck_fails_when_healthz_fails() -> None:
    with http_server(503) as port:
        assert check(f"0.0.0.0:{port}") != 0


def test_healthcheck_fails_when_nothing_listens() -> None:
    with http_server(200) as port:
        pass
    assert check(f"0.0.0.0:{port}") != 0
