"""The parse stage's entry point: a grouped `RawRecord` in, one `Event` out, never an exception.

`Parser.parse` builds the shipped text (ANSI codes stripped or kept, by configuration), matches on the stripped
text, hands the record to the reader of its format, and falls back to a `raw` event when the record cannot be
read. JSON lines are decoded once here (orjson, then the standard library for what orjson refuses, such as
lone surrogates or numbers beyond a double) and refined to their family by their keys.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

import orjson
from orjson import JSONDecodeError
from orjson import loads as _loads

from logpipe.config import PipelineConfig
from logpipe.event import Event
from logpipe.parsers import access, detect, dify, llm, others, plugin
from logpipe.parsers.detect import ANSI as _ANSI
from logpipe.parsers.errors import add_errors
from logpipe.parsers.grouping import Grouper, RawRecord
from logpipe.parsers.mapping import JsonMapper

_TEXT_READERS: dict[str, Callable[[Event, str], bool]] = {
    detect.DIFY_TEXT: dify.parse_dify_text,
    detect.CELERY_TEXT: dify.parse_celery_text,
    detect.GUNICORN: dify.parse_gunicorn,
    detect.CELERY_BANNER: dify.parse_banner,
    detect.PLUGIN_TEXT: plugin.parse_plugin_text,
    detect.GORM: plugin.parse_gorm,
    detect.GO_LOG: plugin.parse_go_log,
    detect.GIN: access.parse_gin,
    detect.NGINX_ACCESS: access.parse_nginx_access,
    detect.NGINX_ERROR: access.parse_nginx_error,
    detect.SQUID: access.parse_squid,
    detect.POSTGRES: others.parse_postgres,
    detect.REDIS: others.parse_redis,
    detect.LLM_DEBUG: llm.parse_llm_debug,
}

_JSON_READERS: dict[str, Callable[[Event, dict[str, Any], str], None]] = {
    detect.DIFY_JSON: dify.parse_dify_json,
    detect.PLUGIN_JSON: plugin.parse_plugin_json,
    detect.SANDBOX_JSON: others.parse_sandbox_json,
    detect.WEAVIATE_JSON: others.parse_weaviate_json,
    detect.JSON: others.parse_other_json,
}


def json_family(obj: dict[str, Any]) -> str:
    """Which service's JSON `obj` is, by its keys (the `service` field cannot tell api from worker)."""
    service = obj.get("service")
    if service == "langgenius/dify" and "severity" in obj:
        return detect.DIFY_JSON
    if service == "dify-plugin-daemon":
        return detect.PLUGIN_JSON
    if "severity" in obj and ("ts" in obj and "caller" in obj):
        return detect.DIFY_JSON
    level = obj.get("level")
    if isinstance(level, str) and "msg" in obj and "time" in obj:
        # slog prints levels in upper case, logrus (weaviate) in lower case.
        return detect.SANDBOX_JSON if level[:1].isupper() else detect.WEAVIATE_JSON
    return detect.JSON


def decode_json(line: str) -> dict[str, Any] | None:
    """The JSON object `line` holds, or None when it is not one."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        obj = _stdlib_loads(line)
    return obj if isinstance(obj, dict) else None


def _stdlib_loads(line: str) -> Any:
    """What orjson refuses but the standard library reads (lone surrogates, numbers beyond a double); None
    when neither can."""
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        return None


class Parser:
    """Builds groupers and parses their records; one per pipeline (rebuilt on reload with the config).

    `on_parse_error(family)` is called when a record looks like a format but cannot be read (a line starting
    with `{` that is not a JSON object calls it with `json`); the record is then shipped as `raw`.
    """

    __slots__ = ("_config", "_mapper", "_on_parse_error", "_strip")

    def __init__(self, config: PipelineConfig, on_parse_error: Callable[[str], None] | None = None) -> None:
        self._config = config
        self._on_parse_error = on_parse_error
        self._strip = config.strip_ansi
        self._mapper = JsonMapper(config.json_mappings) if config.json_mappings else None

    def grouper(self) -> Grouper:
        """A new grouper for one lane (one container's stdout, or its stderr)."""
        config = self._config
        return Grouper(config.group_idle_secs, config.group_max_lines, config.group_max_bytes)

    def parse(self, record: RawRecord, service: str, container: str, stream: str) -> Event:
        """One `Event` for `record`: text, timestamp, origin, format, level and every field found.

        Never raises: a record that cannot be read becomes `format="raw"`, `level="unknown"`, text kept.
        """
        lines = record.lines
        count = len(lines)
        text = lines[0] if count == 1 else "\n".join(lines)
        clean = _ANSI.sub("", text) if "\x1b" in text else text
        kind = record.kind
        event = Event(record.ts_ns, clean if self._strip else text, service, container, stream, count, record.capped)
        try:
            if kind == detect.JSON:  # first: JSON-mode Dify prints nothing else
                try:
                    obj: Any = _loads(clean)
                except JSONDecodeError:
                    obj = _stdlib_loads(clean)
                if type(obj) is dict:
                    family = json_family(obj)
                    event.format = family
                    _JSON_READERS[family](event, obj, clean)
                    if self._mapper is not None:
                        self._mapper.apply(event, obj, service)
                    return event
            else:
                reader = _TEXT_READERS.get(kind)
                if reader is not None:
                    event.format = kind
                    if reader(event, clean):
                        return event
                elif kind == detect.TRACEBACK:
                    event.format = kind
                    event.level = "error"
                    add_errors(event, clean)
                    return event
        except Exception:
            pass  # a reader bug must cost one record's fields, never the record
        if kind not in (detect.RAW, detect.TRACEBACK) and self._on_parse_error is not None:
            self._on_parse_error(kind)
        # Start again from a clean event: nothing a failed reader set may leak into the raw record.
        return _raw(Event(record.ts_ns, event.text, service, container, stream, count, record.capped), clean)


def _raw(event: Event, clean: str) -> Event:
    """A record no reader understood: kept as is, with whatever errors and ids it plainly shows."""
    event.format = detect.RAW
    event.level = "unknown"
    with contextlib.suppress(Exception):  # raw is the last resort: it must not fail
        add_errors(event, clean)
    return event
