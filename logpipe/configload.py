"""Loading configuration: defaults, then a TOML file, then environment variables, validated all at once.

`load_config` is the one entry point. It never exits the process: it raises `ConfigError` carrying every
problem found, each with its dotted path (`loki.batch_max_bytes: must be > 0, got -1`).
"""

from __future__ import annotations

import math
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

from logpipe.config import Config

T = TypeVar("T")

DEFAULT_CONFIG_PATH = Path("config/logpipe.toml")

#: Environment variables that do not follow the LOGPIPE_<SECTION>_<KEY> pattern.
SPECIAL_ENV = {
    "DOCKER_HOST": "docker.host",
    "LOGPIPE_COMPOSE_PROJECT": "docker.compose_project",
    "LOGPIPE_INCLUDE": "docker.include",
    "LOGPIPE_EXCLUDE": "docker.exclude",
    "LOGPIPE_SINK": "sink",
}
#: LOGPIPE_ variables that are not settings.
NON_SETTING_ENV = frozenset({"LOGPIPE_CONFIG"})


class ConfigError(Exception):
    """A configuration that cannot be used; `problems` lists every reason, each with its dotted path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def env_settings() -> dict[str, str]:
    """Every environment variable name that sets a scalar setting, mapped to its dotted path."""
    names = dict(SPECIAL_ENV)
    hints = typing.get_type_hints(Config)
    for section in fields(Config):
        section_type = hints[section.name]
        if not is_dataclass(section_type):
            continue
        section_hints = typing.get_type_hints(section_type)
        for f in fields(section_type):
            if _is_scalar(section_hints[f.name]):
                names[f"LOGPIPE_{section.name.upper()}_{f.name.upper()}"] = f"{section.name}.{f.name}"
    return names


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> tuple[Config, Path | None]:
    """Build the configuration from `path` (or the default file when present) and `env`.

    Returns the config and the file actually read (None when running on defaults). Raises `ConfigError`.
    """
    problems: list[str] = []
    data: dict[str, Any] = {}
    used: Path | None = None
    if path is None and DEFAULT_CONFIG_PATH.is_file():
        path = DEFAULT_CONFIG_PATH
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
            used = path
        except FileNotFoundError:
            problems.append(f"{path}: no such config file")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{path}: cannot read: {exc}")
        except tomllib.TOMLDecodeError as exc:
            problems.append(f"{path}: not valid TOML: {exc}")
    sources: dict[str, str] = {}
    _apply_env(data, os_environ() if env is None else env, sources, problems)
    config = build(Config, data, "", problems, sources)
    if problems:
        raise ConfigError([_name_source(problem, sources) for problem in problems])
    return config, used


def os_environ() -> Mapping[str, str]:
    return os.environ


def _apply_env(data: dict[str, Any], env: Mapping[str, str], sources: dict[str, str], problems: list[str]) -> None:
    known = env_settings()
    for name, value in env.items():
        if name not in known:
            if name.startswith("LOGPIPE_") and name not in NON_SETTING_ENV:
                problems.append(f"{name}: unknown setting in the environment")
            continue
        dotted = known[name]
        target = data
        *parents, key = dotted.split(".")
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                break
        else:
            target[key] = _EnvValue(value)
            sources[dotted] = name


def _name_source(problem: str, sources: Mapping[str, str]) -> str:
    """Say which environment variable a bad value came from, when it came from one."""
    dotted, sep, rest = problem.partition(": ")
    if sep and dotted in sources:
        return f"{dotted} (from {sources[dotted]}): {rest}"
    return problem


class _EnvValue(str):
    """A raw string from the environment, coerced to the field's type when the config is built."""


def _is_scalar(tp: Any) -> bool:
    if tp in (str, int, float, bool):
        return True
    return typing.get_origin(tp) is tuple and typing.get_args(tp) == (str, ...)


def build(cls: type[T], data: Any, path: str, problems: list[str], sources: Mapping[str, str] | None = None) -> T:
    """Build dataclass `cls` from a TOML table, collecting problems instead of raising."""
    sources = sources or {}
    if not isinstance(data, dict):
        problems.append(f"{path.rstrip('.') or '(top level)'}: must be a table")
        data = {}
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in names:
            problems.append(f"{path}{key}: unknown key")
    kwargs: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name in data:
            where = f"{path}{f.name}"
            label = f"{where} (from {sources[where]})" if where in sources else where
            before = len(problems)
            value = _coerce(hints[f.name], data[f.name], label, where + ".", problems, sources)
            if len(problems) == before:
                kwargs[f.name] = value  # a field that failed keeps its default, so checks see sane types
    try:
        obj = cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - only reachable through a schema bug
        problems.append(f"{path or '(top level)'}: {exc}")
        obj = cls()
    check = getattr(obj, "check", None)
    if check is not None:
        check(path, problems)
    return obj


def _coerce(tp: Any, value: Any, label: str, path: str, problems: list[str], sources: Mapping[str, str]) -> Any:
    origin = typing.get_origin(tp)
    if is_dataclass(tp):
        return build(typing.cast(type, tp), value, path, problems, sources)
    if isinstance(value, _EnvValue):
        before = len(problems)
        value = _from_env_string(tp, str(value), label, problems)
        if len(problems) > before:
            return None
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if math.isfinite(value):
                return float(value)
            problems.append(f"{label}: must be a finite number, got {value!r}")
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin is tuple:
        (item_tp, _) = typing.get_args(tp)
        if isinstance(value, list):
            return tuple(
                _coerce(item_tp, v, f"{label}[{i}]", f"{path[:-1]}[{i}].", problems, sources)
                for i, v in enumerate(value)
            )
    elif origin in (Mapping, dict) or tp is Mapping:
        _, value_tp = typing.get_args(tp)
        if isinstance(value, dict):
            return {
                str(k): _coerce(value_tp, v, f"{label}.{k}", f"{path}{k}.", problems, sources) for k, v in value.items()
            }
    problems.append(f"{label}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    return value


def _from_env_string(tp: Any, raw: str, label: str, problems: list[str]) -> Any:
    try:
        if tp is bool:
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if tp is int:
            return int(raw)
        if tp is float:
            return float(raw)
        if typing.get_origin(tp) is tuple:
            return [raw] if raw else []
    except ValueError:
        problems.append(f"{label}: expected {_type_name(tp)}, got {raw!r}")
    return raw


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false"}.get(
            tp.__name__, tp.__name__
        )
    origin = typing.get_origin(tp)
    if origin is tuple:
        return "a list"
    if origin in (Mapping, dict, types.MappingProxyType):
        return "a table"
    return str(tp)
