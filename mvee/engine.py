"""The generic engine: decodes a syscall from the table, compares it across
variants by content, and replicates a leader's results into the other variants.

It knows no syscall by name: everything comes from the argument kinds in
mvee.syscall_spec and the rows of mvee.syscall_table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from mvee.abi import Abi
from mvee.syscall_spec import (
    Addr,
    Arg,
    CString,
    Depends,
    Fd,
    Flags,
    Ignored,
    InBuffer,
    InOutArray,
    InStruct,
    Int,
    IovecIn,
    IovecOut,
    OutBuffer,
    OutStruct,
    Pid,
    Policy,
    SigAction,
    SockAddr,
    StringArray,
    Syscall,
)
from mvee.syscall_table import BY_NAME

MAX_ERRNO = 4095
EINTR = 4
# Beyond this, buffers are compared by length only (a safety valve for huge writes).
MAX_COMPARED_BYTES = 64 << 20
_MAX_STRINGS = 4096


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


@dataclass(slots=True)
class Call:
    """One variant's view of the syscall it stopped at."""

    abi: Abi
    nr: int
    name: str
    args: tuple[int, ...]
    spec: Syscall | None
    kinds: tuple[Arg | None, ...]  # Depends resolved; None where the value is not supported
    values: tuple[object, ...]  # what is compared across variants

    @property
    def unsupported_reason(self) -> str | None:
        if self.spec is None:
            return f"syscall {self.name} ({self.abi.name} #{self.nr}) is not in the syscall table"
        if self.spec.policy is Policy.UNSUPPORTED:
            return f"syscall {self.name} is not supported yet"
        if None not in self.kinds:
            return None
        for declared, kind, value in zip(self.spec.args, self.kinds, self.args, strict=False):
            if kind is None:
                selector = self.args[declared.on] if isinstance(declared, Depends) else value
                return f"{self.name} with {self.spec.args[declared.on].name}={selector:#x} is not supported"
        return None

    def render(self) -> str:
        if self.spec is None:
            return f"{self.name}({', '.join(hex(a) for a in self.args)})"
        parts = []
        for kind, raw, value in zip(self.kinds, self.args, self.values, strict=False):
            name = kind.name if kind else "?"
            parts.append(f"{name}={_render_value(kind, raw, value)}")
        return f"{self.name}({', '.join(parts)})"


def _render_value(kind: Arg | None, raw: int, value: object) -> str:
    if isinstance(value, bytes):
        shown = repr(value[:48]) + ("..." if len(value) > 48 else "")
        return f"{shown} ({len(value)} bytes)" if isinstance(kind, InBuffer | IovecIn) else shown
    if isinstance(kind, Flags | Addr | Ignored) or kind is None:
        return hex(raw)
    return repr(value)


# (ABI name, number) -> (name, row, whether any argument depends on another): the
# lookup runs at every stop, so it is done once per syscall.
_ROWS: dict[tuple[str, int], tuple[str, Syscall | None, bool]] = {}


def decode(abi: Abi, nr: int, args: tuple[int, ...], memory: Memory) -> Call:
    row = _ROWS.get((abi.name, nr))
    if row is None:
        name = abi.name_of(nr)
        spec = BY_NAME.get(name)
        row = _ROWS[(abi.name, nr)] = (name, spec, bool(spec) and any(
            isinstance(kind, Depends) for kind in spec.args))
    name, spec, dependent = row
    if spec is None:
        return Call(abi, nr, name, args, None, (), ())
    kinds = tuple(k.resolve(args) if isinstance(k, Depends) else k for k in spec.args) if dependent \
        else spec.args
    values = tuple([value if type(kind) in _BY_VALUE else _comparable(kind, value, args, abi, memory)
                    for kind, value in zip(kinds, args, strict=False)])
    return Call(abi, nr, name, args[: len(spec.args)], spec, kinds, values)


_BY_VALUE = frozenset({Int, Fd, Flags, Pid})


def _comparable(kind: Arg | None, value: int, args: tuple[int, ...], abi: Abi, memory: Memory) -> object:
    if kind is None or isinstance(kind, Ignored):
        return None
    if isinstance(kind, Int):
        return value
    if value == 0:
        return NULL
    try:
        if isinstance(kind, CString):
            return memory.read_cstring(value)
        if isinstance(kind, StringArray):
            return _read_string_array(value, abi, memory)
        if isinstance(kind, InBuffer):
            return memory.read(value, min(args[kind.length_arg], MAX_COMPARED_BYTES))
        if isinstance(kind, InStruct):
            return memory.read(value, abi.struct_sizes[kind.struct] * kind.count)
        if isinstance(kind, InOutArray):
            return memory.read(value, abi.struct_sizes[kind.struct] * args[kind.count_arg])
        if isinstance(kind, IovecIn):
            return b"".join(memory.read(base, length)
                            for base, length in _read_iovecs(value, args[kind.count_arg], abi, memory))
        if isinstance(kind, SockAddr):
            return _sockaddr_view(memory.read(value, args[kind.length_arg]))
        if isinstance(kind, SigAction):
            return _sigaction_view(memory.read(value, abi.struct_sizes["sigaction"]), abi)
    except OSError:
        return UNREADABLE
    return POINTER  # out-buffers and plain addresses: only NULL-ness is compared


def _read_string_array(address: int, abi: Abi, memory: Memory) -> tuple[bytes, ...]:
    strings = []
    for _ in range(_MAX_STRINGS):
        (pointer,) = abi.unpack_words(memory.read(address, abi.word_size))
        if pointer == 0:
            break
        strings.append(memory.read_cstring(pointer))
        address += abi.word_size
    return tuple(strings)


def _read_iovecs(address: int, count: int, abi: Abi, memory: Memory) -> list[tuple[int, int]]:
    words = abi.unpack_words(memory.read(address, count * 2 * abi.word_size)) if count else ()
    return list(zip(words[0::2], words[1::2], strict=True))


_AF_UNIX, _AF_INET = 1, 2


def _sockaddr_view(raw: bytes) -> bytes:
    family = int.from_bytes(raw[:2], "little")
    if family == _AF_UNIX and raw[2:3] != b"\0":  # a path; abstract names use every byte
        return raw[: raw.find(b"\0", 2) if b"\0" in raw[2:] else len(raw)]
    if family == _AF_INET:
        return raw[:8]
    return raw


def _sigaction_view(raw: bytes, abi: Abi) -> tuple[object, ...]:
    handler, flags = abi.unpack_words(raw[: 2 * abi.word_size])
    mask = raw[-8:]
    # SIG_DFL (0) and SIG_IGN (1) are compared; real handlers' addresses differ with layout.
    return (handler if handler in (0, 1) else "handler", flags, mask)


def compare(calls: list[Call]) -> str | None:
    """Why the variants' calls differ, or None when they agree."""
    first = calls[0]
    for index, call in enumerate(calls[1:], start=1):
        if (call.abi.name, call.name) != (first.abi.name, first.name):
            return (f"variant 0 calls {first.name} ({first.abi.name}), "
                    f"variant {index} calls {call.name} ({call.abi.name})")
        for position, (a, b) in enumerate(zip(first.values, call.values, strict=True)):
            if a != b:
                kind = first.kinds[position]
                arg_name = kind.name if kind else f"#{position}"
                return f"argument {position} ({arg_name}) of {first.name} differs in variant {index}"
    return None


def is_error(result: int) -> bool:
    return -MAX_ERRNO <= result < 0


def replicate_outputs(leader: Call, leader_memory: Memory, follower: Call, follower_memory: Memory,
                      result: int) -> None:
    """Copy what the leader's kernel call wrote into the follower's out-arguments."""
    if (is_error(result) and result != -EINTR) or not (leader.spec and leader.spec.writes_memory):
        return
    abi = leader.abi
    for position, kind in enumerate(leader.kinds):
        source, target = leader.args[position], follower.args[position]
        if kind is None or source == 0 or target == 0:
            continue
        if isinstance(kind, OutBuffer):
            if is_error(result):
                continue
            size = min(result, leader.args[kind.length_arg]) * kind.unit
            follower_memory.write(target, leader_memory.read(source, size))
        elif isinstance(kind, OutStruct | InOutArray):
            count = kind.count if isinstance(kind, OutStruct) else leader.args[kind.count_arg]
            size = abi.struct_sizes[kind.struct] * count
            follower_memory.write(target, leader_memory.read(source, size))
        elif isinstance(kind, IovecOut) and result > 0:
            count = leader.args[kind.count_arg]
            data = b"".join(leader_memory.read(base, length)
                            for base, length in _read_iovecs(source, count, abi, leader_memory))[:result]
            for base, length in _read_iovecs(target, count, abi, follower_memory):
                if not data:
                    break
                follower_memory.write(base, data[:length])
                data = data[length:]


def pid_arguments(call: Call) -> list[int]:
    """Positions of the arguments that name processes."""
    return [i for i, kind in enumerate(call.kinds) if isinstance(kind, Pid)] if call.spec and \
        call.spec.names_processes else []

