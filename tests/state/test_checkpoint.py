"""The checkpoint: cursors and intents survive a restart, writes are transactional, failures are retried."""

from __future__ import annotations

from pathlib import Path

from logpipe.state import Intent, Probe, State
from tests.state.conftest import OpenState, fill


def intent(n: int, advances: tuple = (("c1", "stdout", (50, 1)),)) -> Intent:
    return Intent(n, 1234.5, advances, (Probe({"service": "api"}, 50, "abc"),))


def test_cursors_and_intents_round_trip(open_state: OpenState) -> None:
    cp = open_state().checkpoint
    cp.follow("c1", "docker-api-1", origin_ns=7)
    cp.advance([("c1", "stdout", (100, 2)), ("c1", "stderr", (90, 1))])
    cp.begin(intent(3))  # begin writes at once, with what changed before it
    again = open_state().checkpoint
    resume = again.resume("c1")
    assert resume is not None
    assert resume.origin_ns == 7
    assert resume.positions == {"stdout": (100, 2), "stderr": (90, 1)}
    assert again.intents() == [intent(3)]


def test_cursors_only_move_forward(open_state: OpenState) -> None:
    cp = open_state().checkpoint
    cp.follow("c1", "docker-api-1", 0)
    cp.advance([("c1", "stdout", (100, 2))])
    cp.advance([("c1", "stdout", (100, 1))])
    assert cp.position("c1", "stdout") == (100, 2)


def test_acknowledging_an_intent_removes_it_and_advances(open_state: OpenState) -> None:
    cp = open_state().checkpoint
    cp.follow("c1", "docker-api-1", 0)
    cp.begin(intent(1))
    cp.advance(intent(1).advances, intent_id=1)
    cp.commit()
    loaded = open_state().checkpoint
    assert loaded.intents() == []
    assert loaded.position("c1", "stdout") == (50, 1)


def test_an_advance_is_not_on_disk_before_a_commit(open_state: OpenState) -> None:
    # What a crash between an acknowledgement and the next commit leaves: the intent, to be read back.
    cp = open_state().checkpoint
    cp.follow("c1", "docker-api-1", 0)
    cp.begin(intent(1))
    cp.advance(intent(1).advances, intent_id=1)
    after_crash = open_state().checkpoint
    assert after_crash.intents() == [intent(1)]
    assert after_crash.position("c1", "stdout") is None


def test_abandon_is_written_at_once(open_state: OpenState) -> None:
    cp = open_state().checkpoint
    cp.begin(intent(1))
    cp.abandon(1)
    assert open_state().checkpoint.intents() == []


def test_destroyed_container_is_forgotten_once_drained(open_state: OpenState) -> None:
    cp = open_state().checkpoint
    cp.follow("c1", "docker-api-1", 0)
    cp.destroyed("c1")
    cp.commit(pending={"c1"})
    assert cp.resume("c1") is not None  # lines still waiting for Loki
    cp.commit(pending=set())
    assert cp.resume("c1") is None
    assert open_state().checkpoint.known() == []


def test_an_unreadable_database_is_set_aside_not_deleted(tmp_path: Path, open_state: OpenState) -> None:
    directory = tmp_path / "state"
    directory.mkdir()
    (directory / "state.db").write_bytes(b"this is not an SQLite database" * 200)
    cp = open_state(directory).checkpoint
    assert cp.known() == []
    aside = [p for p in directory.iterdir() if p.name.startswith("state.db.corrupt-")]
    assert [p.read_bytes()[:30] for p in aside] == [b"this is not an SQLite database"]


def test_a_refused_write_is_reported_and_retried(tiny_tmpfs: Path) -> None:
    errors: list[Exception] = []
    state = State(tiny_tmpfs / "state", spool_max_bytes=1 << 20, on_write_error=errors.append)
    state.open()
    cp = state.checkpoint
    # Fill the disk, and again after each write (the reserve, given up, makes room once), until one is refused.
    for i in range(200):
        filler = fill(tiny_tmpfs)
        cp.follow(f"c{i}", f"docker-api-{i}-" + "x" * 2000, 0)
        cp.commit()
        if errors:
            break
    assert errors, "the refused write went unreported"
    filler.unlink()
    cp.commit()  # still dirty: written once the disk accepts it
    state.close()
    again = State(tiny_tmpfs / "state", spool_max_bytes=1 << 20)
    again.open()
    assert len(list(again.checkpoint.known())) == i + 1
    again.close()
