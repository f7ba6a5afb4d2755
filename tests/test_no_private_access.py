"""logpipe uses only the public API of its libraries: no `obj._name` on anything but its own `self`/`cls`.

A private attribute of the docker SDK, requests, urllib3 or http.client can be renamed in any release, and the
break would show up as a follower that silently reads nothing. mypy with the SDK's stubs catches most of these
on typed objects; this catches them everywhere, including on `Any`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "logpipe"

#: Underscored names that are public API all the same.
ALLOWED = {"os._exit"}  # documented: exit without cleanup, in a forked child or on a forced shutdown


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_accesses(source: str, filename: str = "<source>") -> list[str]:
    """Every `x._name` where `x` is not `self` or `cls`, `getattr(x, "_name")`, and `from lib import _name`."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            text = ast.unparse(node)
            if text not in ALLOWED:
                found.append(f"{filename}:{node.lineno}: {text}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _private(node.args[1].value)
        ):
            found.append(f"{filename}:{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.ImportFrom) and not (node.module or "").startswith("logpipe") and node.level == 0:
            names = [alias.name for alias in node.names if _private(alias.name)]
            found += [f"{filename}:{node.lineno}: from {node.module} import {name}" for name in names]
    return found


def test_logpipe_touches_no_private_attribute_of_another_object() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        found += private_accesses(path.read_text(), str(path.relative_to(PACKAGE.parent)))
    assert found == [], "private attributes of other objects (use a public API, or add to ALLOWED with a reason)"


@pytest.mark.parametrize(
    "source",
    [
        "fp = response.raw._fp",
        "sock = getattr(getattr(fp.fp, 'raw', None), '_sock', None)",
        "url = self._api._url('/containers/{0}/logs', cid)",
        "from docker.api.client import _raise_for_status",
        "hasattr(conn, '_sslobj')",
    ],
)
def test_the_check_sees_the_ways_private_attributes_were_reached(source: str) -> None:
    assert private_accesses(source)


@pytest.mark.parametrize(
    "source",
    ["self._lock = lock", "cls._registry[name] = x", "os._exit(1)", "x.__class__", "from logpipe.a import _helper"],
)
def test_own_state_and_public_names_pass(source: str) -> None:
    assert private_accesses(source) == []
