"""Lease a lab VM for a boot target: boot once, then restore.

The first lease of a target boots the image cold on an overlay, waits for SSH,
warms the guest up and saves the whole machine (``savevm ready`` over QEMU's
monitor) into that overlay: the *golden snapshot*, cached as
``<cache>/snapshots/<target>-<key>.qcow2``, the key covering the image build, the
kernel command line, the QEMU version and settings and the accelerator. Every
lease then starts QEMU on a private copy of that file with ``-loadvm ready``
(``-snapshot`` cannot be combined with ``-loadvm``): the same clean machine state
every time, answering SSH in seconds instead of a cold boot's minute or more.

``lease(target)`` is a context manager yielding a ``Machine``; on exit QEMU is
stopped and its copy removed (see vm.qemu for what happens when the owner dies).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vm import accel, cache
from vm.build import BuiltImage, ensure_image
from vm.qemu import Guest, MachineSpec, QemuError, new_run_dir, qemu_version
from vm.recipe import all_boot_targets
from vm.ssh import SshClient, SshError

SNAPSHOT_TAG = "ready"
SNAPSHOT_DIR = "snapshots"
COLD_BOOT_DEADLINE_S = float(os.environ.get("MVEE_LAB_COLD_BOOT_S", 900))
RESTORE_DEADLINE_S = float(os.environ.get("MVEE_LAB_RESTORE_S", 180))
SMP = 2
# Loaded into the page cache before the snapshot, so every lease starts warm.
WARM_UP = "python3 -c 'import ptrace.debugger, keystone' && sync"


class LeaseError(Exception):
    """A VM that did not come up; the message quotes the serial console's tail."""


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


def target_info(target: str) -> TargetInfo:
    targets = all_boot_targets()
    if target not in targets:
        raise LeaseError(f"unknown boot target {target!r} (known: {', '.join(sorted(targets))})")
    recipe, cmdline = targets[target]
    return TargetInfo(target, recipe.architecture, "ia32_emulation=0" not in cmdline.split())


def all_targets() -> list[str]:
    return sorted(all_boot_targets())


@dataclass
class Machine:
    """A reachable lab machine: a leased VM, or a host from an inventory."""

    name: str
    target: TargetInfo
    ssh: SshClient
    guest: Guest | None = None
    ready_s: float = 0.0  # from QEMU's start (or from connecting) to a working command
    how: str = "host"  # "restored", "cold" or "host"
    facts: dict[str, str] = field(default_factory=dict)

    def console_tail(self, lines: int = 30) -> str:
        return self.guest.console_tail(lines) if self.guest else "(not a local VM: no console)"


def machine_spec(image: BuiltImage, target: str, accelerator: str) -> MachineSpec:
    q = image.recipe.qemu
    return MachineSpec(
        target=target, system=q.system, machine=q.machine, cpu=q.cpu, memory_mib=q.memory_mib,
        smp=SMP, kernel=image.kernel, initrd=image.initrd,
        cmdline=image.recipe.boot_targets()[target], accel=accelerator,
    )


def _image_for(target: str) -> BuiltImage:
    recipe, _ = all_boot_targets()[target]
    return ensure_image(recipe.name, progress=lambda line: None)


def ssh_banner(host: str, port: int, timeout: float) -> bool:
    """Does an SSH server answer on host:port? (QEMU's user network accepts every
    connection on the forwarded port, then closes it while the guest has no sshd.)"""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(4) == b"SSH-"
    except OSError:
        return False


def wait_for_ssh(guest: Guest, key: Path, deadline_s: float, user: str = "root") -> tuple[SshClient, float]:
    """Connect once the guest answers a command; (client, seconds since QEMU started)."""
    last = "no attempt"
    while True:
        if not guest.alive():
            raise LeaseError(
                f"{guest.spec.target}: QEMU exited ({guest.process.returncode}) before SSH answered: "
                f"{guest.qemu_log().strip()[-300:]}\n--- console tail ---\n{guest.console_tail()}")
        remaining = deadline_s - (time.monotonic() - guest.started)
        if remaining <= 0:
            raise LeaseError(
                f"{guest.spec.target}: no SSH on 127.0.0.1:{guest.port} within {deadline_s:g} s "
                f"({guest.spec.accel}; last error: {last})\n--- console tail ---\n{guest.console_tail()}")
        if not ssh_banner("127.0.0.1", guest.port, min(5.0, remaining)):
            last = "no SSH banner yet"
            time.sleep(0.25)
            continue
        try:
            client = SshClient("127.0.0.1", guest.port, user, key, connect_timeout=min(10.0, remaining))
            client.run("true", timeout=min(30.0, max(remaining, 1.0))).check()
            return client, time.monotonic() - guest.started
        except SshError as e:
            last = str(e)[:200]
            time.sleep(0.25)


def _snapshot_key(image: BuiltImage, spec: MachineSpec) -> str:
    digest = hashlib.sha256()
    for part in (image.directory.name, spec.target, spec.cmdline, spec.system, qemu_version(spec.system),
                 spec.machine, spec.cpu, str(spec.memory_mib), str(spec.smp), spec.accel):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:16]


def snapshot_root(cache_root: Path | None = None) -> Path:
    return (cache_root or cache.cache_root()) / SNAPSHOT_DIR


def _overlay(base: Path, path: Path) -> None:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(path)],
                   check=True, capture_output=True)


def cold_boot(target: str, accelerator: str | None = None) -> tuple[Machine, Path]:
    """Boot target from scratch on a fresh overlay: (machine, its run directory)."""
    image = _image_for(target)
    spec = machine_spec(image, target, accelerator or accel.choose()[0])
    run_dir = new_run_dir(target)
    disk = run_dir / "disk.qcow2"
    _overlay(image.disk, disk)
    guest = Guest.start(spec, run_dir, disk)
    try:
        client, seconds = wait_for_ssh(guest, image.ssh_key, COLD_BOOT_DEADLINE_S)
    except BaseException:
        guest.stop()
        raise
    return Machine(target, target_info(target), client, guest, seconds, "cold"), run_dir


def ensure_golden(target: str, accelerator: str | None = None) -> tuple[Path, MachineSpec, Path]:
    """The golden snapshot of target, made now if missing: (qcow2 file, spec, SSH key)."""
    image = _image_for(target)
    spec = machine_spec(image, target, accelerator or accel.choose()[0])
    root = snapshot_root()
    root.mkdir(parents=True, exist_ok=True)
    golden = root / f"{target}-{_snapshot_key(image, spec)}.qcow2"
    with cache.locked(root / f".{target}.lock"):
        if golden.is_file():
            return golden, spec, image.ssh_key
        machine, run_dir = cold_boot(target, spec.accel)
        assert machine.guest is not None
        try:
            machine.ssh.run(WARM_UP, timeout=300).check()
            machine.ssh.close()
            out = machine.guest.hmp(f"savevm {SNAPSHOT_TAG}", timeout=300)
            if out:
                raise LeaseError(f"{target}: savevm {SNAPSHOT_TAG} failed: {out}")
            info = {"target": target, "cold_boot_s": round(machine.ready_s, 2), "spec": str(spec),
                    "created": time.time()}
            _kill_and_wait(machine.guest)
            temporary = root / f".{golden.name}.{os.getpid()}.tmp"
            shutil.move(run_dir / "disk.qcow2", temporary)
            temporary.replace(golden)
            golden.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
        finally:
            machine.guest.stop()
        for old in root.glob(f"{target}-*.qcow2"):
            if old != golden and re.fullmatch(re.escape(target) + r"-[0-9a-f]{16}\.qcow2", old.name):
                old.unlink(missing_ok=True)
                old.with_suffix(".json").unlink(missing_ok=True)
    return golden, spec, image.ssh_key


def _kill_and_wait(guest: Guest) -> None:
    """End QEMU after savevm: the snapshot is written, the running state is not needed."""
    with contextlib.suppress(QemuError, OSError):
        guest.hmp("quit", timeout=30)
    try:
        guest.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        guest.process.kill()
        guest.process.wait()


def restore(target: str, accelerator: str | None = None) -> Machine:
    """A VM of target started from its golden snapshot (made first if needed)."""
    golden, spec, key = ensure_golden(target, accelerator)
    run_dir = new_run_dir(target)
    disk = run_dir / "disk.qcow2"
    subprocess.run(["cp", "--sparse=always", "--reflink=auto", str(golden), str(disk)], check=True)
    guest = Guest.start(spec, run_dir, disk, loadvm=SNAPSHOT_TAG)
    try:
        client, seconds = wait_for_ssh(guest, key, RESTORE_DEADLINE_S)
        # The restored clock is the snapshot's: set it, so file times and logs make sense.
        client.run(f"date -s @{time.time():.3f} >/dev/null", timeout=30)
    except BaseException:
        guest.stop()
        raise
    return Machine(target, target_info(target), client, guest, seconds, "restored")


@contextlib.contextmanager
def lease(target: str, accelerator: str | None = None) -> Iterator[Machine]:
    """A fresh VM of target for the block; stopped and removed afterwards."""
    machine = restore(target, accelerator)
    try:
        yield machine
    finally:
        release(machine)


def release(machine: Machine) -> None:
    with contextlib.suppress(Exception):
        machine.ssh.close()
    if machine.guest is not None:
        machine.guest.stop()
