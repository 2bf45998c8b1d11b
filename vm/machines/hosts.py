"""The SSH-hosts backend of the lease interface: machines that already run (a real
i386 box, VMs elsewhere, the Vagrant machines), each standing for a boot target.
A lease connects to the target's host and disconnects at the end; the host itself
is left as it was found (the monitor deployed in /root/lab stays).

A lease is exclusive: the host is locked for it (``flock`` on LOCK_FILE, held by a
command that runs over the lease's own SSH connection until the lease ends, or until
the connection dies), because every lease uses the same working directory there
(/root/lab: the monitor, the test programs, report.json). A second lease, from this
session or another, waits for the lock up to ``lock_wait_s`` (MVEE_LAB_LEASE_WAIT_S,
default 1800), then fails naming the holder.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import time
from collections.abc import Iterator

from vm.machines.inventory import HostEntry
from vm.machines.lease import LeaseError, Machine, target_info
from vm.machines.ssh import SshClient, SshError

LOCK_FILE = "/run/lock/mvee-lab.lease"  # tmpfs: no lock survives a reboot
LOCK_WAIT_S = float(os.environ.get("MVEE_LAB_LEASE_WAIT_S", 1800))
LEASED = b"leased\n"


def holder() -> str:
    """Who leases, as the lock names it: host, process, xdist worker, since when."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return (f"{socket.gethostname()} pid {os.getpid()}{f' ({worker})' if worker else ''} "
            f"since {time.strftime('%H:%M:%S')}")


def lock_command(who: str, wait_s: float, lock: str = LOCK_FILE) -> str:
    """The shell line that takes the host's lease lock (waiting up to wait_s), writes who
    holds it, prints LEASED and holds it until its stdin closes."""
    path = shlex.quote(lock)
    held = f'echo "$1" > {path}.holder; echo leased; exec cat >/dev/null'
    return (f"mkdir -p {shlex.quote(os.path.dirname(lock))} && flock -w {wait_s:g} {path} "
            f"sh -c {shlex.quote(held)} lease {shlex.quote(who)} || "
            f"{{ echo \"still leased to $(cat {path}.holder 2>/dev/null) after {wait_s:g} s\"; exit 75; }}")


class HostsBackend:
    def __init__(self, entries: list[HostEntry], source: str, how: str = "host",
                 lock_wait_s: float = LOCK_WAIT_S) -> None:
        self.entries = entries
        self.source = source  # where the entries came from, for the header
        self.how = how
        self.lock_wait_s = lock_wait_s

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
        where = f"lab host {entry.name} ({entry.user}@{entry.host}:{entry.port})"
        try:
            client = SshClient(entry.host, entry.port, entry.user, entry.key)
        except SshError as e:
            raise LeaseError(f"lab host {entry.name}: {e}") from None
        with contextlib.ExitStack() as stack:
            stack.callback(client.close)
            try:
                stack.enter_context(client.hold(lock_command(holder(), self.lock_wait_s), LEASED,
                                                self.lock_wait_s + 60))
            except SshError as e:
                raise LeaseError(f"{where}: {e}") from None
            machine = Machine(target, target_info(target), client, time.monotonic() - start, self.how)
            machine.facts["host"] = entry.name
            yield machine
