"""Line classification: which format a line starts, and whether it is a line at all.

The grouper calls `classify` on every line, so it decides with a few character checks (first character, a
separator at a fixed offset) before it tries at most two anchored, precompiled regexes. It only answers "which
record does this line start"; reading the fields is the parse stage's job.

Matching always looks at the line with ANSI escape sequences removed: Dify's LLM debug blocks and gorm colour
their output, and a colour reset can precede the next record's timestamp.
"""

from __future__ import annotations

import re
from typing import Final

from logpipe.event import FORMATS as EVENT_FORMATS

# Format tags. Metrics use them as label values, so the set is closed: add one only for a format that needs it.
DIFY_TEXT: Final = "dify_text"
DIFY_JSON: Final = "dify_json"
CELERY_TEXT: Final = "celery_text"
CELERY_BANNER: Final = "celery_banner"
GUNICORN: Final = "gunicorn"
PLUGIN_TEXT: Final = "plugin_text"
PLUGIN_JSON: Final = "plugin_json"
GORM: Final = "gorm"
GO_LOG: Final = "go_log"
GIN: Final = "gin"
SANDBOX_JSON: Final = "sandbox_json"
NGINX_ACCESS: Final = "nginx_access"
NGINX_ERROR: Final = "nginx_error"
SQUID: Final = "squid"
POSTGRES: Final = "postgres"
REDIS: Final = "redis"
WEAVIATE_JSON: Final = "weaviate_json"
JSON: Final = "json"
LLM_DEBUG: Final = "llm_debug"
TRACEBACK: Final = "traceback"
RAW: Final = "raw"

#: Every value `Event.format` can take: the tags above (configuration validates against the list in `event`).
FORMATS: Final = EVENT_FORMATS

#: Kinds whose record is complete with its first line. Every other start kind may be followed by continuation
#: lines (tracebacks, Go stacks, gorm's SQL line, LLM blocks, the banner) and stays open until the next start.
#: `json` covers every JSON-object line; the parse stage refines it to dify_json, plugin_json, ...
SINGLE_LINE: Final = frozenset({JSON, NGINX_ACCESS, NGINX_ERROR, GIN, SQUID, POSTGRES, REDIS})

#: What `classify` returns for a line with nothing visible (empty, spaces, or colour codes only).
BLANK: Final = ""

TRACEBACK_HEADER: Final = "Traceback (most recent call last):"

# CSI (colours, cursor), OSC (titles, links) and two-character escapes; a lone ESC is left alone.
ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")

_DASH_DATE = r"\d{4}-\d\d-\d\d"
_DIFY_START = re.compile(
    _DASH_DATE + r"[ T]\d\d:\d\d:\d\d(?:[.,]\d+)* (?:DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL|FATAL|NOTSET) \["
)
_POSTGRES_START = re.compile(_DASH_DATE + r" \d\d:\d\d:\d\d(?:\.\d+)?(?: [\w+:\-]+)? \[\d+\] ")
_PLUGIN_START = re.compile(
    _DASH_DATE + r"T\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d) [A-Z]+ dify-plugin-daemon(?: |$)"
)
# 2026/06/12 10:33:05 followed by nginx's `[level] pid#tid:`, gorm's `/path/file.go:259`, or Go's log prefix.
_SLASH_START = re.compile(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (?:(\[[a-z]+\] \d+#\d+:)|(\S+\.go:\d+)(:)?(?: |$))?")
_NGINX_ACCESS_START = re.compile(r"[0-9a-fA-F:.]+ - \S+ \[\d\d/\w{3}/\d{4}:")
_SQUID_START = re.compile(r"\d{9,}\.\d{3} +\d+ ")
_REDIS_START = re.compile(r"\d+:[XCSM] \d\d? \w{3} ")
_BRACKET_DATE_START = re.compile(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:( [+-]\d{4}\] \[\d+\] \[)|(,\d+: [A-Z]+/))")
_BANNER_START = re.compile(r" ?-{6,} celery@\S+ v\d")
_LLM_HEADERS = ("[on_llm_before_invoke]", "[on_llm_after_invoke]", "[on_llm_invoke_error]")


def strip_ansi(text: str) -> str:
    """`text` without ANSI escape sequences (colours, cursor moves, OSC titles); unchanged when it has none."""
    return ANSI.sub("", text) if "\x1b" in text else text


def classify(line: str) -> str | None:
    """The format tag of the record `line` starts, `BLANK` for a blank line, or None when it starts none.

    `TRACEBACK` marks a bare Python traceback header: it starts a record only when no record is open (inside an
    open record it is a continuation). A None line is a continuation of an open record, or a `raw` record.
    """
    if not line:
        return BLANK
    if "\x1b" in line:
        line = ANSI.sub("", line)
        if not line:
            return BLANK
    first = line[0]
    if first == "{":
        return JSON
    if "0" <= first <= "9":
        # Most lines of a stack start with a digit (nginx, Dify and plugin daemon text): decide by the character
        # at offset 4, then one anchored regex; inline because this runs for every line.
        if len(line) > 20:
            sep = line[4]
            if sep == "-":
                if line[10] == "T":
                    if _PLUGIN_START.match(line):
                        return PLUGIN_TEXT
                    return DIFY_TEXT if _DIFY_START.match(line) else None
                if _DIFY_START.match(line):
                    return DIFY_TEXT
                return POSTGRES if _POSTGRES_START.match(line) else None
            if sep == "/":
                match = _SLASH_START.match(line)
                if match is None:
                    return None
                if match.group(1):
                    return NGINX_ERROR
                if match.group(2) and not match.group(3):
                    return GORM
                return GO_LOG
        if _NGINX_ACCESS_START.match(line):
            return NGINX_ACCESS
        if _SQUID_START.match(line):
            return SQUID
        return REDIS if _REDIS_START.match(line) else None
    if first == "[":
        return _classify_bracket(line)
    if first.isspace():
        if not line.strip():
            return BLANK
        return CELERY_BANNER if _BANNER_START.match(line) else None
    if first == "-":
        return CELERY_BANNER if _BANNER_START.match(line) else None
    if first == "T":
        return TRACEBACK if line.startswith(TRACEBACK_HEADER) else None
    if first in "abcdefABCDEF:" and _NGINX_ACCESS_START.match(line):
        return NGINX_ACCESS
    return None


def _classify_bracket(line: str) -> str | None:
    second = line[1:2]
    if second == "G":
        return GIN if line.startswith(("[GIN] ", "[GIN-debug] ")) else None
    if second == "o":
        return LLM_DEBUG if line.startswith(_LLM_HEADERS) else None
    if "0" <= second <= "9":
        match = _BRACKET_DATE_START.match(line)
        if match is not None:
            return GUNICORN if match.group(1) else CELERY_TEXT
    return None
