"""Hostile lines (issue 5): each gets a bounded, counted outcome, logpipe stays up and its memory stays bounded.

Real dockerd, a real logpipe process, the strict Loki test server. Peak RSS is printed (`pytest -s`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.dockerkit import Containers, wait_until
from tests.logpipeproc import LogpipeProcess
from tests.support.lokiserver import LokiServer

pytestmark = [pytest.mark.docker, pytest.mark.slow]

MiB = 1 << 20
MAX_LINE = 256 * 1024  # logpipe's default docker.max_line_bytes and loki.max_line_bytes

DEEP = b'{"severity":"INFO","message":"deep","x":' + b"[" * 50_000 + b"]" * 50_000 + b"}"
HUGE = (
    b'{"severity":"INFO","message":"huge numbers","model":"gpt-4o","prompt_tokens":1e999,'
    b'"completion_tokens":123456789012345678901234567890,"total_tokens":-1,"latency":1e308}'
)
DUPLICATE_KEYS = b'{"severity":"INFO","severity":"ERROR","message":"duplicate keys"}'
BAD_UTF8 = b"bad utf8 \xff\xfe \xc3\x28 end"
NUL = b"nul\x00byte\x00line"
ESCAPES = b"\x1b[31mred\x1b[0m \x1b[2J\x1b[H escapes end"
CR_ONLY = b"\r"
TEN_MIB_NO_NEWLINE = b"A" * (10 * MiB)


@pytest.fixture
def loki() -> Iterator[LokiServer]:
    with LokiServer(visibility_delay_secs=0.0) as server:
        yield server


def test_hostile_lines_have_bounded_counted_outcomes(
    tmp_path: Path, loki: LokiServer, containers: Containers, docker_client: docker.DockerClient
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    big = [DEEP, HUGE, DUPLICATE_KEYS, ESCAPES, CR_ONLY]
    (data / "big").write_bytes(b"".join(line + b"\n" for line in big) + TEN_MIB_NO_NEWLINE)
    (data / "bytes").write_bytes(BAD_UTF8 + b"\n" + NUL + b"\n")
    proc = LogpipeProcess(tmp_path, loki.url, containers.project).start()
    try:
        ro = {str(data): {"bind": "/data", "mode": "ro"}}
        containers.run("api", "cat /data/big", volumes=ro)
        # The `local` log driver keeps a line's bytes as written; json-file (Go's JSON encoder) replaces invalid
        # UTF-8 before logpipe can see it. (`local` is not used for the big lines: Docker 20.10's `local` driver
        # drops the newline of a line split into 16 KiB partials, so the API joins it to the next line.)
        raw = containers.run("sandbox", "cat /data/bytes", volumes=ro, log_driver="local")
        flood_lines = 300_000
        containers.run("worker", f"seq 1 {flood_lines}")
        api, worker = f"{containers.project}-api-1", f"{containers.project}-worker-1"

        assert wait_until(lambda: len(loki.lines(container=worker)) >= flood_lines, 90), (
            f"flood: {len(loki.lines(container=worker))} of {flood_lines} arrived\n{proc.log_text()[-2000:]}"
        )
        assert wait_until(lambda: any(line.startswith("AAAA") for line in loki.lines(container=api)), 30)
        proc.wait_settled()  # anything extra (a duplicate) is in Loki by now
        assert proc.alive()

        # The flood: every line exactly once, in order.
        got = loki.lines(container=worker)
        assert Counter(got) == Counter(str(i) for i in range(1, flood_lines + 1))
        timestamps = [e.ts_ns for e in loki.entries(container=worker)]
        write_secs = (max(timestamps) - min(timestamps)) / 1e9

        sandbox = f"{containers.project}-sandbox-1"
        assert wait_until(lambda: len(loki.lines(container=sandbox)) >= 2, 10)
        raw.reload()
        assert raw.attrs["HostConfig"]["LogConfig"]["Type"] == "local"
        lines = loki.lines(container=api) + loki.lines(container=sandbox)

        def starting(prefix: str) -> str:
            (line,) = [line for line in lines if line.startswith(prefix)]
            return line

        assert len(lines) == 7, [line[:60] for line in lines]  # 6 lines + the 10 MiB one; the \r line is blank
        # Deep nesting and broken-for-orjson numbers are shipped exactly as printed.
        assert DEEP.decode() in lines
        assert HUGE.decode() in lines
        assert DUPLICATE_KEYS.decode() in lines
        # Invalid UTF-8 and NUL bytes are replaced, not dropped.
        assert starting("bad utf8") == BAD_UTF8.decode("utf-8", "replace")
        assert starting("nul") == "nul\ufffdbyte\ufffdline"
        # Terminal escapes are stripped.
        (escaped,) = [line for line in lines if line.endswith("escapes end")]
        assert "\x1b" not in escaped and escaped.startswith("red")
        # The 10 MiB line without a newline: cut to the limit and marked.
        (long_line,) = [line for line in lines if line.startswith("AAAA")]
        assert len(long_line.encode()) <= MAX_LINE
        assert "[logpipe: truncated " in long_line
        assert set(long_line.split(" …[logpipe")[0]) == {"A"}

        # Every outcome is counted, and every sample on /metrics is a finite number.
        text = httpx.get(f"http://127.0.0.1:{proc.port}/metrics", timeout=5).text
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        bad = [key for key, value in samples.items() if not math.isfinite(value) and key[0] != "logpipe_build_info"]
        assert not bad, bad

        def m(name: str, **labels: str) -> float:
            return samples.get((name, tuple(sorted(labels.items()))), 0.0)

        assert m("logpipe_lines_sanitized_total", reason="invalid_utf8") == 1
        assert m("logpipe_lines_sanitized_total", reason="nul_byte") == 1
        # Counted when read: a stream reopened after a reconnect reads an unshipped blank line again.
        assert m("logpipe_lines_skipped_total", reason="blank") >= 1
        assert m("logpipe_lines_truncated_total") == 1
        assert m("logpipe_partial_frames_joined_total") >= (MAX_LINE // (16 * 1024)) - 1
        assert m("logpipe_entries_sent_total") == flood_lines + 7
        assert sum(v for (name, _), v in samples.items() if name == "logpipe_entries_dropped_total") == 0
        assert loki.duplicates() == []

        rss = proc.peak_rss_mib()
        print(
            f"\n[hostile] flood={flood_lines} lines written by the container in {write_secs:.2f}s "
            f"({flood_lines / max(write_secs, 1e-9):,.0f} lines/s), hostile lines=8, peak RSS={rss:.1f} MiB"
        )
        assert rss < 150, f"peak RSS {rss:.1f} MiB"
    finally:
        proc.stop()
