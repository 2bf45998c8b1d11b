"""The vocabulary of the syscall table: argument kinds, execution policies, rows.

Each argument kind knows how to read itself from a stopped variant for comparison
(by content, never by pointer value: ASLR makes pointers differ), how to show
itself in an alarm, and what it replicates from the leader into the other
variants after a leader-only call. Arguments refer to each other by name (a
buffer's length is argument "count"); a row resolves the names to positions once,
when it is built, and refuses a name it does not have.
"""

from __future__ import annotations

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
    # The kernel writes through it: a leader-only call's result is copied to the others.
    writes_memory: ClassVar[bool] = False
    # Bytes shown with their length in an alarm (a write's data, not a path).
    shows_length: ClassVar[bool] = False
    # Fields holding the names of other arguments; each has a position field "<field>_at".
    references: ClassVar[tuple[str, ...]] = ()

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

    def replicate(self, source: int, target: int, leader_args: tuple[int, ...], result: int,
                  abi: Abi, leader_memory: Memory, follower_memory: Memory) -> None:
        """Copy what the leader's kernel wrote at `source` to the follower's `target`."""


@dataclass(frozen=True)
class Int(Arg):
    """Compared by value (counts, sizes, modes, whence ...)."""

    by_value: ClassVar[bool] = True

    def read(self, value: int, args: tuple[int, ...], abi: Abi, memory: Memory) -> object:
        return value


@dataclass(frozen=True)
class Fd(Int):
    pass


@dataclass(frozen=True)
class Flags(Int):
    """Compared by value, shown in hexadecimal."""

    def render(self, raw: int, value: object) -> str:
        return hex(raw)


@dataclass(frozen=True)
class Pid(Int):
    """A PID or TID: compared and passed after translation to the leader's (virtual) PIDs."""


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
class InBuffer(Arg):
    """Bytes read by the kernel; as many as argument `length` says."""

    length: str
    length_at: int = field(default=-1, kw_only=True)
    references: ClassVar[tuple[str, ...]] = ("length",)
    shows_length: ClassVar[bool] = True

    def read_target(self, address: int, args: tuple[int, ...], abi: Abi, memory: Memory) -> object:
        return memory.read(address, min(args[self.length_at], MAX_COMPARED_BYTES))


_AF_UNIX, _AF_INET = 1, 2


@dataclass(frozen=True)
class SockAddr(Arg):
    """A socket address of argument `length`'s length, compared without the padding that
    C code leaves uninitialised (after an AF_UNIX path's NUL, AF_INET's sin_zero)."""

    length: str
    length_at: int = field(default=-1, kw_only=True)
    references: ClassVar[tuple[str, ...]] = ("length",)

    def read_target(self, address: int, args: tuple[int, ...], abi: Abi, memory: Memory) -> object:
        raw = memory.read(address, args[self.length_at])
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


def _copy(source: int, target: int, size: int, leader_memory: Memory, follower_memory: Memory) -> None:
    follower_memory.write(target, leader_memory.read(source, size))


@dataclass(frozen=True)
class OutBuffer(Arg):
    """Bytes written by the kernel: the return value times `unit` bytes, at most
    argument `length` times `unit`."""

    length: str
    unit: int = 1
    length_at: int = field(default=-1, kw_only=True)
    writes_memory: ClassVar[bool] = True
    references: ClassVar[tuple[str, ...]] = ("length",)

    def replicate(self, source: int, target: int, leader_args: tuple[int, ...], result: int,
                  abi: Abi, leader_memory: Memory, follower_memory: Memory) -> None:
        if not is_error(result):
            _copy(source, target, min(result, leader_args[self.length_at]) * self.unit,
                  leader_memory, follower_memory)


@dataclass(frozen=True)
class OutStruct(Arg):
    """A structure written by the kernel (NULL allowed)."""

    struct: str
    count: int = 1
    writes_memory: ClassVar[bool] = True

    def replicate(self, source: int, target: int, leader_args: tuple[int, ...], result: int,
                  abi: Abi, leader_memory: Memory, follower_memory: Memory) -> None:
        _copy(source, target, abi.struct_sizes[self.struct] * self.count, leader_memory, follower_memory)


@dataclass(frozen=True)
class InOutArray(Arg):
    """An array read and written by the kernel (poll's pollfd), argument `count` entries."""

    struct: str
    count: str
    count_at: int = field(default=-1, kw_only=True)
    writes_memory: ClassVar[bool] = True
    references: ClassVar[tuple[str, ...]] = ("count",)

    def read_target(self, address: int, args: tuple[int, ...], abi: Abi, memory: Memory) -> object:
        return memory.read(address, abi.struct_sizes[self.struct] * args[self.count_at])

    def replicate(self, source: int, target: int, leader_args: tuple[int, ...], result: int,
                  abi: Abi, leader_memory: Memory, follower_memory: Memory) -> None:
        _copy(source, target, abi.struct_sizes[self.struct] * leader_args[self.count_at],
              leader_memory, follower_memory)


def _read_iovecs(address: int, count: int, abi: Abi, memory: Memory) -> list[tuple[int, int]]:
    words = abi.unpack_words(memory.read(address, count * 2 * abi.word_size)) if count else ()
    return list(zip(words[0::2], words[1::2], strict=True))


@dataclass(frozen=True)
class IovecIn(Arg):
    """An iovec array of argument `count` entries read by the kernel (writev); compared as
    the concatenated bytes."""

    count: str
    count_at: int = field(default=-1, kw_only=True)
    references: ClassVar[tuple[str, ...]] = ("count",)
    shows_length: ClassVar[bool] = True

    def read_target(self, address: int, args: tuple[int, ...], abi: Abi, memory: Memory) -> object:
        return b"".join(memory.read(base, length)
                        for base, length in _read_iovecs(address, args[self.count_at], abi, memory))


@dataclass(frozen=True)
class IovecOut(Arg):
    """An iovec array of argument `count` entries written by the kernel (readv): the
    return value's bytes, scattered."""

    count: str
    count_at: int = field(default=-1, kw_only=True)
    writes_memory: ClassVar[bool] = True
    references: ClassVar[tuple[str, ...]] = ("count",)

    def replicate(self, source: int, target: int, leader_args: tuple[int, ...], result: int,
                  abi: Abi, leader_memory: Memory, follower_memory: Memory) -> None:
        if result <= 0:
            return
        count = leader_args[self.count_at]
        data = b"".join(leader_memory.read(base, length)
                        for base, length in _read_iovecs(source, count, abi, leader_memory))[:result]
        for base, length in _read_iovecs(target, count, abi, follower_memory):
            if not data:
                break
            follower_memory.write(base, data[:length])
            data = data[length:]


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
    # The kernel raises SIGPIPE with EPIPE: a leader-only call must raise it in the others too.
    sigpipe_on_epipe: bool = False
    # LEADER_FIRST: (argument, bits) cleared in the others' call, which must not redo
    # what the leader's did (O_CREAT | O_EXCL | O_TRUNC).
    follower_clears: tuple[str, int] | None = None
    # (signal, action): the call sets a signal's disposition, which mvee.signals tracks.
    sets_disposition: tuple[str, str] | None = None
    # (start, length): the call changes the mappings of that range (the wait-loop page
    # must not be among them).
    changes_mappings: tuple[str, str] | None = None
    # The policy instead of EACH when a Pid argument names a process outside the
    # variants (signalling it must happen once).
    foreign_process: Policy | None = None
    # The call returns from a signal handler (rt_sigreturn): mvee.signals counts the
    # handlers still running, and a signal stop right after it was not met in user code.
    returns_from_handler: bool = False
    # (dirfd or "", path, flags): the call opens a file; one of the variant's own /proc
    # files opens in EACH variant and its fd is that variant's own (mvee.own_files).
    opens: tuple[str, str, str] | None = None
    # A read-only call on this fd argument is LOCAL when the fd is one of the variant's own.
    local_on_own_fd: str | None = None
    # The call closes this fd argument.
    closes: str | None = None
    # (length, flags): the call draws random bytes (mkstemp's retry, mvee.temp_names).
    draws_random: tuple[str, str] | None = None

    # Derived once, when the row is built (the engine reads them at every syscall).
    local_when_at: tuple[int, int] | None = field(init=False, repr=False, compare=False)
    follower_clears_at: tuple[int, int] | None = field(init=False, repr=False, compare=False)
    sets_disposition_at: tuple[int, int] | None = field(init=False, repr=False, compare=False)
    changes_mappings_at: tuple[int, int] | None = field(init=False, repr=False, compare=False)
    opens_at: tuple[int | None, int, int] | None = field(init=False, repr=False, compare=False)
    local_on_own_fd_at: int | None = field(init=False, repr=False, compare=False)
    closes_at: int | None = field(init=False, repr=False, compare=False)
    draws_random_at: tuple[int, int] | None = field(init=False, repr=False, compare=False)
    names_processes: bool = field(init=False, repr=False, compare=False)
    writes_memory: bool = field(init=False, repr=False, compare=False)
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
        object.__setattr__(self, "follower_clears_at", bits_at(self.follower_clears))
        object.__setattr__(self, "sets_disposition_at", pair_at(self.sets_disposition))
        object.__setattr__(self, "changes_mappings_at", pair_at(self.changes_mappings))
        object.__setattr__(self, "draws_random_at", pair_at(self.draws_random))
        if self.opens:
            dirfd, path, flags = self.opens
            object.__setattr__(self, "opens_at", (position(dirfd) if dirfd else None, position(path),
                                                  position(flags)))
        else:
            object.__setattr__(self, "opens_at", None)
        for attribute in ("local_on_own_fd", "closes"):
            name = getattr(self, attribute)
            object.__setattr__(self, f"{attribute}_at", position(name) if name else None)
        kinds = [kind for arg in args for kind in arg.kinds()]
        object.__setattr__(self, "names_processes", any(isinstance(k, Pid) for k in kinds))
        object.__setattr__(self, "writes_memory", any(k.writes_memory for k in kinds))
        object.__setattr__(self, "dependent", any(isinstance(arg, Depends) for arg in args))

    def policy_for(self, args: tuple[int, ...]) -> Policy:
        if self.local_when_at and args[self.local_when_at[0]] & self.local_when_at[1]:
            return Policy.LOCAL
        return self.policy
