"""A variant's own /proc files: each variant reads its own, not the leader's.

`/proc/self/maps` and the like describe the process that reads them: its layout
(ASLR). Replicated from the leader, a follower would see the
leader's memory map (gnulib's stack-overflow set-up in cmp, diff, grep then takes
another path). So an open, read-only, of one of the informational files below in
`/proc/self`, `/proc/thread-self` or `/proc/<the leader's PID>` (the PID every
variant is told) runs in EACH variant, a follower's path naming its own process;
the fd it returns is marked as that variant's own, and read-only calls on it (the
rows' `local_on_own_fd`: read, pread64, lseek, fstat ...) are LOCAL there: each
variant reads its own file at its own pace, as many times as its content needs.

Soundness: the open itself is compared like any other (same path, same flags);
only files that describe the reading process, opened read-only, qualify (not the
magic links cwd, root, exe, fd/N that lead out of /proc, not a write to
oom_score_adj or comm); and only calls that read are ever LOCAL, so an fd marked
own can never carry a write past the comparison.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mvee.engine import Call
    from mvee.variant import Variant

# Files of /proc/PID that describe the reading process's layout (addresses), which a
# program may use on itself. The others (status, statm, io, cmdline ...) are read as any
# file is, the leader's: their counters and PIDs are the leader's view of the world, and
# a program that prints them prints one thing in every variant.
OWN_NAMES = frozenset({
    b"maps", b"smaps", b"smaps_rollup", b"numa_maps", b"pagemap", b"stat", b"auxv", b"syscall",
    b"stack",
})
_SELF = (b"self", b"thread-self")
_WRITE_OR_CREATE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC


class OwnFiles:
    """Which fds are each variant's own /proc files."""

    def __init__(self, variants: list[Variant]) -> None:
        self.variants = variants
        self.fds: list[set[int]] = [set() for _ in variants]

    def opens_own(self, call: Call) -> bool:
        """Whether an agreed open (variant 0's call) opens one of the variant's own files."""
        spec = call.spec
        if spec is None or spec.opens_at is None:
            return False
        _, path_at, flags_at = spec.opens_at
        path = call.values[path_at]
        if call.args[flags_at] & _WRITE_OR_CREATE or not isinstance(path, bytes):
            return False
        parts = path.split(b"/")
        return (len(parts) == 4 and parts[:2] == [b"", b"proc"] and parts[3] in OWN_NAMES
                and (parts[2] in _SELF or parts[2] == str(self.variants[0].pid).encode()))

    @contextmanager
    def own_paths(self, calls: list[Call]) -> Iterator[None]:
        """While an own open runs in each variant: a follower's `/proc/<leader's PID>/` names
        its own process (`/proc/self/` or `/proc/<its PID>/`, padded with slashes to the
        same length, in place; the original bytes are back after the call)."""
        leader_pid = str(self.variants[0].pid).encode()
        restore: list[tuple[Variant, int, bytes]] = []
        for variant, call in zip(self.variants[1:], calls[1:], strict=True):
            assert call.spec is not None and call.spec.opens_at is not None
            path_at = call.spec.opens_at[1]
            prefix = b"/proc/" + leader_pid + b"/"
            if not call.values[path_at].startswith(prefix):  # type: ignore[union-attr]
                continue
            replacement = own_directory(variant, len(prefix))
            if replacement is None:
                continue  # a leader's PID under 1000, its own longer: the leader's file
            variant.memory.write(call.args[path_at], replacement)
            restore.append((variant, call.args[path_at], prefix))
        try:
            yield
        finally:
            for variant, address, original in restore:
                if variant.alive:
                    variant.memory.write(address, original)

    def after_call(self, call: Call, own_open: bool, results: list[int | None]) -> None:
        """After a synchronised call: an fd it opened is own or not; a closed fd is not."""
        spec = call.spec
        assert spec is not None
        if spec.closes_at is not None:
            for fds in self.fds:
                fds.discard(call.args[spec.closes_at])
        if spec.opens_at is None:
            return
        for fds, fd in zip(self.fds, results, strict=True):
            if fd is not None and fd >= 0:
                (fds.add if own_open else fds.discard)(fd)

    def is_local(self, variant: Variant, call: Call) -> bool:
        """A read-only call on one of the variant's own fds: it runs LOCAL."""
        spec = call.spec
        return (spec is not None and spec.local_on_own_fd_at is not None
                and call.args[spec.local_on_own_fd_at] in self.fds[variant.index])


def own_directory(variant: Variant, length: int) -> bytes | None:
    """The variant's own /proc directory in `length` bytes (slashes pad it, which the
    path walk skips): /proc/self/, or /proc/<its PID>/ where the leader's PID is too
    short for "self"; None if neither fits."""
    for name in (b"self", str(variant.pid).encode()):
        padding = length - len(b"/proc//") - len(name)
        if padding >= 0:
            return b"/proc/" + b"/" * padding + name + b"/"
    return None
