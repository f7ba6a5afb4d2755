"""Live reload (issue 4): change a metric rule and a label while lines flow; counts stay continuous, no line is
lost or shipped twice, a bad config is refused and the running one keeps working, SIGHUP reloads too."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import docker
import pytest

from tests.dockerkit import Containers, docker_lines, wait_until
from tests.logpipeproc import LogpipeProcess, replay_command, write_parts
from tests.support.lokiserver import LokiServer

pytestmark = pytest.mark.docker

BEFORE = """
[[metrics.rules]]
name = "app_lines"
type = "counter"
help = "Lines per service (reload test)."
labels = { svc = "service" }
[metrics.rules.match]
present = ["message"]
"""

AFTER = """
[loki]
labels = { env = "reload-test" }

[[metrics.rules]]
name = "app_lines"
type = "counter"
help = "Lines per service and level (reload test)."
labels = { svc = "service", lvl = "level" }
[metrics.rules.match]
present = ["message"]
"""


def replace_file(path: Path, text: str) -> None:
    """Write like an editor does: a new file renamed over the old one."""
    tmp = path.with_name(path.name + ".swp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_reload_while_lines_flow(tmp_path: Path, containers: Containers, docker_client: docker.DockerClient) -> None:
    with LokiServer(visibility_delay_secs=0) as loki:
        proc = LogpipeProcess(tmp_path, loki.url, containers.project, config_text=BEFORE)
        write_parts(tmp_path / "data", "reload", lines=8000, per_part=100)
        proc.start()
        samples: list[float] = []
        stop = threading.Event()

        def scrape() -> None:
            while not stop.is_set():
                with contextlib.suppress(Exception):  # a scrape racing the end of the test
                    samples.append(proc.metric("dify_log_entries_total", service="api", level="info"))
                time.sleep(0.1)

        scraper = threading.Thread(target=scrape)
        scraper.start()
        try:
            box = containers.run(
                "api", replay_command(0.1), volumes={str(tmp_path / "data"): {"bind": "/data", "mode": "ro"}}
            )
            name = f"{containers.project}-api-1"
            assert wait_until(lambda: len(loki.lines(container=name)) > 1500, 20)
            assert proc.config_path is not None
            replace_file(proc.config_path, AFTER)
            assert wait_until(lambda: proc.metric("logpipe_config_reloads_total", result="success") >= 1, 10)
            mid = len(loki.lines(container=name))
            assert mid < 8000, "the reload must happen while lines still flow"
            replace_file(proc.config_path, AFTER.replace("[loki]\n", "[loki]\ngzip_level = 42\n"))
            assert wait_until(lambda: proc.metric("logpipe_config_reloads_total", result="failure") >= 1, 10)
            replace_file(proc.config_path, AFTER)
            proc.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
            assert wait_until(lambda: proc.metric("logpipe_config_reloads_total", result="success") >= 2, 10)
            box.wait(timeout=60)
            expected = Counter(docker_lines(docker_client, box.id))
            assert wait_until(lambda: len(loki.lines(container=name)) >= sum(expected.values()), 30)
            proc.wait_settled()
            entries_total = proc.metric("dify_log_entries_total", service="api", level="info")
            old = proc.metric("app_lines_total", svc="api")
            new = proc.metric("app_lines_total", svc="api", lvl="info")
        finally:
            stop.set()
            scraper.join()
            if proc.alive():
                proc.stop()
        got = Counter(loki.lines(container=name))
        assert got == expected, "a reload lost or duplicated lines"
        # the built-in counter never went backwards and counted every line once
        assert samples == sorted(samples)
        assert entries_total == 8000
        # the rule: old label set stopped, new one took over; together they counted every line once
        assert old > 0 and new > 0
        assert old + new == 8000
        # the new Loki label applies to entries shipped after the reload only
        labelled = [e for e in loki.entries(container=name) if dict(e.labels).get("env") == "reload-test"]
        assert 0 < len(labelled) < 8000
        assert "reload refused: bad configuration" in proc.log_text()
        assert "loki.gzip_level: must be between 0 and 9, got 42" in proc.log_text()
