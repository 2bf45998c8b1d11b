"""The wait loop injected into variants: its machine code, its trap, its timing.

A parked variant waits in this code until its signal arrives: `spin` (Orchestra's:
a counted loop of `pause` instructions, which burns a CPU) or `sleep` (one nanosleep
of the timeout, in the kernel: the signal interrupts it, and the variant uses no CPU
while it waits). If the count or the sleep runs out, a trap instruction after it
hands control back to the monitor: the variant is non-compliant. The code is
assembled with keystone for each ABI (mvee.cached keeps it between runs, and what
is measured per boot: whether int 0x80 works, how fast the loop spins).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
import time
from dataclasses import dataclass

from mvee import cached
from mvee.abi import HOST, I386, Abi
from mvee.events import Ending, decode_status

PAGE_SIZE = 4096
GETPID = {"int80": I386.syscall_numbers["getpid"]}  # int 0x80 always uses the i386 table
TRAPS = ("int80", "syscall")
WAIT_MODES = ("sleep", "spin")
_LOOP_BODY = "wait: pause; dec {counter}; jnz wait; mov eax, {nr};"
_SLEEP_BODY = "mov eax, {nr}; {enter};"
_TRAP = {"int80": "int 0x80", "syscall": "syscall"}
_TIMESPEC_OFFSET = 64  # the sleep's timeout lies here, after the code


@dataclass(frozen=True)
class LoopCode:
    code: bytes  # with the sleep's timespec at _TIMESPEC_OFFSET
    trap: str  # "int80" or "syscall"
    trap_offset: int  # where the trap instruction starts
    wait: str  # "spin" or "sleep"
    arg_registers: tuple[str, ...]  # the code's own ABI's syscall argument registers
    sleep_end_offset: int | None = None  # sleep: after its syscall instruction (its stops' ip)

    @property
    def trap_end_offset(self) -> int:
        return self.trap_offset + 2  # both traps are two bytes; the stop reports the next ip

    def park_registers(self, address: int, iterations: int) -> dict[str, int]:
        """What a variant parked at `address` starts with: the count (spin), or the
        sleep's arguments (a timespec in the page, no remainder)."""
        if self.wait == "spin":
            return {"ip": address, "cx": iterations}
        return {"ip": address, self.arg_registers[0]: address + _TIMESPEC_OFFSET, self.arg_registers[1]: 0}

    def in_sleep(self, address: int, instruction_pointer: int) -> bool:
        """Is a syscall stop at this ip the loop's own sleep (not a call of the program)?"""
        return self.sleep_end_offset is not None and instruction_pointer == address + self.sleep_end_offset


def _assemble(source: str, abi: Abi) -> bytes:
    return cached.assemble(source, 8 * abi.word_size)


def traps_for(abi: Abi) -> tuple[str, ...]:
    """Traps an ABI can use: `syscall` is not an instruction 32-bit code can rely on."""
    return TRAPS if abi.word_size == 8 else ("int80",)


def loop_code(abi: Abi, trap: str, wait: str = "spin", sleep_ms: float = 1000.0) -> LoopCode:
    if trap not in traps_for(abi):
        trap = "int80"
    number = GETPID["int80"] if trap == "int80" else abi.syscall_numbers["getpid"]
    sleep_end = None
    if wait == "spin":
        counter = "rcx" if abi.word_size == 8 else "ecx"
        body = _assemble(_LOOP_BODY.format(counter=counter, nr=number), abi)
    else:
        enter = "syscall" if abi.word_size == 8 else "int 0x80"  # the code's own ABI
        sleep = _assemble(_SLEEP_BODY.format(nr=abi.syscall_numbers["nanosleep"], enter=enter), abi)
        sleep_end = len(sleep)
        body = sleep + _assemble(f"mov eax, {number};", abi)
    # hlt after the trap: should the monitor ever let the trap return, the variant faults.
    code = body + _assemble(_TRAP[trap] + "; hlt", abi)
    seconds, nanoseconds = divmod(round(sleep_ms * 1_000_000), 1_000_000_000)
    timespec = struct.pack("<qq" if abi.word_size == 8 else "<ii", seconds, nanoseconds)
    code = code.ljust(_TIMESPEC_OFFSET, b"\xf4") + timespec  # hlt between code and data
    return LoopCode(code, trap, len(body), wait, abi.syscall_arg_registers, sleep_end)


# --- per machine: does int 0x80 work, and how fast does the loop spin ---

class _HostCode:
    """Host machine code in an executable mapping, callable through ctypes."""

    def __init__(self, source: str) -> None:
        code = _assemble(source, HOST)
        self.mapping = mmap.mmap(-1, PAGE_SIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        self.mapping.write(code)
        address = ctypes.addressof(ctypes.c_char.from_buffer(self.mapping))
        self.function = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_size_t)(address)


def int80_works() -> bool:
    """On kernels without IA-32 emulation `int 0x80` from 64-bit code raises SIGSEGV.
    A 32-bit monitor runs on a kernel that has it. Probed once per boot."""
    return HOST.word_size == 4 or bool(cached.per_boot("int80_works", _probe_int80))


def _probe_int80() -> bool:
    """Probe, in a child process."""
    probe = _HostCode(f"mov eax, {GETPID['int80']}; int 0x80; ret")
    pid = os.fork()
    if pid == 0:
        try:
            os._exit(0 if probe.function(0) > 0 else 1)
        finally:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    return decode_status(status) == Ending(0, None)


def choose_trap(requested: str) -> str:
    if requested == "auto":
        return "int80" if int80_works() else "syscall"
    return requested


def iterations_per_ms() -> float:
    """How many loop iterations make a millisecond here; measured once per boot of a machine."""
    return float(cached.per_boot("iterations_per_ms", _measure))


def _measure() -> float:
    counter = "rcx" if HOST.word_size == 8 else "ecx"
    load = "mov rcx, rdi;" if HOST.word_size == 8 else "mov ecx, [esp + 4];"
    spin = _HostCode(load + _LOOP_BODY.format(counter=counter, nr=0) + " ret")
    iterations, best = 100_000, float("inf")
    while True:
        start = time.perf_counter()
        spin.function(iterations)
        elapsed = time.perf_counter() - start
        if elapsed > 0.02:
            break
        iterations *= 4
    for _ in range(3):
        start = time.perf_counter()
        spin.function(iterations)
        best = min(best, time.perf_counter() - start)
    return iterations / (best * 1000)
