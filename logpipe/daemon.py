"""The process: startup, the control loop (signals, reload, housekeeping), and an orderly shutdown.

Process-lifetime parts (metrics registry and server, checkpoint, lanes, Loki client and sender, Docker source)
are built once; the `Pipeline` is built by the same function at startup and on every reload. Data flows one way
(source -> pipeline -> lanes -> sink -> checkpoint); control travels on one queue. A signal handler only records
the signal; shutdown stops the sources first, lets the rest drain under a deadline below Docker's 10 s stop grace
period, and says what it cut off; a second signal exits at once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO

from prometheus_client import CollectorRegistry, disable_created_metrics

from logpipe import selflog
from logpipe.config import Config, restart_only
from logpipe.configload import ConfigError, load_config
from logpipe.metrics import LogMetrics, MetricsServer
from logpipe.pipeline import Pipeline, tune_gc
from logpipe.runner import ChunkQueue, PipelineRunner
from logpipe.sinks import Sink
from logpipe.sinks.lanes import Lanes
from logpipe.sinks.loki import LokiClient
from logpipe.sinks.sender import LokiSender
from logpipe.sinks.stdout import StdoutSink
from logpipe.sources.docker import DockerSource
from logpipe.sources.engine import DockerEngine
from logpipe.state import State
from logpipe.telemetry import StateSnapshot, Telemetry
from logpipe.threads import Threads
from logpipe.watch import ConfigWatcher

log = logging.getLogger("logpipe")

EXIT_OK = 0
EXIT_SOFTWARE = 70
EXIT_UNAVAILABLE = 69


class Daemon:
    def __init__(
        self,
        config: Config,
        config_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        stdout: BinaryIO | None = None,
        engine_factory: Callable[[], DockerEngine] | None = None,
    ) -> None:
        self.config = config
        self._config_path = config_path
        self._env = env
        self._stdout = stdout
        # SimpleQueue: its put is safe from a signal handler that interrupts a get on the same thread.
        self._control: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self._stop_requested_at: float | None = None
        self._stopping = False
        disable_created_metrics()  # type: ignore[no-untyped-call]  # `_created` series double the exposition and no alert uses them
        self.registry = CollectorRegistry()
        self.telemetry = Telemetry(self.registry)
        self.threads = Threads(self.telemetry.thread_crashed)
        # The state database is opened here (raises StateError): everything below reads or writes it.
        self.state = State(
            Path(config.state.dir),
            spool_max_bytes=config.spool.max_bytes,
            fsync=config.spool.fsync == "always",
            on_write_error=self.telemetry.state_write_failed,
        )
        self.state.open()
        self.lanes = Lanes(config.pipeline.memory_queue_max_bytes, batch_bytes=config.loki.batch_max_bytes)
        self.queue = ChunkQueue(max(1 << 20, config.pipeline.memory_queue_max_bytes // 16))
        self.metrics = LogMetrics(self.registry, config.metrics)
        self.sink: Sink
        if config.sink == "stdout":
            out = stdout or os.fdopen(1, "wb", 0)
            self.sink = StdoutSink(self.lanes, self.state, self.telemetry, out, threads=self.threads)
        else:
            self.sink = LokiSender(
                LokiClient(config.loki),
                self.lanes,
                self.state,
                config.loki,
                self.telemetry,
                spool_policy=config.spool.full_policy if config.spool.enabled else None,
                threads=self.threads,
            )
        self.source = DockerSource(
            engine_factory or (lambda: DockerEngine(config.docker.host, config.docker.api_timeout_secs)),
            config.docker,
            self.state.checkpoint,
            self.queue.put,
            self.telemetry,
            crashed=self.threads.report,
        )
        self.runner = PipelineRunner(self.queue, self._build_pipeline(config), threads=self.threads)
        self.server: MetricsServer | None = None
        self._watcher: ConfigWatcher | None = None
        self.telemetry.watch_state(self._state)

    # -- lifecycle
    def run(self) -> int:
        """Run until a signal (or `request_stop`); returns the process exit code."""
        self._install_signals()
        try:
            self._startup()
        except OSError as exc:
            log.error("cannot start", extra={"error": str(exc)})
            self._shutdown()
            return EXIT_UNAVAILABLE
        tune_gc()
        code = self._loop()
        self._shutdown()
        return code

    def request_stop(self) -> None:
        self._control.put(("stop", "requested"))

    def request_reload(self, reason: str) -> None:
        self._control.put(("reload", reason))

    def _startup(self) -> None:
        config = self.config
        if config.metrics.addr:
            password = config.metrics.basic_auth_password
            if config.metrics.basic_auth_password_file:
                password = Path(config.metrics.basic_auth_password_file).read_text(encoding="utf-8").strip()
            self.server = MetricsServer(
                config.metrics.addr,
                self.registry,
                readiness=self._readiness,
                liveness=self.threads.healthy,
                username=config.metrics.basic_auth_username,
                password=password,
                threads=self.threads,
            )
            self.server.start()
        # Pushes in flight at the last exit are read back while the rest starts; their containers wait for it.
        self.sink.start()
        self.runner.start()
        self.source.start()
        if self._config_path is not None:
            self._watcher = ConfigWatcher(
                self._config_path, lambda: self.request_reload("config file changed"), threads=self.threads
            )
            self._watcher.start()
        log.info(
            "logpipe started",
            extra={
                "sink": config.sink,
                "loki": config.loki.url if config.sink == "loki" else None,
                "state_dir": config.state.dir,
                "compose_project": config.docker.compose_project or "*",
            },
        )

    def _loop(self) -> int:
        interval = self.config.state.flush_interval_secs
        next_expire = time.monotonic() + 30.0
        while True:
            try:
                kind, detail = self._control.get(timeout=interval)
            except queue.Empty:
                kind, detail = "tick", ""
            if kind == "stop":
                log.info("stopping", extra={"reason": detail})
                return EXIT_OK
            if kind == "reload":
                self._reload(detail)
            self.state.checkpoint.commit(pending=self.lanes.containers())
            if not self.threads.healthy():
                log.error("stopping: a thread failed", extra={"thread_kind": self.threads.failure})
                return EXIT_SOFTWARE
            if time.monotonic() >= next_expire:
                self.metrics.expire()
                next_expire = time.monotonic() + 30.0

    def _shutdown(self) -> None:
        self._stopping = True
        # Docker's grace period started with the signal, not with this call (a reload may have run meanwhile).
        started = self._stop_requested_at if self._stop_requested_at is not None else time.monotonic()
        deadline = started + self.config.pipeline.shutdown_timeout_secs
        if self._watcher is not None:
            self._watcher.stop()
        # Close the head first: readers blocked on a full queue are released at once (what they hold is not
        # acknowledged, so it is read again at the next start), then the queue drains into the lanes.
        self.queue.close()
        if not self.source.stop(min(1.5, _left(deadline))):
            log.warning("docker readers did not stop in time")
        self.runner.stop(min(1.5, _left(deadline)))
        self.lanes.close()
        self.sink.stop(max(_left(deadline) - 0.3, 0.1))
        self.state.checkpoint.commit(pending=self.lanes.containers())
        unsent_bytes, unsent = self.lanes.totals()
        if unsent:
            log.warning(
                "shutdown deadline cut off entries; they are read again from Docker at the next start",
                extra={"entries": unsent, "bytes": unsent_bytes},
            )
        if self.server is not None:
            self.server.stop()
        self.sink.close()
        self.state.close()
        log.info("logpipe stopped")

    # -- reload
    def _reload(self, reason: str) -> None:
        try:
            new, _ = load_config(self._config_path, self._env)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload refused: bad configuration; keeping the running one", extra={"problem": problem})
            self.telemetry.reloaded(False)
            return
        new = self._keep_restart_only(new)
        if not self.runner.swap(self._build_pipeline(new)):
            log.error("reload timed out waiting for the pipeline; keeping the running one")
            self.telemetry.reloaded(False)
            return
        self.metrics.reconfigure(new.metrics)
        self.source.reconfigure(new.docker)
        self.sink.reconfigure(new)
        selflog.setup(new.log.level)
        self.config = new
        self.telemetry.reloaded(True)
        log.info("configuration reloaded", extra={"reason": reason})

    def _keep_restart_only(self, new: Config) -> Config:
        for dotted in restart_only():
            old_value, new_value = _get(self.config, dotted), _get(new, dotted)
            if old_value != new_value:
                log.warning("setting changed; it takes effect at the next restart", extra={"setting": dotted})
                new = _set(new, dotted, old_value)
        return new

    def _build_pipeline(self, config: Config) -> Pipeline:
        return Pipeline(config, self.lanes, self.metrics, self.telemetry, self._host)

    def _host(self) -> str:
        return self.config.docker.host_label or self.source.host_name or socket.gethostname()

    # -- observation
    def _state(self) -> StateSnapshot:
        lanes_bytes, lanes_entries = self.lanes.totals()
        now_ns = time.time_ns()
        lag = {name: max(now_ns - ts, 0) / 1e9 for name, ts in self.lanes.oldest_by_container().items()}
        for info in self.source.followed():
            lag.setdefault(info.name, 0.0)
        sink = self.sink.stats()
        return StateSnapshot(
            containers_followed=len(self.source.followed()),
            lag_secs=lag,
            queue_bytes=lanes_bytes + self.queue.bytes,
            queue_entries=lanes_entries,
            pushes_in_flight=sink.pushes_in_flight,
            spool_bytes=sink.spool_bytes,
            spool_records=sink.spool_records,
            spool_oldest_age_secs=sink.spool_oldest_age_secs,
            docker_up=self.source.connected.is_set(),
            loki_up=sink.loki_up,
        )

    def _readiness(self) -> dict[str, bool]:
        return {"docker": self.source.connected.is_set(), "loki": self.sink.ready()}

    # -- signals
    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGHUP, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self._control.put(("reload", "SIGHUP"))
        elif self._stopping:
            os._exit(128 + signum)  # second signal: the operator wants out now; the checkpoint is consistent
        else:
            self._stopping = True
            self._stop_requested_at = time.monotonic()
            self._control.put(("stop", signal.Signals(signum).name))


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.0)


def _get(config: Config, dotted: str) -> object:
    value: object = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _set(config: Config, dotted: str, value: Any) -> Config:
    section, _, key = dotted.partition(".")
    changes: dict[str, Any] = {section: value}
    if key:
        changes = {section: dataclasses.replace(getattr(config, section), **{key: value})}
    return dataclasses.replace(config, **changes)
