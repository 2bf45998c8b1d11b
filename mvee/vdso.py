"""Hiding the vDSO from a variant's C library, so that its clock reads are syscalls.

The kernel maps a vDSO into every process and names it in the auxiliary vector
(AT_SYSINFO_EHDR). glibc then reads the clock there (clock_gettime, gettimeofday,
time, getcpu) without entering the kernel: each variant would read its own clock,
and a program that prints or compares a time would diverge. At every exec stop the
monitor turns that auxv entry into AT_IGNORE on the new stack, before the program's
first instruction: the C library finds no vDSO and makes the real syscalls, which
the table runs in the leader only and replicates (as GHUMVEE's loader does).

i386's AT_SYSINFO (the `__kernel_vsyscall` entry, sysenter) is kept: it is how a
32-bit glibc enters the kernel, and it reads no clock.
"""

from __future__ import annotations

from mvee import ptrace_api
from mvee.abi import HOST, Abi, execution_mode
from mvee.ptrace_api import Memory

AT_NULL = 0
AT_IGNORE = 1
AT_BASE = 7  # the program interpreter's base: 0 without one (a static program)
AT_SECURE = 23  # setuid and the like: the dynamic loader ignores LD_PRELOAD
AT_SYSINFO_EHDR = 33
_MAX_WORDS = 1 << 16  # argv, envp and auxv together: ARG_MAX-sized stacks stay well below


def initial_stack(pid: int, memory: Memory) -> tuple[Abi, int]:
    """At an exec stop: the new program's ABI and where its envp[] starts on its stack."""
    regs = ptrace_api.get_regs(pid)
    abi = execution_mode(regs)
    address = HOST.register(regs, "sp")
    (argc,) = abi.unpack_words(memory.read(address, abi.word_size))
    return abi, address + (1 + argc + 1) * abi.word_size  # argc, argv[], NULL


def auxv_entries(abi: Abi, memory: Memory, envp: int, wanted: set[int]) -> dict[int, tuple[int, int]]:
    """The auxv entries of the types `wanted` on a new initial stack whose envp[] is at
    `envp`: type -> (its address, its value)."""
    word = abi.word_size
    address = envp
    for _ in range(_MAX_WORDS):  # envp[] up to its NULL
        (pointer,) = abi.unpack_words(memory.read(address, word))
        address += word
        if pointer == 0:
            break
    found: dict[int, tuple[int, int]] = {}
    for _ in range(_MAX_WORDS):  # auxv: (type, value) pairs up to AT_NULL
        kind, value = abi.unpack_words(memory.read(address, 2 * word))
        if kind == AT_NULL:
            break
        if kind in wanted:
            found[kind] = (address, value)
        address += 2 * word
    return found


def hide(pid: int, memory: Memory) -> bool:
    """At an exec stop: replace AT_SYSINFO_EHDR on the new initial stack by AT_IGNORE.
    False if the vector had no such entry (a kernel without a vDSO)."""
    abi, envp = initial_stack(pid, memory)
    entry = auxv_entries(abi, memory, envp, {AT_SYSINFO_EHDR}).get(AT_SYSINFO_EHDR)
    if entry is None:
        return False
    memory.write(entry[0], abi.pack_word(AT_IGNORE))
    return True
