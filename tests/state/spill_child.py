"""Spills batches in a loop until killed, as the Loki sink does when Loki is down: batch i advances the cursor of
container c1 to (i, 1). After each spill returns it prints `spilled <i>` (so the parent knows it is durable)."""

from __future__ import annotations

import sys
from pathlib import Path

from logpipe.state import State

state = State(Path(sys.argv[1]), spool_max_bytes=1 << 40, fsync=True)
state.open()
state.checkpoint.follow("c1", "docker-api-1", 0)
state.checkpoint.commit()
start = (state.checkpoint.position("c1", "stdout") or (0, 0))[0]
for i in range(start + 1, start + 100_000):
    state.spill(i.to_bytes(8, "big") * 200, 1, [("c1", "stdout", (i, 1))])
    print(f"spilled {i}", flush=True)
