"""Per-ABI facts behind one interface.

A variant's ABI is decided per syscall stop from PTRACE_GET_SYSCALL_INFO's
``arch`` (an x86_64 process executing ``int 0x80`` enters the i386 table), never
from the monitor's own build. The monitor's ABI (``HOST``) decides the layout of
``user_regs_struct`` it reads and writes through PEEKUSER/POKEUSER.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

from mvee.abi import i386, x86_64


@dataclass(frozen=True)
class Abi:
    name: str
    audit_arch: int
    word_size: int
    syscall_numbers: dict[str, int]
    # Generic register names ("bx", "di" ...) holding arguments 0-5.
    syscall_arg_registers: tuple[str, ...]
    struct_sizes: dict[str, int]
    # Order of the fields of this ABI's user_regs_struct, as the monitor sees it
    # when the monitor itself runs with this ABI.
    user_regs_fields: tuple[str, ...]
    # Bytes of the instructions that enter the kernel, by name.
    syscall_instructions: dict[str, bytes]
    # The syscall that maps memory with the six arguments of mmap(2).
    mmap_syscall: str
    syscall_names: dict[int, str] = field(init=False)
    word_mask: int = field(init=False)

    def __post_init__(self) -> None:
        names = {nr: name for name, nr in self.syscall_numbers.items()}
        object.__setattr__(self, "syscall_names", names)
        object.__setattr__(self, "word_mask", (1 << (8 * self.word_size)) - 1)

    def siginfo_sender(self, info: bytes) -> tuple[int, int]:
        """si_code and si_pid of a siginfo in this (monitor-side) ABI's layout: the
        union after si_signo, si_errno, si_code starts at the next word boundary."""
        union = 12 if self.word_size == 4 else 16
        return (int.from_bytes(info[8:12], "little", signed=True),
                int.from_bytes(info[union:union + 4], "little", signed=True))

    def name_of(self, nr: int) -> str:
        return self.syscall_names.get(nr, f"syscall_{nr}")

    def signed(self, value: int) -> int:
        """Interpret a register value as this ABI's signed long."""
        value &= self.word_mask
        return value - (1 << (8 * self.word_size)) if value >> (8 * self.word_size - 1) else value

    def pack_word(self, value: int) -> bytes:
        return struct.pack("<Q" if self.word_size == 8 else "<I", value & self.word_mask)

    def unpack_words(self, data: bytes) -> tuple[int, ...]:
        return struct.unpack(f"<{len(data) // self.word_size}{'Q' if self.word_size == 8 else 'I'}",
                             data)

    def with_registers(self, raw: bytes, values: dict[str, int]) -> bytes:
        """A copy of a raw user_regs_struct of this ABI with some registers replaced."""
        out = bytearray(raw)
        for register, value in values.items():
            offset = self.user_offset(register)
            out[offset:offset + self.word_size] = self.pack_word(value)
        return bytes(out)

    def register(self, raw: bytes, name: str) -> int:
        offset = self.user_offset(name)
        return self.unpack_words(raw[offset:offset + self.word_size])[0]

    def user_offset(self, register: str) -> int:
        """Offset of a register in this (monitor-side) ABI's user_regs_struct."""
        return self.user_regs_fields.index(register) * self.word_size


def _make(module: object) -> Abi:
    return Abi(
        name=module.NAME,  # type: ignore[attr-defined]
        audit_arch=module.AUDIT_ARCH,  # type: ignore[attr-defined]
        word_size=module.WORD_SIZE,  # type: ignore[attr-defined]
        syscall_numbers=module.SYSCALL_NUMBERS,  # type: ignore[attr-defined]
        syscall_arg_registers=module.SYSCALL_ARG_REGISTERS,  # type: ignore[attr-defined]
        struct_sizes=module.STRUCT_SIZES,  # type: ignore[attr-defined]
        user_regs_fields=module.USER_REGS_FIELDS,  # type: ignore[attr-defined]
        syscall_instructions=module.SYSCALL_INSTRUCTIONS,  # type: ignore[attr-defined]
        mmap_syscall=module.MMAP_SYSCALL,  # type: ignore[attr-defined]
    )


X86_64 = _make(x86_64)
I386 = _make(i386)
BY_AUDIT_ARCH: dict[int, Abi] = {X86_64.audit_arch: X86_64, I386.audit_arch: I386}
BY_NAME: dict[str, Abi] = {X86_64.name: X86_64, I386.name: I386}

_machine = os.uname().machine
HOST: Abi = X86_64 if _machine == "x86_64" and struct.calcsize("P") == 8 else I386

_USER_CS_64 = 0x33  # the code segment of 64-bit user code (__USER_CS)


def execution_mode(regs: bytes) -> Abi:
    """The mode a stopped process's code runs in (not the ABI of a syscall it made), from
    its registers as the monitor reads them (a raw user_regs_struct of HOST)."""
    if HOST.word_size == 4:
        return I386
    return X86_64 if HOST.register(regs, "cs") == _USER_CS_64 else I386
