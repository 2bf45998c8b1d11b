"""Local QEMU VMs, the QEMU backend of the lease interface: boot once, then restore;
each VM one QEMU process that never outlives its owner.

``QemuBackend().lease(target)`` is a context manager yielding a ``Machine``.

Boot once, then restore: the first lease of a target boots its image cold on an
overlay, waits for SSH, warms the guest up and saves the whole machine (``savevm
ready`` over QEMU's monitor) into that overlay: the *golden snapshot*, cached as
``<cache>/snapshots/<target>-<key>.qcow2``, the key covering the image build, the
kernel command line, the QEMU version and settings and the accelerator. Every lease
then starts QEMU on a private copy of that file with ``-loadvm ready``
(``-snapshot`` cannot be combined with ``-loadvm``): the same clean machine state
every time, answering SSH in seconds instead of a cold boot's minute or more.
``QemuBackend(cold=True)`` boots every lease cold instead (benchmarks).

One VM (``run_vm``) lives in a run directory ``<cache>/run/<target>-<owner pid>-<n>/``:
its disk, QEMU's serial console log, its human monitor's (HMP) unix socket and
QEMU's pid file; SSH reaches it through a free port on 127.0.0.1
forwarded to the guest's port 22. Nothing is left behind when the owner goes away:
- the block ends (normally, by an exception, by Ctrl-C): QEMU's process group is
  terminated (``Guest``, a context manager) and the run directory removed;
- the owner is killed (a killed pytest or xdist worker): QEMU has
  ``PR_SET_PDEATHSIG`` = SIGKILL, so the kernel kills it with its parent;
- whatever still survives (a run directory whose owner is dead): ``reap_stale()``,
  called before every start, kills its QEMU (checking that the pid still is that
  QEMU) and removes the directory with its disk.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vm import cache
from vm.images.build import BuiltImage, ensure_image
from vm.images.recipe import all_boot_targets
from vm.machines import accel
from vm.machines.lease import LeaseError, Machine, all_targets, target_info
from vm.machines.ssh import SshClient, SshError

SNAPSHOT_TAG = "ready"
SNAPSHOT_DIR = "snapshots"
COLD_BOOT_DEADLINE_S = float(os.environ.get("MVEE_LAB_COLD_BOOT_S", 900))
RESTORE_DEADLINE_S = float(os.environ.get("MVEE_LAB_RESTORE_S", 180))
SMP = 2
# Loaded into the page cache before the snapshot, so every lease starts warm.
WARM_UP = "python3 -c 'import ptrace.debugger, keystone' && sync"

PR_SET_PDEATHSIG = 1
RUN_DIR = "run"
DISK_FILE = "disk.qcow2"
QEMU_PID_FILE = "qemu.pid"
CONSOLE_FILE = "console.log"
MONITOR_FILE = "monitor.sock"
_counter = itertools.count()


class QemuError(Exception):
    """QEMU could not start or answer; the message is one line (plus the console's tail)."""


# --- the backend: a lease restores a VM from its target's golden snapshot ---

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


@contextlib.contextmanager
def restore(target: str, accelerator: str | None = None) -> Iterator[Machine]:
    """A VM of target started from its golden snapshot (made first if needed), for the block."""
    golden, spec, key = ensure_golden(target, accelerator)
    copy = ["cp", "--sparse=always", "--reflink=auto", str(golden)]
    with run_vm(spec, key, copy, RESTORE_DEADLINE_S, "restored", loadvm=SNAPSHOT_TAG) as (_, machine):
        # The restored clock is the snapshot's: set it, so file times and logs make sense.
        machine.ssh.run(f"date -s @{time.time():.3f} >/dev/null", timeout=30)
        yield machine


def ensure_golden(target: str, accelerator: str | None = None) -> tuple[Path, MachineSpec, Path]:
    """The golden snapshot of target, made now if missing: (qcow2 file, spec, SSH key)."""
    image, spec = _image_and_spec(target, accelerator)
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
            guest.quit()
            temporary = root / f".{golden.name}.{os.getpid()}.tmp"
            shutil.move(guest.disk, temporary)
            temporary.replace(golden)
            golden.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
        for old in root.glob(f"{target}-*.qcow2"):
            if old != golden and re.fullmatch(re.escape(target) + r"-[0-9a-f]{16}\.qcow2", old.name):
                old.unlink(missing_ok=True)
                old.with_suffix(".json").unlink(missing_ok=True)
    return golden, spec, image.ssh_key


@contextlib.contextmanager
def cold_boot(target: str, accelerator: str | None = None) -> Iterator[tuple[Guest, Machine]]:
    """target booted from scratch on a fresh overlay of its image, for the block."""
    image, spec = _image_and_spec(target, accelerator)
    overlay = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image.disk)]
    with run_vm(spec, image.ssh_key, overlay, COLD_BOOT_DEADLINE_S, "cold") as vm:
        yield vm


def snapshot_root(cache_root: Path | None = None) -> Path:
    return (cache_root or cache.cache_root()) / SNAPSHOT_DIR


def _snapshot_key(image: BuiltImage, spec: MachineSpec) -> str:
    digest = hashlib.sha256()
    for part in (image.directory.name, spec.target, spec.cmdline, spec.system, qemu_version(spec.system),
                 spec.machine, spec.cpu, str(spec.memory_mib), str(spec.smp), spec.accel):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:16]


# --- one VM: how it boots, from its image's recipe to a working SSH command ---

@dataclass(frozen=True)
class MachineSpec:
    """How to run one boot target: the recipe's [qemu] settings, kernel and command line."""

    target: str
    system: str
    machine: str
    cpu: str
    memory_mib: int
    smp: int
    kernel: Path
    initrd: Path
    cmdline: str
    accel: str


def machine_spec(image: BuiltImage, target: str, accelerator: str) -> MachineSpec:
    q = image.recipe.qemu
    return MachineSpec(
        target=target, system=q.system, machine=q.machine, cpu=q.cpu, memory_mib=q.memory_mib,
        smp=SMP, kernel=image.kernel, initrd=image.initrd,
        cmdline=image.recipe.boot_targets()[target], accel=accelerator,
    )


def _image_and_spec(target: str, accelerator: str | None) -> tuple[BuiltImage, MachineSpec]:
    """target's image (built now if it is not in the cache) and how to run it."""
    recipe, _ = all_boot_targets()[target]
    image = ensure_image(recipe.name, progress=lambda line: None)
    return image, machine_spec(image, target, accelerator or accel.choose()[0])


@contextlib.contextmanager
def run_vm(spec: MachineSpec, key: Path, make_disk: list[str], deadline_s: float, how: str,
        loadvm: str | None = None) -> Iterator[tuple[Guest, Machine]]:
    """One VM for the block, once it answers SSH: a new run directory, its disk made by
    the command make_disk (the disk's path appended), QEMU started on it. At the end the
    connection is closed, QEMU stopped and the run directory removed."""
    run_dir = new_run_dir(spec.target)
    try:
        disk = run_dir / DISK_FILE
        subprocess.run([*make_disk, str(disk)], check=True, capture_output=True)
        with Guest.start(spec, run_dir, disk, loadvm=loadvm) as guest:
            client, seconds = wait_for_ssh(guest, key, deadline_s)
            try:
                yield guest, Machine(spec.target, target_info(spec.target), client, seconds, how)
            finally:
                client.close()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


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


def ssh_banner(host: str, port: int, timeout: float) -> bool:
    """Does an SSH server answer on host:port? (QEMU's user network accepts every
    connection on the forwarded port, then closes it while the guest has no sshd.)"""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(4) == b"SSH-"
    except OSError:
        return False


def qemu_version(system: str = "qemu-system-x86_64") -> str:
    """QEMU's version string, e.g. "7.2.22"."""
    out = subprocess.run([system, "--version"], capture_output=True, text=True, check=True).stdout
    words = out.split()
    return words[words.index("version") + 1] if "version" in words else out.strip().splitlines()[0]


# --- the QEMU process ---

class Guest:
    """One running QEMU: ``with Guest.start(...) as guest``; stopped at the block's end."""

    def __init__(self, spec: MachineSpec, run_dir: Path, disk: Path, port: int,
                 process: subprocess.Popen[bytes]) -> None:
        self.spec = spec
        self.run_dir = run_dir
        self.disk = disk
        self.port = port
        self.process = process
        self.started = time.monotonic()
        self.console = run_dir / CONSOLE_FILE
        self.monitor_socket = run_dir / MONITOR_FILE

    @classmethod
    def start(cls, spec: MachineSpec, run_dir: Path, disk: Path, loadvm: str | None = None,
              attempts: int = 3) -> Guest:
        """Start QEMU on disk (inside run_dir); retried on a port taken in the meantime."""
        last_error = ""
        for _ in range(attempts):
            port = free_port()
            command = cls.command(spec, run_dir, disk, port, loadvm)
            log = open(run_dir / "qemu.log", "wb")  # noqa: SIM115 - QEMU's own stderr
            try:
                process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                           preexec_fn=_die_with_parent, cwd=run_dir)
            finally:
                log.close()
            (run_dir / QEMU_PID_FILE).write_text(f"{process.pid}\n")
            guest = cls(spec, run_dir, disk, port, process)
            # QEMU fails at once on a bad option or a port taken between free_port and now.
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline and process.poll() is None:
                if guest.monitor_socket.exists():
                    break
                time.sleep(0.02)
            if process.poll() is None:
                return guest
            last_error = guest.qemu_log().strip().splitlines()[-1:] or [f"exit {process.returncode}"]
            last_error = last_error[0]
            if "hostfwd" not in last_error and "forwarding" not in last_error:
                break
        raise QemuError(f"{spec.target}: QEMU did not start: {last_error}")

    @staticmethod
    def command(spec: MachineSpec, run_dir: Path, disk: Path, port: int, loadvm: str | None) -> list[str]:
        command = [
            spec.system, "-name", spec.target, "-accel", spec.accel,
            "-machine", spec.machine, "-cpu", spec.cpu, "-m", str(spec.memory_mib),
            "-smp", str(spec.smp), "-nodefaults", "-display", "none", "-no-reboot",
            "-kernel", str(spec.kernel), "-initrd", str(spec.initrd), "-append", spec.cmdline,
            "-drive", f"file={disk},format=qcow2,if=virtio,cache=unsafe",
            "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22",
            "-device", "virtio-net-pci,netdev=n0",
            "-serial", f"file:{run_dir / CONSOLE_FILE}",
            "-monitor", f"unix:{run_dir / MONITOR_FILE},server=on,wait=off",
        ]
        if loadvm:
            command += ["-loadvm", loadvm]
        return command

    def alive(self) -> bool:
        return self.process.poll() is None

    def qemu_log(self) -> str:
        try:
            return (self.run_dir / "qemu.log").read_text(errors="replace")
        except OSError:
            return ""

    def console_tail(self, lines: int = 20) -> str:
        try:
            text = self.console.read_text(errors="replace")
        except OSError:
            return "(no console output)"
        return "\n".join(text.splitlines()[-lines:]) or "(no console output)"

    def hmp(self, command: str, timeout: float = 120.0) -> str:
        """Run one human-monitor command and return its output (without the echo and prompt)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.monitor_socket))
            self._read_prompt(s)
            s.sendall(command.encode() + b"\n")
            out = self._read_prompt(s).decode(errors="replace").replace("\r", "")
        lines = out.splitlines()
        # HMP echoes the command (with terminal escapes) first and ends with the prompt.
        body = [line for line in lines[1:] if not line.startswith("(qemu)")]
        return "\n".join(body).strip()

    @staticmethod
    def _read_prompt(s: socket.socket) -> bytes:
        data = b""
        while not data.endswith(b"(qemu) "):
            chunk = s.recv(65536)
            if not chunk:
                raise QemuError(f"QEMU monitor closed the connection: {data[-200:]!r}")
            data += chunk
        return data

    def quit(self) -> None:
        """End QEMU through its monitor and wait for it (after savevm: the snapshot is
        written, the running state is not needed); killed if it does not end in time."""
        with contextlib.suppress(QemuError, OSError):
            self.hmp("quit", timeout=30)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        """Stop QEMU (its whole process group)."""
        if self.process.poll() is None:
            _kill_group(self.process.pid)
        with contextlib.suppress(ChildProcessError):
            self.process.wait(timeout=5)

    def __enter__(self) -> Guest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child before exec: own process group, SIGKILL when the parent thread dies."""
    os.setpgrp()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


# --- run directories, and what a dead owner left behind ---

def run_root(cache_root: Path | None = None) -> Path:
    return (cache_root or cache.cache_root()) / RUN_DIR


def new_run_dir(target: str, cache_root: Path | None = None) -> Path:
    """A fresh run directory owned by this process (stale ones are reaped first)."""
    reap_stale(cache_root)
    root = run_root(cache_root)
    while True:
        # The owner's pid is in the name: a directory is never seen without its owner
        # (a file written after the mkdir let another process reap it in between).
        run_dir = root / f"{target}-{os.getpid()}-{next(_counter)}"
        try:
            run_dir.mkdir(parents=True)
            return run_dir
        except FileExistsError:
            continue


def _owner(run_dir: Path) -> int | None:
    """The pid in a run directory's name (TARGET-PID-N), None if it has none."""
    parts = run_dir.name.rsplit("-", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def reap_stale(cache_root: Path | None = None) -> list[Path]:
    """Kill the QEMU and remove the run directory of every owner that no longer runs."""
    reaped = []
    root = run_root(cache_root)
    if not root.is_dir():
        return reaped
    for run_dir in root.iterdir():
        owner = _owner(run_dir)
        if owner is not None and _alive(owner):
            continue
        qemu_pid = _read_pid(run_dir / QEMU_PID_FILE)
        if qemu_pid is not None and _alive(qemu_pid) and _is_our_qemu(qemu_pid, run_dir):
            _kill_group(qemu_pid)
        shutil.rmtree(run_dir, ignore_errors=True)
        reaped.append(run_dir)
    return reaped


def _alive(pid: int) -> bool:
    if not cache.process_exists(pid):
        return False
    # A zombie is not alive: it just has not been reaped by its parent yet.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _is_our_qemu(pid: int, run_dir: Path) -> bool:
    """Is pid still the QEMU of run_dir (and not a reused pid)?"""
    try:
        return str(run_dir).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _kill_group(pid: int, grace: float = 3.0) -> None:
    """SIGTERM pid's process group (QEMU leads its own), then SIGKILL after grace."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not _alive(pid):
                return
            time.sleep(0.05)
