"""A state directory opened for each test, and a way to open it again as the next start would."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from logpipe.state import State, StateFull

OpenState = Callable[..., State]


@pytest.fixture
def open_state(tmp_path: Path) -> Iterator[OpenState]:
    opened: list[State] = []

    def make(directory: Path | None = None, **kwargs: object) -> State:
        kwargs.setdefault("spool_max_bytes", 64 << 20)
        state = State(directory or tmp_path / "state", **kwargs)  # type: ignore[arg-type]
        state.open()
        opened.append(state)
        return state

    yield make
    for state in opened:
        state.close()


@pytest.fixture
def tiny_tmpfs(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A small tmpfs (1 MiB, or the size a `tmpfs_size` marker gives). Skips (fails when CI=true) if it cannot be
    mounted."""
    marker = request.node.get_closest_marker("tmpfs_size")
    size = marker.args[0] if marker else "1m"
    mountpoint = tmp_path / "tmpfs"
    mountpoint.mkdir()
    reason = ""
    if os.geteuid() != 0:
        reason = "mounting a tmpfs needs root"
    else:
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)], check=False, capture_output=True
        )
        reason = f"mount -t tmpfs failed: {result.stderr.decode().strip()}" if result.returncode else ""
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"ENOSPC test cannot run: {reason}")
        pytest.skip(f"ENOSPC test cannot run: {reason}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=True)


def fill(directory: Path) -> Path:
    """Fill the disk under `directory` to the last byte (again, if called again); return the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (1 << 16, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, bytes(size))
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def replay(state: State) -> list[tuple[int, bytes]]:
    """Every record in the spool, oldest first, by walking next_after."""
    out: list[tuple[int, bytes]] = []
    rid = None
    while (found := state.spool.next_after(rid)) is not None:
        out.append(found)
        rid = found[0]
    return out


def spill_until_full(state: State, size: int = 64 << 10) -> list[int]:
    """Spill records of `size` random bytes until the spool refuses one for the disk's sake; their ids."""
    ids: list[int] = []
    with pytest.raises(StateFull):
        for _ in range(200):
            ids.append(state.spill(os.urandom(size), 1, []))
    assert len(ids) > 10
    return ids
