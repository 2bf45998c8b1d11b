"""The time-stamp counter: rdtsc and rdtscp give every variant the same value.

Each variant runs with PR_SET_TSC = PR_TSC_SIGSEGV (set in its child before exec; the
flag survives exec and is inherited), so its rdtsc and rdtscp raise SIGSEGV with
si_code SI_KERNEL at the instruction. The monitor recognises the instruction at the
signal stop, writes the result into the registers, steps the instruction pointer
over it and resumes the variant: the program never sees the signal.

The values are synchronised by position, not by waiting: the k-th TSC read of a run
gets the counter the monitor reads when the first variant, whichever it is, executes
its k-th rdtsc; the others get the same value when they reach their k-th. No variant
waits for another, the values are non-decreasing, and the same instruction kind must
be at each position. At every synchronised syscall all variants must have executed
the same number (`disagreement`): the count is compared like an argument.
"""

from __future__ import annotations

import ctypes
import mmap
import signal
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mvee import cached, ptrace_api
from mvee.abi import HOST
from mvee.signals import SI_KERNEL
from mvee.verdict import Alarm, Verdict

if TYPE_CHECKING:
    from mvee.variant import Variant

PR_SET_TSC = 26
PR_TSC_SIGSEGV = 2
RDTSC = b"\x0f\x31"
RDTSCP = b"\x0f\x01\xf9"

_libc = ctypes.CDLL(None, use_errno=True)


def trap_in_this_process() -> None:
    """In a variant's child before exec: rdtsc and rdtscp fault from now on."""
    _libc.prctl(PR_SET_TSC, PR_TSC_SIGSEGV, 0, 0, 0)


# The monitor's own reading: the counter in eax:edx and TSC_AUX in ecx (rdtscp),
# stored into a uint32[3] passed as the one argument.
_READER_SOURCE = {
    8: "rdtscp; mov dword ptr [rdi], eax; mov dword ptr [rdi+4], edx; mov dword ptr [rdi+8], ecx; ret",
    4: ("push esi; mov esi, dword ptr [esp+8]; rdtscp; mov dword ptr [esi], eax; "
        "mov dword ptr [esi+4], edx; mov dword ptr [esi+8], ecx; pop esi; ret"),
}


class _Reader:
    """rdtscp in the monitor, as a ctypes function over a page of keystone-made code."""

    def __init__(self) -> None:
        code = cached.assemble(_READER_SOURCE[HOST.word_size], 8 * HOST.word_size)
        self.page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        self.page.write(code)
        address = ctypes.addressof(ctypes.c_char.from_buffer(self.page))
        self.function = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(address)
        self.out = (ctypes.c_uint32 * 3)()

    def __call__(self) -> tuple[int, int]:
        self.function(ctypes.addressof(self.out))
        low, high, aux = self.out
        return high << 32 | low, aux


@dataclass(frozen=True)
class Reading:
    instruction: bytes
    counter: int
    aux: int


class TscEmulator:
    def __init__(self, variants: list[Variant]) -> None:
        self.variants = variants
        self.executed = [0] * len(variants)  # TSC reads per variant since the start
        self.readings: deque[Reading] = deque()  # from position `first` on
        self.first = 0
        self._read: _Reader | None = None

    def emulate(self, variant: Variant, regs: bytes, signum: int, si_code: int) -> bool:
        """At a signal stop: if it is a trapped rdtsc/rdtscp, complete the instruction with
        the run's value at this position and resume the variant. False otherwise."""
        if signum != signal.SIGSEGV or si_code != SI_KERNEL:
            return False
        ip = HOST.register(regs, "ip")
        try:
            code = variant.memory.read(ip, len(RDTSCP))
        except OSError:
            return False
        instruction = RDTSC if code.startswith(RDTSC) else RDTSCP if code == RDTSCP else None
        if instruction is None:
            return False
        reading = self._reading(variant, instruction)
        values = {"ip": ip + len(instruction), "ax": reading.counter & 0xFFFFFFFF,
                  "dx": reading.counter >> 32}
        if instruction == RDTSCP:
            values["cx"] = reading.aux
        ptrace_api.set_regs(variant.pid, HOST.with_registers(regs, values))
        variant.run_on()
        return True

    def quiet(self) -> bool:
        """Every variant read the counter as often: no reading waits for another. A
        variant's thread may then change sets (mvee.thread_pairing), taking up the count
        of its new set."""
        return len(set(self.executed)) == 1

    def disagreement(self) -> str | None:
        """At a synchronised syscall: why the variants' TSC reads differ, or None."""
        if self.quiet():
            return None
        counts = ", ".join(f"variant {v.index}: {self.executed[v.index]}" for v in self.variants)
        return f"the variants read the time-stamp counter a different number of times ({counts})"

    def _reading(self, variant: Variant, instruction: bytes) -> Reading:
        position = self.executed[variant.index]
        self.executed[variant.index] += 1
        offset = position - self.first
        if offset == len(self.readings):  # the first variant to get here reads the counter
            if self._read is None:
                self._read = _Reader()
            counter, aux = self._read()
            self.readings.append(Reading(instruction, counter, aux))
        reading = self.readings[offset]
        if reading.instruction != instruction:
            raise Alarm(Verdict.DIVERGENCE, f"variant {variant.index} executed "
                        f"{'rdtscp' if instruction == RDTSCP else 'rdtsc'} where another executed "
                        f"{'rdtscp' if reading.instruction == RDTSCP else 'rdtsc'}",
                        variant=variant.index)
        while self.readings and self.first < min(self.executed):  # every variant is past it
            self.readings.popleft()
            self.first += 1
        return reading
