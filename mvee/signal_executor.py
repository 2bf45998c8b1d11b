"""The thin ptrace layer under mvee.signals: it carries out the state machine's decisions
(`carry_out`), feeds it what happens to the variants while they run a call, and keeps
each variant's side of the interrupted-call protocol (`SignalSeam`).

- `inject_loop`: at a syscall entry, runs an mmap in the variant instead, writes the
  wait loop into that page (read+exec only: the program cannot write it), then
  rewinds so the original syscall runs again.
- `park`: skips the syscall at an entry (nr -1) and, with the signal on its way,
  rewinds the variant to enter the call again (the signal stops it first); else moves
  the instruction pointer into the wait loop, keeping the registers of the entry.
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
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mvee import engine, lock_agent, ptrace_api, vdso, waitloop
from mvee.abi import BY_NAME, HOST, Abi, execution_mode
from mvee.events import (
    CloneEvent,
    Event,
    ExecEvent,
    Exited,
    GroupStop,
    SignalStop,
    SyscallEntry,
    SyscallExit,
    Waiter,
    WaitFor,
    Waiting,
)
from mvee.pids import PidMap
from mvee.ptrace_api import SyscallStop
from mvee.signals import (
    FAULT_SIGNALS,
    SI_TKILL,
    SI_USER,
    SIGRTMIN,
    Decision,
    Deliver,
    Hold,
    NonCompliant,
    Park,
    Proceed,
    Release,
    Resend,
    SignalCoordinator,
    Suppress,
    Unpark,
    has_own_instances_dropped,
    raised_by_leader_only,
)
from mvee.syscall_spec import Policy
from mvee.tsc import TscEmulator
from mvee.variant import SECCOMP, Variant
from mvee.verdict import Alarm, Verdict
from mvee.waitloop import LoopCode

if TYPE_CHECKING:
    from mvee.variant_set import Process


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
    last_interrupted: int | None = None  # the number of the last call a signal interrupted
    # Held at a signal stop right after a call that the signal interrupted: the call, and
    # the registers there, to rewind it with if it is let go without the signal.
    held_in: tuple[InterruptedCall, bytes] | None = None
    # The synchronised call it was last let go from (its number), until its next syscall
    # entry: a signal that interrupts it stops every variant at that call's exit, however
    # often it is resumed there (a SIGCONT delivered, then the SIGINT behind it). A LOCAL
    # call (a thread's futex) is made at a point of the variant's own.
    synchronised: int | None = None
    # Every variant ran rt_sigreturn since its last stop, and the registers its last
    # handler returns to: a signal stop with those registers (`_at_return`) means the code
    # the handler interrupted has not run an instruction since. (Not any stop after a
    # return: a loop that ran 10 ms since is no starved program.)
    returned_from_handler: bool = False
    returns_to: bytes | None = None
    signal_regs: bytes = b""  # the registers at its last signal stop
    # The leader's timer signals sent to it and not yet seen there: (signum, siginfo).
    mirrored: list[tuple[int, bytes]] = field(default_factory=list)
    # Standard signals it has set aside, blocked by the monitor while it runs on to its
    # next syscall: a timer faster than the monitor then coalesces in its kernel, as a
    # pending signal does natively, instead of stopping it at every expiry (under a
    # slow machine's load or TCG it would make no progress at all).
    held_back: int = 0  # mask bits (bit N-1: signal N), cleared at its next stop that can
    cpu_at_hold: float | None = None  # its CPU time when it began running on, signals held back
    interrupts: int = 0  # SIGSTOPs sent to stop it while it ran with signals held back
    raise_when_stopped: list[int] = field(default_factory=list)  # signals to raise then

    def quiet(self) -> bool:
        """Nothing of a signal or an interrupted call in progress on this side."""
        return (self.parked_regs is None and self.rewound is None and self.held_in is None
                and not self.mirrored and not self.held_back and not self.interrupts
                and not self.raise_when_stopped)


class InjectionError(Exception):
    pass


@dataclass(frozen=True)
class SignalOptions:
    policy: str = "converge"  # mvee.signals.POLICIES
    converge_ms: float = 50.0  # how long variants may run on towards a syscall to meet at
    wait_loop: str = "sleep"  # mvee.waitloop.WAIT_MODES
    loop_trap: str = "int80"  # resolved: "int80" or "syscall"
    wait_loop_iterations: int = 1_000_000_000
    wait_loop_ms: float | None = None  # what the iterations were calibrated from, if anything

    def wait_loop_limit(self) -> str:
        return (f"{self.wait_loop_ms:g} ms" if self.wait_loop_ms
                else f"{self.wait_loop_iterations} iterations")

    def wait_loop_seconds(self) -> float:
        return (self.wait_loop_ms or 1000) / 1000


class SignalExecutor:
    def __init__(self, variants: list[Variant], waiter: Waiter, options: SignalOptions, pids: PidMap,
                 process: Process) -> None:
        self.variants = variants
        self.pids = pids
        self.waiter = waiter
        self.options = options
        self.signals = SignalCoordinator(len(variants), options.policy,
                                         converge_after=options.converge_ms / 1000,
                                         give_up_after=options.wait_loop_seconds(),
                                         started=time.monotonic())
        self.traps_used: set[str] = set()
        self.seams = [SignalSeam() for _ in variants]
        self.mirrored_ahead: dict[int, int] = {}  # per signum: mirrored before the leader's signal stop
        self.tsc = TscEmulator(variants)
        self.process = process  # where its end is marked: a signal sent to all that kills it

    # --- carrying out decisions ---

    def carry_out(self, decisions: list[Decision]) -> None:
        for decision in decisions:
            variant = self.variants[decision.variant]
            if isinstance(decision, Deliver | Release):
                self.waiter.delivered(decision.signum)
            if isinstance(decision, Deliver | Release):
                self._let_through(variant)  # the handler's frame saves the program's own mask
            if isinstance(decision, Deliver):
                if self.signals.kills(decision.signum) and self.waiter.forwarded_lately(decision.signum):
                    self.process.ending = True  # every variant got it: each goes down
                if self.signals.runs_handler(decision.signum):
                    seam = self.seams[variant.index]
                    seam.rewound = None  # the kernel restarts or fails it now
                    seam.returns_to = seam.signal_regs
                # else (SIGCONT, an ignored signal) the kernel enters the rewound call again:
                # its code still goes with a later release at that entry.
                self.resume(variant, decision.signum)
            elif isinstance(decision, Hold | Proceed):
                pass  # it stays at its signal stop; at a syscall, the monitor goes on
            elif isinstance(decision, Suppress):
                self._set_aside(variant)
            elif isinstance(decision, Park):
                variant.call = None
                self._park(variant)
            elif isinstance(decision, Resend):
                self._raise(variant, decision.signum)
            elif isinstance(decision, Release):
                self._release(variant, decision.signum, decision.info)
            elif isinstance(decision, Unpark):
                self.signals.on_resumed(variant.index)
                self._unpark(variant)
            elif isinstance(decision, NonCompliant):
                name = signal.Signals(decision.signum).name if decision.signum else "its signal"
                if decision.no_syscall:
                    raise Alarm(Verdict.NON_COMPLIANT, f"{name} could not be delivered: no syscall came "
                                f"within {self.options.wait_loop_seconds() * 1000:g} ms at which every "
                                f"variant had it (variant {decision.variant}; {self.options.policy} policy)",
                                variant=decision.variant)
                raise Alarm(Verdict.NON_COMPLIANT, f"variant {decision.variant} did not receive "
                            f"{name} within the wait loop's {self.options.wait_loop_limit()}",
                            variant=decision.variant)

    def _set_aside(self, variant: Variant) -> None:
        """Resume a variant from its signal stop without the signal. Just out of a call the
        signal interrupted, it re-enters the call (restart_syscall after a sleep) rewound
        by the monitor, now or after a Hold: its code says how the call ends when the
        signal comes there (the kernel's own rewind would leave none)."""
        held_in = self.seams[variant.index].held_in
        if held_in is not None:
            self._rewind(variant, BY_NAME[variant.abi_name], *held_in)
        self.resume(variant)

    def resume(self, variant: Variant, signum: int = 0, synchronised: int | None = None) -> None:
        """Let a stopped variant run on to its next syscall stop; `synchronised`: from the
        exit of that agreed call."""
        variant.call = None
        seam = self.seams[variant.index]
        seam.restart_code = -RestartCode.ERESTARTNOINTR  # counts at its entry only
        seam.held_in = None
        if synchronised is not None:
            seam.synchronised = synchronised
        self.signals.on_resumed(variant.index)
        variant.run_on(signum)

    # --- what happens to the variants ---

    def on_entry(self, variant: Variant, stop: SyscallStop) -> bool:
        """At a syscall entry, before the call is decoded: the loop's trap, a rewound call
        back in the kernel, the loop injected at the first syscall. False when the
        variant was resumed here (the injection)."""
        seam = self.seams[variant.index]
        self._let_through(variant)
        if self._in_loop_sleep(variant, stop.instruction_pointer):
            variant.run_on()  # the parked variant's own sleep
            return False
        seam.returned_from_handler = False
        seam.synchronised = None  # another call
        if seam.rewound is not None:  # its restart code goes with a release at this entry
            seam.restart_code, seam.rewound = seam.rewound.code, None
        if self._at_loop_trap(variant, stop.instruction_pointer, after=True):
            self.carry_out(self.signals.on_loop_timeout(variant.index))
        if seam.loop is None:
            self._inject_loop(variant, stop)
            return False  # the original call comes back as a fresh entry stop
        return True

    def restarts_local_call(self, variant: Variant, abi: Abi) -> bool:
        """Whether a restart_syscall at this variant's entry re-enters a LOCAL call: the
        last one a signal interrupted in it."""
        restarted = self.seams[variant.index].last_interrupted
        spec = engine.row_of(abi, restarted)[1] if restarted is not None else None
        return spec is not None and spec.policy is Policy.LOCAL

    def on_signal_stop(self, stop: SignalStop) -> None:
        variant, regs = stop.variant, stop.regs
        seam = self.seams[variant.index]
        if stop.signum == signal.SIGSTOP and seam.interrupts and stop.sender == os.getpid():
            seam.interrupts -= 1  # the monitor's own: it stopped the variant, no more
            self._let_through(variant)
            variant.run_on()
            return
        if self.tsc.emulate(variant, regs, stop.signum, stop.si_code):  # a trapped rdtsc: resumed
            seam.returned_from_handler = False
            return
        fault = stop.signum in FAULT_SIGNALS and stop.si_code > 0
        if stop.signum == signal.SIGSEGV and fault and self._at_loop_trap(
                variant, HOST.register(regs, "ip"), after=False):
            # int 0x80 without IA-32 emulation faults: the trap all the same.
            self.carry_out(self.signals.on_loop_timeout(variant.index))
        if seam.rewound is not None:
            regs = self._undo_rewind(variant, regs)
        seam.signal_regs = regs
        # A parked variant's sleep is the loop's, not a call of the program: undelivered,
        # the signal lets the kernel restart it.
        interrupted = None if seam.parked_regs is not None else _interrupted_call(regs)
        if interrupted is not None:
            seam.last_interrupted = interrupted.nr
        info, si_code = stop.info, stop.si_code
        if self.own_instance(stop):
            mirrored = self._coalesced_copy(variant, stop.signum)
            if mirrored is not None:
                info = mirrored
            elif not self._carries_raised(variant, stop.signum):
                variant.run_on()
                return
        from_another_process = stop.sender == os.getpid() or self._from_another_set(variant, si_code,
                                                                                   stop.sender)
        if variant.index == 0 and raised_by_leader_only(stop.signum, si_code, from_another_process):
            if self.mirrored_ahead.get(stop.signum):
                self.mirrored_ahead[stop.signum] -= 1  # sent when it interrupted the leader's call
            elif not self.signals.merges_with_pending(0, stop.signum):
                self._mirror_to_followers(stop.signum, info)
            # else the instance the monitor raised again in the leader, or a new expiry
            # merged with the one it has set aside: the others have their copy already.
        elif si_code in (SI_USER, SI_TKILL) and stop.sender == os.getpid():
            info = self._mirrored_info(variant, stop.signum) or info
        after_handler = seam.returned_from_handler and _at_return(regs, seam.returns_to)
        seam.returned_from_handler = False
        self_sent = si_code in (SI_USER, SI_TKILL) and stop.sender == variant.tgid
        seam.held_in = (interrupted, regs) if interrupted else None
        at_call_exit = self_sent or (interrupted is not None and interrupted.nr == seam.synchronised)
        decisions = self.signals.on_signal(variant.index, stop.signum, info, time.monotonic(), fault,
                                           after_handler, at_call_exit)
        if Suppress(variant.index) in decisions and not interrupted and (
                not fault and stop.signum < SIGRTMIN
                and stop.signum in self.signals.converging | self.signals.deferred
                and not (variant.index > 0 and has_own_instances_dropped(stop.signum,
                                                                         HOST.siginfo_sender(info)[0]))):
            self._hold_back(variant, stop.signum)  # the converge deadline bounds the wait
        self.carry_out(decisions)

    def own_instance(self, stop: SignalStop) -> bool:
        """A follower's own instance of a signal whose instances are the leader's, mirrored
        (`raised_by_leader_only`): dropped, it gets the leader's."""
        variant, si_code = stop.variant, stop.si_code
        return variant.index > 0 and raised_by_leader_only(
            stop.signum, si_code, self._from_another_set(variant, si_code, stop.sender))

    def _from_another_set(self, variant: Variant, si_code: int, sender: int) -> bool:
        """Whether kill() in another process of the same variant sent it to this process
        (a thread's sets are left out: a process-directed signal picks its thread)."""
        return (si_code == SI_USER and sender != variant.pid and not variant.thread
                and sender in self.pids.virtual[variant.index])

    def on_handler_return(self) -> None:
        """Every variant ran rt_sigreturn: back from a signal handler."""
        self.signals.on_handler_return()
        for seam in self.seams:
            seam.returned_from_handler = True

    def mirror_pending_timer_signals(self) -> None:
        """The leader's call was interrupted: by one of its timers' signals, the others
        must get it now (their own blocking call, or their copy of the leader's
        interrupted state, waits for it), not at the leader's signal stop. In a process
        of several threads, only those sent to this thread: another may take the
        process's own first (the call then restarts, in every variant alike)."""
        leader = self.variants[0]
        for info in ptrace_api.pending_siginfos(leader.pid, shared=ptrace_api.thread_count(leader.pid) == 1):
            signum = int.from_bytes(info[:4], "little")
            si_code, sender = HOST.siginfo_sender(info)
            if raised_by_leader_only(signum, si_code, sender == os.getpid()
                                     or self._from_another_set(leader, si_code, sender)):
                self.mirrored_ahead[signum] = self.mirrored_ahead.get(signum, 0) + 1
                self._mirror_to_followers(signum, info)

    def _mirror_to_followers(self, signum: int, info: bytes) -> None:
        """A signal whose instances are the leader's (`raised_by_leader_only`): each other
        variant gets it too, and its handler sees the leader's siginfo."""
        for follower in self.variants[1:]:
            if follower.alive:
                queue = self.seams[follower.index].mirrored
                # A standard signal coalesces in the follower's kernel: one instance can be
                # pending beside the one whose stop is on its way, so two siginfos are enough.
                if signum >= SIGRTMIN or sum(queued == signum for queued, _ in queue) < 2:
                    queue.append((signum, info))
                follower.signal(signum)  # in the thread the leader's kernel picked

    def _coalesced_copy(self, variant: Variant, signum: int) -> bytes | None:
        """At a follower's own instance of a mirrored signal: the leader's siginfo if the
        copy the monitor sent coalesced into it in the follower's kernel (sent, and no
        longer pending), else None (none sent, or it is still to come: this one is dropped)."""
        if not any(queued == signum for queued, _ in self.seams[variant.index].mirrored):
            return None
        if self._still_pending(variant, signum):
            return None
        return self._mirrored_info(variant, signum)

    def _carries_raised(self, variant: Variant, signum: int) -> bool:
        """At a follower's own instance of a mirrored signal: whether the instance the
        monitor raised again in it (Resend) coalesced into this one in its kernel."""
        return (signum < SIGRTMIN and self.signals.awaits_raised(variant.index, signum)
                and signum not in self.seams[variant.index].raise_when_stopped  # not sent yet
                and not self._still_pending(variant, signum))

    @staticmethod
    def _still_pending(variant: Variant, signum: int) -> bool:
        return any(int.from_bytes(info[:4], "little") == signum
                   for info in ptrace_api.pending_siginfos(variant.pid))

    def _mirrored_info(self, variant: Variant, signum: int) -> bytes | None:
        queue = self.seams[variant.index].mirrored
        for position, (mirrored, info) in enumerate(queue):
            if mirrored == signum:
                del queue[position]
                return info
        return None

    def on_exit(self, variant: Variant) -> None:
        if self.waiter.ended_by_forwarded(variant):
            self.process.ending = True  # delivered where the monitor did not decide (alone in a call)
        self.carry_out(self.signals.on_exit(variant.index, time.monotonic()))

    def after_exec(self, variant: Variant) -> None:
        """A new address space: the loop page went with the old one; handlers are reset."""
        variant.reopen_memory()
        variant.executable = os.readlink(f"/proc/{variant.pid}/exe")
        variant.abi_name = ""  # the new program's, from its first syscall
        vdso.hide(variant.pid, variant.memory)
        lock_agent.tell_index(variant.pid, variant.memory, variant.index)
        seam = self.seams[variant.index]
        seam.loop = seam.loop_address = None
        self.signals.exec_happened()

    def wait_for_exit(self, variant: Variant, deadline: float | None = None,
                      skipped: bool = False) -> SyscallStop | None:
        """`exit_of`, waited for here: for a call that returns at once (a skipped call,
        the injected mmap), which no other set needs the monitor for meanwhile."""
        return self.waiter.drive(self.exit_of(variant, deadline, skipped))

    def exit_of(self, variant: Variant, deadline: float | None = None,
                skipped: bool = False) -> Waiting[SyscallStop | None]:
        """Wait for `variant`, resumed from a syscall entry, to reach that syscall's exit;
        None if it ended. `skipped`: the call was skipped, its exit is not read."""
        while True:
            event = yield WaitFor(frozenset((variant.pid,)), deadline, skipped)
            if event is None:
                raise Alarm(Verdict.NON_COMPLIANT, f"variant {variant.index} stayed in a blocking "
                            "syscall after the others were interrupted by a signal", variant=variant.index)
            done, stop = self.in_call(event)
            if done:
                return stop

    def in_call(self, event: Event) -> tuple[bool, SyscallStop | None]:
        """An event of a variant running a call: (True, its exit stop or None if it
        ended), or (False, None) when it was resumed on towards the exit."""
        variant = event.variant
        if isinstance(event, SyscallExit):
            return True, event.stop
        if isinstance(event, Exited):
            self.on_exit(variant)
            return True, None
        if isinstance(event, SyscallEntry):
            raise Alarm(Verdict.ERROR, f"variant {variant.index}: syscall entry while one was running")
        if isinstance(event, ExecEvent):
            self.after_exec(variant)
            ptrace_api.resume_to_syscall(variant.pid)
        elif isinstance(event, CloneEvent):  # the monitor forms the new set (mvee.monitor)
            ptrace_api.resume_to_syscall(variant.pid)
        elif isinstance(event, SignalStop) and self.own_instance(event) and \
                self._coalesced_copy(variant, event.signum) is None:
            ptrace_api.resume_to_syscall(variant.pid)
        elif isinstance(event, SignalStop | GroupStop):  # not synchronised while alone in a call
            ptrace_api.resume_to_syscall(variant.pid, event.signum)
        return False, None

    def quiet(self) -> bool:
        """No signal in flight in the set, on either side of the seam."""
        return self.signals.quiet() and not self.mirrored_ahead and all(seam.quiet() for seam in self.seams)

    def exchange(self, other: SignalExecutor, index: int) -> None:
        """Variant `index`'s threads of this set and the other changed places
        (mvee.thread_pairing): their seams and records go with them."""
        self.seams[index], other.seams[index] = other.seams[index], self.seams[index]
        self.signals.exchange(other.signals, index)

    def loop_address(self, variant: Variant) -> int | None:
        return self.seams[variant.index].loop_address

    def statistics(self) -> dict[str, object]:
        used = sorted(self.traps_used)
        return {
            "policy": self.options.policy,
            **self.signals.statistics(),
            "converge_ms": self.options.converge_ms,
            "loop_trap": used[0] if len(used) == 1 else (used or None),
            "wait_loop": self.options.wait_loop,
            "wait_loop_iterations": self.options.wait_loop_iterations,
            "wait_loop_ms": self.options.wait_loop_ms,
        }

    # --- signals held back while a variant runs on ---

    def _hold_back(self, variant: Variant, signum: int) -> None:
        """At the signal stop of a standard signal it sets aside: block it until the
        variant's next stop where the monitor can unblock it."""
        seam = self.seams[variant.index]
        bit = 1 << (signum - 1)
        if not seam.held_back & bit:
            ptrace_api.set_signal_mask(variant.pid, ptrace_api.signal_mask(variant.pid) | bit)
            if not seam.held_back:
                seam.cpu_at_hold = ptrace_api.cpu_time(variant.pid)
            seam.held_back |= bit

    def _let_through(self, variant: Variant) -> bool:
        """Unblock what the monitor held back and raise what waited for this; False if
        the variant is running (its mask cannot be changed now)."""
        seam = self.seams[variant.index]
        if seam.held_back:
            try:
                mask = ptrace_api.signal_mask(variant.pid)
            except ptrace_api.PtraceError:
                return False
            ptrace_api.set_signal_mask(variant.pid, mask & ~seam.held_back)
            seam.held_back, seam.cpu_at_hold = 0, None
        for signum in dict.fromkeys(seam.raise_when_stopped):
            variant.signal(signum)
        seam.raise_when_stopped.clear()
        return True

    def on_deadline(self, now: float) -> None:
        """The converge deadline. A variant still running on to a syscall that has not had
        the CPU for that long (a loaded machine; a TCG guest's slow stops) gets what it is
        owed first (up to signals.POSTPONE_LIMIT times the bound): the bound is for code
        that makes no syscall, not for a starved one."""
        given, owed = self.options.converge_ms / 1000, 0.0
        for variant, seam in zip(self.variants, self.seams, strict=True):
            if not (self.signals.converging and seam.held_back and variant.alive):
                continue  # (a signal held back at a handler's return is owed nothing)
            ran = ptrace_api.cpu_time(variant.pid)
            if ran is not None and seam.cpu_at_hold is not None and ran - seam.cpu_at_hold < given / 2:
                owed = max(owed, given - (ran - seam.cpu_at_hold))
        # Half its time is enough: a variant with a share of the CPU would otherwise
        # be owed a little more at every deadline, and never be done.
        if owed > 0 and self.signals.postpone(now + owed):
            return
        self.carry_out(self.signals.on_deadline(now))

    def _raise(self, variant: Variant, signum: int) -> None:
        """Raise a set-aside signal again; in a variant running with it held back, once
        a SIGSTOP of the monitor's has stopped it and it is unblocked."""
        if ptrace_api.stopped_by_signal(variant.pid) == signum or \
                self.waiter.holds_signal(variant.pid, signum):
            return  # its kernel dequeued an instance already: that stop is the one raised
        seam = self.seams[variant.index]
        seam.raise_when_stopped.append(signum)
        if not self._let_through(variant) and not seam.interrupts:
            seam.interrupts += 1
            variant.signal(signal.SIGSTOP)

    # --- the wait loop ---

    def _inject_loop(self, variant: Variant, stop: SyscallStop) -> None:
        pid = variant.pid
        regs = ptrace_api.get_regs(pid)
        code = waitloop.loop_code(execution_mode(regs), self.options.loop_trap, self.options.wait_loop,
                                  self.options.wait_loop_seconds() * 1000)
        abi = stop.abi
        ptrace_api.poke_user(pid, "orig_ax", abi.syscall_numbers[abi.mmap_syscall])
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
        variant.run_on()

    def _in_loop_sleep(self, variant: Variant, instruction_pointer: int) -> bool:
        seam = self.seams[variant.index]
        return (seam.loop is not None and seam.loop_address is not None and seam.parked_regs is not None
                and seam.loop.in_sleep(seam.loop_address, instruction_pointer))

    def _at_loop_trap(self, variant: Variant, instruction_pointer: int, after: bool) -> bool:
        """Is this stop the wait loop's trap? `after`: syscall stops report the next ip."""
        seam = self.seams[variant.index]
        if seam.loop is None or seam.loop_address is None or seam.parked_regs is None:
            return False
        offset = seam.loop.trap_end_offset if after else seam.loop.trap_offset
        return instruction_pointer == seam.loop_address + offset

    # --- parking and releasing ---

    def _park(self, variant: Variant) -> None:
        """At a syscall entry: skip the call and wait for the signal in the wait loop. With
        a signal on its way already (raised again at this entry), no loop: the variant is
        rewound to enter the call again, the signal stops it there before an instruction,
        and the release restarts the call after the handler (one stop fewer: the skipped
        call's exit)."""
        seam = self.seams[variant.index]
        assert seam.loop is not None and seam.loop_address is not None
        pid = variant.pid
        regs = ptrace_api.get_regs(pid)
        if variant.traced_by == SECCOMP and ptrace_api.takes_a_signal(pid):
            self._rewind(variant, BY_NAME[variant.abi_name], InterruptedCall(
                HOST.register(regs, "orig_ax"), seam.restart_code,
                HOST.register(regs, "ip") - SYSCALL_INSTRUCTION_LENGTH), regs)
            variant.run_on()
            return
        ptrace_api.skip_syscall(pid)
        if self.wait_for_exit(variant) is None:
            return
        seam.parked_regs = regs
        ptrace_api.set_regs(pid, HOST.with_registers(ptrace_api.get_regs(pid), seam.loop.park_registers(
            seam.loop_address, self.options.wait_loop_iterations)))
        variant.run_on()

    def _release(self, variant: Variant, signum: int, info: bytes) -> None:
        """Deliver the signal; a parked variant first gets its syscall back."""
        seam = self.seams[variant.index]
        seam.rewound = seam.held_in = None
        seam.returns_to = seam.signal_regs if seam.parked_regs is None else seam.parked_regs
        pid = variant.pid
        if seam.parked_regs is not None:
            ptrace_api.set_regs(pid, HOST.with_registers(seam.parked_regs, {"ax": seam.restart_code}))
            seam.parked_regs = None
        seam.restart_code = -RestartCode.ERESTARTNOINTR
        if info:
            ptrace_api.set_siginfo(pid, info)
        variant.run_on(signum)

    def _unpark(self, variant: Variant) -> None:
        """Out of the wait loop with no signal: back at the skipped call, which runs again.
        (Without a signal the kernel's restart logic does not run: rewind by hand.) One
        parked at its call's entry itself is let go from its signal stop without it."""
        seam = self.seams[variant.index]
        regs = seam.parked_regs
        if regs is None:
            self._set_aside(variant)
            return
        seam.parked_regs = None
        ptrace_api.set_regs(variant.pid, HOST.with_registers(regs, {
            "ip": HOST.register(regs, "ip") - SYSCALL_INSTRUCTION_LENGTH,
            "ax": HOST.register(regs, "orig_ax")}))
        variant.run_on()

    # --- interrupted calls ---

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

    def _rewind(self, variant: Variant, abi: Abi, interrupted: InterruptedCall, regs: bytes) -> None:
        """Back over the syscall instruction, to enter the interrupted call again, as the
        kernel does when no handler runs. Done by the monitor, not left to the kernel:
        a follower that never slept has no restart block of its own, and the kernel
        would pick restart_syscall's number from it (a 64-bit one, madvise to int 0x80)."""
        entry = (abi.syscall_numbers["restart_syscall"]
                 if interrupted.code == -RestartCode.ERESTART_RESTARTBLOCK else interrupted.nr)
        ptrace_api.set_regs(variant.pid, HOST.with_registers(regs, {
            "ip": interrupted.rewound_ip, "ax": entry, "orig_ax": -1}))
        seam = self.seams[variant.index]
        seam.rewound, seam.last_interrupted = interrupted, interrupted.nr

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


def _at_return(regs: bytes, returns_to: bytes | None) -> bool:
    """Whether a variant stopped with `regs` stands where its handler returned to, with
    `returns_to` (its registers when the signal was delivered): at that instruction, or
    at the syscall instruction before it that the kernel restarts, `ax` then the call's
    number again."""
    if returns_to is None:
        return False
    ip, back = HOST.register(regs, "ip"), HOST.register(returns_to, "ip")
    return ip in (back, back - SYSCALL_INSTRUCTION_LENGTH) and _context(regs) == _context(returns_to)


def _context(regs: bytes) -> bytes:
    """The registers but those a return to a restarted call changes (and orig_ax, which
    only says which syscall stopped it last)."""
    return HOST.with_registers(regs, {"ip": 0, "ax": 0, "orig_ax": 0})


def _interrupted_call(regs: bytes) -> InterruptedCall | None:
    """At a signal-delivery-stop: if the variant is just out of a syscall that the signal
    interrupted (a restart code in ax), the call as it is once rewound to re-enter it
    (the signal not delivered here). None in its own code."""
    nr = HOST.register(regs, "orig_ax")
    code = HOST.register(regs, "ax") & 0xFFFFFFFF  # a 32-bit variant's code is 32 bits wide
    if not (0 <= nr < 0x1000 and code in _RESTART_CODES_32):
        return None
    return InterruptedCall(nr, code - (1 << 32), HOST.register(regs, "ip") - SYSCALL_INSTRUCTION_LENGTH)
