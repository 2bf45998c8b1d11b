"""The one lease interface of the lab: a backend lends a machine of a boot target
for a ``with`` block, reachable over SSH, and takes it back at the block's end.

    with backend.lease("bookworm-i386") as machine:
        machine.ssh.run("uname -m")

Backends: ``QemuBackend`` (vm.machines.qemu: a local VM restored from its
golden snapshot, stopped and removed afterwards), ``HostsBackend``
(vm.machines.hosts: an SSH host of an inventory, left as it was found) and the
running machines of the repository's Vagrantfile (vm.machines.vagrant, an
inventory of hosts too). Boot targets are those of images/*.toml.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

from vm.images.recipe import all_boot_targets
from vm.machines.ssh import SshClient


class LeaseError(Exception):
    """A machine that could not be had; the message says why (a VM's console tail included)."""


@dataclass(frozen=True)
class TargetInfo:
    """What a boot target is: its architecture and whether IA-32 code runs on it."""

    name: str
    arch: str  # "i386" or "amd64"
    ia32: bool  # can 32-bit binaries (and int 0x80 from 64-bit code) run there

    @property
    def abis(self) -> tuple[str, ...]:
        """ABIs of the static test programs the target runs: its own first."""
        if self.arch == "i386":
            return ("i386",)
        return ("x86_64", "i386") if self.ia32 else ("x86_64",)


def all_targets() -> list[str]:
    return sorted(all_boot_targets())


def target_info(target: str) -> TargetInfo:
    targets = all_boot_targets()
    if target not in targets:
        raise LeaseError(f"unknown boot target {target!r} (known: {', '.join(sorted(targets))})")
    recipe, cmdline = targets[target]
    return TargetInfo(target, recipe.architecture, "ia32_emulation=0" not in cmdline.split())


@dataclass
class Machine:
    """A leased machine of a boot target, reachable over SSH."""

    name: str
    target: TargetInfo
    ssh: SshClient
    ready_s: float = 0.0  # from QEMU's start (or from connecting) to a working command
    how: str = "host"  # "restored", "cold", "host" or "vagrant"
    facts: dict[str, str] = field(default_factory=dict)


class Backend(Protocol):
    """Where machines come from."""

    def describe(self) -> str:
        """One line for pytest's header: what the lab runs on."""
        ...

    def targets(self) -> list[str]:
        """The boot targets this backend can lease."""
        ...

    def lease(self, target: str) -> AbstractContextManager[Machine]:
        """A machine of target for the block; LeaseError if there is none."""
        ...
