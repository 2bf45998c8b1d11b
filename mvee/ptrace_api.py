"""The one module that talks to ptrace: libc's ptrace(2) through ctypes.

python-ptrace has no PTRACE_SEIZE, PTRACE_O_EXITKILL or PTRACE_GET_SYSCALL_INFO
and decides the ABI from the tracer, so only its raw ``ptrace()`` was ever used;
importing it took a tenth of the monitor's start-up (it runs ldconfig to find libc,
and loads logging), and its wrapper formats a message on every call. The same call
is made here directly; every request goes through `_call`.
"""

from __future__ import annotations

import ctypes
import os
import signal
import struct
from dataclasses import dataclass

from mvee.abi import BY_AUDIT_ARCH, HOST, Abi


class PtraceError(Exception):
    """A ptrace request failed: its errno, and the process it was made on."""

    def __init__(self, errno: int, request: int, pid: int) -> None:
        super().__init__(f"ptrace({request:#x}, pid {pid}): {os.strerror(errno)}")
        self.errno = errno
        self.pid = pid

WALL = 0x40000000  # __WALL: wait for all children, os has no name for it

PTRACE_TRACEME = 0
PTRACE_POKEUSER = 6
PTRACE_CONT = 7
PTRACE_GETREGS = 12
PTRACE_SETREGS = 13
PTRACE_SYSCALL = 24
PTRACE_SETOPTIONS = 0x4200
PTRACE_GETEVENTMSG = 0x4201
PTRACE_GETSIGINFO = 0x4202
PTRACE_SETSIGINFO = 0x4203
PTRACE_PEEKSIGINFO = 0x4209
PTRACE_GETSIGMASK = 0x420A
PTRACE_SETSIGMASK = 0x420B
PTRACE_GET_SYSCALL_INFO = 0x420E
PTRACE_PEEKSIGINFO_SHARED = 1

PTRACE_O_TRACESYSGOOD = 0x1
PTRACE_O_TRACEFORK = 0x2
PTRACE_O_TRACEVFORK = 0x4
PTRACE_O_TRACECLONE = 0x8
PTRACE_O_TRACEEXEC = 0x10
PTRACE_O_TRACESECCOMP = 0x80
PTRACE_O_EXITKILL = 0x100000

PTRACE_EVENT_FORK, PTRACE_EVENT_VFORK, PTRACE_EVENT_CLONE, PTRACE_EVENT_EXEC = 1, 2, 3, 4
PTRACE_EVENT_SECCOMP = 7

SYSCALL_INFO_ENTRY = 1
SYSCALL_INFO_EXIT = 2
SYSCALL_INFO_SECCOMP = 3  # an entry, stopped by the seccomp filter: read as one

_SIGINFO_SIZE = 128
_SIGSET_SIZE = 8  # the kernel's sigset_t: 64 signals
_SYSCALL_INFO = struct.Struct("<B3xIQQ")  # op, arch, instruction_pointer, stack_pointer
_ENTRY = struct.Struct("<Q6Q")
_EXIT = struct.Struct("<qB")

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_ptrace = _libc.ptrace
_ptrace.restype = ctypes.c_long
_ptrace.argtypes = (ctypes.c_long, ctypes.c_int, ctypes.c_size_t, ctypes.c_size_t)


@dataclass(slots=True)
class SyscallStop:
    """What PTRACE_GET_SYSCALL_INFO tells of a syscall-entry or -exit stop."""

    op: int
    abi: Abi
    instruction_pointer: int
    stack_pointer: int
    nr: int = -1
    args: tuple[int, ...] = ()
    return_value: int = 0
    is_error: bool = False


def _call(request: int, pid: int, addr: int = 0, data: int = 0) -> int:
    """One request; addr and data as machine words (a negative value, such as -1 for
    orig_ax, as its two's complement). Raises PtraceError."""
    result = _ptrace(request, pid, addr & HOST.word_mask, data & HOST.word_mask)
    if result == -1:  # no request made here returns -1 but on an error (no PEEKs)
        raise PtraceError(ctypes.get_errno(), request, pid)
    return result


def traceme_and_die_with_parent(parent: int) -> None:
    """In a freshly forked child: become a tracee that dies with the monitor. A monitor
    killed before the death signal was set leaves the child to init, which would then
    become its tracer and keep it stopped for good: it ends here instead."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(127)
    _call(PTRACE_TRACEME, 0)


def set_options(pid: int) -> None:
    """Every option the monitor uses; PTRACE_O_TRACESECCOMP only matters to a tracee
    under a seccomp filter (mvee.seccomp_filter)."""
    options = (PTRACE_O_EXITKILL | PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACEEXEC | PTRACE_O_TRACESECCOMP
               | PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK | PTRACE_O_TRACECLONE)
    _call(PTRACE_SETOPTIONS, pid, 0, options)


def tgkill(tgid: int, tid: int, signum: int) -> None:
    """A signal to one thread (a process-wide kill reaches whichever thread its kernel
    picks). Raises ProcessLookupError when the thread is gone."""
    if _libc.tgkill(tgid, tid, signum) == -1:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


def resume_to_syscall(pid: int, signal: int = 0) -> None:
    """Resume until the next syscall stop (PTRACE_SYSCALL), delivering `signal`: from an
    entry (or a seccomp stop), the exit of that call."""
    _call(PTRACE_SYSCALL, pid, 0, signal)


def under_seccomp_filter(pid: int) -> bool:
    """Whether a process runs under a seccomp filter (/proc/PID/status: Seccomp 2)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("Seccomp:"):
                return line.split()[1] == "2"
    return False


def skip_syscall(pid: int) -> None:
    """At a syscall entry: replace the call by one the kernel rejects (nr -1), and
    resume to its exit."""
    poke_user(pid, "orig_ax", -1)
    resume_to_syscall(pid)


def skip_with_result(pid: int, result: int) -> None:
    """At a seccomp stop: the call is not run and returns `result`; the kernel leaves ax
    alone for a skipped call, and there is no exit stop to wait for."""
    poke_user(pid, "orig_ax", -1)
    poke_user(pid, "ax", result)


def cont(pid: int, signal: int = 0) -> None:
    _call(PTRACE_CONT, pid, 0, signal)


_info_buffer = ctypes.create_string_buffer(88)  # reused: unpacked before the next call


def syscall_info(pid: int) -> SyscallStop:
    _call(PTRACE_GET_SYSCALL_INFO, pid, len(_info_buffer), ctypes.addressof(_info_buffer))
    raw = _info_buffer.raw
    op, arch, ip, sp = _SYSCALL_INFO.unpack_from(raw)
    abi = BY_AUDIT_ARCH[arch]
    if op in (SYSCALL_INFO_ENTRY, SYSCALL_INFO_SECCOMP):
        nr, *args = _ENTRY.unpack_from(raw, _SYSCALL_INFO.size)
        mask = abi.word_mask
        return SyscallStop(op, abi, ip, sp, nr=nr, args=tuple(map(mask.__and__, args)))
    if op == SYSCALL_INFO_EXIT:
        rval, is_error = _EXIT.unpack_from(raw, _SYSCALL_INFO.size)
        return SyscallStop(op, abi, ip, sp, return_value=rval, is_error=bool(is_error))
    return SyscallStop(op, abi, ip, sp)


def event_message(pid: int) -> int:
    """At a PTRACE_EVENT stop: what the event reports (a new process's or thread's PID)."""
    message = ctypes.c_ulong()
    _call(PTRACE_GETEVENTMSG, pid, 0, ctypes.addressof(message))
    return message.value


def poke_user(pid: int, register: str, value: int) -> None:
    _call(PTRACE_POKEUSER, pid, HOST.user_offset(register), value)


def get_regs(pid: int) -> bytes:
    """All general registers, as the raw user_regs_struct of the monitor's ABI."""
    buffer = ctypes.create_string_buffer(len(HOST.user_regs_fields) * HOST.word_size)
    _call(PTRACE_GETREGS, pid, 0, ctypes.addressof(buffer))
    return buffer.raw


def set_regs(pid: int, regs: bytes) -> None:
    buffer = ctypes.create_string_buffer(regs, len(regs))
    _call(PTRACE_SETREGS, pid, 0, ctypes.addressof(buffer))


def get_siginfo(pid: int) -> bytes:
    buffer = ctypes.create_string_buffer(_SIGINFO_SIZE)
    _call(PTRACE_GETSIGINFO, pid, 0, ctypes.addressof(buffer))
    return buffer.raw


def set_siginfo(pid: int, info: bytes) -> None:
    buffer = ctypes.create_string_buffer(info, _SIGINFO_SIZE)
    _call(PTRACE_SETSIGINFO, pid, 0, ctypes.addressof(buffer))


def signal_mask(pid: int) -> int:
    """A stopped tracee's blocked mask: bit N-1 is signal N."""
    buffer = ctypes.c_uint64()
    _call(PTRACE_GETSIGMASK, pid, _SIGSET_SIZE, ctypes.addressof(buffer))
    return buffer.value


def set_signal_mask(pid: int, mask: int) -> None:
    buffer = ctypes.c_uint64(mask)
    _call(PTRACE_SETSIGMASK, pid, _SIGSET_SIZE, ctypes.addressof(buffer))


def pending_siginfos(pid: int, limit: int = 32, shared: bool = True) -> list[bytes]:
    """The siginfo of every signal queued for a stopped tracee (thread, then process
    queue; `shared`: the process queue too), without dequeuing any."""
    found = []
    for queue in (0, PTRACE_PEEKSIGINFO_SHARED) if shared else (0,):
        arguments = struct.pack("<QIi", 0, queue, limit)  # struct ptrace_peeksiginfo_args
        request = ctypes.create_string_buffer(arguments, len(arguments))
        buffer = ctypes.create_string_buffer(_SIGINFO_SIZE * limit)
        count = _call(PTRACE_PEEKSIGINFO, pid, ctypes.addressof(request), ctypes.addressof(buffer))
        found += [buffer.raw[i * _SIGINFO_SIZE:(i + 1) * _SIGINFO_SIZE] for i in range(count)]
    return found


def _status_fields(pid: int) -> dict[str, int]:
    """SigPnd, ShdPnd and SigBlk of a tracee (/proc/PID/status): bit N-1 is signal N;
    and Threads, its process's thread count."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("SigPnd", "ShdPnd", "SigBlk"):
                fields[key] = int(value.strip(), 16)
            elif key == "Threads":
                fields[key] = int(value)
    return fields


def _deliverable_signals(pid: int) -> int:
    """The mask of signals pending and not blocked in a stopped tracee."""
    fields = _status_fields(pid)
    return (fields.get("SigPnd", 0) | fields.get("ShdPnd", 0)) & ~fields.get("SigBlk", 0)


def blocked_signals(pid: int) -> frozenset[int]:
    mask = _status_fields(pid).get("SigBlk", 0)
    return frozenset(signum for signum in range(1, 65) if mask >> (signum - 1) & 1)


def has_deliverable_signal(pid: int) -> bool:
    return bool(_deliverable_signals(pid))


def takes_a_signal(pid: int) -> bool:
    """Whether a stopped tracee takes a signal as it returns to user space: one pending
    for this thread and not blocked, or for its process when it is the only thread (in a
    process of several, another thread may take that one)."""
    fields = _status_fields(pid)
    pending = fields.get("SigPnd", 0) | (fields.get("ShdPnd", 0) if fields.get("Threads") == 1 else 0)
    return bool(pending & ~fields.get("SigBlk", 0))


def signal_pending(pid: int, signum: int) -> bool:
    try:
        return bool(_deliverable_signals(pid) & (1 << (signum - 1)))
    except OSError:
        return False


def thread_count(pid: int) -> int:
    """How many threads the task's process has (/proc/PID/status: Threads)."""
    return _status_fields(pid).get("Threads", 1)


def cpu_time(pid: int) -> float | None:
    """Seconds a task has run on a CPU (/proc/PID/schedstat); None if not known."""
    try:
        with open(f"/proc/{pid}/schedstat") as schedstat:
            return int(schedstat.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def stopped_by_signal(pid: int) -> int | None:
    """The signal of a signal-delivery-stop the tracee is in and nobody has waited for
    yet (the kernel dequeued it already), without consuming the stop; else None."""
    try:
        found = os.waitid(os.P_PID, pid, os.WSTOPPED | os.WNOHANG | os.WNOWAIT | WALL)
    except ChildProcessError:
        return None
    if found is None or found.si_code != os.CLD_TRAPPED or found.si_status & 0x80:
        return None  # running, or a syscall stop (SIGTRAP | 0x80)
    return found.si_status


def blocked_in(pid: int) -> int | None:
    """The syscall a task sleeps in (not stopped by the monitor), or None: it runs, or is
    stopped."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
        with open(f"/proc/{pid}/syscall") as syscall:
            first = syscall.read().split()[0]
    except (OSError, IndexError):
        return None
    return int(first) if state in ("S", "D") and first.lstrip("-").isdigit() and first != "-1" else None


class Memory:
    """A stopped tracee's address space through /proc/PID/mem.

    One pread/pwrite per access; writes go through even to read-only pages,
    which the wait-loop page relies on.
    """

    PAGE = 4096

    def __init__(self, pid: int) -> None:
        self.fd = os.open(f"/proc/{pid}/mem", os.O_RDWR | os.O_CLOEXEC)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def read(self, address: int, size: int) -> bytes:
        if size <= 0:
            return b""
        data = os.pread(self.fd, size, address)
        if len(data) != size:
            raise OSError(f"short read of {size} bytes at {address:#x}")
        return data

    def read_cstring(self, address: int, limit: int = 4096) -> bytes:
        """A NUL-terminated string, read page by page so it never crosses into an unmapped page."""
        out = b""
        while len(out) < limit:
            chunk = min(self.PAGE - (address % self.PAGE), limit - len(out))
            data = os.pread(self.fd, chunk, address)
            end = data.find(b"\0")
            if end >= 0:
                return out + data[:end]
            if not data:
                break
            out += data
            address += len(data)
        return out

    def write(self, address: int, data: bytes) -> None:
        if data and os.pwrite(self.fd, data, address) != len(data):
            raise OSError(f"short write of {len(data)} bytes at {address:#x}")
