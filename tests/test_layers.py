"""The import graph follows the data: no cycles, and no module imports a stage earlier in the flow.

Stages in the order a line travels: the Docker source, the parse stage (parsers, redaction, derived metrics, the
pipeline), the sinks, and the state (checkpoint and spool, where acknowledgements end). A module may import the
foundation (types and helpers every stage shares) and modules of its own or a later stage: the pipeline hands
entries to the lanes, a sink records acknowledgements in the state. It may not import an earlier stage: a sink
knows nothing of Docker, the state nothing of sinks. The process level (daemon, CLI, config loading, the config
watcher) wires everything together and may import anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "logpipe"

FOUNDATION = 0
PROCESS = 9
#: Stage of each top-level module or package under logpipe/, in flow order.
STAGES = {
    "__init__": FOUNDATION,
    "event": FOUNDATION,
    "config": FOUNDATION,
    "backoff": FOUNDATION,
    "budget": FOUNDATION,
    "ratelimit": FOUNDATION,
    "threads": FOUNDATION,
    "selflog": FOUNDATION,
    "telemetry": FOUNDATION,
    "sources": 1,
    "parsers": 2,
    "redact": 2,
    "metrics": 2,
    "shipping": 2,
    "pipeline": 2,
    "runner": 2,
    "sinks": 3,
    "state": 4,
    "configload": PROCESS,
    "watch": PROCESS,
    "daemon": PROCESS,
    "cli": PROCESS,
    "__main__": PROCESS,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def stage_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    assert top in STAGES, f"{module}: give its stage in tests/test_layers.py"
    return STAGES[top]


def imports() -> dict[str, set[str]]:
    known = imports_known()
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.startswith("logpipe"):
                    # `from logpipe.parsers import dify` imports the submodule, not (only) the package.
                    subs = {f"{node.module}.{alias.name}" for alias in node.names} & known
                    found |= subs or {node.module}
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names if alias.name.startswith("logpipe"))
        graph[name] = found
    return graph


def test_no_module_imports_an_earlier_stage() -> None:
    wrong = []
    for module, targets in imports().items():
        stage = stage_of(module)
        if stage == PROCESS:
            continue
        for target in targets:
            other = stage_of(target)
            if other != FOUNDATION and (other < stage or other == PROCESS):
                wrong.append(f"{module} (stage {stage}) imports {target} (stage {other})")
            if stage == FOUNDATION and other != FOUNDATION:
                wrong.append(f"{module} is foundation but imports {target}")
    assert wrong == []


def test_the_import_graph_has_no_cycles() -> None:
    graph = {module: {t for t in targets if t in imports_known()} for module, targets in imports().items()}
    visiting: set[str] = set()
    done: set[str] = set()
    cycles: list[str] = []

    def visit(module: str, path: list[str]) -> None:
        if module in done:
            return
        if module in visiting:
            cycles.append(" -> ".join([*path[path.index(module) :], module]))
            return
        visiting.add(module)
        for target in sorted(graph.get(module, ())):
            visit(target, [*path, module])
        visiting.discard(module)
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert cycles == []


def imports_known() -> set[str]:
    return {module_name(path) for path in PACKAGE.rglob("*.py")}


def test_no_sink_module_is_over_300_lines() -> None:
    long = {p.name: n for p in (PACKAGE / "sinks").glob("*.py") if (n := len(p.read_text().splitlines())) > 300}
    assert long == {}
