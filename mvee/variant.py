"""Starting one variant under ptrace, stopped at its first instruction after exec."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mvee import lock_agent, ptrace_api, tsc, vdso
from mvee.events import Ending, Stopped, decode_status
from mvee.ptrace_api import Memory

if TYPE_CHECKING:
    from mvee.engine import Call
    from mvee.seccomp_filter import Filter

SECCOMP = "seccomp"  # stops only where the filter says (mvee.seccomp_filter)
PTRACE_SYSCALL = "ptrace-syscall"  # stops at every syscall's entry and exit


class StartError(Exception):
    """The program could not be executed; carries the errno of the failed execve."""

    def __init__(self, executable: str, errno: int) -> None:
        # errno 0: the child ended before its execve without an error of its own (a signal)
        why = os.strerror(errno) if errno else "it ended before its exec"
        super().__init__(f"cannot execute {executable}: {why}")
        self.errno = errno


@dataclass
class Variant:
    index: int
    executable: str
    pid: int
    memory: Memory
    ended: bool = False  # reaped (where it stands while alive: mvee.signals.Where)
    exit_status: int | None = None
    term_signal: int | None = None
    abi_name: str = ""
    call: Call | None = None  # the call it waits at, decoded, while at a syscall entry
    thread: bool = False  # a thread (CLONE_THREAD) of another variant's process
    traced_by: str = PTRACE_SYSCALL  # SECCOMP or PTRACE_SYSCALL; a child inherits its parent's
    stops: int = 0  # ptrace stops the monitor handled
    tgid: int = 0  # its process (thread group): its own PID unless it is a thread
    # Its signal mask when it last created a process or thread, which it did with every
    # signal blocked (mvee.execution): the child gets it back at its first stop.
    children_mask: int | None = None

    def __post_init__(self) -> None:
        self.tgid = self.tgid or self.pid

    @property
    def alive(self) -> bool:
        return not self.ended

    def run_on(self, signum: int = 0) -> None:
        """Resume it towards its next syscall entry the monitor sees (delivering `signum`);
        from a syscall entry, without a stop at that call's exit where it can do without
        (PTRACE_SYSCALL stops there; the exit of a call resumed here is ignored)."""
        if self.traced_by == SECCOMP:
            ptrace_api.cont(self.pid, signum)
        else:
            ptrace_api.resume_to_syscall(self.pid, signum)

    def signal(self, signum: int) -> None:
        """Send it a signal, to this very thread: in a process of several, a kill would
        reach whichever thread its kernel picks. In a process of one, a kill all the same:
        the process's queue is where the kernel's own instances (a timer's) wait, and one
        sent there coalesces with them as natively. A task already gone is passed over:
        its end comes through the monitor's wait."""
        try:
            if self.tgid == self.pid and ptrace_api.thread_count(self.pid) == 1:
                os.kill(self.pid, signum)
            else:
                ptrace_api.tgkill(self.tgid, self.pid, signum)
        except (ProcessLookupError, FileNotFoundError):
            pass

    def record_exit(self, ending: Ending) -> None:
        self.ended = True
        self.exit_status, self.term_signal = ending.exit_status, ending.term_signal
        self.memory.close()

    def reopen_memory(self) -> None:
        """After an exec: /proc/PID/mem of the new address space."""
        self.memory.close()
        self.memory = Memory(self.pid)

    def termination(self) -> str:
        if self.term_signal is not None:
            return f"killed by {signal.Signals(self.term_signal).name}"
        return f"exited with status {self.exit_status}"

    def kill(self) -> None:
        if self.alive:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def kill_all(variants: list[Variant], others: Iterable[int] = ()) -> None:
    """Kill the variants and `others` (processes the monitor traces that are not yet
    variants), and reap them. Every task of theirs is reaped, threads too: a
    thread-group leader's end is reported only after its traced threads'."""
    for variant in variants:
        variant.kill()
    remaining = set(others)
    for pid in remaining:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    by_pid = {v.pid: v for v in variants}
    while remaining or any(v.alive for v in variants):
        try:
            pid, status = os.waitpid(-1, ptrace_api.WALL)
        except ChildProcessError:
            for variant in variants:
                variant.ended = True
            break
        ending = decode_status(status)
        if not isinstance(ending, Ending):
            continue  # a stop on its way to death
        remaining.discard(pid)
        if pid in by_pid and by_pid[pid].alive:
            by_pid[pid].record_exit(ending)


_RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM, signal.SIGHUP,
                  signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def start(index: int, executable: str, argv: list[str], seccomp: Filter | None = None,
          environment: Mapping[str, str] | None = None) -> Variant:
    """Fork a child that execs `executable` under ptrace; return it stopped after exec.
    With `seccomp`, the child runs under that filter, if the kernel lets it; with
    `environment`, in that environment (else the monitor's).

    The child reports a failed execve's errno through a close-on-exec pipe, as
    subprocess does, so the monitor can say why a program did not start.
    """
    error_read, error_write = os.pipe()
    env = os.environ if environment is None else environment
    monitor = os.getpid()
    pid = os.fork()
    if pid == 0:  # the child: only async-signal-safe work until execve
        try:
            os.close(error_read)
            for signum in _RESET_SIGNALS:  # Python ignores SIGPIPE; a native run does not
                signal.signal(signum, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, [])
            ptrace_api.traceme_and_die_with_parent(monitor)
            tsc.trap_in_this_process()  # its rdtsc is emulated (mvee.tsc)
            os.kill(os.getpid(), signal.SIGSTOP)
            if seccomp is not None:  # after the stop: the options say to stop at its calls
                seccomp.install()  # refused: the variant is traced with PTRACE_SYSCALL
            os.execve(executable, argv, env)
        except OSError as error:
            os.write(error_write, str(error.errno or 0).encode())
        finally:
            os._exit(127)
    os.close(error_write)
    try:
        stopped = _stop_of(pid)
        while isinstance(stopped, Stopped) and stopped.signum != signal.SIGSTOP:
            # A signal that came before its own SIGSTOP (it is traced already): delivered.
            ptrace_api.cont(pid, _delivered(stopped))
            stopped = _stop_of(pid)
        if not isinstance(stopped, Stopped):
            raise StartError(executable, _read_errno(error_read))
        ptrace_api.set_options(pid)
        signum = 0
        while True:  # past the filter's stops at the execve, and signals on the way
            ptrace_api.cont(pid, signum)
            stopped = _stop_of(pid)
            if not isinstance(stopped, Stopped) or stopped.event not in (0, ptrace_api.PTRACE_EVENT_SECCOMP):
                break
            signum = _delivered(stopped) if stopped.event == 0 else 0
        if isinstance(stopped, Stopped) and stopped.event == ptrace_api.PTRACE_EVENT_EXEC:
            memory = Memory(pid)
            vdso.hide(pid, memory)  # its clock reads become syscalls (mvee.vdso)
            lock_agent.tell_index(pid, memory, index)  # which variant it is (mvee.lock_agent)
            traced_by = SECCOMP if ptrace_api.under_seccomp_filter(pid) else PTRACE_SYSCALL
            return Variant(index, executable, pid, memory, traced_by=traced_by)
        errno = _read_errno(error_read)
        _kill_and_reap(pid)
        raise StartError(executable, errno)
    except BaseException:
        _kill_and_reap(pid)
        raise
    finally:
        os.close(error_read)


_STOP_SIGNALS = (signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)


def _stop_of(pid: int) -> Ending | Stopped:
    _, status = os.waitpid(pid, ptrace_api.WALL)
    return decode_status(status)


def _delivered(stopped: Stopped) -> int:
    """The signal of a signal-delivery stop before the exec, to deliver: a stop signal is
    not (the child would stop for good before it runs the program)."""
    return 0 if stopped.signum in _STOP_SIGNALS else stopped.signum


def _read_errno(fd: int) -> int:
    data = os.read(fd, 32)
    return int(data) if data else 0


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, ptrace_api.WALL)
    except (ProcessLookupError, ChildProcessError):
        pass
