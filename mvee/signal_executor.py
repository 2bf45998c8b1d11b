"""The thin ptrace layer under mvee.signals: it carries out parking and releasing, and
keeps each variant's side of the interrupted-call protocol (`SignalSeam`).

- `inject_loop`: at a syscall entry, runs an mmap in the variant instead, writes the
  wait loop into that page (read+exec only: the program cannot write it), then
  rewinds so the original syscall runs again.
- `park`: skips the syscall at an entry (nr -1) and moves the instruction pointer
  into the wait loop, keeping the registers of the entry.
- `release`: restores a parked variant's registers with a restart code in `ax` and
  the syscall number in `orig_ax`, then delivers the signal: the kernel's own
  restart logic then re-runs the syscall after the handler (or returns EINTR when
  the leader's interrupted call did so), for `syscall`, `int 0x80` and the i386
  vDSO's `sysenter` alike, since all three re-enter through a 2-byte instruction.
- `mirror_interrupted`, `rewind`, `undo_rewind`: a call that a signal interrupted in
  one variant (a restart code) ends the same way in the others.
"""

from __future__ import annotations

import enum
import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass

from mvee import engine, ptrace_api, waitloop
from mvee.abi import HOST, I386, X86_64, Abi
from mvee.ptrace_api import SyscallStop
from mvee.variant import Variant
from mvee.waitloop import LoopCode


class RestartCode(enum.IntEnum):
    """The kernel's restart codes (include/linux/errno.h): what a syscall that a signal
    interrupted returns, negated, to the kernel's signal code. They never reach user
    space: the kernel turns them into a restart or into EINTR."""

    ERESTARTSYS = 512  # restart if the handler has SA_RESTART, else EINTR
    ERESTARTNOINTR = 513  # always restart
    ERESTARTNOHAND = 514  # restart if no handler runs, else EINTR
    ERESTART_RESTARTBLOCK = 516  # restart through restart_syscall (sleeps), else EINTR


RESTART_CODES = frozenset(-code for code in RestartCode)
_RESTART_CODES_32 = frozenset(code & 0xFFFFFFFF for code in RESTART_CODES)
SYSCALL_INSTRUCTION_LENGTH = 2  # syscall, int 0x80, and sysenter's int 0x80 landing pad
_USER_CS_64 = 0x33  # the code segment of 64-bit user code (__USER_CS)
_PROT_READ_EXEC = mmap.PROT_READ | mmap.PROT_EXEC
_MAP_PRIVATE_ANONYMOUS = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS


def interrupted_by_signal(result: int) -> bool:
    """Whether a syscall's result is a restart code: a signal interrupted it."""
    return result in RESTART_CODES


@dataclass(frozen=True)
class InterruptedCall:
    """A call that a signal interrupted, rewound by the monitor to be entered again."""

    nr: int  # the call's number
    code: int  # the restart code its kernel (or the leader's) gave it, negative
    rewound_ip: int  # the instruction pointer back over the syscall instruction


@dataclass
class SignalSeam:
    """One variant's side of the signal seam: its wait loop, the registers of the call
    it skipped while parked, and the state of a call a signal interrupted."""

    loop: LoopCode | None = None  # injected at its first syscall; gone at an exec
    loop_address: int | None = None
    parked_regs: bytes | None = None  # at the entry of the skipped call, while parked
    # What a release puts in ax: ERESTARTNOINTR re-runs the skipped call after the
    # handler; a mirrored code instead (the leader's call was interrupted) while the
    # variant waits at the very entry it was rewound to.
    restart_code: int = -RestartCode.ERESTARTNOINTR
    rewound: InterruptedCall | None = None  # rewound, not yet back in the kernel


class InjectionError(Exception):
    pass


WaitForExit = Callable[[Variant], SyscallStop | None]


class SignalExecutor:
    def __init__(self, variants: int, trap: str, iterations: int, wait_for_exit: WaitForExit) -> None:
        self.trap = trap
        self.iterations = iterations
        self.wait_for_exit = wait_for_exit
        self.traps_used: set[str] = set()
        self.seams = [SignalSeam() for _ in range(variants)]

    # --- the wait loop ---

    def needs_loop(self, variant: Variant) -> bool:
        return self.seams[variant.index].loop is None

    def loop_address(self, variant: Variant) -> int | None:
        return self.seams[variant.index].loop_address

    def forget_loop(self, variant: Variant) -> None:
        """After an exec: the page went with the old address space."""
        seam = self.seams[variant.index]
        seam.loop = seam.loop_address = None

    def inject_loop(self, variant: Variant, stop: SyscallStop) -> None:
        pid = variant.pid
        regs = ptrace_api.get_regs(pid)
        code = waitloop.loop_code(_execution_mode(regs), self.trap)
        abi = stop.abi
        ptrace_api.poke_user(pid, "orig_ax", abi.syscall_numbers[_mmap_name(abi)])
        for register, value in zip(abi.syscall_arg_registers,
                                   (0, waitloop.PAGE_SIZE, _PROT_READ_EXEC, _MAP_PRIVATE_ANONYMOUS, -1, 0),
                                   strict=True):
            ptrace_api.poke_user(pid, register, value & abi.word_mask)
        ptrace_api.resume_to_syscall(pid)
        exit_stop = self.wait_for_exit(variant)
        if exit_stop is None:
            raise InjectionError(f"variant {variant.index} {variant.termination()} while the "
                                 "monitor mapped its wait-loop page")
        address = exit_stop.return_value
        if engine.is_error(address):
            raise InjectionError(f"mmap of the wait-loop page failed in variant {variant.index}: "
                                 f"{os.strerror(-address)}")
        # A 32-bit kernel reports the return value sign-extended: an address above 2 GiB
        # is negative here, and /proc/PID/mem takes no negative offset.
        address &= abi.word_mask
        variant.memory.write(address, code.code)
        seam = self.seams[variant.index]
        seam.loop, seam.loop_address = code, address
        self.traps_used.add(code.trap)
        # Re-run the original syscall: back over its instruction, its number in ax.
        ptrace_api.set_regs(pid, HOST.with_registers(regs, {
            "ip": HOST.register(regs, "ip") - SYSCALL_INSTRUCTION_LENGTH,
            "ax": HOST.register(regs, "orig_ax"),
        }))
        ptrace_api.resume_to_syscall(pid)

    def at_loop_trap(self, variant: Variant, instruction_pointer: int, after: bool) -> bool:
        """Is this stop the wait loop's trap? `after`: syscall stops report the next ip."""
        seam = self.seams[variant.index]
        if seam.loop is None or seam.loop_address is None or seam.parked_regs is None:
            return False
        offset = seam.loop.trap_end_offset if after else seam.loop.trap_offset
        return instruction_pointer == seam.loop_address + offset

    # --- parking and releasing ---

    def park(self, variant: Variant) -> None:
        """At a syscall entry: skip the call and spin in the wait loop."""
        seam = self.seams[variant.index]
        assert seam.loop is not None and seam.loop_address is not None
        pid = variant.pid
        regs = ptrace_api.get_regs(pid)
        ptrace_api.poke_user(pid, "orig_ax", -1)
        ptrace_api.resume_to_syscall(pid)
        if self.wait_for_exit(variant) is None:
            return
        seam.parked_regs = regs
        ptrace_api.set_regs(pid, HOST.with_registers(ptrace_api.get_regs(pid), {
            "ip": seam.loop_address, seam.loop.counter_register: self.iterations}))
        ptrace_api.resume_to_syscall(pid)

    def release(self, variant: Variant, signum: int, info: bytes) -> None:
        """Deliver the signal; a parked variant first gets its syscall back."""
        seam = self.seams[variant.index]
        seam.rewound = None
        pid = variant.pid
        if seam.parked_regs is not None:
            ptrace_api.set_regs(pid, HOST.with_registers(seam.parked_regs, {"ax": seam.restart_code}))
            seam.parked_regs = None
        seam.restart_code = -RestartCode.ERESTARTNOINTR
        if info:
            ptrace_api.set_siginfo(pid, info)
        ptrace_api.resume_to_syscall(pid, signum)

    def unpark(self, variant: Variant) -> None:
        """Out of the wait loop with no signal: back at the skipped call, which runs again.
        (Without a signal the kernel's restart logic does not run: rewind by hand.)"""
        seam = self.seams[variant.index]
        regs = seam.parked_regs
        assert regs is not None
        seam.parked_regs = None
        ptrace_api.set_regs(variant.pid, HOST.with_registers(regs, {
            "ip": HOST.register(regs, "ip") - SYSCALL_INSTRUCTION_LENGTH,
            "ax": HOST.register(regs, "orig_ax")}))
        ptrace_api.resume_to_syscall(variant.pid)

    # --- interrupted calls ---

    def entered(self, variant: Variant) -> None:
        """At a syscall entry: a rewound call is back in the kernel; its restart code goes
        with a release while the variant waits at this entry."""
        seam = self.seams[variant.index]
        if seam.rewound is not None:
            seam.restart_code, seam.rewound = seam.rewound.code, None

    def resumed(self, variant: Variant) -> None:
        """Resumed from a stop: a mirrored code only counts at its own entry."""
        self.seams[variant.index].restart_code = -RestartCode.ERESTARTNOINTR

    def delivered(self, variant: Variant) -> None:
        """Resumed with its signal: the kernel restarts or fails the rewound call now."""
        self.seams[variant.index].rewound = None

    def mirror_interrupted(self, variant: Variant, call_nr: int, abi: Abi, result: int) -> None:
        """A follower at the exit of a skipped call that the leader's kernel interrupted
        (`result` is a restart code) is brought to the same point as the leader.

        With a signal of its own pending, it gets the leader's kernel state (restart
        code in ax, the call in orig_ax): its kernel then restarts or fails the call
        with EINTR exactly as the leader's does. Without one, the kernel would hand
        the raw code to user space, so the monitor rewinds it to enter the call
        again (restart_syscall after an interrupted sleep, as the kernel does); if
        its signal comes before it is back in the kernel, `undo_rewind` gives it the
        leader's state after all, and if it is parked at that entry the code goes
        with the release."""
        pid = variant.pid
        if ptrace_api.has_deliverable_signal(pid):
            ptrace_api.poke_user(pid, "orig_ax", call_nr)
            ptrace_api.poke_user(pid, "ax", result)
            return
        regs = ptrace_api.get_regs(pid)
        self._rewind(variant, abi, InterruptedCall(
            call_nr, result, HOST.register(regs, "ip") - SYSCALL_INSTRUCTION_LENGTH), regs)

    def on_signal_stop(self, variant: Variant, regs: bytes) -> tuple[bytes, InterruptedCall | None]:
        """At a signal-delivery-stop (`regs` read there): a variant that mirror_interrupted
        rewound gets the leader's kernel state back (`undo_rewind`). Returns the
        registers now, and the call the signal interrupted, if the variant is just out
        of one (see `interrupted_call`)."""
        if self.seams[variant.index].rewound is not None:
            regs = self._undo_rewind(variant, regs)
        return regs, _interrupted_call(regs)

    def set_aside_at(self, variant: Variant, abi: Abi, interrupted: InterruptedCall, regs: bytes) -> None:
        """The signal that interrupted a call is set aside: without it the variant re-enters
        the call (restart_syscall after a sleep); the code says how the call ends when the
        signal comes there."""
        self._rewind(variant, abi, interrupted, regs)

    def _rewind(self, variant: Variant, abi: Abi, interrupted: InterruptedCall, regs: bytes) -> None:
        """Back over the syscall instruction, to enter the interrupted call again, as the
        kernel does when no handler runs. Done by the monitor, not left to the kernel:
        a follower that never slept has no restart block of its own, and the kernel
        would pick restart_syscall's number from it (a 64-bit one, madvise to int 0x80)."""
        entry = (abi.syscall_numbers["restart_syscall"]
                 if interrupted.code == -RestartCode.ERESTART_RESTARTBLOCK else interrupted.nr)
        ptrace_api.set_regs(variant.pid, HOST.with_registers(regs, {
            "ip": interrupted.rewound_ip, "ax": entry, "orig_ax": -1}))
        self.seams[variant.index].rewound = interrupted

    def _undo_rewind(self, variant: Variant, regs: bytes) -> bytes:
        """At a signal-delivery-stop of a variant that mirror_interrupted rewound: the
        leader's kernel state, so that delivering (or not) the signal restarts or fails
        the call as in the leader. Undelivered, the kernel rewinds it again itself."""
        rewound = self.seams[variant.index].rewound
        assert rewound is not None
        if HOST.register(regs, "ip") != rewound.rewound_ip:
            return regs  # stopped elsewhere (a fault on the way)
        regs = HOST.with_registers(regs, {"ip": rewound.rewound_ip + SYSCALL_INSTRUCTION_LENGTH,
                                          "orig_ax": rewound.nr, "ax": rewound.code})
        ptrace_api.set_regs(variant.pid, regs)
        return regs


def _interrupted_call(regs: bytes) -> InterruptedCall | None:
    """At a signal-delivery-stop: if the variant is just out of a syscall that the signal
    interrupted (a restart code in ax), the call as it is once rewound to re-enter it
    (the signal not delivered here). None in its own code."""
    nr = HOST.register(regs, "orig_ax")
    code = HOST.register(regs, "ax") & 0xFFFFFFFF  # a 32-bit variant's code is 32 bits wide
    if not (0 <= nr < 0x1000 and code in _RESTART_CODES_32):
        return None
    return InterruptedCall(nr, code - (1 << 32), HOST.register(regs, "ip") - SYSCALL_INSTRUCTION_LENGTH)


def _mmap_name(abi: Abi) -> str:
    """The call that maps the wait-loop page: i386 has mmap2 (offset in pages)."""
    return "mmap" if abi.word_size == 8 else "mmap2"


def _execution_mode(regs: bytes) -> Abi:
    """The mode the variant's code runs in (not the ABI of the syscall it made)."""
    if HOST.word_size == 4:
        return I386
    return X86_64 if HOST.register(regs, "cs") == _USER_CS_64 else I386
