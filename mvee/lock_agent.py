"""The lock agent's monitor side: building it, its shared log, telling each process its variant.

The agent (`lock_agent.c`, preloaded into every variant) makes the followers' threads take
the leader's lock order (docs/architecture.md, "Lock-order recording and replay"). Here:
- `build`: compiled once per source into the lab cache, for x86_64 and i386
  (`$PLATFORM` in LD_PRELOAD picks the program's: x86_64 or i686);
- `session`: the log, a memfd the monitor holds for the run (its lifetime: gone with the
  monitor, even after a SIGKILL), which every process opens as `/proc/<monitor>/fd/<fd>`;
  the variants' environment that names both, and what the report says of it;
- `tell_index`: at every exec stop, the variant's index written into the agent's variable
  (envp[0], where the agent puts it back with `00` for an exec): every variant execs the
  same environment, and each agent knows whether it leads.
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mvee import cached, vdso

if TYPE_CHECKING:
    from mvee.ptrace_api import Memory

SOURCE = Path(__file__).with_name("lock_agent.c")
NAME = "mvee-lock-agent.so"
_NAME = "MVEE_LOCK_AGENT"
VARIABLE = f"{_NAME}=".encode()
# The agent's log header (struct header in lock_agent.c): uint32 words.
MAGIC = 0x4D4C4F47
MAX_VARIANTS = 16
_HEADER = struct.Struct("<6I")  # magic, variants, capacity, entries_at, glock, head
_ATTACHED = _HEADER.size + 3 * MAX_VARIANTS * 4  # after cursor[], bell[], waiters[]
ENTRIES_AT = 4096
CAPACITY = 1 << 16  # entries of 16 bytes: a follower may lag this far behind the leader
# $PLATFORM as the kernel's AT_PLATFORM names each ABI, and the compiler's flag for it.
PLATFORMS = {"x86_64": "-m64", "i686": "-m32"}


class Unavailable(Exception):
    """The agent cannot be built here (no C compiler, no 32-bit libraries)."""


def build() -> str:
    """The LD_PRELOAD entry of the agent, built for every ABI if not yet in the cache."""
    source = SOURCE.read_bytes()
    directory = Path(cached.cache_dir()) / f"lock-agent-{zlib.crc32(source):08x}"
    for platform, flag in PLATFORMS.items():
        target = directory / platform / NAME
        if not target.exists():
            _compile(flag, target, platform)
    entry = str(directory / "$PLATFORM" / NAME)
    if ":" in entry or " " in entry:  # LD_PRELOAD's separators
        raise Unavailable(f"its path would be split in LD_PRELOAD: {entry}")
    return entry


def _compile(flag: str, target: Path, platform: str) -> None:
    import shutil  # here: a run with the agent built does without them
    import subprocess

    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise Unavailable("no C compiler to build it")
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f"{NAME}.{os.getpid()}.tmp")
    done = subprocess.run([compiler, flag, "-O2", "-shared", "-fPIC", "-o", str(temporary), str(SOURCE)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        temporary.unlink(missing_ok=True)
        first = (done.stderr.strip().splitlines() or ["failed"])[0]
        raise Unavailable(f"cannot build it for {platform}: {first}")
    os.replace(temporary, target)


@dataclass
class Session:
    """The agent for one run: the variants' environment and, at the end, what it did."""

    variables: dict[str, str] = field(default_factory=dict)  # the agent's: its variable first
    reason: str | None = None  # why it is not loaded
    log: mmap.mmap | None = None

    def environment(self) -> dict[str, str] | None:
        """The monitor's environment with the agent's variables: its own first (where
        `tell_index` finds it), LD_PRELOAD where the program has it."""
        if not self.variables:
            return None
        environment = {name: value for name, value in self.variables.items()
                       if name == _NAME or name not in os.environ}
        environment.update((name, self.variables.get(name, value)) for name, value in os.environ.items()
                           if name != _NAME)
        return environment

    def describe(self) -> dict[str, object]:
        """For the report: whether the agent was preloaded, else why not; and how many of
        the leader's processes ordered how many operations with it."""
        if self.log is None:
            return {"enabled": False, "reason": self.reason}
        processes = struct.unpack_from("<I", self.log, _ATTACHED)[0]
        return {"enabled": True, "processes": processes, "operations": _HEADER.unpack_from(self.log)[5]}


@contextmanager
def session(variants: int, enabled: bool) -> Iterator[Session]:
    """The log for `variants` variants while the run lasts, or why there is none."""
    if not enabled:
        yield Session(reason="off (--lock-agent)")
        return
    try:
        preload = build()
    except (Unavailable, OSError) as error:
        yield Session(reason=str(error))
        return
    fd = os.memfd_create("mvee-lock-log", os.MFD_CLOEXEC)
    try:
        size = ENTRIES_AT + CAPACITY * 16
        os.ftruncate(fd, size)
        with mmap.mmap(fd, size) as log:
            _HEADER.pack_into(log, 0, MAGIC, variants, CAPACITY, ENTRIES_AT, 0, 0)
            theirs = os.environ.get("LD_PRELOAD")
            variables = {_NAME: f"00:/proc/{os.getpid()}/fd/{fd}",
                         "LD_PRELOAD": f"{preload}:{theirs}" if theirs else preload}
            yield Session(variables, log=log)
    finally:
        os.close(fd)


def tell_index(pid: int, memory: Memory, index: int) -> None:
    """At an exec stop: the agent's variable, if envp[0] is it, names this variant. Not in
    a program that loads no agent (static, or setuid: the loader ignores LD_PRELOAD): its
    environment stays the same in every variant."""
    abi, envp = vdso.initial_stack(pid, memory)
    (pointer,) = abi.unpack_words(memory.read(envp, abi.word_size))
    if not pointer or memory.read(pointer, len(VARIABLE)) != VARIABLE:
        return
    auxv = vdso.auxv_entries(abi, memory, envp, {vdso.AT_BASE, vdso.AT_SECURE})
    if auxv.get(vdso.AT_BASE, (0, 0))[1] != 0 and auxv.get(vdso.AT_SECURE, (0, 0))[1] == 0:
        memory.write(pointer + len(VARIABLE), b"%02d" % index)
