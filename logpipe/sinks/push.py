"""Turning a batch of entries into a Loki push body (JSON with orjson, gzip), and recognising it later.

Pure functions. One stream per label set, values sorted by time within each stream, structured metadata as the
optional third element of a value. Entries older than Loki will accept (`max_entry_age_secs`, just under its
out-of-order window) are either sent with a new timestamp, keeping the original as structured metadata
`original_ts`, or dropped — counted either way by the caller.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from logpipe.sinks.lanes import Entry, LabelKey
from logpipe.state import Probe


@dataclass(frozen=True, slots=True)
class EncodedPush:
    body: bytes  # gzip-compressed JSON
    entries: int  # entries in the body
    too_old_dropped: int
    retimestamped: int
    probes: tuple[Probe, ...]


def encode(
    entries: list[Entry],
    *,
    now_ns: int,
    max_age_ns: int,
    too_old: str,
    structured_metadata: bool,
    gzip_level: int,
) -> EncodedPush:
    """Encode `entries` (any order, any streams) as one push body; `lanes.PASSED` entries are left out."""
    cutoff = now_ns - max_age_ns
    streams: dict[LabelKey, list[list[object]]] = {}
    last_ts: dict[LabelKey, int] = {}
    unsorted: set[LabelKey] = set()
    dropped = retimestamped = passed = 0
    for ts, line, metadata, labels, _pos, _size in entries:
        if not labels:  # PASSED: stands for records not shipped
            passed += 1
            continue
        if ts < cutoff:
            if too_old == "drop":
                dropped += 1
                continue
            metadata = dict(metadata or {})
            metadata["original_ts"] = str(ts)
            ts = cutoff + retimestamped  # keeps their order, inside the window
            retimestamped += 1
        values = streams.get(labels)
        if values is None:
            values = streams[labels] = []
            last_ts[labels] = ts
        elif ts < last_ts[labels]:
            unsorted.add(labels)
        else:
            last_ts[labels] = ts
        if structured_metadata and metadata:
            values.append([str(ts), line, metadata])
        else:
            values.append([str(ts), line])
    for labels in unsorted:
        streams[labels].sort(key=lambda v: int(str(v[0])))
    payload = orjson.dumps({"streams": [{"stream": dict(k), "values": v} for k, v in streams.items()]})
    compressor = _compressor(gzip_level)
    body = compressor.compress(payload) + compressor.flush()
    return EncodedPush(body, len(entries) - dropped - passed, dropped, retimestamped, _probes(streams))


def _zlib_compressor(level: int) -> Any:
    return zlib.compressobj(level, zlib.DEFLATED, 31)


def _gzip_compressor() -> Callable[[int], Any]:
    """A gzip stream compressor for a level. ISA-L (the `isal` package) writes the same gzip format about five
    times faster than zlib at levels 1-3, and compresses better than zlib's level 1 at its own level 1: at ~0.35
    µs a Dify line against zlib's ~1.7, it is the cheapest thing logpipe can do per line. Levels 0 and above 3,
    or no `isal` on the platform, use the standard library's zlib."""
    try:
        from isal import isal_zlib  # noqa: PLC0415 - optional: a platform without its wheel falls back to zlib
    except ImportError:
        return _zlib_compressor

    def compressor(level: int) -> Any:
        if 1 <= level <= 3:
            return isal_zlib.compressobj(level, isal_zlib.DEFLATED, 31)
        return _zlib_compressor(level)

    return compressor


_compressor = _gzip_compressor()


def line_hash(line: str) -> str:
    return hashlib.blake2b(line.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _probes(streams: dict[LabelKey, list[list[object]]]) -> tuple[Probe, ...]:
    """The last entry of every stream: Loki may store some streams of a push and fail others, so each stream's
    arrival must be checked on its own (a stream is stored whole or not at all, so its last entry tells)."""
    probes = []
    for key, values in streams.items():
        ts, line = values[-1][:2]
        probes.append(Probe(dict(key), int(str(ts)), line_hash(str(line))))
    return tuple(probes)


def selector(labels: dict[str, str]) -> str:
    """A LogQL stream selector matching exactly these labels."""
    parts = []
    for name in sorted(labels):
        value = labels[name].replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        parts.append(f'{name}="{value}"')
    return "{" + ", ".join(parts) + "}"
