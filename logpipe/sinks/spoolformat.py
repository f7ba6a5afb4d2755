"""The spool's on-disk format: record headers, checksums, and verifying a segment from an offset.

    magic b"LPS1" | u32 payload length | u32 crc32(payload) | u64 write time (ns) | u32 crc32(previous 20 bytes)
    payload

The acknowledged position file is magic b"LPA1" | u64 segment | u64 offset | u32 crc32 of the preceding bytes.
`logpipe.sinks.spool` owns the files; this module only knows how bytes are laid out and checked.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from pathlib import Path

MAGIC = b"LPS1"
HEAD = struct.Struct("<4sIIQ")  # magic, payload length, payload crc32, write time ns
HEADER = struct.Struct("<4sIIQI")  # HEAD + crc32 of the HEAD bytes
HEADER_BYTES = HEADER.size
ACK = struct.Struct("<4sQQI")  # magic, segment, offset, crc32 of the preceding bytes
ACK_MAGIC = b"LPA1"
ACK_FILE = "ack"
ACK_TMP = "ack.tmp"
SEGMENT = re.compile(r"^(\d{20})\.seg$")
CHUNK = 1 << 20
MAX_PAYLOAD = 0x7FFFF000  # Linux reads at most this much in one call; no short reads below it


class Corrupt(Exception):
    """A record failed verification."""


def pwrite(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def parse_header(raw: bytes) -> tuple[int, int, int]:
    """Return (payload length, payload crc, write time ns) of a verified header; raise Corrupt otherwise."""
    if len(raw) < HEADER_BYTES:
        raise Corrupt("short header")
    magic, length, crc, time_ns, header_crc = HEADER.unpack(raw)
    if magic != MAGIC or header_crc != zlib.crc32(raw[: HEAD.size]):
        raise Corrupt("bad header")
    return length, crc, time_ns


def verify(fd: int, offset: int, file_size: int) -> int:
    """Verify the record at offset without holding more than a chunk of it; return its size on disk."""
    length, crc, _ = parse_header(os.pread(fd, HEADER_BYTES, offset))
    end = offset + HEADER_BYTES + length
    if end > file_size:
        raise Corrupt("record runs past the end of the file")
    actual, pos = 0, offset + HEADER_BYTES
    while pos < end:
        chunk = os.pread(fd, min(CHUNK, end - pos), pos)
        if not chunk:
            raise Corrupt("file shrank while reading")
        actual = zlib.crc32(chunk, actual)
        pos += len(chunk)
    if actual != crc:
        raise Corrupt("payload checksum mismatch")
    return end - offset


def scan(fd: int, offset: int, file_size: int) -> tuple[int, int, str]:
    """Verify records from offset; return (end of the last good record, good records, why the scan stopped)."""
    records = 0
    while offset < file_size:
        try:
            offset += verify(fd, offset, file_size)
        except Corrupt as why:
            return offset, records, str(why)
        records += 1
    return offset, records, ""
