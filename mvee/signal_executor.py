"""The thin ptrace layer under mvee.signals: it carries out parking and releasing.

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
"""

from __future__ import annotations

import os
from collections.abc import Callable

from mvee import ptrace_api, waitloop
from mvee.abi import HOST, I386, X86_64, Abi
from mvee.ptrace_api import SyscallStop
from mvee.variant import Variant

ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND, ERESTART_RESTARTBLOCK = 512, 513, 514, 516
RESTART_CODES = frozenset({-ERESTARTSYS, -ERESTARTNOINTR, -ERESTARTNOHAND, -ERESTART_RESTARTBLOCK})
_RESTART_CODES_32 = frozenset(code & 0xFFFFFFFF for code in RESTART_CODES)
SYSCALL_INSTRUCTION_LENGTH = 2  # syscall, int 0x80, and sysenter's int 0x80 landing pad
_USER_CS_64 = 0x33
_PROT_READ_EXEC = 0x1 | 0x4
_MAP_PRIVATE_ANONYMOUS = 0x02 | 0x20


class InjectionError(Exception):
    pass


WaitForExit = Callable[[Variant], SyscallStop | None]


class SignalExecutor:
    def __init__(self, trap: str, iterations: int, wait_for_exit: WaitForExit) -> None:
        self.trap = trap
        self.iterations = iterations
        self.wait_for_exit = wait_for_exit
        self.traps_used: set[str] = set()

    def inject_loop(self, variant: Variant, stop: SyscallStop) -> None:
        pid = variant.pid
        regs = ptrace_api.get_regs(pid)
        code = waitloop.loop_code(_execution_mode(regs), self.trap)
        abi = stop.abi
        mmap_nr = abi.syscall_numbers[abi.mmap_syscall]
        ptrace_api.poke_user(pid, "orig_ax", mmap_nr)
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
        if -4095 <= address < 0:
            raise InjectionError(f"mmap of the wait-loop page failed in variant {variant.index}: "
                                 f"{os.strerror(-address)}")
        # A 32-bit kernel reports the return value sign-extended: an address above 2 GiB
        # is negative here, and /proc/PID/mem takes no negative offset.
        address &= abi.word_mask
        variant.memory.write(address, code.code)
        variant.loop, variant.loop_address = code, address
        self.traps_used.add(code.trap)
        # Re-run the original syscall: back over its instruction, its number in ax.
        ptrace_api.set_regs(pid, HOST.with_registers(regs, {
            "ip": HOST.register(regs, "ip") - SYSCALL_INSTRUCTION_LENGTH,
            "ax": HOST.register(regs, "orig_ax"),
        }))
        ptrace_api.resume_to_syscall(pid)

    def park(self, variant: Variant) -> None:
        """At a syscall entry: skip the call and spin in the wait loop."""
        assert variant.loop is not None and variant.loop_address is not None
        pid = variant.pid
        regs = ptrace_api.get_regs(pid)
        ptrace_api.poke_user(pid, "orig_ax", -1)
        ptrace_api.resume_to_syscall(pid)
        if self.wait_for_exit(variant) is None:
            return
        variant.parked_regs = regs
        ptrace_api.set_regs(pid, HOST.with_registers(ptrace_api.get_regs(pid), {
            "ip": variant.loop_address, variant.loop.counter_register: self.iterations}))
        ptrace_api.resume_to_syscall(pid)

    def release(self, variant: Variant, signum: int, info: bytes) -> None:
        """Deliver the signal; a parked variant first gets its syscall back."""
        pid = variant.pid
        if variant.parked_regs is not None:
            ptrace_api.set_regs(pid, HOST.with_registers(variant.parked_regs,
                                                         {"ax": variant.restart_code}))
            variant.parked_regs = None
        variant.restart_code = -ERESTARTNOINTR
        if info:
            ptrace_api.set_siginfo(pid, info)
        ptrace_api.resume_to_syscall(pid, signum)

    def unpark(self, variant: Variant) -> None:
        """Out of the wait loop with no signal: back at the skipped call, which runs again.
        (Without a signal the kernel's restart logic does not run: rewind by hand.)"""
        regs = variant.parked_regs
        assert regs is not None
        variant.parked_regs = None
        ptrace_api.set_regs(variant.pid, HOST.with_registers(regs, {
            "ip": HOST.register(regs, "ip") - SYSCALL_INSTRUCTION_LENGTH,
            "ax": HOST.register(regs, "orig_ax")}))
        ptrace_api.resume_to_syscall(variant.pid)

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
        self.rewind(variant, abi, (call_nr, result, HOST.register(regs, "ip") - SYSCALL_INSTRUCTION_LENGTH))

    @staticmethod
    def rewind(variant: Variant, abi: Abi, interrupted: tuple[int, int, int]) -> None:
        """Back over the syscall instruction, to enter the interrupted call again, as the
        kernel does when no handler runs. Done by the monitor, not left to the kernel:
        a follower that never slept has no restart block of its own, and the kernel
        would pick restart_syscall's number from it (a 64-bit one, madvise to int 0x80)."""
        call_nr, code, rewound_ip = interrupted
        entry = abi.syscall_numbers["restart_syscall"] if code == -ERESTART_RESTARTBLOCK else call_nr
        ptrace_api.set_regs(variant.pid, HOST.with_registers(ptrace_api.get_regs(variant.pid), {
            "ip": rewound_ip, "ax": entry, "orig_ax": -1}))
        variant.interrupted = interrupted

    @staticmethod
    def undo_rewind(variant: Variant) -> None:
        """At a signal-delivery-stop of a variant that mirror_interrupted rewound: the
        leader's kernel state, so that delivering (or not) the signal restarts or fails
        the call as in the leader. Undelivered, the kernel rewinds it again itself."""
        assert variant.interrupted is not None
        call_nr, code, rewound_ip = variant.interrupted
        regs = ptrace_api.get_regs(variant.pid)
        if HOST.register(regs, "ip") != rewound_ip:
            return  # stopped elsewhere (a fault on the way)
        ptrace_api.set_regs(variant.pid, HOST.with_registers(regs, {
            "ip": rewound_ip + SYSCALL_INSTRUCTION_LENGTH, "orig_ax": call_nr, "ax": code}))

    @staticmethod
    def interrupted_call(variant: Variant) -> tuple[int, int, int] | None:
        """At a signal-delivery-stop: if the variant is just out of a syscall that the
        signal interrupted (a restart code in ax), what `Variant.interrupted` holds once
        the kernel rewinds it to re-enter that call (the signal not delivered here): the
        call's number, the code, the rewound instruction pointer. None in its own code."""
        regs = ptrace_api.get_regs(variant.pid)
        nr = HOST.register(regs, "orig_ax")
        code = HOST.register(regs, "ax") & 0xFFFFFFFF  # a 32-bit variant's code is 32 bits wide
        if not (0 <= nr < 0x1000 and code in _RESTART_CODES_32):
            return None
        return nr, code - (1 << 32), HOST.register(regs, "ip") - SYSCALL_INSTRUCTION_LENGTH

    @staticmethod
    def at_loop_trap(variant: Variant, instruction_pointer: int, after: bool) -> bool:
        """Is this stop the wait loop's trap? `after`: syscall stops report the next ip."""
        if variant.loop is None or variant.loop_address is None or variant.parked_regs is None:
            return False
        offset = variant.loop.trap_end_offset if after else variant.loop.trap_offset
        return instruction_pointer == variant.loop_address + offset


def _execution_mode(regs: bytes) -> Abi:
    """The mode the variant's code runs in (not the ABI of the syscall it made)."""
    if HOST.word_size == 4:
        return I386
    return X86_64 if HOST.register(regs, "cs") == _USER_CS_64 else I386
