"""Waiting for the variants' stops, each decoded once into a typed event.

One wait per stop: without a deadline the monitor blocks in waitpid itself. The
signals it forwards stay blocked in every thread of the monitor, and a thread of
their own takes them (sigwaitinfo), even while a variant sits in a long blocking
syscall: a signal sent to the monitor from outside (a SIGTERM, a SIGUSR1) is
forwarded to the leader's processes, every time; the other variants get the leader's
instance (mvee.signal_executor), and it is synchronised like any other.
With a deadline (the signal algorithm's), the monitor waits for SIGCHLD with
sigtimedwait instead. The way out for a program that does not take them: a second
SIGINT, SIGTERM or SIGHUP within `GIVE_UP_SECONDS` of one still undelivered ends the
run (`Interrupted`): the forwarding thread kills the variants, which ends the
monitor's wait. A terminal's ^C reached the variants already: it is not forwarded.
"""

from __future__ import annotations

import errno
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from mvee import ptrace_api
from mvee.abi import HOST
from mvee.forwarded import FORWARDED
from mvee.ptrace_api import SyscallStop
from mvee.signals import SI_KERNEL

if TYPE_CHECKING:
    from mvee.variant import Variant

SYSCALL_TRAP = signal.SIGTRAP | 0x80  # a syscall stop, with PTRACE_O_TRACESYSGOOD
_ENDING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
GIVE_UP_SECONDS = 2.0
MAIN_THREAD_WAIT = 0.5  # seconds: a forwarded signal waits that long for a main thread to unblock it
# The exit of a call the monitor skipped (nr -1): known, so not read.
SKIPPED_EXIT = SyscallStop(ptrace_api.SYSCALL_INFO_EXIT, HOST, 0, 0)


# --- wait statuses ---

@dataclass(frozen=True, slots=True)
class Ending:
    """A process ended: its exit status, or the signal that killed it."""

    exit_status: int | None
    term_signal: int | None


@dataclass(frozen=True, slots=True)
class Stopped:
    """A traced process stopped: the stop's signal and its PTRACE_EVENT (0: none)."""

    signum: int
    event: int


def decode_status(status: int) -> Ending | Stopped:
    """The one place where a wait status is taken apart."""
    if os.WIFEXITED(status):
        return Ending(os.WEXITSTATUS(status), None)
    if os.WIFSIGNALED(status):
        return Ending(None, os.WTERMSIG(status))
    return Stopped(os.WSTOPSIG(status), status >> 16)


# --- events ---

@dataclass(frozen=True, slots=True)
class VariantEvent:
    variant: Variant


@dataclass(frozen=True, slots=True)
class SyscallEntry(VariantEvent):
    stop: SyscallStop


@dataclass(frozen=True, slots=True)
class SyscallExit(VariantEvent):
    stop: SyscallStop


@dataclass(frozen=True, slots=True)
class SignalStop(VariantEvent):
    """A signal-delivery-stop: the signal, its siginfo and the registers, read once."""

    signum: int
    info: bytes
    regs: bytes

    @property
    def si_code(self) -> int:
        return HOST.siginfo_sender(self.info)[0]

    @property
    def sender(self) -> int:
        """si_pid: who sent it with kill (meaningful for SI_USER and SI_TKILL)."""
        return HOST.siginfo_sender(self.info)[1]


@dataclass(frozen=True, slots=True)
class GroupStop(VariantEvent):
    """A stop of the whole process (SIGSTOP and the like): not a signal to deliver."""

    signum: int


class ExecEvent(VariantEvent):
    """The variant's execve replaced its address space."""


@dataclass(frozen=True, slots=True)
class CloneEvent(VariantEvent):
    """The variant created a process or thread (fork, vfork, clone, clone3): its PID
    (TID), stopped before its first instruction."""

    child: int
    thread: bool


class Exited(VariantEvent):
    """The variant ended; how is recorded in it."""


Event = SyscallEntry | SyscallExit | SignalStop | GroupStop | ExecEvent | CloneEvent | Exited


@dataclass(frozen=True, slots=True)
class WaitFor:
    """What a call in progress waits for: the next event of one of these variants, or
    None at the deadline. `skipped`: as in `Waiter.next`."""

    pids: frozenset[int]
    deadline: float | None = None
    skipped: bool = False


T = TypeVar("T")
# A call in progress (mvee.execution): it yields what it waits for and is sent the event,
# so that while it waits (a parent in wait4) the monitor serves the other sets.
Waiting = Generator[WaitFor, "Event | None", T]


class Interrupted(Exception):
    """An ending signal came again while the one before was still undelivered: the user
    wants out now."""

    def __init__(self, signum: int) -> None:
        name = signal.Signals(signum).name
        super().__init__(f"a second {name} within {GIVE_UP_SECONDS:g} s while the first was still "
                         "undelivered: the variants were ended")
        self.signum = signum


class Waiter:
    """Waits for the variants' stops; a context manager that blocks the signals it hears
    and runs the thread that forwards the monitor's."""

    def __init__(self, variants: list[Variant]) -> None:
        self.by_pid = {v.pid: v for v in variants}  # every variant of every set
        self.undelivered: dict[int, float] = {}  # ending signal -> when it was forwarded
        self.last_forwarded: dict[int, float] = {}  # signal -> when, delivered or not
        self.interrupted: int | None = None  # the ending signal that came twice
        self.previous_mask: set[signal.Signals] | None = None
        # Events taken for a set busy with a call, kept for it (mvee.monitor).
        self.held: dict[int, deque[Event]] = {}
        # Statuses of new processes whose creation the monitor has not seen yet.
        self.strays: dict[int, int] = {}
        self.births: list[CloneEvent] = []  # every creation seen, in order, until taken
        self.forwarder: threading.Thread | None = None
        self.closing = False

    def add(self, variant: Variant) -> Event:
        """A new variant (a created process): watched from now on; its first stop."""
        self.by_pid[variant.pid] = variant
        status = self.strays.pop(variant.pid, None)
        while True:
            if status is None:
                _, status = os.waitpid(variant.pid, ptrace_api.WALL)
            event = self._decoded(variant, status, False)
            if event is not None:
                return event
            status = None

    def hold(self, event: Event) -> None:
        """Keep an event for whoever waits for its variant next."""
        self.held.setdefault(event.variant.pid, deque()).append(event)

    def holds_signal(self, pid: int, signum: int) -> bool:
        """Whether a signal stop of that number is kept for a busy set (waited for already)."""
        return any(isinstance(event, SignalStop) and event.signum == signum
                   for event in self.held.get(pid, ()))

    def take_held(self, pids: Iterable[int]) -> Event | None:
        if not self.held:
            return None
        for pid in pids:
            queue = self.held.get(pid)
            if queue:
                event = queue.popleft()
                if not queue:
                    del self.held[pid]  # empty: `held` is empty when nothing is held
                return event
        return None

    def __enter__(self) -> Waiter:
        # Blocked before the thread starts, so that it inherits the mask too.
        self.previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, *FORWARDED})
        self.forwarder = threading.Thread(target=self._forward_signals, name="mvee-forwarder", daemon=True)
        self.forwarder.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.forwarder is not None and self.forwarder.ident is not None:
            self.closing = True
            signal.pthread_kill(self.forwarder.ident, signal.SIGCONT)  # wakes it: it ends
            self.forwarder.join()
        if self.previous_mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self.previous_mask)

    def next(self, pid: int = -1, deadline: float | None = None, skipped: bool = False) -> Event | None:
        """The next stop of `pid` (-1: any variant), or None at `deadline`. `skipped`: a
        syscall stop is the exit of a call the monitor skipped, and is not read."""
        if pid != -1:
            held = self.take_held((pid,))
            if held is not None:
                return held
        while True:
            found, status = self._wait(pid, deadline)
            if found == 0:
                return None
            variant = self.by_pid.get(found)
            if variant is None:
                self.strays[found] = status  # a child whose parent's event is still to come
                continue
            variant.stops += 1
            event = self._decoded(variant, status, skipped)
            if event is None:
                continue
            if isinstance(event, CloneEvent):
                self.births.append(event)
            return event

    def drive(self, waiting: Waiting[T]) -> T:
        """Run a wait of one variant here, to its end (nothing else is served meanwhile)."""
        request = next(waiting)
        while True:
            (pid,) = request.pids
            try:
                request = waiting.send(self.next(pid, request.deadline, request.skipped))
            except StopIteration as done:
                return done.value

    def reap(self, variant: Variant, deadline: float) -> bool:
        """Collect the end of a variant known to be dying; its other stops are passed over.
        False if it has not ended by `deadline`."""
        while variant.alive:
            found, status = self._wait(variant.pid, deadline)
            if found == 0:
                return False
            ending = decode_status(status)
            if isinstance(ending, Ending):
                variant.record_exit(ending)
        return True

    def _wait(self, pid: int, deadline: float | None) -> tuple[int, int]:
        """(pid, status) of the next stop, or (0, 0) at the deadline."""
        while True:
            if deadline is None:
                found, status = os.waitpid(pid, ptrace_api.WALL)
            else:
                found, status = os.waitpid(pid, ptrace_api.WALL | os.WNOHANG)
                timeout = deadline - time.monotonic()
                if not found and timeout <= 0:
                    return 0, 0
            if self.interrupted is not None:
                raise Interrupted(self.interrupted)
            if found:
                return found, status
            signal.sigtimedwait({signal.SIGCHLD}, timeout)

    def forwarded_lately(self, signum: int) -> bool:
        """Whether the monitor got a signal of this number lately, and sent it on."""
        sent = self.last_forwarded.get(signum)
        return sent is not None and time.monotonic() - sent < GIVE_UP_SECONDS

    def ended_by_forwarded(self, variant: Variant) -> bool:
        """It died of a signal that the monitor sent on lately (a SIGTERM it got): the
        others got it too and die of it, alone in a call or not."""
        return self.forwarded_lately(variant.term_signal or 0)

    def delivered(self, signum: int) -> None:
        """The variants took a signal of this number (delivered, or ignored by them)."""
        self.undelivered.pop(signum, None)

    def _forward_signals(self) -> None:
        """The forwarding thread: every signal sent to the monitor, until the run ends."""
        while True:
            info = signal.sigwaitinfo(FORWARDED)
            if self.closing:
                return
            # SI_KERNEL: generated by the kernel (a terminal's ^C): the variants got their own copy.
            if info.si_code != SI_KERNEL:
                self._forward(info.si_signo)

    def _forward(self, signum: int) -> None:
        """A signal sent to the monitor goes to the program, where it is synchronised."""
        now = self.last_forwarded[signum] = time.monotonic()
        if signum in _ENDING_SIGNALS:
            forwarded = self.undelivered.get(signum)
            if forwarded is not None and now - forwarded < GIVE_UP_SECONDS:
                self.interrupted = signum  # seen by the monitor's wait, which the deaths end
                for variant in self._processes():
                    variant.kill()
                return
            self.undelivered[signum] = now
        # To the leader's processes: each follower gets the leader's instance in the thread
        # the leader's kernel picks for it (raised_by_leader_only), where it is synchronised.
        for variant in self._processes():
            if variant.index == 0:
                self._forward_to(variant, signum)

    @staticmethod
    def _forward_to(process: Variant, signum: int) -> None:
        """To its main thread unless that one blocks it, as a kernel picks natively: a
        main thread stopped by the monitor (at a syscall, for the others) would leave it to
        another thread, and the flag a C handler sets there reaches the main thread's code
        at a point that differs per variant (CPython runs every handler in the main thread).
        A main thread that blocks it for a moment (glibc's pthread_create and the monitor's
        fork block every signal around the call, a window that lockstep makes long) is given
        `MAIN_THREAD_WAIT` to unblock it, as if the signal came a moment later; one that
        keeps it blocked (a thread that waits for signals does the work) leaves the choice
        to its kernel."""
        deadline = time.monotonic() + MAIN_THREAD_WAIT
        try:
            while signum in ptrace_api.blocked_signals(process.pid):
                if time.monotonic() > deadline:
                    os.kill(process.pid, signum)  # its kernel picks the thread
                    return
                time.sleep(0.005)
            process.signal(signum)
        except (ProcessLookupError, FileNotFoundError):
            pass  # reaped meanwhile

    def _processes(self) -> list[Variant]:
        """Every live process of every set, once (not its threads). Called from the
        forwarding thread while the monitor's adds variants: a copy of the dict's values,
        taken at once."""
        return [v for v in list(self.by_pid.values()) if v.alive and not v.thread]

    def _decoded(self, variant: Variant, status: int, skipped: bool) -> Event | None:
        """The event of a wait status; None for a stop whose details are gone: the task was
        killed since (SIGKILL, its process's end), and its end comes next."""
        try:
            return self._event(variant, decode_status(status), skipped)
        except ptrace_api.PtraceError as error:
            if error.errno != errno.ESRCH:
                raise
            return None

    @staticmethod
    def _event(variant: Variant, stopped: Ending | Stopped, skipped: bool) -> Event:
        pid = variant.pid
        if isinstance(stopped, Ending):
            variant.record_exit(stopped)
            return Exited(variant)
        if stopped.signum == SYSCALL_TRAP:
            if skipped:
                return SyscallExit(variant, SKIPPED_EXIT)
            stop = ptrace_api.syscall_info(pid)
            return SyscallEntry(variant, stop) if stop.op == ptrace_api.SYSCALL_INFO_ENTRY \
                else SyscallExit(variant, stop)
        if stopped.event == ptrace_api.PTRACE_EVENT_SECCOMP:  # the filter's stop at an entry
            return SyscallEntry(variant, ptrace_api.syscall_info(pid))
        if stopped.event == ptrace_api.PTRACE_EVENT_EXEC:
            return ExecEvent(variant)
        if stopped.event in (ptrace_api.PTRACE_EVENT_FORK, ptrace_api.PTRACE_EVENT_VFORK,
                             ptrace_api.PTRACE_EVENT_CLONE):
            child = ptrace_api.event_message(pid)
            return CloneEvent(variant, child, _is_thread(child))
        try:
            info = ptrace_api.get_siginfo(pid)
        except ptrace_api.PtraceError:  # a group-stop, not a signal-delivery-stop
            return GroupStop(variant, stopped.signum)
        return SignalStop(variant, stopped.signum, info, ptrace_api.get_regs(pid))


def _is_thread(pid: int) -> bool:
    """Whether a new task is a thread of another process (CLONE_THREAD)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("Tgid:"):
                    return int(line.split()[1]) != pid
    except OSError:
        pass
    return False
