"""Validation helpers and constants shared by the configuration's sections."""

from __future__ import annotations

import re

MiB = 1024 * 1024
HOUR = 3600.0
DAY = 24 * HOUR
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")

Problems = list[str]

#: Field metadata of a setting held by a process-lifetime part: a reload that changes it is told to restart.
RESTART = {"restart": True}


def positive(
    problems: Problems, path: str, value: float, allow_zero: bool = False, maximum: float | None = None
) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        problems.append(f"{path}: must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    elif maximum is not None and value > maximum:
        problems.append(f"{path}: must be <= {maximum:g}, got {value}")


def regex(problems: Problems, path: str, pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        problems.append(f"{path}: invalid regex {pattern!r}: {exc}")


def one_of(problems: Problems, path: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        problems.append(f"{path}: must be one of {', '.join(allowed)}, got {value!r}")
