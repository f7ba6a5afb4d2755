"""`python -m bench [--short] [--only pipeline,end_to_end] [--out FILE]`: logpipe's benchmarks.

Figures, not pass/fail tests: a table on stdout and a JSON file (machine cores, Python version, commit).
`--short` runs a seconds-long version in CI so the suite cannot rot; the full run is for a quiet machine.
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
    parser.add_argument("--out", type=Path, help="JSON results file (default bench/results/<time>.json)")
    args = parser.parse_args(argv)
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
        results["suites"][name] = suites[name](args.short)
    out = args.out or Path("bench/results") / time.strftime("%Y%m%dT%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"logpipe {results['commit']}, Python {results['python']}, {results['cores']} cores, {results['mode']}")
    print(table(results))
    print(f"(written to {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
