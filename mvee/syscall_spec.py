"""The vocabulary of the syscall table: argument kinds and execution policies.

Each argument kind says how the engine compares it across variants (by content,
never by pointer value: ASLR makes pointers differ) and what it replicates from
the leader to the other variants after a leader-only call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Policy(Enum):
    """Who executes a syscall."""

    EACH = "each"  # every variant executes it and keeps its own result
    EACH_LEADER_RESULT = "each-leader-result"  # every variant executes it, all see the leader's result
    LEADER = "leader"  # the leader executes it; the others skip it and get its result and out-buffers
    # Each variant runs it at its own pace, without a rendezvous or a comparison: it only
    # changes the variant's own address space, which legitimately differs with the layout
    # (CPython's allocator, for one, asks for memory depending on where arenas land).
    LOCAL = "local"
    LEADER_FIRST = "leader-first"  # opens: leader first, then the others without O_CREAT/O_EXCL/O_TRUNC
    UNSUPPORTED = "unsupported"  # stops the run with an "unsupported" alarm


@dataclass(frozen=True)
class Arg:
    """One argument of a syscall; the subclass says how it is compared."""

    name: str


@dataclass(frozen=True)
class Int(Arg):
    """Compared by value (counts, sizes, modes, whence ...)."""


@dataclass(frozen=True)
class Fd(Int):
    pass


@dataclass(frozen=True)
class Flags(Int):
    """Compared by value, shown in hexadecimal."""


@dataclass(frozen=True)
class Pid(Int):
    """A PID or TID: compared and passed after translation to the leader's (virtual) PIDs."""


@dataclass(frozen=True)
class Addr(Arg):
    """A pointer whose target is not compared: only NULL against non-NULL is."""


@dataclass(frozen=True)
class Ignored(Arg):
    """Differs legitimately between variants (TLS pointers, absolute timer expiries ...)."""


@dataclass(frozen=True)
class CString(Arg):
    pass


@dataclass(frozen=True)
class StringArray(Arg):
    """A NULL-terminated array of C strings (argv, envp)."""


@dataclass(frozen=True)
class InBuffer(Arg):
    """Bytes read by the kernel; the length is argument `length_arg`."""

    length_arg: int


@dataclass(frozen=True)
class SockAddr(Arg):
    """A socket address of length argument `length_arg`, compared without the padding
    that C code leaves uninitialised (after an AF_UNIX path's NUL, AF_INET's sin_zero)."""

    length_arg: int


@dataclass(frozen=True)
class InStruct(Arg):
    """A structure read by the kernel (NULL allowed); size from the ABI's table."""

    struct: str
    count: int = 1


@dataclass(frozen=True)
class OutBuffer(Arg):
    """Bytes written by the kernel: the return value times `unit` bytes, at most
    argument `length_arg` times `unit`."""

    length_arg: int
    unit: int = 1


@dataclass(frozen=True)
class OutStruct(Arg):
    """A structure written by the kernel (NULL allowed)."""

    struct: str
    count: int = 1


@dataclass(frozen=True)
class InOutArray(Arg):
    """An array read and written by the kernel (poll's pollfd), `count_arg` entries."""

    struct: str
    count_arg: int


@dataclass(frozen=True)
class IovecIn(Arg):
    """An iovec array read by the kernel (writev); compared as the concatenated bytes."""

    count_arg: int


@dataclass(frozen=True)
class IovecOut(Arg):
    """An iovec array written by the kernel (readv): the return value's bytes, scattered."""

    count_arg: int


@dataclass(frozen=True)
class SigAction(Arg):
    """A struct sigaction: flags, mask and the kind of handler are compared,
    handler and restorer addresses are not."""


@dataclass(frozen=True)
class Depends(Arg):
    """An argument whose kind depends on another argument's value (ioctl, fcntl).

    A value missing from `cases`, or mapped to None, makes the call unsupported
    unless `default` is given.
    """

    on: int
    cases: dict[int, Arg | None] = field(default_factory=dict, hash=False, compare=False)
    default: Arg | None = None

    def resolve(self, args: tuple[int, ...]) -> Arg | None:
        return self.cases.get(args[self.on], self.default)


@dataclass(frozen=True)
class Syscall:
    name: str
    args: tuple[Arg, ...]
    policy: Policy
    # (argument, bits): the call is LOCAL when those bits are set in that argument
    # (anonymous mmap), else it follows `policy` (file mappings are synchronised).
    local_when: tuple[int, int] | None = None
    # The kernel raises SIGPIPE with EPIPE: a leader-only call must raise it in the others too.
    sigpipe_on_epipe: bool = False

    # Derived once, for the engine's hot path.
    names_processes: bool = field(init=False, repr=False, compare=False)
    writes_memory: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        kinds = [*self.args, *(case for arg in self.args if isinstance(arg, Depends)
                               for case in arg.cases.values() if case is not None)]
        object.__setattr__(self, "names_processes", any(isinstance(k, Pid) for k in kinds))
        object.__setattr__(self, "writes_memory", any(
            isinstance(k, OutBuffer | OutStruct | InOutArray | IovecOut) for k in kinds))

    def policy_for(self, args: tuple[int, ...]) -> Policy:
        if self.local_when and args[self.local_when[0]] & self.local_when[1]:
            return Policy.LOCAL
        return self.policy
