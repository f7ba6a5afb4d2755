"""What went wrong in a record: `error_type`, `timeout_kind` and the plugin `req_id`, for every format.

Both labels feed metrics, so both are bounded: `error_type` is a class-like token (`httpx.ReadTimeout`,
`InvokeConnectionError`, `WorkerTimeout`), never a message or an id; `timeout_kind` is one of
`event.TIMEOUT_KINDS`, recognised only from the phrases the services really print. A bare word such as
`timeout` in a parameter dump or a config echo (`timeout: 30`, `GUNICORN_TIMEOUT=360`) never counts.
"""

from __future__ import annotations

import re

from logpipe.event import Event
from logpipe.parsers.detect import TRACEBACK_HEADER

_CLASS_NAME = r"[A-Za-z_][\w.]{0,99}"
_EXCEPTION_LINE = re.compile(rf"({_CLASS_NAME})(?::\s?(.*)|\s*$)")
# Also inside a JSON string, where the quotes are escaped.
_PLUGIN_ERROR_TYPE = re.compile(rf'\\?"error_type\\?"\s*:\s*\\?"({_CLASS_NAME})\\?"')
_RAISED = re.compile(rf"raised unexpected: ({_CLASS_NAME})\(")
_REQ_ID = re.compile(r"\breq_id: ([0-9a-f]{10})\b")

# Each kind, in priority order: literal substrings that must be present (cheap `in` tests, no regex) and the
# regex that confirms the phrase where a literal alone would be too loose (`thread timed out` is not a read).
_TIMEOUT_PHRASES: tuple[tuple[str, tuple[str, ...], re.Pattern[str] | None], ...] = (
    ("worker_timeout", ("WORKER TIMEOUT",), None),
    ("task_time_limit", (" time limit (",), re.compile(r"\b(?:Soft|Hard) time limit \([^)]*\) exceeded\b")),
    ("task_time_limit", ("TimeLimitExceeded",), None),
    ("upstream_timeout", ("upstream timed out",), None),
    ("connect_timeout", ("ConnectTimeout", "(connect timeout="), None),
    ("connect_timeout", ("onnect timed out",), re.compile(r"\b[Cc]onnect timed out")),
    ("read_timeout", ("ReadTimeout", "(read timeout="), None),
    ("read_timeout", ("ead timed out",), re.compile(r"\b[Rr]ead timed out")),
    ("request_timeout", ("APITimeoutError",), None),
    ("request_timeout", ("equest timed out",), re.compile(r"\b[Rr]equest timed out")),
)
_TIMEOUT_CLASSES = frozenset({"timeout", "TimeoutError", "TimeoutException", "PoolTimeout", "WriteTimeout"})


def final_exception(text: str) -> tuple[str, str] | None:
    """(class, message) of the exception ending the last Python traceback in `text`, or None.

    With chained tracebacks ("During handling of the above exception...") the last one is the one raised. The
    exception line is the first unindented line after the last `Traceback (most recent call last):`.
    """
    at = text.rfind(TRACEBACK_HEADER)
    return _exception_after(text, at) if at >= 0 else None


def _exception_after(text: str, at: int) -> tuple[str, str] | None:
    lines = text[at + len(TRACEBACK_HEADER) :].split("\n")
    for line in lines[1:]:
        if not line or line[0] in " \t":
            continue
        match = _EXCEPTION_LINE.match(line)
        if match is None:
            return None
        return match.group(1), (match.group(2) or "").strip()
    return None


def plugin_error_type(text: str) -> str | None:
    """The `error_type` of a plugin error quoted inside a message (`PluginInvokeError: {"error_type":...}`)."""
    if "error_type" not in text:
        return None
    match = _PLUGIN_ERROR_TYPE.search(text)
    return match.group(1) if match else None


def raised_type(message: str) -> str | None:
    """The exception class in Celery's `raised unexpected: ExcType(...)` when no traceback names it."""
    match = _RAISED.search(message)
    return match.group(1) if match else None


def _may_time_out(text: str) -> bool:
    # Every phrase and timeout class below contains one of these; most records contain none, and most do not
    # even contain "ime" (two scans instead of five for them).
    return ("ime" in text or "IME" in text) and (
        "imeout" in text or "imed out" in text or "IMEOUT" in text or "ime limit" in text or "imeLimit" in text
    )


def timeout_kind(text: str, exception: tuple[str, str] | None = None) -> str | None:
    """The timeout `text` reports, or None; `exception` is the traceback's final (class, message) if any.

    A traceback ending in a plain `TimeoutError` or `...: timed out` counts as a request timeout when no more
    specific phrase is present.
    """
    if not _may_time_out(text):
        return None
    for kind, literals, pattern in _TIMEOUT_PHRASES:
        for literal in literals:
            if literal in text and (pattern is None or pattern.search(text)):
                return kind
    if exception is not None:
        name, message = exception
        if name.rpartition(".")[2] in _TIMEOUT_CLASSES or message == "timed out":
            return "request_timeout"
    return None


def add_errors(event: Event, text: str, traceback_text: str | None = None) -> None:
    """Fill `error_type`, `timeout_kind` and `req_id` from `text` (ANSI-stripped) where not already set.

    `traceback_text` is where the Python traceback is when `text` holds it escaped (a JSON line's
    `stack_trace`); timeout phrases and ids are searched in `text`, which must contain the traceback too. A
    plugin's own `error_type` wins over the wrapping exception class: it names the cause.
    """
    # Called for nearly every record: each test below is one substring scan, and most records stop there.
    source = text if traceback_text is None else traceback_text
    at = source.rfind(TRACEBACK_HEADER)
    exception = _exception_after(source, at) if at >= 0 else None
    if event.error_type is None:
        if "error_type" in text:
            event.error_type = plugin_error_type(text)
        if event.error_type is None and exception is not None:
            event.error_type = exception[0]
    if event.timeout_kind is None and ("ime" in text or "IME" in text):
        event.timeout_kind = timeout_kind(text, exception)
    if event.req_id is None and "req_id" in text:
        match = _REQ_ID.search(text)
        if match:
            event.req_id = match.group(1)
