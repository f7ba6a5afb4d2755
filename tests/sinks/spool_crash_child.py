"""Child process for the spool crash test: appends numbered records with fsync=True until it is killed.

Usage: python spool_crash_child.py DIRECTORY FIRST_NUMBER [KILL_AT_WRITE]

Prints `ready` once the spool is open, then `A <n> <segment> <offset>` after each append returned. After every
even-numbered record it acknowledges the oldest one: `K? <n>` before the ack, `K <n>` after it returned.

Without KILL_AT_WRITE the test kills the process at a moment of its choosing. With it, every os.pwrite writes at
most 4 KiB (as the kernel is allowed to) and the process SIGKILLs itself instead of making write call number
KILL_AT_WRITE, which leaves a torn record far more often than a kill from outside does.
"""

import hashlib
import os
import signal
import sys
from pathlib import Path

from logpipe.sinks.spool import Spool


def payload(n: int) -> bytes:
    """The record for number n: `<n>:` then a filler derived from n, 0..20 KB long, every 5th one 2 MiB."""
    size = 2 << 20 if n % 5 == 4 else (n * 7919) % 20_000
    block = hashlib.sha256(str(n).encode()).digest()
    return f"{n}:".encode() + (block * (size // len(block) + 1))[:size]


def number(record: bytes) -> int:
    return int(record.split(b":", 1)[0])


def kill_at_write(call: int) -> None:
    real_pwrite, calls = os.pwrite, [0]

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        calls[0] += 1
        if calls[0] == call:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_pwrite(fd, data[:4096], offset)

    os.pwrite = pwrite


def main() -> None:
    directory, n = Path(sys.argv[1]), int(sys.argv[2])
    if len(sys.argv) > 3:
        kill_at_write(int(sys.argv[3]))
    spool = Spool(directory, max_bytes=1 << 30, segment_bytes=64 * 1024, fsync=True)
    print("ready", flush=True)
    while True:
        segment, offset = spool.append(payload(n))
        print(f"A {n} {segment} {offset}", flush=True)
        if n % 2 == 0:
            oldest = spool.next_after(None)
            assert oldest is not None
            print(f"K? {number(oldest[1])}", flush=True)
            spool.ack(oldest[0])
            print(f"K {number(oldest[1])}", flush=True)
        n += 1


if __name__ == "__main__":
    main()
