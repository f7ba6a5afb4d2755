"""Dify's api, worker and worker_beat: Python logging in text or JSON mode, gunicorn, old Celery, the banner.

The message of a Dify record is read the same way in both modes: Celery task lines (`Task name[id] received`,
`succeeded in Ns`, `raised unexpected`, `retry`, time limits), beat's `Scheduler: Sending due task`, the optional
request log (`ext_request_logging.py`: `METHOD PATH STATUS DURATION_MS [trace]`), Flask's `Exception on PATH
[METHOD]`, and the quota warning's `node_id`. Tracebacks, plugin errors and timeouts come from `errors`.
"""

from __future__ import annotations

import re
from typing import Any

from logpipe.event import Event
from logpipe.parsers.access import method_name, normalise_path, set_access
from logpipe.parsers.errors import add_errors, raised_type
from logpipe.parsers.levels import LEVEL_NAMES, normalise_level
from logpipe.parsers.numbers import to_float

_TEXT = re.compile(r"\d{4}-\d\d-\d\d[ T][\d:.,]+ ([A-Z]+) \[[^\]]*\] \[([^\]]*)\] (\S*) ?- (.*)")
_CELERY_TEXT = re.compile(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+: ([A-Z]+)/[^\]]*\] ?(.*)")
_GUNICORN = re.compile(r"\[[^\]]*\] \[\d+\] \[([A-Z]+)\] ?(.*)")
_BANNER = re.compile(r"\s*-+ (celery@.*)")
_HEX32 = re.compile(r"[0-9a-f]{32}")

_TASK_NAME = r"([\w.:\-]+)\[([^\]\s]+)\]"
_TASK = re.compile(rf"Task {_TASK_NAME} (received|succeeded in ([\d.eE+\-]+)s:|raised unexpected:|retry:)")
_TASK_STATES = {"received": "received", "raised unexpected:": "failed", "retry:": "retry"}
_TIME_LIMIT = re.compile(rf"(Soft|Hard) time limit \([^)]*\) exceeded for {_TASK_NAME}")
_BEAT = re.compile(r"Scheduler: Sending due task .* \(([\w.:\-]+)\)\s*$")
_REQUEST_LOG = re.compile(r"([A-Z]+) (\S+) (\d{3}) (\d+(?:\.\d+)?)(?: ([0-9a-f]{32}))?\s*$")
_FLASK_EXCEPTION = re.compile(r"Exception on (\S+) \[([A-Z]+)\]")
_QUOTA_NODE = re.compile(r"LLM quota deduction exceeded, node_id=([\w\-]+)")
_GUNICORN_ERRORS = (("WORKER TIMEOUT", "WorkerTimeout"), ("was sent SIGKILL", "WorkerKilled"))


def _trace_id(value: object) -> str | None:
    # All zeros is OpenTelemetry's "no trace".
    return (
        value if isinstance(value, str) and len(value) == 32 and _HEX32.fullmatch(value) and value.strip("0") else None
    )


def _message_fields(event: Event, message: str, caller: str | None) -> None:
    """Fields Dify's message conventions carry, identical in text and JSON mode."""
    first = message[:1]
    if first == "T" and message.startswith("Task "):
        task = _TASK.match(message)
        if task is not None:
            event.task_name, event.task_id, outcome, runtime = task.groups()
            if runtime is not None:
                event.task_state = "succeeded"
                event.task_runtime_seconds = to_float(runtime)
            else:
                event.task_state = _TASK_STATES[outcome]
    elif first == "S" and message.startswith("Scheduler: Sending due task"):
        beat = _BEAT.match(message)
        event.task_name = beat.group(1) if beat else None
    elif first in ("S", "H") and " time limit " in message:
        limit = _TIME_LIMIT.match(message)
        if limit is not None:
            kind, event.task_name, event.task_id = limit.groups()
            # The names of the exceptions Celery raises for each limit.
            event.error_type = "SoftTimeLimitExceeded" if kind == "Soft" else "TimeLimitExceeded"
            event.timeout_kind = "task_time_limit"
    elif caller is not None and caller.startswith("ext_request_logging.py"):
        request = _REQUEST_LOG.match(message)
        if request is not None:
            method, path, status, duration_ms, trace_id = request.groups()
            milliseconds = to_float(duration_ms)
            duration = milliseconds / 1000 if milliseconds is not None else None
            set_access(event, method, path, int(status), duration, level_from_status=False)
            event.trace_id = trace_id or event.trace_id
    elif first == "E" and message.startswith("Exception on "):
        flask = _FLASK_EXCEPTION.match(message)
        if flask is not None:
            event.http_path = normalise_path(flask.group(1))
            event.http_method = method_name(flask.group(2))
    elif first == "L" and message.startswith("LLM quota deduction exceeded"):
        quota = _QUOTA_NODE.match(message)
        event.node_id = quota.group(1) if quota else None


def _add_errors(event: Event, text: str, traceback_text: str | None = None) -> None:
    add_errors(event, text, traceback_text)
    if event.error_type is None and event.task_state == "failed" and event.message:
        # No traceback to read (JSON without stack_trace): the repr in the message still names the class.
        event.error_type = raised_type(event.message)


def parse_dify_text(event: Event, text: str) -> bool:
    """`<date> <time>.<ms> LEVEL [thread] [file.py:line] <trace_id> - message`, plus continuation lines.

    Both date styles (`LOG_DATEFORMAT` set or not: `15:20:28,976.976`) and the no-trace variant (two spaces
    before the dash) are read. A traceback among the continuation lines gives `error_type`.
    """
    match = _TEXT.match(text)  # `.` stops at the first newline: the regex reads the first line only
    if match is None:
        return False
    level, caller, trace_id, message = match.groups()
    event.level = LEVEL_NAMES.get(level) or normalise_level(level)
    event.logger_caller = caller
    if trace_id:
        event.trace_id = _trace_id(trace_id)
    event.message = message
    _message_fields(event, message, caller)
    _add_errors(event, text)
    return True


def parse_celery_text(event: Event, text: str) -> bool:
    """Old Dify workers (<= 0.11) in Celery's own format: `[2024-08-23 06:54:18,106: INFO/MainProcess] ...`."""
    match = _CELERY_TEXT.match(text)
    if match is None:
        return False
    level, message = match.groups()
    event.level = normalise_level(level)
    event.message = message
    _message_fields(event, message, None)
    _add_errors(event, text)
    return True


def parse_gunicorn(event: Event, text: str) -> bool:
    """`[2026-06-12 10:40:12 +0000] [1] [CRITICAL] WORKER TIMEOUT (pid:35)`: its own format in both modes."""
    match = _GUNICORN.match(text)
    if match is None:
        return False
    level, message = match.groups()
    event.level = normalise_level(level)
    event.message = message
    for phrase, error_type in _GUNICORN_ERRORS:
        if phrase in message:
            event.error_type = error_type
    add_errors(event, text)
    return True


def parse_banner(event: Event, text: str) -> bool:
    """Celery's startup banner: one info record; its message is the `celery@host vX (codename)` line."""
    match = _BANNER.match(text)
    if match is None:
        return False
    event.level = "info"
    event.message = match.group(1).strip()
    return True


def parse_dify_json(event: Event, obj: dict[str, Any], line: str) -> None:
    """JSON mode (Dify >= 1.11.3): ts, severity, service, caller, message, then optional trace_id, span_id,
    identity, attributes, stack_trace, context, error_source; unknown keys and odd value types are ignored."""
    # Every api and worker line in JSON mode comes through here: plain lookups, each field tested once.
    get = obj.get
    severity = get("severity")
    level = LEVEL_NAMES.get(severity) if type(severity) is str else None
    event.level = level or (normalise_level(severity) if type(severity) is str else "unknown")
    caller = get("caller")
    if type(caller) is not str:
        caller = None
    event.logger_caller = caller
    message = get("message")
    if type(message) is not str:
        message = None
    event.message = message
    trace_id = get("trace_id")
    if trace_id is not None:
        # _trace_id, inline: 32 lower-case hex digits, not all zeros
        event.trace_id = (
            trace_id
            if type(trace_id) is str and len(trace_id) == 32 and _HEX32.fullmatch(trace_id) and trace_id.strip("0")
            else None
        )
    span_id = get("span_id")
    if span_id and type(span_id) is str:
        event.span_id = span_id
    identity = get("identity")
    if type(identity) is dict:
        tenant_id = identity.get("tenant_id")
        if tenant_id and type(tenant_id) is str:
            event.tenant_id = tenant_id
        user_id = identity.get("user_id")
        if user_id and type(user_id) is str:
            event.user_id = user_id
    if "context" in obj or "attributes" in obj:
        _json_sections(event, obj)
    if message:
        _message_fields(event, message, caller)
    stack = get("stack_trace")
    # Errors, timeouts and plugin req_ids are in the message and the stack trace; the other fields of a Dify line
    # (time, caller, ids) never carry them, so only those two are searched, unless the line has attributes.
    text = line if "attributes" in obj else (message or "")
    if type(stack) is str:
        add_errors(event, f"{text}\n{stack}", stack)
    else:
        add_errors(event, text, message or "")
    if event.error_type is None and event.task_state == "failed" and message:
        event.error_type = raised_type(message)


def _json_sections(event: Event, obj: dict[str, Any]) -> None:
    """`context` and `attributes`: ids not already set from `identity`."""
    for section, keys in (
        ("context", ("app_id", "workflow_id", "node_id")),
        ("attributes", ("tenant_id", "user_id", "app_id", "workflow_id", "node_id", "req_id")),
    ):
        values = obj.get(section)
        if isinstance(values, dict):
            for key in keys:
                value = values.get(key)
                if isinstance(value, str) and value and getattr(event, key) is None:
                    setattr(event, key, value)
