"""Go's text/template, the subset promtail/promtail.yaml's `template` stages use, so tests can evaluate them.

Covers text with `{{- -}}` trimming, `if` / `else if` / `else` / `end`, `$var :=`, fields (`.Value`), string
literals, parenthesised calls, and the functions in `FUNCTIONS` (Go's builtins and the sprig and Promtail
functions the config calls). Anything else raises `Unsupported`, so a config that starts using more of the
language fails the tests until this model grows, instead of being evaluated wrongly.

Semantics as in Go 1.18+: `and`/`or` short-circuit and return an argument; a missing map key is nil, false in
`if`, printed as `<no value>`, and an error when passed to a function that wants a string (Promtail's template
stage then leaves the extracted map unchanged: clients/pkg/logentry/stages/template.go).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class Unsupported(Exception):
    """The template uses something this model does not implement."""


class TemplateError(Exception):
    """Execution failed where Go's text/template would return an error."""


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise TemplateError(f"invalid value; expected string, got {value!r}")
    return value


def _truthy(value: Any) -> bool:
    return value not in (None, "", False, 0)


def _eq(first: Any, *others: Any) -> bool:
    if first is None or any(o is None for o in others):
        raise TemplateError("incompatible types for comparison")
    return any(first == other for other in others)


def _to_string(value: Any) -> str:
    # sprig's toString: fmt.Sprintf("%v", v) for anything that is not already a string.
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "not": lambda a: not _truthy(a),
    "ToLower": lambda s: _string(s).lower(),
    "ToUpper": lambda s: _string(s).upper(),
    "TrimSpace": lambda s: _string(s).strip(),
    "toString": _to_string,
    # sprig takes the prefix first: `hasPrefix "debug" $l`.
    "hasPrefix": lambda prefix, s: _string(s).startswith(_string(prefix)),
    "hasSuffix": lambda suffix, s: _string(s).endswith(_string(suffix)),
    "contains": lambda sub, s: _string(sub) in _string(s),
}

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_TOKEN = re.compile(r'\s*(?:(\()|(\))|("(?:[^"\\]|\\.)*")|(\$\w*)|(\.\w*)|([A-Za-z_]\w*)|(:=)|(\S))')


@dataclass
class _If:
    branches: list[tuple[list[Any], list[Any]]] = field(default_factory=list)  # (condition, body)
    otherwise: list[Any] = field(default_factory=list)


@dataclass
class _Assign:
    name: str
    expr: list[Any]


@dataclass
class _Print:
    expr: list[Any]


def _tokens(text: str) -> list[tuple[str, str]]:
    out = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or not match.group(0).strip():
            break
        kinds = ("(", ")", "str", "var", "field", "ident", ":=", "other")
        kind = next(k for k, g in zip(kinds, match.groups(), strict=True) if g is not None)
        value = match.group(match.lastindex or 0)
        if kind == "other":
            raise Unsupported(f"token {value!r} in {text!r}")
        out.append((kind, value))
        pos = match.end()
    return out


def _parse_expr(tokens: list[tuple[str, str]]) -> list[Any]:
    """A command: [function, args...] or [operand]; operands are ("field", name), ("var", name), ("str", s), or a
    nested command from parentheses."""
    items: list[Any] = []
    stack: list[list[Any]] = [items]
    for kind, value in tokens:
        if kind == "(":
            nested: list[Any] = []
            stack[-1].append(("cmd", nested))
            stack.append(nested)
        elif kind == ")":
            stack.pop()
        elif kind == "str":
            stack[-1].append(("str", bytes(value[1:-1], "utf-8").decode("unicode_escape")))
        elif kind in ("field", "var"):
            stack[-1].append((kind, value))
        elif kind == "ident":
            if value not in FUNCTIONS and value not in ("and", "or"):
                raise Unsupported(f"function {value}")
            stack[-1].append(("fn", value))
        else:
            raise Unsupported(f"{value!r}")
    return items


def parse(template: str) -> list[Any]:
    """The template as a tree of text, print, assign and if nodes."""
    root: list[Any] = []
    stack: list[tuple[list[Any], _If | None]] = [(root, None)]
    pos = 0
    pending_trim = False
    for match in _ACTION.finditer(template):
        text = template[pos : match.start()]
        if pending_trim:
            text = text.lstrip()
        if match.group(1):
            text = text.rstrip()
        if text:
            stack[-1][0].append(text)
        pending_trim = bool(match.group(3))
        pos = match.end()
        body = match.group(2).strip()
        if body.startswith("/*"):
            continue
        tokens = _tokens(body)
        head = tokens[0][1] if tokens and tokens[0][0] == "ident" else None
        if head == "if":
            node = _If()
            node.branches.append((_parse_expr(tokens[1:]), []))
            stack[-1][0].append(node)
            stack.append((node.branches[-1][1], node))
        elif head == "else":
            _, node = stack.pop()
            if node is None:
                raise Unsupported("else outside if")
            if len(tokens) > 1 and tokens[1] == ("ident", "if"):
                node.branches.append((_parse_expr(tokens[2:]), []))
                stack.append((node.branches[-1][1], node))
            else:
                stack.append((node.otherwise, node))
        elif head == "end":
            stack.pop()
        elif head in ("range", "with", "define", "template", "block"):
            raise Unsupported(head)
        elif len(tokens) > 2 and tokens[0][0] == "var" and tokens[1][0] == ":=":
            stack[-1][0].append(_Assign(tokens[0][1], _parse_expr(tokens[2:])))
        else:
            stack[-1][0].append(_Print(_parse_expr(tokens)))
    tail = template[pos:]
    if pending_trim:
        tail = tail.lstrip()
    if tail:
        stack[-1][0].append(tail)
    if len(stack) != 1:
        raise Unsupported("unterminated if")
    return root


def _operand(item: Any, data: dict[str, Any], variables: dict[str, Any]) -> Any:
    kind, value = item
    if kind == "str":
        return value
    if kind == "field":
        return data if value == "." else data.get(value[1:])
    if kind == "var":
        if value not in variables:
            raise Unsupported(f"undefined variable {value}")
        return variables[value]
    if kind == "cmd":
        return _command(value, data, variables)
    raise Unsupported(f"operand {item!r}")


def _command(items: list[Any], data: dict[str, Any], variables: dict[str, Any]) -> Any:
    if not items:
        raise Unsupported("empty command")
    if items[0][0] != "fn":
        if len(items) != 1:
            raise Unsupported(f"{items!r}")
        return _operand(items[0], data, variables)
    name, args = items[0][1], items[1:]
    if name in ("and", "or"):
        value: Any = None
        for arg in args:
            value = _operand(arg, data, variables)
            if _truthy(value) != (name == "and"):
                return value
        return value
    return FUNCTIONS[name](*(_operand(a, data, variables) for a in args))


def _render(nodes: list[Any], data: dict[str, Any], variables: dict[str, Any], out: list[str]) -> None:
    variables = dict(variables)  # a variable lives until the end of the control structure it is declared in
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, _Print):
            value = _command(node.expr, data, variables)
            out.append("<no value>" if value is None else _to_string(value))
        elif isinstance(node, _Assign):
            variables[node.name] = _command(node.expr, data, variables)
        else:
            for condition, body in node.branches:
                if _truthy(_command(condition, data, variables)):
                    _render(body, data, variables, out)
                    break
            else:
                _render(node.otherwise, data, variables, out)


def execute(template: str, data: dict[str, Any]) -> str:
    """The template's output for `data` (the template stage passes the extracted values as strings, plus
    `Value` and `Entry`); raises TemplateError where Go would fail."""
    out: list[str] = []
    _render(parse(template), data, {}, out)
    return "".join(out)


def fields(template: str) -> set[str]:
    """The `.name` fields a template reads."""
    names: set[str] = set()

    def walk(items: list[Any]) -> None:
        for item in items:
            if item[0] == "field" and item[1] != ".":
                names.add(item[1][1:])
            elif item[0] == "cmd":
                walk(item[1])

    def nodes(tree: list[Any]) -> None:
        for node in tree:
            if isinstance(node, (_Print, _Assign)):
                walk(node.expr)
            elif isinstance(node, _If):
                for condition, body in node.branches:
                    walk(condition)
                    nodes(body)
                nodes(node.otherwise)

    nodes(parse(template))
    return names
