"""A deterministic stream of the lines Dify prints in production with `LOG_OUTPUT_FORMAT=json`: the headline corpus.

Every line is one compact JSON object of about 300 bytes, keys in Dify's order: `ts`, `severity`, `service`
(`langgenius/dify` for api and worker alike), `caller`, `message`, `trace_id` and a nested `identity` with
`tenant_id`; ERROR records add `stack_trace` as one string. The messages are what
a busy api and worker print: httpx calls to the plugin daemon's `/dispatch/<type>/invoke`, Celery task lines,
embedding timings, retrieval and workflow steps. About 80 % INFO, 12 % WARN, 8 % ERROR.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

_START = datetime(2026, 6, 12, 10, 30, tzinfo=UTC)
_MODEL_TYPES = ("llm", "llm", "llm", "text_embedding", "rerank")
_TASKS = (
    "tasks.document_indexing_task.document_indexing_task",
    "tasks.ops_trace_task.process_trace_tasks",
    "tasks.workflow_execution_tasks.save_workflow_execution_task",
    "tasks.mail_task.send_mail_task",
)
_ERRORS = (
    ("base.py:119", "Request to Plugin Daemon Service failed", "httpx.ReadTimeout: timed out"),
    ("llm_node.py:292", "error while executing llm node", "core.plugin.impl.exc.PluginInvokeError: timed out"),
    ("trace.py:267", "Task tasks.mail_task.send_mail_task[{id}] raised unexpected: ConnectionRefusedError(111)",
     "ConnectionRefusedError: [Errno 111] Connection refused"),
)  # fmt: skip


class _Dify:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.now = _START
        self.tenants = [self.uuid() for _ in range(8)]

    def uuid(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"

    def hex(self, digits: int) -> str:
        return f"{self.rng.getrandbits(4 * digits):0{digits}x}"

    def line(self, severity: str, caller: str, message: str, stack: str = "") -> str:
        obj: dict[str, object] = {
            "ts": self.now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{self.now.microsecond // 1000:03d}Z",
            "severity": severity,
            "service": "langgenius/dify",
            "caller": caller,
            "message": message,
            "trace_id": self.hex(32),
            "identity": {"tenant_id": self.rng.choice(self.tenants)},
        }
        if stack:
            obj["stack_trace"] = stack
        return json.dumps(obj, separators=(",", ":"))

    # INFO ----------------------------------------------------------------------------------------------------
    def httpx_call(self) -> str:
        url = (
            f"http://plugin_daemon:5002/plugin/{self.rng.choice(self.tenants)}/dispatch/"
            f"{self.rng.choice(_MODEL_TYPES)}/invoke"
        )
        return self.line("INFO", "_client.py:1025", f'HTTP Request: POST {url} "HTTP/1.1 200 OK"')

    def task_received(self) -> str:
        return self.line("INFO", "strategy.py:161", f"Task {self.rng.choice(_TASKS)}[{self.uuid()}] received")

    def task_succeeded(self) -> str:
        runtime = self.rng.uniform(0.02, 40)
        message = f"Task {self.rng.choice(_TASKS)}[{self.uuid()}] succeeded in {runtime:.3f}s: None"
        return self.line("INFO", "trace.py:128", message)

    def embedding(self) -> str:
        texts, took = self.rng.randint(1, 64), self.rng.uniform(0.05, 4)
        return self.line("INFO", "cached_embedding.py:87", f"Embedding {texts} texts took {took:.1f} s")

    def step(self) -> str:
        message = self.rng.choice(
            (
                f"Workflow run {self.uuid()} started",
                f"Node {self.hex(13)} run succeeded",
                f"Retrieval finished in {self.rng.uniform(0.05, 2):.3f}s, 4 documents",
                f"Conversation {self.uuid()} saved",
            )
        )
        return self.line("INFO", "workflow_entry.py:98", message)

    # WARN and ERROR ------------------------------------------------------------------------------------------
    def warn(self) -> str:
        message = self.rng.choice(
            (
                f"LLM quota deduction exceeded, node_id={self.hex(13)}, error=quota exhausted",
                f"Retry {self.rng.randint(1, 3)} for plugin daemon request, status: 503",
                "Rate limit reached for model gpt-4o-mini, backing off 2.0s",
            )
        )
        return self.line("WARN", "rate_limit.py:71", message)

    def error(self) -> str:
        caller, message, final = self.rng.choice(_ERRORS)
        stack = (
            'Traceback (most recent call last):\n  File "/app/api/core/plugin/impl/base.py", line 113, in _request\n'
            f"    response = httpx.request(**request_kwargs)\n{final}\n"
        )
        return self.line("ERROR", caller, message.format(id=self.uuid()), stack)


def dify_json_corpus(lines: int, seed: int = 11) -> list[str]:
    """`lines` JSON-mode lines of a busy Dify api + worker, in print order; same seed, same lines."""
    dify = _Dify(seed)
    choices: list[tuple[Callable[[], str], float]] = [
        (dify.httpx_call, 30),
        (dify.task_received, 14),
        (dify.task_succeeded, 14),
        (dify.embedding, 10),
        (dify.step, 12),
        (dify.warn, 12),
        (dify.error, 8),
    ]
    actions = [action for action, _ in choices]
    weights = [weight for _, weight in choices]
    out = []
    for _ in range(lines):
        dify.now += timedelta(microseconds=dify.rng.randint(100, 3000))
        out.append(dify.rng.choices(actions, weights)[0]())
    return out
