"""Run one QEMU guest for the lab, so that it never outlives its owner.

A ``Guest`` is one QEMU process for one boot target of a built image: its disk is
a qcow2 file the caller prepared (an overlay over the cached image, or a copy of
a golden snapshot), SSH reaches it through a free port on 127.0.0.1 forwarded to
the guest's port 22, its serial console goes to a log file and its human monitor
(HMP) listens on a unix socket. Everything lives in a run directory
``<cache>/run/<target>-<owner pid>-<n>/`` together with two pid files: QEMU's and
its owner's.

Nothing is left behind when the owner goes away:
- normal exit, an exception, Ctrl-C: ``Guest.stop()`` (also a context manager)
  terminates QEMU's process group and removes the run directory;
- the owner killed (a killed pytest or xdist worker): QEMU has
  ``PR_SET_PDEATHSIG`` = SIGKILL, so the kernel kills it with its parent;
- whatever still survives (a run directory whose owner is dead): ``reap_stale()``,
  called before every start, kills its QEMU (checking that the pid still is that
  QEMU) and removes the directory with its disk.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from vm import cache

PR_SET_PDEATHSIG = 1
RUN_DIR = "run"
QEMU_PID_FILE = "qemu.pid"
OWNER_PID_FILE = "owner.pid"
CONSOLE_FILE = "console.log"
MONITOR_FILE = "monitor.sock"
_counter = itertools.count()


class QemuError(Exception):
    """QEMU could not start or answer; the message is one line (plus the console's tail)."""


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


def qemu_version(system: str = "qemu-system-x86_64") -> str:
    """QEMU's version string, e.g. "7.2.22"."""
    out = subprocess.run([system, "--version"], capture_output=True, text=True, check=True).stdout
    words = out.split()
    return words[words.index("version") + 1] if "version" in words else out.strip().splitlines()[0]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_root(cache_root: Path | None = None) -> Path:
    return (cache_root or cache.cache_root()) / RUN_DIR


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


def reap_stale(cache_root: Path | None = None) -> list[Path]:
    """Kill the QEMU and remove the run directory of every owner that no longer runs."""
    reaped = []
    root = run_root(cache_root)
    if not root.is_dir():
        return reaped
    for run_dir in root.iterdir():
        owner = _read_pid(run_dir / OWNER_PID_FILE)
        if owner is not None and _alive(owner):
            continue
        qemu_pid = _read_pid(run_dir / QEMU_PID_FILE)
        if qemu_pid is not None and _alive(qemu_pid) and _is_our_qemu(qemu_pid, run_dir):
            _kill_group(qemu_pid)
        shutil.rmtree(run_dir, ignore_errors=True)
        reaped.append(run_dir)
    return reaped


def new_run_dir(target: str, cache_root: Path | None = None) -> Path:
    """A fresh run directory owned by this process (stale ones are reaped first)."""
    reap_stale(cache_root)
    root = run_root(cache_root)
    while True:
        run_dir = root / f"{target}-{os.getpid()}-{next(_counter)}"
        try:
            run_dir.mkdir(parents=True)
            break
        except FileExistsError:
            continue
    (run_dir / OWNER_PID_FILE).write_text(f"{os.getpid()}\n")
    return run_dir


def _die_with_parent() -> None:
    """In the child before exec: own process group, SIGKILL when the parent thread dies."""
    os.setpgrp()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Guest:
    """One running QEMU: start with ``Guest.start``, stop with ``stop()`` or ``with``."""

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

    def stop(self) -> None:
        """Stop QEMU (its whole process group) and remove the run directory."""
        if self.process.poll() is None:
            _kill_group(self.process.pid)
        with contextlib.suppress(ChildProcessError):
            self.process.wait(timeout=5)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def __enter__(self) -> Guest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
