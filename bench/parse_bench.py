"""Parse-stage throughput: group + parse + extract over `bench.corpus`, on one core, no I/O.

    python -m bench.parse_bench [--lines N] [--repeat R] [--profile]

Prints lines/s and records/s (best of R runs), a machine yardstick (`sum(range(1000))`) to compare machines by,
and, with --profile, the top cProfile entries. Time is the
process's CPU time, which is the one-core figure and is not inflated when a busy machine deschedules the
benchmark; wall time is printed too. Docker timestamps are synthesised 50 µs apart, so records close on the
next record start as they do under load.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
import timeit
from collections.abc import Sequence

from bench.corpus import dify_corpus
from logpipe.config import PipelineConfig
from logpipe.parsers import Parser

Item = tuple[int, int, tuple[int, int], str, float]


def prepare(lines: int, seed: int) -> tuple[list[Item], list[tuple[str, str]]]:
    """The corpus as (lane index, Docker ts, position, line, clock), and the lanes as (service, stream).

    Lane lookup and timestamps are prepared here, outside the timing: they belong to the source, not parsing.
    """
    lanes: dict[tuple[str, str], int] = {}
    items: list[Item] = []
    ts = 1_781_260_000 * 10**9
    for service, stream, line in dify_corpus(lines, seed):
        ts += 50_000
        lane = lanes.setdefault((service, stream), len(lanes))
        items.append((lane, ts, (ts, 1), line, ts / 1e9))
    return items, list(lanes)


def run(items: Sequence[Item], lanes: Sequence[tuple[str, str]], parser: Parser) -> int:
    """Group and parse every line, one grouper per lane; return the number of events."""
    groupers = [parser.grouper() for _ in lanes]
    origins = [(service, f"docker-{service}-1", stream) for service, stream in lanes]
    parse = parser.parse
    events = 0
    for lane, ts, pos, line, now in items:
        for record in groupers[lane].add(ts, pos, line, now):
            parse(record, *origins[lane])
            events += 1
    for lane, grouper in enumerate(groupers):
        record = grouper.flush()
        if record is not None:
            parse(record, *origins[lane])
            events += 1
    return events


def main(argv: Sequence[str] | None = None) -> None:
    args = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    args.add_argument("--lines", type=int, default=300_000)
    args.add_argument("--repeat", type=int, default=3)
    args.add_argument("--seed", type=int, default=1)
    args.add_argument("--profile", action="store_true", help="print the top cProfile entries of one run")
    options = args.parse_args(argv)

    items, lanes = prepare(options.lines, options.seed)
    parser = Parser(PipelineConfig())
    best = best_wall = float("inf")
    events = 0
    for _ in range(options.repeat):
        start, start_wall = time.process_time(), time.perf_counter()
        events = run(items, lanes, parser)
        best = min(best, time.process_time() - start)
        best_wall = min(best_wall, time.perf_counter() - start_wall)
    print(f"lines:   {len(items):>10,}   records: {events:,}")
    rate = f"lines/s: {len(items) / best:>10,.0f}   records/s: {events / best:,.0f}"
    print(f"{rate}   (CPU time, best of {options.repeat})")
    print(f"lines/s: {len(items) / best_wall:>10,.0f}   (wall time)")
    # A machine yardstick printed with every result, so figures from different machines can be compared.
    reference = min(timeit.repeat("sum(range(1000))", number=2000, repeat=7)) / 2000 * 1e6
    print(f"machine: sum(range(1000)) takes {reference:.1f} µs here")

    if options.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        run(items, lanes, parser)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
