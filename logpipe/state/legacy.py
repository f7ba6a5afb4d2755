"""Moving a state directory of logpipe 0.1 (`checkpoint.json` and `spool/` segment files) into the database.

Runs once, at the first start on a directory that has the old files and no database yet: cursors, intents and
every unacknowledged spool record are imported in one transaction, intents that named a spool record are pointed
at its new id, and the old files are renamed (`checkpoint.json.migrated`, `spool.migrated/`), never deleted. A
spool record that fails its checksum ends the import of its segment, as it ended the old spool's recovery.

Old spool format (for reading only): segments `<20 digits>.seg` of records, each a 24-byte header (magic `LPS1`,
u32 payload length, u32 payload crc32, u64 write time ns, u32 crc32 of those 20 bytes) and the payload; the file
`ack` holds the acknowledged position (magic `LPA1`, u64 segment, u64 offset, u32 crc32).
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import struct
import zlib
from pathlib import Path
from typing import Any

import orjson

from logpipe.state.checkpoint import intent_from_json, intent_to_json
from logpipe.state.store import Store

log = logging.getLogger("logpipe.state")

_HEADER = struct.Struct("<4sIIQI")
_ACK = struct.Struct("<4sQQI")
_SEGMENT = re.compile(r"^(\d{20})\.seg$")
_COUNT = struct.Struct("<I")

OldSpoolId = tuple[int, int]


def needs_migration(directory: Path) -> bool:
    return (directory / "checkpoint.json").is_file() or (directory / "spool").is_dir()


def migrate(store: Store, directory: Path) -> dict[str, int]:
    """Import the old files into `store` (a new, empty database) and rename them; return what was imported."""
    checkpoint = _read_checkpoint(directory / "checkpoint.json")
    records = list(_read_spool(directory / "spool"))

    def work(db: sqlite3.Connection) -> dict[str, int]:
        new_ids: dict[OldSpoolId, int] = {}
        for old_id, written_ns, payload in records:
            count = _COUNT.unpack_from(payload)[0] if len(payload) >= _COUNT.size else 0
            cursor = db.execute(
                "INSERT INTO spool (written_ns, entries, payload, crc) VALUES (?, ?, ?, ?)",
                (written_ns, count, payload, zlib.crc32(payload)),
            )
            new_ids[old_id] = int(cursor.lastrowid or 0)
        for cid, c in checkpoint.get("containers", {}).items():
            db.execute(
                "INSERT INTO containers VALUES (?, ?, ?, ?)",
                (str(cid), str(c["name"]), int(c["origin"]), int(bool(c.get("gone")))),
            )
            for stream, pos in c.get("pos", {}).items():
                db.execute("INSERT INTO cursors VALUES (?, ?, ?, ?)", (str(cid), str(stream), int(pos[0]), int(pos[1])))
        intents = 0
        for raw in checkpoint.get("intents", []):
            old_spool = raw.get("spool_id")
            if old_spool:
                new_id = new_ids.get((int(old_spool[0]), int(old_spool[1])))
                if new_id is None:
                    continue  # its record was acknowledged: nothing left to resolve
                raw = {**raw, "spool_id": new_id}
            intent = intent_from_json(raw)
            db.execute("INSERT INTO intents VALUES (?, ?)", (intent.id, orjson.dumps(intent_to_json(intent))))
            intents += 1
        db.execute("INSERT OR REPLACE INTO meta VALUES ('migrated_from', 'checkpoint.json+spool')")
        return {"containers": len(checkpoint.get("containers", {})), "intents": intents, "spool_records": len(records)}

    imported = store.write(work)
    for name, renamed in (("checkpoint.json", "checkpoint.json.migrated"), ("spool", "spool.migrated")):
        if (directory / name).exists():
            os.replace(directory / name, directory / renamed)
    log.info("state directory migrated to the state database", extra=imported)
    return imported


def _read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        data: Any = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, orjson.JSONDecodeError) as exc:
        log.error("old checkpoint unreadable; not migrated", extra={"error": str(exc), "path": str(path)})
        return {}
    if not isinstance(data, dict) or data.get("version") != 1:
        log.error("old checkpoint of an unknown version; not migrated", extra={"path": str(path)})
        return {}
    return data


def _read_spool(directory: Path) -> list[tuple[OldSpoolId, int, bytes]]:
    """Every unacknowledged record of an old spool, oldest first: (old id, write time ns, payload)."""
    if not directory.is_dir():
        return []
    ack_segment, ack_offset = _read_ack(directory / "ack")
    numbers = sorted(int(m.group(1)) for name in os.listdir(directory) if (m := _SEGMENT.match(name)))
    records: list[tuple[OldSpoolId, int, bytes]] = []
    for number in numbers:
        if number < ack_segment:
            continue
        data = (directory / f"{number:020d}.seg").read_bytes()
        offset = ack_offset if number == ack_segment else 0
        while offset + _HEADER.size <= len(data):
            magic, length, crc, written_ns, header_crc = _HEADER.unpack_from(data, offset)
            start = offset + _HEADER.size
            payload = data[start : start + length]
            if (
                magic != b"LPS1"
                or header_crc != zlib.crc32(data[offset : offset + 20])
                or len(payload) != length
                or zlib.crc32(payload) != crc
            ):
                log.warning("old spool segment has a bad record; the rest of it is skipped", extra={"segment": number})
                break
            records.append(((number, offset), written_ns, payload))
            offset = start + length
    return records


def _read_ack(path: Path) -> OldSpoolId:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return (0, 0)
    if len(raw) == _ACK.size:
        magic, segment, offset, crc = _ACK.unpack(raw)
        if magic == b"LPA1" and crc == zlib.crc32(raw[:-4]):
            return (segment, offset)
    log.error("old spool ack file unreadable; importing every record (duplicates rather than loss)")
    return (0, 0)
