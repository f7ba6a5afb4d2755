"""logpipe as a real process for integration tests, and writers that make containers print known lines."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set size (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for pid {pid}")


class LogpipeProcess:
    """`python -m logpipe run` with a private state dir and metrics port; stderr goes to a file."""

    def __init__(
        self,
        workdir: Path,
        loki_url: str,
        project: str,
        env: Mapping[str, str] | None = None,
        config_text: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.state_dir = workdir / "state"
        self.port = free_port()
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/root"),
            "LOGPIPE_LOKI_URL": loki_url,
            "LOGPIPE_COMPOSE_PROJECT": project,
            "LOGPIPE_STATE_DIR": str(self.state_dir),
            "LOGPIPE_METRICS_ADDR": f"127.0.0.1:{self.port}",
            "LOGPIPE_LOKI_BATCH_WAIT_SECS": "0.25",
            "LOGPIPE_LOKI_MIN_BACKOFF_SECS": "0.2",
            "LOGPIPE_LOKI_MAX_BACKOFF_SECS": "2",
            "LOGPIPE_LOG_LEVEL": "info",
            # The delivery tests write bursts of tens of thousands of lines a second, far over the default rate
            # limit, and every line must arrive; tests/integration/test_noise.py sets the limit it tests.
            "LOGPIPE_SHIP_RATE_LIMIT_LINES_PER_SEC": "0",
            "PYTHONPATH": str(REPO),
        }
        if "DOCKER_HOST" in os.environ:
            self.env["DOCKER_HOST"] = os.environ["DOCKER_HOST"]
        self.env.update(env or {})
        self.config_path: Path | None = None
        if config_text is not None:
            self.config_path = workdir / "logpipe.toml"
            self.config_path.write_text(config_text)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, wait_ready: bool = True) -> LogpipeProcess:
        self.starts += 1
        cmd = [sys.executable, "-m", "logpipe", "run"]
        if self.config_path is not None:
            cmd += ["--config", str(self.config_path)]
        with open(self.workdir / f"logpipe-{self.starts}.log", "wb") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(cmd, cwd=self.workdir, env=self.env, stdout=log, stderr=log)
        if wait_ready:
            self.wait_metrics()
        return self

    def wait_metrics(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"logpipe exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"logpipe did not come up:\n{self.log_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"logpipe did not exit within {timeout}s after {sig}") from None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def metrics(self) -> dict[str, float]:
        """Every sample as `name{l="v",...}` -> value (labels sorted), plus bare names."""
        text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return out

    def metric(self, name: str, **labels: str) -> float:
        key = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        return self.metrics().get(f"{name}{{{key}}}" if key else name, 0.0)

    def wait_settled(self, timeout: float = 30.0) -> None:
        """Until logpipe holds nothing unacknowledged, twice in a row: every entry it built was sent (or dropped and
        counted), nothing waits in memory or in the spool, no push is in flight. Whatever logpipe would send again
        (a duplicate) is then on its way already; call after the expected lines have arrived."""
        deadline = time.monotonic() + timeout
        calm = 0
        while time.monotonic() < deadline:
            m = self.metrics()
            done = m.get("logpipe_entries_sent_total", 0) + sum(
                v for k, v in m.items() if k.startswith("logpipe_entries_dropped_total")
            )
            idle = (
                m.get("logpipe_queue_bytes", 1) == 0
                and m.get("logpipe_queue_entries", 1) == 0
                and m.get("logpipe_pushes_in_flight", 1) == 0
                and m.get("logpipe_spool_records", 0) == 0
                and done >= m.get("logpipe_entries_read_total", 0)
            )
            calm = calm + 1 if idle else 0
            if calm >= 2:
                return
            time.sleep(0.2)
        raise AssertionError(f"logpipe did not settle within {timeout}s:\n{self.log_text()[-2000:]}")

    def peak_rss_mib(self) -> float:
        assert self.proc is not None
        return peak_rss_mib(self.proc.pid)

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("logpipe-*.log")))

    def log_records(self) -> list[dict[str, Any]]:
        """logpipe's own JSON log lines, parsed (lines that are not JSON are skipped)."""
        records = []
        for line in self.log_text().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
        return records


def write_parts(
    directory: Path, run: str, lines: int, per_part: int, stderr_every: int = 0, noise_bytes: int = 0
) -> list[str]:
    """Unique Dify JSON-mode lines split into part files; returns the lines in order.

    `noise_bytes` adds random hex to every line so that it does not compress (to fill a disk for real).
    """
    directory.mkdir(parents=True, exist_ok=True)
    out: list[str] = []
    for part, start in enumerate(range(0, lines, per_part)):
        chunk = [
            '{"ts":"2026-06-12T10:32:01.117Z","severity":"INFO","service":"langgenius/dify",'
            f'"caller":"app.py:1","message":"run={run} seq={i:07d}{_noise(noise_bytes)}"}}'
            for i in range(start, min(start + per_part, lines))
        ]
        out.extend(chunk)
        suffix = "e" if stderr_every and part % stderr_every == stderr_every - 1 else "o"
        (directory / f"p{part:05d}.{suffix}").write_text("\n".join(chunk) + "\n")
    return out


def _noise(n: int) -> str:
    return f" noise={os.urandom(n // 2).hex()}" if n else ""


def replay_command(pause_secs: float, then_sleep: bool = False) -> str:
    """Shell for a writer container: cat each part (stderr for `.e` parts) with a pause between parts."""
    tail = "; sleep 3600 & wait" if then_sleep else ""
    return (
        "trap 'exit 0' TERM; for f in /data/p*; do "
        'case "$f" in *.e) cat "$f" >&2;; *) cat "$f";; esac; '
        f"sleep {pause_secs}; done{tail}"
    )
