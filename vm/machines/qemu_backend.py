"""The QEMU backend of the lease interface: a local VM per lease. Boot once, then restore.

The first lease of a target boots the image cold on an overlay, waits for SSH,
warms the guest up and saves the whole machine (``savevm ready`` over QEMU's
monitor) into that overlay: the *golden snapshot*, cached as
``<cache>/snapshots/<target>-<key>.qcow2``, the key covering the image build, the
kernel command line, the QEMU version and settings and the accelerator. Every
lease then starts QEMU on a private copy of that file with ``-loadvm ready``
(``-snapshot`` cannot be combined with ``-loadvm``): the same clean machine state
every time, answering SSH in seconds instead of a cold boot's minute or more.

``QemuBackend().lease(target)`` is a context manager yielding a ``Machine``; on exit
QEMU is stopped and its copy removed (see vm.machines.qemu for what happens when the
owner dies). ``QemuBackend(cold=True)`` boots every lease cold instead (benchmarks).
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
from pathlib import Path

from vm import cache
from vm.images.build import BuiltImage, ensure_image
from vm.images.recipe import all_boot_targets
from vm.machines import accel
from vm.machines.lease import LeaseError, Machine, all_targets, target_info
from vm.machines.qemu import Guest, MachineSpec, QemuError, new_run_dir, qemu_version
from vm.machines.ssh import SshClient, SshError

SNAPSHOT_TAG = "ready"
SNAPSHOT_DIR = "snapshots"
COLD_BOOT_DEADLINE_S = float(os.environ.get("MVEE_LAB_COLD_BOOT_S", 900))
RESTORE_DEADLINE_S = float(os.environ.get("MVEE_LAB_RESTORE_S", 180))
SMP = 2
# Loaded into the page cache before the snapshot, so every lease starts warm.
WARM_UP = "python3 -c 'import ptrace.debugger, keystone' && sync"


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


@contextlib.contextmanager
def _running(spec: MachineSpec, run_dir: Path, disk: Path, key: Path, deadline_s: float, how: str,
             loadvm: str | None = None) -> Iterator[tuple[Guest, Machine]]:
    """QEMU on disk until SSH answers, for the block; then stopped and run_dir removed."""
    try:
        guest = Guest.start(spec, run_dir, disk, loadvm=loadvm)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    with guest:
        client, seconds = wait_for_ssh(guest, key, deadline_s)
        try:
            yield guest, Machine(spec.target, target_info(spec.target), client, seconds, how)
        finally:
            client.close()


@contextlib.contextmanager
def cold_boot(target: str, accelerator: str | None = None) -> Iterator[tuple[Guest, Machine]]:
    """target booted from scratch on a fresh overlay of its image, for the block."""
    image = _image_for(target)
    spec = machine_spec(image, target, accelerator or accel.choose()[0])
    run_dir = new_run_dir(target)
    disk = run_dir / "disk.qcow2"
    _overlay(image.disk, disk)
    with _running(spec, run_dir, disk, image.ssh_key, COLD_BOOT_DEADLINE_S, "cold") as running:
        yield running


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
        with cold_boot(target, spec.accel) as (guest, machine):
            machine.ssh.run(WARM_UP, timeout=300).check()
            machine.ssh.close()
            out = guest.hmp(f"savevm {SNAPSHOT_TAG}", timeout=300)
            if out:
                raise LeaseError(f"{target}: savevm {SNAPSHOT_TAG} failed: {out}")
            info = {"target": target, "cold_boot_s": round(machine.ready_s, 2), "spec": str(spec),
                    "created": time.time()}
            _kill_and_wait(guest)
            temporary = root / f".{golden.name}.{os.getpid()}.tmp"
            shutil.move(guest.disk, temporary)
            temporary.replace(golden)
            golden.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
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


@contextlib.contextmanager
def restore(target: str, accelerator: str | None = None) -> Iterator[Machine]:
    """A VM of target started from its golden snapshot (made first if needed), for the block."""
    golden, spec, key = ensure_golden(target, accelerator)
    run_dir = new_run_dir(target)
    disk = run_dir / "disk.qcow2"
    subprocess.run(["cp", "--sparse=always", "--reflink=auto", str(golden), str(disk)], check=True)
    restored = _running(spec, run_dir, disk, key, RESTORE_DEADLINE_S, "restored", loadvm=SNAPSHOT_TAG)
    with restored as (_, machine):
        # The restored clock is the snapshot's: set it, so file times and logs make sense.
        machine.ssh.run(f"date -s @{time.time():.3f} >/dev/null", timeout=30)
        yield machine


class QemuBackend:
    """Local QEMU VMs: each lease a fresh VM, restored (or with cold=True booted cold)."""

    def __init__(self, cold: bool = False, accelerator: str | None = None) -> None:
        self.cold = cold
        self.accelerator = accelerator

    def describe(self) -> str:
        accelerator, reason = (self.accelerator, "asked for") if self.accelerator else accel.choose()
        how = "booted cold" if self.cold else f"restored from golden snapshots in {snapshot_root()}"
        return f"local QEMU VMs ({accelerator}: {reason}), {how}"

    def targets(self) -> list[str]:
        return all_targets()

    @contextlib.contextmanager
    def lease(self, target: str) -> Iterator[Machine]:
        target_info(target)  # LeaseError for an unknown target
        if self.cold:
            with cold_boot(target, self.accelerator) as (_, machine):
                yield machine
        else:
            with restore(target, self.accelerator) as machine:
                yield machine
