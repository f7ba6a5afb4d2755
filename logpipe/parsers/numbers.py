"""Tolerant number reading for every reader: a value that is not a sensible number is absent, never an error.

Log lines carry numbers as text (`latency_ms=2417`, `succeeded in 0.5s`, `Decimal('0.0001794')`) or as JSON
values. NaN, infinities, digit strings too long to be real, and bools never reach a metric.
"""

from __future__ import annotations

import math

_MAX_DIGITS = 30  # far beyond any real count or duration; Python refuses to convert > 4300 digits anyway
_TOO_BIG = 10**_MAX_DIGITS


def to_float(value: object) -> float | None:
    """`value` (int, float or numeric str) as a finite float, else None."""
    if isinstance(value, str):  # the usual case: text formats carry every number as text
        if len(value) > 2 * _MAX_DIGITS:
            return None
        try:
            number = float(value)
        except ValueError:
            return None
    elif isinstance(value, float):
        number = value
    elif isinstance(value, int) and not isinstance(value, bool):  # bool is an int, never a number in a log
        if abs(value) >= _TOO_BIG:
            return None
        number = float(value)
    else:
        return None
    return number if math.isfinite(number) else None


def to_int(value: object) -> int | None:
    """`value` as an int when it is a whole, finite number (`812`, `812.0`, `"812"`), else None."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= _MAX_DIGITS:
        return int(value)
    number = to_float(value)
    return int(number) if number is not None and number.is_integer() else None
