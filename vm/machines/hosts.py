"""The SSH-hosts backend of the lease interface: machines that already run (a real
i386 box, VMs elsewhere, the Vagrant machines), each standing for a boot target.
A lease connects to the target's host and disconnects at the end; the host itself
is left as it was found (the monitor deployed in /root/lab stays)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from vm.machines.inventory import HostEntry
from vm.machines.lease import LeaseError, Machine, target_info
from vm.machines.ssh import SshClient, SshError


class HostsBackend:
    def __init__(self, entries: list[HostEntry], source: str, how: str = "host") -> None:
        self.entries = entries
        self.source = source  # where the entries came from, for the header
        self.how = how

    def describe(self) -> str:
        hosts = ", ".join(f"{e.name} ({e.user}@{e.host}:{e.port})" for e in self.entries)
        return f"SSH hosts of {self.source}: {hosts}"

    def targets(self) -> list[str]:
        return sorted({e.target for e in self.entries})

    @contextlib.contextmanager
    def lease(self, target: str) -> Iterator[Machine]:
        entry = next((e for e in self.entries if e.target == target), None)
        if entry is None:
            raise LeaseError(f"{self.source} names no host for target {target}")
        start = time.monotonic()
        try:
            client = SshClient(entry.host, entry.port, entry.user, entry.key)
        except SshError as e:
            raise LeaseError(f"lab host {entry.name}: {e}") from None
        try:
            machine = Machine(target, target_info(target), client, time.monotonic() - start, self.how)
            machine.facts["host"] = entry.name
            yield machine
        finally:
            client.close()
