"""Dify's LLM debug blocks (`LOG_LEVEL=DEBUG`): the only place Dify's stdout carries model names and tokens.

Each model call prints raw multi-line blocks with no timestamp, coloured: `[on_llm_before_invoke]` (Model,
Parameters, Prompt messages), `[on_llm_after_invoke]` (Content, Model, Usage, System Fingerprint) and
`[on_llm_invoke_error]` (followed by a separate exception record). The `Usage:` line is a pydantic repr:
`prompt_tokens=812 ... total_tokens=908 total_price=Decimal('0.0001794') currency='USD' latency=1.912 ...`.
"""

from __future__ import annotations

import re

from logpipe.event import Event
from logpipe.parsers.errors import add_errors
from logpipe.parsers.numbers import to_float, to_int

_HEADER = re.compile(r"\[on_llm_(before_invoke|after_invoke|invoke_error)\]")
_USAGE_PAIR = re.compile(
    r"\b(prompt_tokens|completion_tokens|total_tokens|total_price|currency|latency)="
    r"(?:Decimal\('([^']*)'\)|'([^']*)'|([^\s,)]+))"
)
_INT_FIELDS = frozenset({"prompt_tokens", "completion_tokens", "total_tokens"})
_FLOAT_FIELDS = {"total_price": "cost", "latency": "llm_latency_seconds"}


def _usage(event: Event, line: str) -> None:
    for key, decimal, quoted, bare in _USAGE_PAIR.findall(line):
        value = decimal or quoted or bare
        if key == "currency":
            event.currency = value or None
        elif key in _INT_FIELDS:
            count = to_int(value)
            if count is not None and count >= 0:
                setattr(event, key, count)
        else:
            number = to_float(value)
            if number is not None:
                setattr(event, _FLOAT_FIELDS[key], number)


def parse_llm_debug(event: Event, text: str) -> bool:
    """One block: `message` names its stage; `model` and the `Usage:` fields are read where present.

    Before/after blocks are debug records (they only exist at DEBUG); an error block is an error record. The
    prompt and completion text is never searched for errors or timeouts: it is user content.
    """
    lines = text.split("\n")
    match = _HEADER.match(lines[0])
    if match is None:
        return False
    stage = match.group(1)
    event.message = f"on_llm_{stage}"
    if stage == "invoke_error":
        event.level = "error"
        add_errors(event, text)
    else:
        event.level = "debug"
    # before: Model is the first field; after: it follows the (free-text) Content, so read the last one.
    model_lines = [line for line in lines[1:] if line.startswith("Model: ")]
    if model_lines:
        model = (model_lines[0] if stage == "before_invoke" else model_lines[-1])[7:].strip()
        event.model = model or None
    for line in lines[1:]:
        if line.startswith("Usage: "):
            _usage(event, line)
    return True
