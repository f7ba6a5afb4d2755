"""The checkpoint: cursors and intents survive a restart, writes are atomic, bad files are set aside."""

from __future__ import annotations

from pathlib import Path

from logpipe.checkpoint import Checkpoint, Intent, Probe
from logpipe.sources.engine import ContainerInfo


def info(cid: str = "c1", name: str = "docker-api-1") -> ContainerInfo:
    return ContainerInfo(id=cid, name=name, service="api", project="docker", tty=False, running=True, labels={})


def intent(n: int, advances: tuple = (("c1", "stdout", (50, 1)),)) -> Intent:
    return Intent(n, 1234.5, advances, (Probe({"service": "api"}, 50, "abc"),))


def test_cursors_and_intents_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "state" / "checkpoint.json"
    cp = Checkpoint(path)
    cp.follow(info(), origin_ns=7)
    cp.advance([("c1", "stdout", (100, 2)), ("c1", "stderr", (90, 1))])
    cp.begin(intent(3))  # begin writes at once
    again = Checkpoint(path)
    again.load()
    resume = again.resume("c1")
    assert resume is not None
    assert resume.origin_ns == 7
    assert resume.positions == {"stdout": (100, 2), "stderr": (90, 1)}
    assert again.intents() == [intent(3)]


def test_cursors_only_move_forward(tmp_path: Path) -> None:
    cp = Checkpoint(tmp_path / "cp.json")
    cp.follow(info(), 0)
    cp.advance([("c1", "stdout", (100, 2))])
    cp.advance([("c1", "stdout", (100, 1))])
    assert cp.position("c1", "stdout") == (100, 2)


def test_acknowledging_an_intent_removes_it_and_advances(tmp_path: Path) -> None:
    cp = Checkpoint(tmp_path / "cp.json")
    cp.follow(info(), 0)
    cp.begin(intent(1))
    cp.advance(intent(1).advances, intent_id=1)
    cp.flush()
    loaded = Checkpoint(tmp_path / "cp.json")
    loaded.load()
    assert loaded.intents() == []
    assert loaded.position("c1", "stdout") == (50, 1)


def test_abandon_is_written_at_once(tmp_path: Path) -> None:
    cp = Checkpoint(tmp_path / "cp.json")
    cp.begin(intent(1))
    cp.abandon(1)
    loaded = Checkpoint(tmp_path / "cp.json")
    loaded.load()
    assert loaded.intents() == []


def test_destroyed_container_is_forgotten_once_drained(tmp_path: Path) -> None:
    cp = Checkpoint(tmp_path / "cp.json")
    pending = {"c1"}
    cp.drained = lambda cid: cid not in pending
    cp.follow(info(), 0)
    cp.destroyed("c1")
    cp.flush()
    assert cp.resume("c1") is not None  # lines still waiting for Loki
    pending.clear()
    cp.destroyed("c1")
    cp.flush()
    assert cp.resume("c1") is None


def test_corrupt_file_is_set_aside_not_deleted(tmp_path: Path) -> None:
    path = tmp_path / "cp.json"
    path.write_bytes(b'{"version": 1, "containers": {"c1": {"na')
    cp = Checkpoint(path)
    cp.load()
    assert cp.known() == []
    assert (tmp_path / "cp.corrupt").read_bytes().startswith(b'{"version"')


def test_write_is_atomic_and_leaves_no_temp_file(tmp_path: Path) -> None:
    cp = Checkpoint(tmp_path / "cp.json")
    cp.follow(info(), 0)
    cp.flush()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cp.json"]


def test_refused_write_on_a_full_disk_is_reported_and_retried(tmp_path: Path) -> None:
    errors: list[OSError] = []
    target = tmp_path / "not-a-dir"
    target.write_text("a file where the state directory should be")
    cp = Checkpoint(target / "cp.json", errors.append)
    cp.follow(info(), 0)
    cp.flush()
    assert errors  # reported
    target.unlink()
    cp.flush()  # still dirty: written once the disk accepts it
    assert (target / "cp.json").exists()
