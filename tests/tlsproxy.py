"""dockerd as `dockerd --tlsverify -H tcp://...` would serve it, without a second dockerd: a TLS proxy to the socket.

`make_certs` writes a CA, a server certificate (for 127.0.0.1 and localhost) and a client certificate with
`openssl`, laid out the way `DOCKER_CERT_PATH` expects (`ca.pem`, `cert.pem`, `key.pem`). `TlsDockerProxy` listens
on 127.0.0.1, requires a client certificate signed by that CA, and relays the bytes of each connection to the
Docker socket unchanged, both ways, so keep-alive requests and long streams pass as they would to dockerd.
`interrupt` drops every connection for a while: a daemon restart as clients see it, without restarting dockerd.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

UPSTREAM = "/var/run/docker.sock"


@dataclass(frozen=True)
class CertDir:
    """A `DOCKER_CERT_PATH` directory (ca.pem, cert.pem, key.pem) plus the server's own key pair."""

    path: Path
    server_cert: Path
    server_key: Path

    @property
    def ca(self) -> Path:
        return self.path / "ca.pem"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
        "-keyout", "ca-key.pem", "-out", "ca.pem",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    return directory


def _signed(ca_dir: Path, out: Path, name: str, extensions: str) -> None:
    (out / f"{name}.ext").write_text(
        "basicConstraints=CA:FALSE\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n" + extensions
    )
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
        "-keyout", f"{name}-key.pem", "-out", f"{name}.csr", cwd=out,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-days", "2", "-CA", str(ca_dir / "ca.pem"),
        "-CAkey", str(ca_dir / "ca-key.pem"), "-CAcreateserial", "-out", f"{name}-cert.pem",
        "-extfile", f"{name}.ext",
        cwd=out,
    )  # fmt: skip


def make_certs(directory: Path) -> CertDir:
    """A fresh CA with a server certificate for 127.0.0.1/localhost and a client certificate."""
    make_ca(directory, "logpipe-test-ca")
    _signed(directory, directory, "server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    _signed(directory, directory, "client", "extendedKeyUsage=clientAuth\n")
    (directory / "cert.pem").write_bytes((directory / "client-cert.pem").read_bytes())
    (directory / "key.pem").write_bytes((directory / "client-key.pem").read_bytes())
    return CertDir(directory, directory / "server-cert.pem", directory / "server-key.pem")


class TlsDockerProxy:
    def __init__(self, certs: CertDir, upstream: str = UPSTREAM) -> None:
        self.upstream = upstream
        self.connections = 0
        self.handshake_failures = 0
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(certs.server_cert, certs.server_key)
        self._context.load_verify_locations(certs.ca)
        self._context.verify_mode = ssl.CERT_REQUIRED  # as dockerd --tlsverify: clients must show a certificate
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._refuse_until = 0.0
        self._thread: threading.Thread | None = None

    def interrupt(self, secs: float) -> None:
        """What clients see of a dockerd restart: every connection drops, and for `secs` none is accepted."""
        with self._lock:
            self._refuse_until = time.monotonic() + secs
            still_open = list(self._open)
        for sock in still_open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    @property
    def docker_host(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def __enter__(self) -> TlsDockerProxy:
        self._server.listen(64)
        self._server.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept, name="tls-proxy", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        self._server.close()
        with self._lock:
            still_open = list(self._open)
        for sock in still_open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        with self._lock:
            refusing = time.monotonic() < self._refuse_until
        if refusing:
            raw.close()
            return
        raw.settimeout(10)
        try:
            client = self._context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            with self._lock:
                self.handshake_failures += 1
            raw.close()
            return
        client.settimeout(None)
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with self._lock:
            self.connections += 1
            self._open.update((client, upstream))
        try:
            upstream.connect(self.upstream)
            self._relay(client, upstream)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.difference_update((client, upstream))
            upstream.close()
            client.close()

    def _relay(self, client: ssl.SSLSocket, upstream: socket.socket) -> None:
        # One thread per connection: OpenSSL must not read and write one connection from two threads at once.
        while not self._stop.is_set():
            ready = [client] if client.pending() else select.select([client, upstream], [], [], 0.5)[0]
            for sock in ready:
                data = sock.recv(256 * 1024)
                if not data:
                    return
                (upstream if sock is client else client).sendall(data)
