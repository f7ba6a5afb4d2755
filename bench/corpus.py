"""A deterministic, realistic stream of Dify stack log lines, for benchmarks.

`dify_corpus(lines)` returns `(service, stream, line)` in print order across all containers, as a busy stack
would interleave them: mostly single-line INFO records (nginx access, plugin daemon `HTTP request`, api request
logs and httpx calls, Celery task lines), with gunicorn, sandbox, squid, redis, postgres and weaviate lines, gorm
pairs, LLM usage blocks, and Python tracebacks in about 1 % of records. The Dify services and the plugin daemon
switch between text and JSON mode every few thousand records, as after a configuration change, so both modes
appear in one corpus while each stretch of a container's output stays in one mode.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Line = tuple[str, str, str]

_START = datetime(2026, 6, 12, 10, 30, tzinfo=UTC)
_MODE_BLOCK = 4000  # records per text/JSON stretch
_PATHS = (
    "/v1/chat-messages",
    "/v1/workflows/run",
    "/v1/completion-messages",
    "/console/api/apps/{id}/workflows/draft",
    "/console/api/datasets/{id}/documents",
    "/v1/files/upload",
    "/console/api/apps",
    "/api/passport",
)
_TASKS = (
    "tasks.document_indexing_task.document_indexing_task",
    "tasks.ops_trace_task.process_trace_tasks",
    "tasks.mail_task.send_mail_task",
    "tasks.clean_document_task.clean_document_task",
)
_MODEL_TYPES = ("llm", "llm", "llm", "text_embedding", "rerank", "tts")
_ANSI_YELLOW = "\x1b[33;1m\x1b[1;3m"
_ANSI_RESET = "\x1b[0m"


class _Stack:
    """One simulated stack: a clock, ids, and the current text/JSON mode."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.now = _START
        self.json_mode = False
        # A stack has a bounded set of tenants, apps and datasets; request paths reuse them.
        self.tenants = [self.uuid() for _ in range(5)]
        self.ids = [self.uuid() for _ in range(60)] + [str(self.rng.randint(1, 99999)) for _ in range(20)]
        self.out: list[Line] = []

    def uuid(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"

    def hex(self, digits: int) -> str:
        return f"{self.rng.getrandbits(4 * digits):0{digits}x}"

    def emit(self, service: str, stream: str, *lines: str) -> None:
        self.out.extend((service, stream, line) for line in lines)

    def path(self) -> str:
        return self.rng.choice(_PATHS).format(id=self.rng.choice(self.ids))

    # Dify's own formats ----------------------------------------------------------------------------------------

    def dify(self, service: str, level: str, caller: str, message: str, trace: str = "", *more: str) -> None:
        if self.json_mode:
            obj: dict[str, object] = {
                "ts": self.now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{self.now.microsecond // 1000:03d}Z",
                "severity": "WARN" if level == "WARNING" else level,
                "service": "langgenius/dify",
                "caller": caller,
                "message": message,
            }
            if trace:
                obj["trace_id"] = trace
                obj["span_id"] = self.hex(16)
            if more:
                obj["stack_trace"] = "\n".join(more) + "\n"
            self.emit(service, "stdout", json.dumps(obj, separators=(",", ":")))
            return
        stamp = self.now.strftime("%Y-%m-%d %H:%M:%S.") + f"{self.now.microsecond // 1000:03d}"
        thread = f"Dummy-{self.rng.randint(1, 40)}"
        self.emit(service, "stdout", f"{stamp} {level} [{thread}] [{caller}] {trace} - {message}", *more)

    def traceback(self) -> list[str]:
        final = self.rng.choice(
            [
                "httpx.ReadTimeout: timed out",
                "httpx.ConnectError: [Errno 111] Connection refused",
                "sqlalchemy.exc.OperationalError: (psycopg2.OperationalError) server closed the connection",
                "ValueError: invalid literal for int() with base 10: 'abc'",
            ]
        )
        return [
            "Traceback (most recent call last):",
            '  File "/app/api/.venv/lib/python3.12/site-packages/httpx/_transports/default.py", line 101, in map',
            "    yield",
            "httpcore.ReadTimeout: timed out",
            "",
            "The above exception was the direct cause of the following exception:",
            "",
            "Traceback (most recent call last):",
            '  File "/app/api/core/plugin/impl/base.py", line 113, in _request',
            "    response = httpx.request(**request_kwargs)",
            "               ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^",
            final,
        ]

    def api_httpx(self) -> None:
        tenant = self.rng.choice(self.tenants)
        url = f"http://plugin_daemon:5002/plugin/{tenant}/dispatch/{self.rng.choice(_MODEL_TYPES)}/invoke"
        self.dify("api", "INFO", "_client.py:1025", f'HTTP Request: POST {url} "HTTP/1.1 200 OK"', self.hex(32))

    def api_request_log(self) -> None:
        trace = self.hex(32)
        status = self.rng.choice((200, 200, 200, 200, 201, 400, 404, 500))
        duration = self.rng.uniform(3, 3000)
        method = self.rng.choice(("GET", "POST", "POST"))
        message = f"{method} {self.path()} {status} {duration:.3f} {trace}"
        self.dify("api", "INFO", "ext_request_logging.py:73", message, trace)

    def api_misc(self) -> None:
        message = self.rng.choice(
            [
                f"Conversation {self.uuid()} saved",
                "Workflow run started",
                f"Generate message for app {self.uuid()}",
                "Retrieval finished in 0.212s",
            ]
        )
        level = "WARNING" if self.rng.random() < 0.08 else "INFO"
        self.dify("api", level, "app_generator.py:301", message, self.hex(32))

    def api_error(self) -> None:
        self.dify(
            "api", "ERROR", "base.py:119", "Request to Plugin Daemon Service failed", self.hex(32), *self.traceback()
        )

    def gunicorn(self) -> None:
        stamp = self.now.strftime("[%Y-%m-%d %H:%M:%S +0000]")
        pid = self.rng.randint(30, 90)
        if self.rng.random() < 0.1:
            self.emit("api", "stderr", f"{stamp} [1] [CRITICAL] WORKER TIMEOUT (pid:{pid})")
        self.emit("api", "stderr", f"{stamp} [{pid}] [INFO] Booting worker with pid: {pid}")

    def celery_task(self) -> None:
        name, task_id, trace = self.rng.choice(_TASKS), self.uuid(), self.hex(32)
        self.dify("worker", "INFO", "strategy.py:161", f"Task {name}[{task_id}] received")
        if self.rng.random() < 0.03:
            message = f"Task {name}[{task_id}] raised unexpected: ConnectionRefusedError(111, 'Connection refused')"
            self.dify("worker", "ERROR", "trace.py:267", message, trace, *self.traceback())
        else:
            runtime = self.rng.uniform(0.01, 30)
            self.dify(
                "worker", "INFO", "trace.py:128", f"Task {name}[{task_id}] succeeded in {runtime!r}s: None", trace
            )

    def beat(self) -> None:
        entry = self.rng.choice(("clean_embedding_cache_task", "check_upgradable_plugin_task"))
        self.dify(
            "worker_beat", "INFO", "beat.py:271", f"Scheduler: Sending due task {entry} (schedule.{entry}.{entry})"
        )

    def llm_block(self) -> None:
        prompt, completion = self.rng.randint(20, 4000), self.rng.randint(5, 800)
        usage = (
            f"Usage: prompt_tokens={prompt} prompt_unit_price=Decimal('0.15') prompt_price_unit=Decimal('0.000001') "
            f"completion_tokens={completion} completion_unit_price=Decimal('0.6') total_tokens={prompt + completion} "
            f"total_price=Decimal('{(prompt * 0.15 + completion * 0.6) / 1e6:.7f}') currency='USD' "
            f"latency={self.rng.uniform(0.3, 9):.3f} time_to_first_token=0.41 time_to_generate=1.5"
        )
        self.emit(
            "worker",
            "stdout",
            _ANSI_YELLOW,
            "[on_llm_after_invoke]",
            f"{_ANSI_RESET}{_ANSI_YELLOW}Content: Here is the summary you asked for.",
            f"{_ANSI_RESET}{_ANSI_YELLOW}Model: gpt-4o-mini",
            f"{_ANSI_RESET}{_ANSI_YELLOW}{usage}",
            f"{_ANSI_RESET}{_ANSI_YELLOW}System Fingerprint: fp_0aa8d3e20b",
        )

    # The plugin daemon, the sandbox and the rest -----------------------------------------------------------------

    def plugin_http(self) -> None:
        tenant, trace = self.rng.choice(self.tenants), self.hex(32)
        path = f"/plugin/{tenant}/dispatch/{self.rng.choice(_MODEL_TYPES)}/invoke"
        status = 200 if self.rng.random() < 0.97 else 500
        latency = self.rng.randint(40, 9000)
        stamp = self.now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{self.now.microsecond:06d}123Z"
        level = "INFO" if status < 400 else "ERROR"
        if self.json_mode:
            obj = {
                "attributes": {
                    "client_ip": "172.25.0.9",
                    "latency_ms": latency,
                    "method": "POST",
                    "path": path,
                    "status": status,
                },
                "caller": "middleware.go:83",
                "identity": {"tenant_id": tenant},
                "message": "HTTP request",
                "service": "dify-plugin-daemon",
                "severity": level,
                "span_id": self.hex(16),
                "trace_id": trace,
                "ts": stamp,
            }
            self.emit("plugin_daemon", "stdout", json.dumps(obj, separators=(",", ":")))
            return
        pairs = [f"status={status}", f"latency_ms={latency}", "client_ip=172.25.0.9", "method=POST", f"path={path}"]
        self.rng.shuffle(pairs)
        self.emit(
            "plugin_daemon",
            "stdout",
            f"{stamp} {level} dify-plugin-daemon middleware.go:83 trace_id={trace} tenant_id={tenant} HTTP request "
            + " ".join(pairs),
        )

    def gorm(self) -> None:
        stamp = self.now.strftime("%Y/%m/%d %H:%M:%S")
        self.emit(
            "plugin_daemon",
            "stdout",
            "",
            f"{stamp} \x1b[31;1m/app/internal/db/pg/pg.go:259 \x1b[35;1mrecord not found",
            f"\x1b[0m\x1b[33m[{self.rng.uniform(0.1, 3):.3f}ms] \x1b[34;1m[rows:0]\x1b[0m SELECT * FROM "
            f'"plugin_declarations" WHERE plugin_unique_identifier = '
            f"'langgenius/openai:0.2.6@{self.hex(12)}' LIMIT 1",
        )

    def sandbox(self) -> None:
        stamp = self.now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{self.now.microsecond:06d}Z"
        trace = self.hex(32)
        killed = self.rng.random() < 0.03
        obj = {
            "time": stamp,
            "level": "ERROR" if killed else "INFO",
            "msg": "process finished with error" if killed else "run code",
        }
        if killed:
            obj["status"] = "signal: killed"
        obj.update(trace_id=trace, span_id=self.hex(16), tenant_id="", user_id="", user_type="")
        self.emit("sandbox", "stdout", json.dumps(obj, separators=(",", ":")))
        gin_stamp = self.now.strftime("%Y/%m/%d - %H:%M:%S")
        self.emit(
            "sandbox",
            "stdout",
            f"[GIN] {gin_stamp} |     200 | {self.rng.uniform(0.01, 9):.9f}s |      172.19.0.7 | "
            'POST     "/v1/sandbox/run"',
        )

    def nginx_access(self) -> None:
        stamp = self.now.strftime("%d/%b/%Y:%H:%M:%S +0000")
        status = self.rng.choice((200,) * 14 + (201, 304, 404, 499, 502, 504))
        method = self.rng.choice(("GET", "GET", "POST"))
        self.emit(
            "nginx",
            "stdout",
            f'172.18.0.1 - - [{stamp}] "{method} {self.path()} HTTP/1.1" {status} {self.rng.randint(0, 90000)} "-" '
            f'"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36" "203.0.113.{self.rng.randint(1, 254)}"',
        )

    def nginx_error(self) -> None:
        stamp = self.now.strftime("%Y/%m/%d %H:%M:%S")
        self.emit(
            "nginx",
            "stderr",
            f"{stamp} [error] 30#30: *{self.rng.randint(1, 99999)} upstream timed out (110: Connection timed out) "
            'while reading upstream, client: 10.0.0.5, server: _, request: "POST /v1/workflows/run HTTP/1.1", '
            'upstream: "http://172.18.0.6:5001/v1/workflows/run", host: "dify.example.com"',
        )

    def others(self) -> None:
        pick = self.rng.random()
        if pick < 0.45:
            stamp = f"{self.now.timestamp():.3f}"
            self.emit(
                "ssrf_proxy",
                "stdout",
                f"{stamp}    {self.rng.randint(50, 60000)} 172.19.0.9 TCP_MISS/200 2311 "
                "GET http://10.0.0.111:10002/v1/models - HIER_DIRECT/10.0.0.111 application/json",
            )
        elif pick < 0.7:
            stamp = self.now.strftime("%Y-%m-%d %H:%M:%S.") + f"{self.now.microsecond // 1000:03d}"
            self.emit(
                "db_postgres",
                "stderr",
                f"{stamp} UTC [{self.rng.randint(60, 300)}] LOG:  checkpoint complete: "
                "wrote 3 buffers (0.0%); 0 WAL file(s) added, 0 removed, 0 recycled",
            )
        elif pick < 0.85:
            stamp = self.now.strftime("%d %b %Y %H:%M:%S.") + f"{self.now.microsecond // 1000:03d}"
            self.emit("redis", "stdout", f"1:M {stamp} * 100 changes in 300 seconds. Saving...")
        else:
            stamp = self.now.strftime("%Y-%m-%dT%H:%M:%SZ")
            self.emit(
                "weaviate",
                "stdout",
                json.dumps(
                    {
                        "action": "lsm_compaction",
                        "class": "Vector_index",
                        "level": "info",
                        "msg": "compaction done",
                        "time": stamp,
                    },
                    separators=(",", ":"),
                ),
            )


def dify_corpus(lines: int, seed: int = 1) -> list[Line]:
    """`lines` lines of a busy Dify stack as `(service, stream, line)`, in print order; same seed, same lines.

    The mix, by record: ~25 % nginx access, ~20 % plugin daemon `HTTP request`, ~25 % api (httpx calls, request
    log, messages), ~15 % Celery task lines, the rest sandbox, gorm pairs, squid, postgres, redis, weaviate,
    gunicorn, beat and LLM usage blocks; ~1 % of records carry a traceback. The last record may be cut short.
    """
    stack = _Stack(seed)
    choices: list[tuple[Callable[[], None], float]] = [
        (stack.nginx_access, 25),
        (stack.plugin_http, 20),
        (stack.api_httpx, 9),
        (stack.api_request_log, 9),
        (stack.api_misc, 6),
        (stack.celery_task, 8),
        (stack.sandbox, 4),
        (stack.gorm, 2),
        (stack.others, 5),
        (stack.llm_block, 0.6),
        (stack.api_error, 0.8),
        (stack.nginx_error, 0.3),
        (stack.gunicorn, 0.2),
        (stack.beat, 0.3),
    ]
    actions = [action for action, _ in choices]
    weights = [weight for _, weight in choices]
    records = 0
    while len(stack.out) < lines:
        stack.json_mode = (records // _MODE_BLOCK) % 2 == 1
        stack.now += timedelta(microseconds=stack.rng.randint(100, 3000))
        stack.rng.choices(actions, weights)[0]()
        records += 1
    return stack.out[:lines]
