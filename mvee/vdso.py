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
AT_SYSINFO_EHDR = 33
_MAX_WORDS = 1 << 16  # argv, envp and auxv together: ARG_MAX-sized stacks stay well below


def initial_stack(pid: int, memory: Memory) -> tuple[Abi, int]:
    """At an exec stop: the new program's ABI and where its envp[] starts on its stack."""
    regs = ptrace_api.get_regs(pid)
    abi = execution_mode(regs)
    address = HOST.register(regs, "sp")
    (argc,) = abi.unpack_words(memory.read(address, abi.word_size))
    return abi, address + (1 + argc + 1) * abi.word_size  # argc, argv[], NULL


def hide(pid: int, memory: Memory) -> bool:
    """At an exec stop: replace AT_SYSINFO_EHDR on the new initial stack by AT_IGNORE.
    False if the vector had no such entry (a kernel without a vDSO)."""
    abi, address = initial_stack(pid, memory)
    word = abi.word_size
    for _ in range(_MAX_WORDS):  # envp[] up to its NULL
        (pointer,) = abi.unpack_words(memory.read(address, word))
        address += word
        if pointer == 0:
            break
    for _ in range(_MAX_WORDS):  # auxv: (type, value) pairs up to AT_NULL
        kind, _value = abi.unpack_words(memory.read(address, 2 * word))
        if kind == AT_NULL:
            return False
        if kind == AT_SYSINFO_EHDR:
            memory.write(address, abi.pack_word(AT_IGNORE))
            return True
        address += 2 * word
    return False
