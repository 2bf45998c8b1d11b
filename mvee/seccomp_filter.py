"""The seccomp-bpf filter each variant runs under: which calls stop it at all.

Made from the syscall table, per ABI (the data's `arch` field tells an x86_64 call
from an `int 0x80` one of the i386 table; a 32-bit kernel only has the latter). A
call the monitor has no work in runs without a stop (`SECCOMP_RET_ALLOW`): a `LOCAL`
row that changes no mapping the monitor owns (brk), and a `local_when` call that
cannot replace a mapping (an anonymous mmap without MAP_FIXED: the wait-loop page
stays untouched). Every other call, and every number and ABI the filter does not
know, stops the variant once at its entry (`SECCOMP_RET_TRACE`: PTRACE_EVENT_SECCOMP),
where the monitor decides as at a syscall-entry stop; it resumes the variant with
PTRACE_SYSCALL only when it must see that call's exit, else with PTRACE_CONT.

The filter is installed in the variant's child before its exec and is inherited by
its children. Kernels before 4.8 report the seccomp stop before the syscall-entry
stop (and a PTRACE_SYSCALL resume from it stops at the entry, not at the exit): the
monitor traces with PTRACE_SYSCALL there.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

from mvee.abi import BY_NAME, Abi
from mvee.syscall_spec import Policy, Syscall
from mvee.syscall_table import BY_ABI

SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_TRACE = 0x7FF00000
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_FIRST_KERNEL = (4, 8)  # the seccomp stop after the syscall-entry stop

# Classic BPF opcodes (linux/filter.h) and struct seccomp_data's offsets.
_LD_ABS_W = 0x20
_JEQ = 0x15
_JSET = 0x45
_RET = 0x06
_NR, _ARCH = 0, 4


def _argument_low_word(position: int) -> int:
    return 16 + 8 * position  # args[] are 64-bit, little-endian: the flags' word


def allowed(row: Syscall) -> tuple[int, int, int] | None | bool:
    """Whether a row's calls may run without a stop: True (always), False (never), or
    (argument, bits one of which must be set, bits none of which may be)."""
    if row.multiplexes is not None:
        return False
    if row.policy is Policy.LOCAL and row.changes_mappings_at is None:
        return True
    if row.local_when_at is not None and (row.changes_mappings_at is None or row.replaces_when_at):
        position, local_bits = row.local_when_at
        replacing = 0
        if row.replaces_when_at is not None:
            assert row.replaces_when_at[0] == position  # one word tested by the filter
            replacing = row.replaces_when_at[1]
        return position, local_bits, replacing
    return False


class _Program:
    """Instructions with forward jumps to labels, resolved at the end."""

    def __init__(self) -> None:
        self.code: list[tuple[int, object, object, int]] = []
        self.labels: dict[str, int] = {}

    def emit(self, code: int, k: int, jt: object = 0, jf: object = 0) -> None:
        self.code.append((code, jt, jf, k))

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def assemble(self) -> bytes:
        out = b""
        for index, (code, jt, jf, k) in enumerate(self.code):
            offsets = [self.labels[j] - index - 1 if isinstance(j, str) else j for j in (jt, jf)]
            if not all(0 <= offset < 256 for offset in offsets):
                raise ValueError("seccomp filter jump out of range")
            out += struct.pack("<HBBI", code, offsets[0], offsets[1], k)
        return out


def build(abis: tuple[Abi, ...] = tuple(BY_NAME.values())) -> bytes:
    """The filter program (struct sock_filter[]) for these ABIs."""
    program = _Program()
    program.emit(_LD_ABS_W, _ARCH)
    for abi in abis:
        program.emit(_JEQ, abi.audit_arch, jt=0, jf=f"after-{abi.name}")
        program.emit(_LD_ABS_W, _NR)
        conditional = []
        for name, row in sorted(BY_ABI[abi.name].items()):
            rule = allowed(row)
            if name not in abi.syscall_numbers or rule is False:
                continue
            nr = abi.syscall_numbers[name]
            if rule is True:
                program.emit(_JEQ, nr, jt="allow")
            else:
                program.emit(_JEQ, nr, jt=f"{abi.name}-{name}")
                conditional.append((name, rule))
        program.emit(_RET, SECCOMP_RET_TRACE)
        for name, (position, local_bits, replacing) in conditional:
            program.label(f"{abi.name}-{name}")
            program.emit(_LD_ABS_W, _argument_low_word(position))
            program.emit(_JSET, local_bits, jt=0, jf="trace")
            program.emit(_JSET, replacing, jt="trace", jf="allow")
        program.label(f"after-{abi.name}")
    program.label("trace")
    program.emit(_RET, SECCOMP_RET_TRACE)
    program.label("allow")
    program.emit(_RET, SECCOMP_RET_ALLOW)
    return program.assemble()


def kernel_supported(release: str | None = None) -> bool:
    """Whether this kernel orders the seccomp stop after the syscall-entry stop."""
    numbers = (release or os.uname().release).split("-")[0].split(".")
    try:
        return (int(numbers[0]), int(numbers[1])) >= _FIRST_KERNEL
    except (IndexError, ValueError):
        return False


class _Fprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


class Filter:
    """The filter, ready before a fork, installed by the child (`install`)."""

    def __init__(self) -> None:
        self.buffer = ctypes.create_string_buffer(build())
        self.fprog = _Fprog(len(self.buffer.raw) // 8, ctypes.addressof(self.buffer))
        self.libc = ctypes.CDLL(None, use_errno=True)

    def install(self) -> bool:
        """In the variant's child: this process runs under the filter from now on. Without
        CAP_SYS_ADMIN the kernel asks for no_new_privs first. False if it refused."""
        prctl, address = self.libc.prctl, ctypes.addressof(self.fprog)
        if prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.c_void_p(address), 0, 0) == 0:
            return True
        if ctypes.get_errno() != errno.EACCES or prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return False
        return prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.c_void_p(address), 0, 0) == 0
