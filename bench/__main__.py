"""`python -m bench [--short] [--only pipeline,end_to_end] [--cases a,b] [--repeat N] [--out FILE]`: benchmarks.

Figures, not pass/fail tests: a table on stdout and a JSON file (machine cores, Python version, commit).
`--short` runs a seconds-long version in CI so the suite cannot rot; the full run is for a quiet machine.
`--repeat N` runs every case N times and reports each figure as a range (min..max). The headline is
`end_to_end/json_backlog`: Dify's JSON-mode lines, a fresh start on a 300,000-line backlog, lines per CPU-second
of the whole logpipe process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import e2e, pipeline


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def ranges(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each numeric figure of repeated runs as "min..max"; other values from the first run."""
    out: dict[str, Any] = {}
    for case, first in runs[0].items():
        if not isinstance(first, dict):
            out[case] = first
            continue
        merged: dict[str, Any] = {}
        for key, value in first.items():
            values = [run[case][key] for run in runs if isinstance(run.get(case), dict) and key in run[case]]
            if all(isinstance(v, int | float) for v in values) and len(set(values)) > 1:
                merged[key] = f"{min(values)}..{max(values)}"
            else:
                merged[key] = value
        out[case] = merged
    return out


def table(results: dict[str, Any]) -> str:
    rows = []
    for suite, cases in results["suites"].items():
        for case, figures in cases.items():
            if isinstance(figures, dict):
                rows.append((f"{suite}/{case}", ", ".join(f"{k}={v}" for k, v in figures.items())))
            else:
                rows.append((f"{suite}/{case}", str(figures)))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {figures}" for name, figures in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--short", action="store_true", help="a seconds-long run (CI)")
    parser.add_argument("--only", default="pipeline,end_to_end", help="comma-separated suites")
    parser.add_argument("--cases", default="", help="comma-separated cases of the suites (default: all)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case; figures become ranges")
    parser.add_argument("--out", type=Path, help="JSON results file (default bench/results/<time>.json)")
    args = parser.parse_args(argv)
    only = [c for c in args.cases.split(",") if c] or None
    suites = {"pipeline": pipeline.bench, "end_to_end": e2e.bench}
    results: dict[str, Any] = {
        "commit": commit(),
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "mode": "short" if args.short else "full",
        "suites": {},
    }
    for name in args.only.split(","):
        print(f"running {name}...", file=sys.stderr, flush=True)
        runs = [suites[name](args.short, only) for _ in range(args.repeat)]
        results["suites"][name] = ranges(runs) if args.repeat > 1 else runs[0]
        results.setdefault("runs", {})[name] = runs
    out = args.out or Path("bench/results") / time.strftime("%Y%m%dT%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"logpipe {results['commit']}, Python {results['python']}, {results['cores']} cores, {results['mode']}")
    print(table(results))
    print(f"(written to {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
