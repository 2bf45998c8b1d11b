"""A follower's writable shared mappings of files, made its own memory.

A writable MAP_SHARED mapping of a file (a POSIX semaphore that sem_open maps from
/dev/shm: every multiprocessing lock and queue; sqlite's -shm) is memory its processes
share outside any syscall. Mapped by every variant it was one memory for all of them:
two variants' processes took turns at one semaphore, each store reached the file once
per variant, and a compromised variant could talk to the others through it. A
follower's such mapping is made shared anonymous memory instead (still shared with the
processes it forks), which the file's bytes of that range fill once it is made; the
leader maps the file, and only its stores reach it. A file the monitor holds open
itself (the lock agent's log) is shared on purpose and stays so.
"""

from __future__ import annotations

import mmap
import os
import stat
from dataclasses import dataclass

from mvee.engine import Call
from mvee.variant import Variant

_MAP_TYPE = 0x03  # MAP_SHARED, MAP_PRIVATE or MAP_SHARED_VALIDATE
_COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileRange:
    fd: int
    offset: int
    length: int

    def copy_into(self, variant: Variant, address: int) -> None:
        """The file's bytes in that range (as far as the file goes) into the variant's
        memory at `address`."""
        try:
            fd = os.open(f"/proc/{variant.pid}/fd/{self.fd}", os.O_RDONLY)
        except OSError:
            return  # a mapping that needs no read access: nothing to copy
        try:
            for start in range(0, self.length, _COPY_CHUNK):
                data = os.pread(fd, min(_COPY_CHUNK, self.length - start), self.offset + start)
                if not data:
                    break
                variant.memory.write(address + start, data)
        finally:
            os.close(fd)


def own_copy(variant: Variant, call: Call) -> tuple[dict[int, int], FileRange] | None:
    """For a follower's call that maps a file (`maps_file`) writable and shared: the
    arguments that make it shared anonymous memory (by position), and the file range
    to copy into it once it is made. None for any other call."""
    at = call.spec.maps_file_at if call.spec else None
    if at is None:
        return None
    prot_at, flags_at, fd_at, offset_at, unit = at
    flags = call.args[flags_at]
    if flags & _MAP_TYPE == mmap.MAP_PRIVATE or not call.args[prot_at] & mmap.PROT_WRITE:
        return None
    target = _writable_file(variant, call.args[fd_at])
    if target is None or _held_by_the_monitor(target):
        return None
    assert call.spec is not None and call.spec.changes_mappings_at is not None
    length = call.args[call.spec.changes_mappings_at[1]]
    arguments = {flags_at: flags | mmap.MAP_ANONYMOUS, fd_at: -1 & call.abi.word_mask, offset_at: 0}
    return arguments, FileRange(call.args[fd_at], call.args[offset_at] * unit, length)


def _writable_file(variant: Variant, fd: int) -> os.stat_result | None:
    """The regular file a variant's fd has open for reading and writing; None for anything
    else (a bad fd, a read-only open, a device): its call then fails, or maps, in every
    variant alike, as the leader's does."""
    try:
        target = os.stat(f"/proc/{variant.pid}/fd/{fd}")
        with open(f"/proc/{variant.pid}/fdinfo/{fd}") as info:
            flags = next(int(line.split()[1], 8) for line in info if line.startswith("flags:"))
    except (OSError, StopIteration, ValueError):
        return None
    return target if stat.S_ISREG(target.st_mode) and flags & os.O_ACCMODE == os.O_RDWR else None


def _held_by_the_monitor(target: os.stat_result) -> bool:
    """Whether a file is one the monitor holds open itself."""
    for own in os.listdir("/proc/self/fd"):
        try:
            held = os.fstat(int(own))
        except OSError:
            continue
        if (held.st_dev, held.st_ino) == (target.st_dev, target.st_ino):
            return True
    return False
