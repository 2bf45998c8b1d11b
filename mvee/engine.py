"""The generic engine: decodes a syscall from the table, compares it across
variants by content, and replicates a leader's results into the other variants.

It knows no syscall by name: everything comes from the argument kinds in
mvee.syscall_spec and the rows of mvee.syscall_table.
"""

from __future__ import annotations

from dataclasses import dataclass

from mvee.abi import Abi
from mvee.syscall_spec import (
    Arg,
    Cookies,
    Depends,
    Memory,
    Pid,
    Policy,
    Replication,
    Syscall,
    is_error,
    signed,
)
from mvee.syscall_table import BY_ABI, REFUSED

EINTR = 4


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
            if self.name in REFUSED:
                return f"syscall {self.name} is not supported: {REFUSED[self.name]}"
            return f"syscall {self.name} ({self.abi.name} #{self.nr}) is not in the syscall table"
        if self.spec.policy is Policy.UNSUPPORTED:
            return f"syscall {self.name} is not supported: {self.spec.reason}"
        if None not in self.kinds:
            return None
        for declared, kind in zip(self.spec.args, self.kinds, strict=True):
            if kind is None:
                assert isinstance(declared, Depends)  # the only kind that resolves to None
                selector = self.spec.args[declared.on_at]
                return f"{self.name} with {selector.name}={self.args[declared.on_at]:#x} is not supported"
        return None

    def render(self) -> str:
        if self.spec is None:
            return f"{self.name}({', '.join(hex(a) for a in self.args)})"
        parts = []
        for kind, raw, value in zip(self.kinds, self.args, self.values, strict=False):
            if kind is None:
                parts.append(f"?={raw:#x}")
                continue
            bits = kind.signed_bits if kind.signed_bits >= 0 else 8 * self.abi.word_size
            parts.append(f"{kind.name}={kind.render(signed(raw, bits) if bits else raw, value)}")
        return f"{self.name}({', '.join(parts)})"


# (ABI name, number) -> (name, row): the lookup runs at every stop, so it is done once
# per syscall.
_ROWS: dict[tuple[str, int], tuple[str, Syscall | None]] = {}


def row_of(abi: Abi, nr: int) -> tuple[str, Syscall | None]:
    """A call number's name and table row (None: no row) in an ABI."""
    row = _ROWS.get((abi.name, nr))
    if row is None:
        name = abi.name_of(nr)
        row = _ROWS[(abi.name, nr)] = (name, BY_ABI[abi.name].get(name))
    return row


def decode(abi: Abi, nr: int, args: tuple[int, ...], memory: Memory) -> Call:
    name, spec = row_of(abi, nr)
    if spec is None:
        return Call(abi, nr, name, args, None, (), ())
    if spec.multiplexes is not None:
        return _demultiplex(abi, nr, name, spec, args, memory)
    return _decode_row(abi, nr, name, spec, args, memory)


def _demultiplex(abi: Abi, nr: int, name: str, spec: Syscall, args: tuple[int, ...], memory: Memory) -> Call:
    """A multiplexer's call (i386 socketcall) decoded as the row it selects, with the
    arguments it points to; the number stays the multiplexer's."""
    assert spec.multiplexes is not None
    selected = spec.multiplexes.get(args[0])
    if selected is None:
        return Call(abi, nr, name, args[:len(spec.args)], spec, spec.args, tuple(args[:len(spec.args)]))
    row = BY_ABI[abi.name].get(selected[0])
    if row is None:  # a call without a row: refused for the reason it has
        return Call(abi, nr, selected[0], args, None, (), ())
    try:
        words = abi.unpack_words(memory.read(args[1], selected[1] * abi.word_size))
    except OSError:
        words = ()
    if len(words) < selected[1]:  # a bad pointer: the multiplexer is compared as it is
        return _decode_row(abi, nr, name, spec, args, memory)
    return _decode_row(abi, nr, row.name, row, words + (0,) * (len(row.args) - len(words)), memory)


def _decode_row(abi: Abi, nr: int, name: str, spec: Syscall, args: tuple[int, ...], memory: Memory) -> Call:
    if spec.dependent:
        kinds = tuple(kind.resolve(args) for kind in spec.args)
        values = tuple([None if kind is None else value if kind.by_value
                        else kind.read(value, args, abi, memory)
                        for kind, value in zip(kinds, args, strict=False)])
    else:
        kinds = spec.args
        values = tuple([value if kind.by_value else kind.read(value, args, abi, memory)
                        for kind, value in zip(kinds, args, strict=False)])
    return Call(abi, nr, name, args[: len(spec.args)], spec, kinds, values)


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


def replicate_outputs(leader: Call, leader_memory: Memory, follower: Call, follower_memory: Memory,
                      result: int, cookies: Cookies, interrupted: bool = False) -> None:
    """Copy what the leader's kernel call wrote into the follower's out-arguments, and
    remember what the follower must get later (its epoll cookies, in `cookies`).
    `interrupted`: `result` is a restart code, and only what the kernel writes then is."""
    if ((is_error(result) and result != -EINTR and not interrupted)
            or not (leader.spec and leader.spec.replicates)):
        return
    into = Replication(leader.abi, result, leader.args, follower.args, leader_memory, follower_memory,
                       cookies)
    for position, kind in enumerate(leader.kinds):
        source, target = leader.args[position], follower.args[position]
        if (kind is not None and kind.replicates and source != 0 and target != 0
                and (kind.written_when_interrupted or not interrupted)):
            kind.replicate(source, target, into)


def leader_only_outputs(leader: Call, leader_memory: Memory, result: int) -> str | None:
    """What the leader's call made that the others cannot be given (a received file
    descriptor), or None."""
    if not (leader.spec and leader.spec.replicates):
        return None
    for position, kind in enumerate(leader.kinds):
        address = leader.args[position]
        if kind is not None and kind.replicates and address != 0:
            phrase = kind.leader_only(address, result, leader.abi, leader_memory)
            if phrase:
                return phrase
    return None


def pid_arguments(call: Call) -> list[int]:
    """Positions of the arguments that name processes."""
    return [i for i, kind in enumerate(call.kinds) if isinstance(kind, Pid)] if call.spec and \
        call.spec.names_processes else []

