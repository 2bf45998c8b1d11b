"""The vocabulary of the syscall table: argument kinds, execution policies, rows.

Each argument kind knows how to read itself from a stopped variant for comparison
(by content, never by pointer value: ASLR makes pointers differ), how to show
itself in an alarm, and what it replicates from the leader into the other
variants after a leader-only call. Arguments refer to each other by name (a
buffer's length is argument "count"); a row resolves the names to positions once,
when it is built, and refuses a name it does not have.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import ClassVar, Protocol

from mvee.abi import BY_NAME as ABIS
from mvee.abi import Abi

MAX_ERRNO = 4095
# Beyond this, buffers are compared by length only (a safety valve for huge writes).
MAX_COMPARED_BYTES = 64 << 20
_MAX_STRINGS = 4096
_SHOWN_BYTES = 48


class Policy(Enum):
    """Who executes a syscall."""

    EACH = "each"  # every variant executes it and keeps its own result
    EACH_LEADER_RESULT = "each-leader-result"  # every variant executes it, all see the leader's result
    LEADER = "leader"  # the leader executes it; the others skip it and get its result and out-buffers
    # Each variant runs it at its own pace, without a rendezvous or a comparison: it only
    # changes the variant's own address space, which legitimately differs with the layout
    # (CPython's allocator, for one, asks for memory depending on where arenas land).
    LOCAL = "local"
    # Opens: the leader first, then the others without the bits the row's `follower_clears` names.
    LEADER_FIRST = "leader-first"
    UNSUPPORTED = "unsupported"  # stops the run with an "unsupported" alarm


class Memory(Protocol):
    def read(self, address: int, size: int) -> bytes: ...
    def read_cstring(self, address: int, limit: int = 4096) -> bytes: ...
    def write(self, address: int, data: bytes) -> None: ...


@dataclass(frozen=True)
class Unreadable:
    """A pointer the monitor could not read: compares equal only to another fault."""

    def __repr__(self) -> str:
        return "<unreadable>"


UNREADABLE = Unreadable()
NULL = "NULL"
POINTER = "ptr"


def is_error(result: int) -> bool:
    return -MAX_ERRNO <= result < 0


def signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


# What a follower remembers across calls of the leader's: (epoll fd, the leader's
# epoll_data) -> its own epoll_data for the same file descriptor.
Cookies = dict[tuple[int, int], int]


@dataclass(frozen=True)
class Replication:
    """A leader-only call's result on its way into one follower."""

    abi: Abi
    result: int
    leader_args: tuple[int, ...]
    follower_args: tuple[int, ...]
    leader: Memory
    follower: Memory
    cookies: Cookies

    def copy(self, source: int, target: int, size: int) -> None:
        if size > 0:
            self.follower.write(target, self.leader.read(source, size))

    def words(self, side: Memory, address: int, count: int) -> tuple[int, ...]:
        return self.abi.unpack_words(side.read(address, count * self.abi.word_size))


def _position(names: tuple[str, ...], wanted: str, row: str) -> int:
    if names.count(wanted) != 1:
        raise ValueError(f"syscall table row {row}: no single argument named {wanted!r} "
                         f"(arguments: {', '.join(names)})")
    return names.index(wanted)


@dataclass(frozen=True)
class Arg:
    """One argument of a syscall; the subclass says how it is read, compared and replicated."""

    name: str

    # Compared as the register's value: decode takes it as is, without a call.
    by_value: ClassVar[bool] = False
    # A leader-only call carries something into the others through it: what the kernel
    # wrote (out-buffers), or what the monitor must remember (an epoll cookie).
    replicates: ClassVar[bool] = False
    # The kernel writes it also when a signal interrupts the call (the time left of a
    # sleep): replicated from the leader then too.
    written_when_interrupted: ClassVar[bool] = False
    # Shown as a signed number of this many bits in an alarm (0: not a number, or unsigned).
    signed_bits: ClassVar[int] = 0
    # Bytes shown with their length in an alarm (a write's data, not a path).
    shows_length: ClassVar[bool] = False
    # Fields holding the names of other arguments; each has a position field "<field>_at".
    references: ClassVar[tuple[str, ...]] = ()
    # The references that name pointers (to an in/out length) rather than numbers.
    pointer_references: ClassVar[tuple[str, ...]] = ()

    def bind(self, names: tuple[str, ...], row: str) -> Arg:
        """This kind with its references to other arguments resolved to positions."""
        if not self.references:
            return self
        return replace(self, **{f"{ref}_at": _position(names, getattr(self, ref), row)
                                for ref in self.references})

    def resolve(self, args: tuple[int, ...]) -> Arg | None:
        """The kind this argument has for these argument values (see Depends)."""
        return self

    def kinds(self) -> tuple[Arg, ...]:
        """Every kind this argument can take."""
        return (self,)

    def read(self, value: int, args: tuple[int, ...], abi: Abi, memory: Memory) -> object:
        """What is compared across variants."""
        if value == 0:
            return NULL
        try:
            return self.read_target(value, args, abi, memory)
        except OSError:
            return UNREADABLE

    def read_target(self, address: int, args: tuple[int, ...], abi: Abi, memory: Memory) -> object:
        return POINTER  # out-buffers and plain addresses: only NULL-ness is compared

    def render(self, raw: int, value: object) -> str:
        if not isinstance(value, bytes):
            return repr(value)
        shown = repr(value[:_SHOWN_BYTES]) + ("..." if len(value) > _SHOWN_BYTES else "")
        return f"{shown} ({len(value)} bytes)" if self.shows_length else shown

    def replicate(self, source: int, target: int, into: Replication) -> None:
        """Copy what the leader's kernel wrote at `source` to the follower's `target`."""

    def leader_only(self, address: int, result: int, abi: Abi, memory: Memory) -> str | None:
        """What the leader's kernel made through this argument that the others cannot be
        given (a received file descriptor), said in a phrase; None when all can."""
        return None


@dataclass(frozen=True)
class Int(Arg):
    """Compared by value (counts, sizes, modes, whence ...); shown as a signed long."""

    by_value: ClassVar[bool] = True
    signed_bits: ClassVar[int] = -1  # the ABI's word

    def read(self, value: int, args: tuple[int, ...], abi: Abi, memory: Memory) -> object:
        return value

    def render(self, raw: int, value: object) -> str:
        return str(raw)


@dataclass(frozen=True)
class Fd(Int):
    """A file descriptor: a C int (AT_FDCWD shows as -100)."""

    signed_bits: ClassVar[int] = 32


@dataclass(frozen=True)
class Flags(Int):
    """Compared by value, shown in hexadecimal."""

    signed_bits: ClassVar[int] = 0

    def render(self, raw: int, value: object) -> str:
        return hex(raw)


@dataclass(frozen=True)
class Pid(Int):
    """A PID or TID: compared and passed after translation to the leader's (virtual) PIDs."""

    signed_bits: ClassVar[int] = 32


@dataclass(frozen=True)
class Millis(Arg):
    """A timeout in milliseconds (a C int): a program computes it from a clock that moves
    between the variants' reads, so only what it means is compared: forever (< 0), no
    wait (0) or a while."""

    signed_bits: ClassVar[int] = 32

    def read(self, value: int, args: tuple[int, ...], abi: Abi, memory: Memory) -> object:
        value = signed(value, 32)
        return "forever" if value < 0 else "no wait" if value == 0 else "a while"

    def render(self, raw: int, value: object) -> str:
        return f"{raw} ({value})"


@dataclass(frozen=True)
class Addr(Arg):
    """A pointer whose target is not compared: only NULL against non-NULL is."""

    def render(self, raw: int, value: object) -> str:
        return hex(raw)


@dataclass(frozen=True)
class Ignored(Arg):
    """Differs legitimately between variants (TLS pointers, absolute timer expiries ...)."""

    def read(self, value: int, args: tuple[int, ...], abi: Abi, memory: Memory) -> object:
        return None

    def render(self, raw: int, value: object) -> str:
        return hex(raw)


@dataclass(frozen=True)
class CString(Arg):
    def read_target(self, address: int, args: tuple[int, ...], abi: Abi, memory: Memory) -> object:
        return memory.read_cstring(address)


@dataclass(frozen=True)
class StringArray(Arg):
    """A NULL-terminated array of C strings (argv, envp)."""

    def read_target(self, address: int, args: tuple[int, ...], abi: Abi, memory: Memory) -> object:
        strings = []
        for _ in range(_MAX_STRINGS):
            (pointer,) = abi.unpack_words(memory.read(address, abi.word_size))
            if pointer == 0:
                break
            strings.append(memory.read_cstring(pointer))
            address += abi.word_size
        return tuple(strings)


@dataclass(frozen=True)
class Sized(Arg):
    """A kind whose size another argument, `length`, gives."""

    length: str
    length_at: int = field(default=-1, kw_only=True)
    references: ClassVar[tuple[str, ...]] = ("length",)


@dataclass(frozen=True)
class InBuffer(Sized):
    """Bytes read by the kernel; as many as argument `length` says."""

    shows_length: ClassVar[bool] = True

    def read_target(self, address: int, args: tuple[int, ...], abi: Abi, memory: Memory) -> object:
        return memory.read(address, min(args[self.length_at], MAX_COMPARED_BYTES))


_AF_UNIX, _AF_INET = 1, 2


@dataclass(frozen=True)
class SockAddr(Sized):
    """A socket address of argument `length`'s length, compared without the padding that
    C code leaves uninitialised (after an AF_UNIX path's NUL, AF_INET's sin_zero)."""


    def read_target(self, address: int, args: tuple[int, ...], abi: Abi, memory: Memory) -> object:
        return _sockaddr_meaning(memory.read(address, args[self.length_at]))


def _sockaddr_meaning(raw: bytes) -> bytes:
    """A socket address without the padding C code leaves uninitialised."""
    family = int.from_bytes(raw[:2], "little")
    if family == _AF_UNIX and raw[2:3] != b"\0":  # a path; abstract names use every byte
        return raw[: raw.find(b"\0", 2) if b"\0" in raw[2:] else len(raw)]
    if family == _AF_INET:
        return raw[:8]
    return raw


@dataclass(frozen=True)
class InStruct(Arg):
    """A structure read by the kernel (NULL allowed); size from the ABI's table."""

    struct: str
    count: int = 1

    def read_target(self, address: int, args: tuple[int, ...], abi: Abi, memory: Memory) -> object:
        return memory.read(address, abi.struct_sizes[self.struct] * self.count)


@dataclass(frozen=True)
class OutBuffer(Sized):
    """Bytes written by the kernel: the return value times `unit` bytes, at most
    argument `length` times `unit`."""

    unit: int = 1
    replicates: ClassVar[bool] = True

    def replicate(self, source: int, target: int, into: Replication) -> None:
        if not is_error(into.result):
            into.copy(source, target, min(into.result, into.leader_args[self.length_at]) * self.unit)


@dataclass(frozen=True)
class OutStruct(Arg):
    """A structure written by the kernel (NULL allowed)."""

    struct: str
    count: int = 1
    replicates: ClassVar[bool] = True

    def replicate(self, source: int, target: int, into: Replication) -> None:
        into.copy(source, target, into.abi.struct_sizes[self.struct] * self.count)


@dataclass(frozen=True)
class TimeLeft(OutStruct):
    """What is left of a sleep (nanosleep's rem), which the kernel writes when a signal
    interrupts it: a program that sleeps on with it (rsync's msleep) sleeps the leader's."""

    written_when_interrupted: ClassVar[bool] = True


@dataclass(frozen=True)
class Lock(InStruct):
    """A struct flock (flock64): l_type, l_whence, l_start and l_len are compared, not
    l_pid (which the kernel ignores on a set) or the padding C code leaves uninitialised."""

    def read_target(self, address: int, args: tuple[int, ...], abi: Abi, memory: Memory) -> object:
        size = abi.struct_sizes[self.struct]
        raw = memory.read(address, size)
        offset_size = 8 if size >= 24 else 4
        start = 4 if abi.word_size == 4 else 8  # after l_type and l_whence, aligned
        return raw[:4], raw[start:start + 2 * offset_size]


@dataclass(frozen=True)
class InOutLock(Lock):
    """F_GETLK's struct flock: compared as a Lock as it goes in, replicated as it comes out."""

    replicates: ClassVar[bool] = True

    def replicate(self, source: int, target: int, into: Replication) -> None:
        into.copy(source, target, into.abi.struct_sizes[self.struct])


PAGE_SIZE = 4096


@dataclass(frozen=True)
class OutPages(Sized):
    """One byte per page of the range of argument `length` bytes, written by the kernel (mincore)."""

    replicates: ClassVar[bool] = True

    def replicate(self, source: int, target: int, into: Replication) -> None:
        if not is_error(into.result):
            into.copy(source, target, (into.leader_args[self.length_at] + PAGE_SIZE - 1) // PAGE_SIZE)


@dataclass(frozen=True)
class InOutArray(Arg):
    """An array read and written by the kernel, argument `count` entries."""

    struct: str
    count: str
    count_at: int = field(default=-1, kw_only=True)
    replicates: ClassVar[bool] = True
    references: ClassVar[tuple[str, ...]] = ("count",)

    def read_target(self, address: int, args: tuple[int, ...], abi: Abi, memory: Memory) -> object:
        return memory.read(address, abi.struct_sizes[self.struct] * args[self.count_at])

    def replicate(self, source: int, target: int, into: Replication) -> None:
        into.copy(source, target, into.abi.struct_sizes[self.struct] * into.leader_args[self.count_at])


def _read_iovecs(address: int, count: int, abi: Abi, memory: Memory) -> list[tuple[int, int]]:
    words = abi.unpack_words(memory.read(address, count * 2 * abi.word_size)) if count else ()
    return list(zip(words[0::2], words[1::2], strict=True))


def _gather(address: int, count: int, abi: Abi, memory: Memory, limit: int = MAX_COMPARED_BYTES) -> bytes:
    """The concatenated bytes of an iovec array, at most `limit` of them."""
    parts = []
    for base, length in _read_iovecs(address, count, abi, memory):
        if limit <= 0:
            break
        parts.append(memory.read(base, min(length, limit)))
        limit -= length
    return b"".join(parts)


def _scatter(data: bytes, address: int, count: int, abi: Abi, memory: Memory) -> None:
    """Writes `data` across an iovec array, in order."""
    for base, length in _read_iovecs(address, count, abi, memory):
        if not data:
            break
        memory.write(base, data[:length])
        data = data[length:]


@dataclass(frozen=True)
class IovecIn(Arg):
    """An iovec array of argument `count` entries read by the kernel (writev); compared as
    the concatenated bytes."""

    count: str
    count_at: int = field(default=-1, kw_only=True)
    references: ClassVar[tuple[str, ...]] = ("count",)
    shows_length: ClassVar[bool] = True

    def read_target(self, address: int, args: tuple[int, ...], abi: Abi, memory: Memory) -> object:
        return _gather(address, args[self.count_at], abi, memory)


@dataclass(frozen=True)
class IovecOut(Arg):
    """An iovec array of argument `count` entries written by the kernel (readv): the
    return value's bytes, scattered."""

    count: str
    count_at: int = field(default=-1, kw_only=True)
    replicates: ClassVar[bool] = True
    references: ClassVar[tuple[str, ...]] = ("count",)

    def replicate(self, source: int, target: int, into: Replication) -> None:
        if into.result > 0:
            count = into.leader_args[self.count_at]
            _scatter(_gather(source, count, into.abi, into.leader, into.result),
                     target, count, into.abi, into.follower)


_INT = 4  # bytes of a C int, on both ABIs


def _int(raw: bytes) -> int:
    return int.from_bytes(raw[:_INT], "little")


@dataclass(frozen=True)
class PollFds(InOutArray):
    """poll's pollfd array: fd and events are compared, not revents, which only the
    kernel writes (programs leave it uninitialised); the leader's revents are replicated."""

    def read_target(self, address: int, args: tuple[int, ...], abi: Abi, memory: Memory) -> object:
        raw = memory.read(address, abi.struct_sizes[self.struct] * args[self.count_at])
        return tuple(raw[i:i + 6] for i in range(0, len(raw), abi.struct_sizes[self.struct]))


@dataclass(frozen=True)
class FdSet(Arg):
    """A select fd_set of argument `nfds` bits (whole longs), read and written by the kernel."""

    nfds: str
    nfds_at: int = field(default=-1, kw_only=True)
    references: ClassVar[tuple[str, ...]] = ("nfds",)
    replicates: ClassVar[bool] = True

    def size(self, args: tuple[int, ...], abi: Abi) -> int:
        bits = 8 * abi.word_size
        return (max(signed(args[self.nfds_at], 32), 0) + bits - 1) // bits * abi.word_size

    def read_target(self, address: int, args: tuple[int, ...], abi: Abi, memory: Memory) -> object:
        return memory.read(address, self.size(args, abi))

    def replicate(self, source: int, target: int, into: Replication) -> None:
        into.copy(source, target, self.size(into.leader_args, into.abi))


@dataclass(frozen=True)
class Timeout(Arg):
    """A relative timeout (a timespec or timeval; NULL waits forever). Programs compute it
    from a clock that moves between the variants' reads, so only what it means is
    compared: forever, no wait, or a while."""

    struct: str

    def read_target(self, address: int, args: tuple[int, ...], abi: Abi, memory: Memory) -> object:
        return "a while" if any(memory.read(address, abi.struct_sizes[self.struct])) else "no wait"


@dataclass(frozen=True)
class UpdatedTimeout(Timeout):
    """A Timeout the kernel overwrites with the time left (select, pselect6, ppoll), also
    when a signal interrupts the call."""

    replicates: ClassVar[bool] = True
    written_when_interrupted: ClassVar[bool] = True

    def replicate(self, source: int, target: int, into: Replication) -> None:
        into.copy(source, target, into.abi.struct_sizes[self.struct])


@dataclass(frozen=True)
class Deadline(Arg):
    """A time that is absolute when argument `flags` has bit `absolute` (TIMER_ABSTIME),
    else relative. An absolute deadline is computed from a clock read that differs by
    microseconds between the variants: only that it is absolute is compared."""

    struct: str
    flags: str
    absolute: int = 1
    flags_at: int = field(default=-1, kw_only=True)
    references: ClassVar[tuple[str, ...]] = ("flags",)

    def read_target(self, address: int, args: tuple[int, ...], abi: Abi, memory: Memory) -> object:
        if args[self.flags_at] & self.absolute:
            return "absolute"
        return memory.read(address, abi.struct_sizes[self.struct])


UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2


@dataclass(frozen=True)
class FileTimes(Arg):
    """utimensat's two timespecs: a tv_sec beside UTIME_NOW or UTIME_OMIT is ignored by
    the kernel, and programs (tar) leave it uninitialised: it is not compared."""

    struct: str

    def read_target(self, address: int, args: tuple[int, ...], abi: Abi, memory: Memory) -> object:
        half = abi.struct_sizes[self.struct] // 2
        raw = memory.read(address, 4 * half)
        times = []
        for start in (0, 2 * half):
            seconds, nanoseconds = raw[start:start + half], _int(raw[start + half:start + 2 * half])
            times.append((None if nanoseconds in (UTIME_NOW, UTIME_OMIT) else seconds, nanoseconds))
        return tuple(times)


@dataclass(frozen=True)
class OutSized(Sized):
    """Bytes written by the kernel into a buffer whose size is the int at pointer argument
    `length`, which the kernel sets to the full size (a socket address, a socket option):
    the follower gets them, as many as its buffer holds, and the leader's length."""

    pointer_references: ClassVar[tuple[str, ...]] = ("length",)
    replicates: ClassVar[bool] = True

    def replicate(self, source: int, target: int, into: Replication) -> None:
        length_source, length_target = into.leader_args[self.length_at], into.follower_args[self.length_at]
        if is_error(into.result) or not (length_source and length_target):
            return
        room = _int(into.follower.read(length_target, _INT))
        into.copy(source, target, min(_int(into.leader.read(length_source, _INT)), room))
        into.copy(length_source, length_target, _INT)


@dataclass(frozen=True)
class EpollEvent(Arg):
    """epoll_ctl's event: its events are compared for an ADD or a MOD (argument `op`); a
    DEL ignores the event (CPython passes an uninitialised one). Its data is the
    program's cookie (often a pointer) that epoll_wait hands back: for an ADD or a MOD,
    each follower's is remembered against the leader's, so that the events the leader
    waits for reach each follower with its own (EpollEvents)."""

    epfd: str
    op: str
    epfd_at: int = field(default=-1, kw_only=True)
    op_at: int = field(default=-1, kw_only=True)
    references: ClassVar[tuple[str, ...]] = ("epfd", "op")
    replicates: ClassVar[bool] = True
    registers: ClassVar[tuple[int, ...]] = (1, 3)  # EPOLL_CTL_ADD, EPOLL_CTL_MOD

    def read_target(self, address: int, args: tuple[int, ...], abi: Abi, memory: Memory) -> object:
        return memory.read(address, _INT) if args[self.op_at] in self.registers else "ignored"

    def replicate(self, source: int, target: int, into: Replication) -> None:
        if into.result == 0 and into.leader_args[self.op_at] in self.registers:
            leader_data = int.from_bytes(into.leader.read(source + _INT, 8), "little")
            into.cookies[(into.leader_args[self.epfd_at], leader_data)] = \
                int.from_bytes(into.follower.read(target + _INT, 8), "little")


def _cookie_elsewhere(cookies: Cookies, data: int) -> int:
    """The follower's cookie for this leader data under any epoll fd, if they agree."""
    found = {own for (_, leader_data), own in cookies.items() if leader_data == data}
    return found.pop() if len(found) == 1 else data


@dataclass(frozen=True)
class EpollEvents(Arg):
    """epoll_wait's ready list: the return value's epoll_events, each data turned into the
    follower's own cookie for that file descriptor (see EpollEvent). An epoll instance
    reached through a dup of the fd it was set up with (or the other way round) has no
    cookie under this fd: the one remembered under another fd for the same leader data
    is taken when they all agree. A wrong cookie could only mislead that follower, whose
    next calls would then differ: a false alarm, never a hidden one."""

    struct: ClassVar[str] = "epoll_event"
    epfd: str
    epfd_at: int = field(default=-1, kw_only=True)
    references: ClassVar[tuple[str, ...]] = ("epfd",)
    replicates: ClassVar[bool] = True

    def replicate(self, source: int, target: int, into: Replication) -> None:
        if into.result <= 0:
            return
        size = into.abi.struct_sizes[self.struct]
        raw = into.leader.read(source, size * into.result)
        epfd = into.leader_args[self.epfd_at]
        events = []
        for start in range(0, len(raw), size):
            data = int.from_bytes(raw[start + _INT:start + size], "little")
            data = into.cookies.get((epfd, data), _cookie_elsewhere(into.cookies, data))
            events.append(raw[start:start + _INT] + data.to_bytes(8, "little"))
        into.follower.write(target, b"".join(events))


# struct msghdr: name, namelen, iov, iovlen, control, controllen, flags: each in a word
# of its own on both ABIs (the ints are padded on x86_64).
_MSGHDR_WORDS = 7
_NAMELEN, _CONTROLLEN, _MSG_FLAGS = 1, 5, 6


def _msghdr(address: int, abi: Abi, memory: Memory) -> tuple[int, ...]:
    return abi.unpack_words(memory.read(address, _MSGHDR_WORDS * abi.word_size))


def _control_messages(raw: bytes, abi: Abi) -> list[tuple[int, int, bytes]]:
    """The control messages in a msghdr's control bytes: (level, type, data) each. A
    cmsghdr is a word of length, an int level and an int type, then the data; the next
    one starts at the length rounded up to a word (the padding is the program's own)."""
    header = abi.word_size + 2 * _INT
    found, at = [], 0
    while at + header <= len(raw):
        length = abi.unpack_words(raw[at:at + abi.word_size])[0]
        if length < header:
            break
        level, kind = _int(raw[at + abi.word_size:]), _int(raw[at + abi.word_size + _INT:])
        found.append((level, kind, raw[at + header:at + length]))
        at += -(-length // abi.word_size) * abi.word_size
    return found


def _message_sent(address: int, abi: Abi, memory: Memory) -> tuple[object, ...]:
    name, namelen, iov, iovlen, control, controllen, flags = _msghdr(address, abi, memory)
    return (_sockaddr_meaning(memory.read(name, namelen & 0xFFFFFFFF)) if name else NULL,
            _gather(iov, iovlen, abi, memory),
            _control_messages(memory.read(control, min(controllen, 1 << 16)), abi) if control else NULL,
            flags & 0xFFFFFFFF)


def _room_asked(address: int, abi: Abi, memory: Memory) -> tuple[object, ...]:
    name, namelen, iov, iovlen, control, controllen, _ = _msghdr(address, abi, memory)
    return (namelen & 0xFFFFFFFF if name else NULL,
            tuple(length for _, length in _read_iovecs(iov, iovlen, abi, memory)),
            controllen if control else NULL)


def _replicate_message(source: int, target: int, received: int, into: Replication) -> None:
    """One received message (`received` data bytes) from the leader's msghdr into the
    follower's own buffers: address, data, control messages, their lengths, the flags."""
    abi, word = into.abi, into.abi.word_size
    leader, follower = _msghdr(source, abi, into.leader), _msghdr(target, abi, into.follower)
    if leader[0] and follower[0]:
        into.copy(leader[0], follower[0], min(leader[_NAMELEN], follower[_NAMELEN]) & 0xFFFFFFFF)
    _scatter(_gather(leader[2], leader[3], abi, into.leader, received), follower[2], follower[3], abi,
             into.follower)
    if leader[4] and follower[4]:
        into.copy(leader[4], follower[4], min(leader[_CONTROLLEN], follower[_CONTROLLEN]))
    for field_at in (_NAMELEN, _CONTROLLEN, _MSG_FLAGS):
        into.copy(source + field_at * word, target + field_at * word, word)


SOL_SOCKET = SCM_RIGHTS = 1


def _received_fds(address: int, abi: Abi, memory: Memory) -> int:
    """How many file descriptors the kernel put into a received msghdr's control messages."""
    control, controllen = (_msghdr(address, abi, memory)[i] for i in (4, _CONTROLLEN))
    raw = memory.read(control, min(controllen, 1 << 16)) if control else b""
    return sum(len(data) // _INT for level, kind, data in _control_messages(raw, abi)
               if (level, kind) == (SOL_SOCKET, SCM_RIGHTS))


def _fds_phrase(count: int) -> str | None:
    return (f"received {count} file descriptor{'s' if count > 1 else ''} (SCM_RIGHTS), which "
            "exist in the leader only: passing descriptors is not supported yet") if count else None


@dataclass(frozen=True)
class MsgIn(Arg):
    """sendmsg's msghdr: what is sent is compared: the address, the data (the iovecs
    concatenated), the control messages (without their alignment padding) and the flags."""

    def read_target(self, address: int, args: tuple[int, ...], abi: Abi, memory: Memory) -> object:
        return _message_sent(address, abi, memory)


@dataclass(frozen=True)
class MsgOut(Arg):
    """recvmsg's msghdr: the room asked for is compared (address, each iovec, control);
    each follower gets, in its own buffers, the leader's address, data (the return
    value's bytes), control messages, their lengths and the flags. Received file
    descriptors exist in the leader only: the run stops there (`leader_only`)."""

    replicates: ClassVar[bool] = True

    def read_target(self, address: int, args: tuple[int, ...], abi: Abi, memory: Memory) -> object:
        return _room_asked(address, abi, memory)

    def replicate(self, source: int, target: int, into: Replication) -> None:
        if not is_error(into.result):
            _replicate_message(source, target, into.result, into)

    def leader_only(self, address: int, result: int, abi: Abi, memory: Memory) -> str | None:
        return None if is_error(result) else _fds_phrase(_received_fds(address, abi, memory))


# struct mmsghdr: a msghdr, then the unsigned int msg_len the kernel sets.
_MSG_LEN_WORD = _MSGHDR_WORDS


@dataclass(frozen=True)
class MmsgIn(Arg):
    """sendmmsg's mmsghdr array of argument `count` entries: each message compared as
    sendmsg's; the msg_len the kernel set in each sent one (the return value's count)
    reaches the followers."""

    count: str
    count_at: int = field(default=-1, kw_only=True)
    struct: ClassVar[str] = "mmsghdr"
    references: ClassVar[tuple[str, ...]] = ("count",)
    replicates: ClassVar[bool] = True

    def entries(self, address: int, count: int, abi: Abi) -> list[int]:
        """The addresses of the array's first `count` entries (at most 1024, as the kernel)."""
        return [address + i * abi.struct_sizes[self.struct] for i in range(min(max(count, 0), 1024))]

    @staticmethod
    def compared(entry: int, abi: Abi, memory: Memory) -> tuple[object, ...]:
        """What is compared of one entry: the message sent."""
        return _message_sent(entry, abi, memory)

    def read_target(self, address: int, args: tuple[int, ...], abi: Abi, memory: Memory) -> object:
        entries = self.entries(address, args[self.count_at], abi)
        return tuple(self.compared(entry, abi, memory) for entry in entries)

    def replicate(self, source: int, target: int, into: Replication) -> None:
        at = _MSG_LEN_WORD * into.abi.word_size
        for leader, follower in zip(self.entries(source, into.result, into.abi),
                                    self.entries(target, into.result, into.abi), strict=True):
            self.replicate_entry(leader, follower, into)
            into.copy(leader + at, follower + at, _INT)

    def replicate_entry(self, source: int, target: int, into: Replication) -> None:
        """What else one sent or received entry carries into the follower (besides msg_len)."""


@dataclass(frozen=True)
class MmsgOut(MmsgIn):
    """recvmmsg's mmsghdr array: the room each entry asks for is compared; each received
    message (the return value's count) reaches the followers as recvmsg's does, with its
    msg_len."""

    @staticmethod
    def compared(entry: int, abi: Abi, memory: Memory) -> tuple[object, ...]:
        """What is compared of one entry: the room it asks for."""
        return _room_asked(entry, abi, memory)

    def replicate_entry(self, source: int, target: int, into: Replication) -> None:
        received = _int(into.leader.read(source + _MSG_LEN_WORD * into.abi.word_size, _INT))
        _replicate_message(source, target, received, into)

    def leader_only(self, address: int, result: int, abi: Abi, memory: Memory) -> str | None:
        entries = self.entries(address, result, abi)
        return _fds_phrase(sum(_received_fds(entry, abi, memory) for entry in entries))


@dataclass(frozen=True)
class SigAction(Arg):
    """A struct sigaction: flags, mask and the kind of handler are compared,
    handler and restorer addresses are not."""

    struct: ClassVar[str] = "sigaction"

    def read_target(self, address: int, args: tuple[int, ...], abi: Abi, memory: Memory) -> object:
        raw = memory.read(address, abi.struct_sizes[self.struct])
        handler, flags = abi.unpack_words(raw[: 2 * abi.word_size])
        mask = raw[-8:]
        # SIG_DFL (0) and SIG_IGN (1) are compared; real handlers' addresses differ with layout.
        return (handler if handler in (0, 1) else "handler", flags, mask)


@dataclass(frozen=True)
class CloneArgs(Arg):
    """clone3's struct clone_args, `size` bytes of u64 fields in every ABI: flags, exit
    signal and sizes are compared; of its pointers (where PIDs go, stack, TLS) only
    NULL-ness, since addresses differ with the layout."""

    size: str
    size_at: int = field(default=-1, kw_only=True)
    references: ClassVar[tuple[str, ...]] = ("size",)
    _POINTERS: ClassVar[frozenset[int]] = frozenset({1, 2, 3, 5, 7, 8})  # pidfd .. set_tid
    _LARGEST: ClassVar[int] = 88  # CLONE_ARGS_SIZE_VER2

    def read_target(self, address: int, args: tuple[int, ...], abi: Abi, memory: Memory) -> object:
        raw = memory.read(address, min(args[self.size_at], self._LARGEST) // 8 * 8)
        fields = struct.unpack(f"<{len(raw) // 8}Q", raw)
        return tuple(bool(value) if i in self._POINTERS else value for i, value in enumerate(fields))


@dataclass(frozen=True)
class Depends(Arg):
    """An argument whose kind depends on argument `on`'s value (ioctl, fcntl).

    A value missing from `cases`, or mapped to None, makes the call unsupported
    unless `default` is given.
    """

    on: str
    cases: dict[int, Arg | None] = field(default_factory=dict, hash=False, compare=False)
    default: Arg | None = None
    on_at: int = field(default=-1, kw_only=True)
    references: ClassVar[tuple[str, ...]] = ("on",)

    def bind(self, names: tuple[str, ...], row: str) -> Arg:
        bound = super().bind(names, row)
        assert isinstance(bound, Depends)
        return replace(bound, cases={value: case and case.bind(names, row)
                                     for value, case in self.cases.items()},
                       default=self.default and self.default.bind(names, row))

    def resolve(self, args: tuple[int, ...]) -> Arg | None:
        return self.cases.get(args[self.on_at], self.default)

    def kinds(self) -> tuple[Arg, ...]:
        return (self, *(case for case in (*self.cases.values(), self.default) if case is not None))


# Every ABI: a row without `abis` names a syscall that each of them has.
ALL_ABIS: tuple[str, ...] = tuple(ABIS)


@dataclass(frozen=True)
class Syscall:
    """One row of the table. Row attributes naming arguments are resolved to positions
    (the `..._at` fields) when the row is built."""

    name: str
    args: tuple[Arg, ...]
    policy: Policy
    # The ABIs that have this syscall under this name with these arguments.
    abis: tuple[str, ...] = ALL_ABIS
    # (argument, bits): the call is LOCAL when those bits are set in that argument
    # (anonymous mmap), else it follows `policy` (file mappings are synchronised).
    local_when: tuple[str, int] | None = None
    # (argument, values): in a process that has threads, the call is LOCAL when that
    # argument has one of those values (a monotonic clock read, which a lock's timed
    # wait makes or not depending on the interleaving: CPython's GIL).
    local_in_threads: tuple[str, frozenset[int]] | None = field(default=None, hash=False)
    # The kernel raises SIGPIPE with EPIPE: a leader-only call must raise it in the others too.
    sigpipe_on_epipe: bool = False
    # (argument, bits): with those bits set, EPIPE raises no SIGPIPE (MSG_NOSIGNAL).
    sigpipe_unless: tuple[str, int] | None = None
    # LEADER_FIRST: (argument, bits) cleared in the others' call, which must not redo
    # what the leader's did (O_CREAT | O_EXCL | O_TRUNC).
    follower_clears: tuple[str, int] | None = None
    # (signal, action): the call sets a signal's disposition, which mvee.signals tracks.
    sets_disposition: tuple[str, str] | None = None
    # (start, length): the call changes the mappings of that range (the wait-loop page
    # must not be among them).
    changes_mappings: tuple[str, str] | None = None
    # (argument, bits): the call replaces existing mappings in that range only with those
    # bits set (MAP_FIXED); without them it maps free space only.
    replaces_when: tuple[str, int] | None = None
    # The policy when a Pid argument names a process outside the variants: LEADER when
    # acting on it must happen once (a signal), EACH when the call only looks (a pidfd).
    # Every EACH row that names processes says it (tests/test_syscall_table.py).
    foreign_process: Policy | None = None
    # The call returns from a signal handler (rt_sigreturn): mvee.signals counts the
    # handlers still running, and a signal stop right after it was not met in user code.
    returns_from_handler: bool = False
    # The call ends the whole process (exit_group): its other threads die wherever they
    # are, each thread set at its own point (mvee.variant_set: the process's ending).
    ends_process: bool = False
    # The call creates a process or thread (fork, clone): a signal pending in one variant
    # would make its kernel abandon and restart the call (ERESTARTNOINTR) while the others
    # made their child, so every variant makes it with its signals blocked (mvee.execution).
    creates_process: bool = False
    # The call re-enters the one a signal interrupted (restart_syscall): LOCAL when that
    # one was (a thread's timed futex wait, CPython's GIL: not a point of the program).
    restarts_interrupted: bool = False
    # (argument, {value: policy}): the policy for those values of that argument instead
    # of `policy` (fcntl's record locks run in the leader only).
    policy_cases: tuple[str, dict[int, Policy]] | None = field(default=None, hash=False)
    # LEADER_FIRST (accept): (fd argument, flags argument or None): the others run
    # fcntl(fd, F_DUPFD[_CLOEXEC as SOCK_CLOEXEC says], the leader's new fd) instead, a
    # placeholder at the same number (every I/O on it runs in the leader).
    follower_duplicates: tuple[str, str | None] | None = None
    # LEADER_FIRST (wait4): (pid argument, options argument): the others wait for their own
    # counterpart of the process the leader's call reaped (its result), without WNOHANG.
    follower_reaps: tuple[str, str] | None = None
    # (prot, flags, fd, offset, bytes per offset unit): the call maps a file. A follower's
    # writable shared mapping of one is made its own shared anonymous memory holding the
    # file's content (mvee.execution): shared with its own processes (a POSIX semaphore,
    # a multiprocessing lock), not with the other variants'; the file is the leader's.
    maps_file: tuple[str, str, str, str, int] | None = None
    # A multiplexer (i386 socketcall): its first argument selects a row, named here with
    # the number of words of its arguments, which the second argument points to.
    multiplexes: dict[int, tuple[str, int]] | None = field(default=None, hash=False)
    # UNSUPPORTED: why.
    reason: str | None = None
    # (dirfd or "", path, flags): the call opens a file; one of the variant's own /proc
    # files opens in EACH variant and its fd is that variant's own (mvee.own_files).
    opens: tuple[str, str, str] | None = None
    # A read-only call on this fd argument is LOCAL when the fd is one of the variant's own.
    local_on_own_fd: str | None = None
    # The call closes this fd argument.
    closes: str | None = None
    # (length, flags): the call draws random bytes (mkstemp's retry, mvee.temp_names).
    draws_random: tuple[str, str] | None = None
    # The call creates a new name at this path argument and fails if anything exists
    # there (mkdir): like an O_CREAT|O_EXCL open, it may carry a layout-made name.
    creates_new: str | None = None

    # Derived once, when the row is built (the engine reads them at every syscall).
    local_when_at: tuple[int, int] | None = field(init=False, repr=False, compare=False)
    local_in_threads_at: tuple[int, frozenset[int]] | None = field(init=False, repr=False, compare=False)
    follower_clears_at: tuple[int, int] | None = field(init=False, repr=False, compare=False)
    sigpipe_unless_at: tuple[int, int] | None = field(init=False, repr=False, compare=False)
    sets_disposition_at: tuple[int, int] | None = field(init=False, repr=False, compare=False)
    changes_mappings_at: tuple[int, int] | None = field(init=False, repr=False, compare=False)
    replaces_when_at: tuple[int, int] | None = field(init=False, repr=False, compare=False)
    policy_cases_at: tuple[int, dict[int, Policy]] | None = field(init=False, repr=False, compare=False)
    follower_duplicates_at: tuple[int, int | None] | None = field(init=False, repr=False, compare=False)
    opens_at: tuple[int | None, int, int] | None = field(init=False, repr=False, compare=False)
    local_on_own_fd_at: int | None = field(init=False, repr=False, compare=False)
    closes_at: int | None = field(init=False, repr=False, compare=False)
    creates_new_at: int | None = field(init=False, repr=False, compare=False)
    draws_random_at: tuple[int, int] | None = field(init=False, repr=False, compare=False)
    follower_reaps_at: tuple[int, int] | None = field(init=False, repr=False, compare=False)
    maps_file_at: tuple[int, int, int, int, int] | None = field(init=False, repr=False, compare=False)
    names_processes: bool = field(init=False, repr=False, compare=False)
    replicates: bool = field(init=False, repr=False, compare=False)
    dependent: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = tuple(arg.name for arg in self.args)
        args = tuple(arg.bind(names, self.name) for arg in self.args)
        object.__setattr__(self, "args", args)

        def position(name: str) -> int:
            return _position(names, name, self.name)

        def bits_at(reference: tuple[str, int] | None) -> tuple[int, int] | None:
            return (position(reference[0]), reference[1]) if reference else None

        def pair_at(reference: tuple[str, str] | None) -> tuple[int, int] | None:
            return (position(reference[0]), position(reference[1])) if reference else None

        object.__setattr__(self, "local_when_at", bits_at(self.local_when))
        object.__setattr__(self, "local_in_threads_at", self.local_in_threads and (
            position(self.local_in_threads[0]), self.local_in_threads[1]))
        object.__setattr__(self, "follower_clears_at", bits_at(self.follower_clears))
        object.__setattr__(self, "sigpipe_unless_at", bits_at(self.sigpipe_unless))
        object.__setattr__(self, "sets_disposition_at", pair_at(self.sets_disposition))
        object.__setattr__(self, "changes_mappings_at", pair_at(self.changes_mappings))
        object.__setattr__(self, "replaces_when_at", bits_at(self.replaces_when))
        object.__setattr__(self, "policy_cases_at", self.policy_cases and (
            position(self.policy_cases[0]), self.policy_cases[1]))
        object.__setattr__(self, "follower_duplicates_at", self.follower_duplicates and (
            position(self.follower_duplicates[0]),
            None if self.follower_duplicates[1] is None else position(self.follower_duplicates[1])))
        object.__setattr__(self, "draws_random_at", pair_at(self.draws_random))
        object.__setattr__(self, "follower_reaps_at", pair_at(self.follower_reaps))
        object.__setattr__(self, "maps_file_at", self.maps_file and (
            *(position(name) for name in self.maps_file[:4]), self.maps_file[4]))
        if self.opens:
            dirfd, path, flags = self.opens
            object.__setattr__(self, "opens_at", (position(dirfd) if dirfd else None, position(path),
                                                  position(flags)))
        else:
            object.__setattr__(self, "opens_at", None)
        for attribute in ("local_on_own_fd", "closes", "creates_new"):
            name = getattr(self, attribute)
            object.__setattr__(self, f"{attribute}_at", position(name) if name else None)
        kinds = [kind for arg in args for kind in arg.kinds()]
        object.__setattr__(self, "names_processes", any(isinstance(k, Pid) for k in kinds))
        object.__setattr__(self, "replicates", any(k.replicates for k in kinds))
        object.__setattr__(self, "dependent", any(isinstance(arg, Depends) for arg in args))

    def policy_for(self, args: tuple[int, ...], threaded: bool = False) -> Policy:
        """`threaded`: the calling process has (had) threads."""
        if self.local_when_at and args[self.local_when_at[0]] & self.local_when_at[1]:
            return Policy.LOCAL
        if threaded and self.local_in_threads_at and args[self.local_in_threads_at[0]] in \
                self.local_in_threads_at[1]:
            return Policy.LOCAL
        if self.policy_cases_at:
            return self.policy_cases_at[1].get(args[self.policy_cases_at[0]], self.policy)
        return self.policy
