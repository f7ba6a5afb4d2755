"""Tolerant number reading: anything that is not a sensible number is absent."""

from __future__ import annotations

import pytest

from logpipe.parsers.numbers import to_float, to_int


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, 1.0),
        (2.5, 2.5),
        ("2.5", 2.5),
        ("1e3", 1000.0),
        (" 7 ", 7.0),
        (True, None),
        (None, None),
        ("nan", None),
        ("inf", None),
        (float("nan"), None),
        (10**40, None),
        ("9" * 5000, None),
        ("x", None),
        ([1], None),
        ({"a": 1}, None),
    ],
)
def test_to_float(value: object, expected: float | None) -> None:
    assert to_float(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(812, 812), ("812", 812), ("812.0", 812), (812.5, None), ("-3", -3), (False, None), ("1e400", None), ("", None)],
)
def test_to_int(value: object, expected: int | None) -> None:
    assert to_int(value) == expected
