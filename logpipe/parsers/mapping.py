"""Operators' JSON mappings: their own JSON lines' fields (dotted paths) onto `Event` fields.

This is how token, model and latency metrics reach logpipe at INFO level, where Dify prints none: an app or a
gateway logs `{"event":"llm_call","model":"gpt-4o","usage":{"prompt_tokens":812}}` and a mapping says
`prompt_tokens = "usage.prompt_tokens"`. Mappings run after the built-in extraction and override it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from logpipe.config import JsonMapping
from logpipe.event import MAPPABLE_FIELDS, Event
from logpipe.parsers.numbers import to_float, to_int

_MISSING = object()
Path = tuple[str, ...]


def lookup(obj: dict[str, Any], dotted: str, parts: Path) -> Any:
    """The value at `dotted` (`usage.prompt_tokens`) in nested objects; a flat key spelled with dots also
    matches. `_MISSING` when absent."""
    value: Any = obj
    for part in parts:
        if not isinstance(value, dict):
            value = _MISSING
            break
        value = value.get(part, _MISSING)
        if value is _MISSING:
            break
    if value is _MISSING and len(parts) > 1:
        value = obj.get(dotted, _MISSING)
    return value


def as_text(value: Any) -> str:
    """A JSON value as the string a `match` entry compares with (`true`, `null`, `200`, `gpt-4o`)."""
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, bool):
        return orjson.dumps(value).decode()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    try:
        return orjson.dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError):
        return str(value)


def coerce(value: Any, kind: type) -> Any:
    """`value` as `kind` (int, float or str), numeric strings accepted; None when it cannot be."""
    if kind is str:
        if isinstance(value, str):
            return value
        number = to_float(value)  # numbers become text; bools, null, objects and arrays do not
        return (str(value) if type(value) is int else repr(number)) if number is not None else None
    if kind is int:
        return to_int(value.strip() if isinstance(value, str) else value)
    return to_float(value.strip() if isinstance(value, str) else value)


class JsonMapper:
    """Applies `PipelineConfig.json_mappings` to JSON-object records, in configuration order."""

    __slots__ = ("_mappings",)

    def __init__(self, mappings: Sequence[JsonMapping]) -> None:
        self._mappings = tuple(
            (
                frozenset(mapping.services),
                tuple((path, tuple(path.split(".")), expected) for path, expected in mapping.match.items()),
                tuple(
                    (name, path, tuple(path.split(".")), MAPPABLE_FIELDS[name])
                    for name, path in mapping.fields.items()
                    if name in MAPPABLE_FIELDS
                ),
            )
            for mapping in mappings
        )

    def __bool__(self) -> bool:
        return bool(self._mappings)

    def apply(self, event: Event, obj: dict[str, Any], service: str) -> None:
        """Set the mapped fields of every mapping whose `services` and `match` hold; skip uncoercible values."""
        for services, match, fields in self._mappings:
            if services and service not in services:
                continue
            if not all(_matches(lookup(obj, path, parts), expected) for path, parts, expected in match):
                continue
            for name, path, parts, kind in fields:
                value = lookup(obj, path, parts)
                if value is _MISSING:
                    continue
                coerced = coerce(value, kind)
                if coerced is not None:
                    setattr(event, name, coerced)


def _matches(value: Any, expected: str) -> bool:
    if value is _MISSING:
        return False
    return expected == "*" or as_text(value) == expected
