"""TLS to Loki against a real HTTPS server: certificates are verified by default, a custom CA and client
certificates work, and skipping verification is an explicit choice. Certificates are made with `openssl`."""

from __future__ import annotations

import http.server
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from logpipe.config import LokiConfig
from logpipe.sinks.loki import LokiClient

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def _openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    _openssl(d, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=logpipe test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    for name, usage in (("server", "serverAuth"), ("client", "clientAuth")):
        _openssl(d, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}")  # fmt: skip
        (d / f"{name}.ext").write_text(
            f"subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n"
        )
        _openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")  # fmt: skip
    return d


class _Push(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve(pki: Path, require_client_cert: bool) -> Iterator[str]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki / "server.pem", pki / "server.key")
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(pki / "ca.pem")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Push)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def https_loki(pki: Path) -> Iterator[str]:
    yield from _serve(pki, require_client_cert=False)


@pytest.fixture
def mtls_loki(pki: Path) -> Iterator[str]:
    yield from _serve(pki, require_client_cert=True)


def test_an_unknown_certificate_is_refused_by_default(https_loki: str) -> None:
    result = LokiClient(LokiConfig(url=https_loki)).push(b"")
    assert result.outcome == "retry"
    assert "CERTIFICATE_VERIFY_FAILED" in result.message


def test_a_custom_ca_is_trusted(https_loki: str, pki: Path) -> None:
    result = LokiClient(LokiConfig(url=https_loki, ca_file=str(pki / "ca.pem"))).push(b"")
    assert result.outcome == "ok"


def test_skipping_verification_is_explicit(https_loki: str) -> None:
    assert LokiClient(LokiConfig(url=https_loki, tls_insecure_skip_verify=True)).push(b"").outcome == "ok"


def test_client_certificates(mtls_loki: str, pki: Path) -> None:
    ca = str(pki / "ca.pem")
    without = LokiClient(LokiConfig(url=mtls_loki, ca_file=ca)).push(b"")
    assert without.outcome == "retry"
    with_cert = LokiClient(
        LokiConfig(url=mtls_loki, ca_file=ca, cert_file=str(pki / "client.pem"), key_file=str(pki / "client.key"))
    ).push(b"")
    assert with_cert.outcome == "ok", with_cert.message
