"""Put the working tree's monitor and the host-built test programs into a lab machine,
and run the monitor there.

- ``deploy_mvee(machine)``: the ``mvee`` package of this working tree, as a tar
  sent over sftp, unpacked into ``/root/lab`` (``GUEST_DIR``);
- ``install_program(machine, name, abi)``: tests/programs/NAME.c compiled on the
  host as a *static* binary (``-m32`` or ``-m64``: the guests have no compiler
  and their libc may differ), cached by source under ``<cache>/programs``, copied
  to ``/root/lab/bin/NAME-ABI``;
- ``run_mvee(machine, *arguments)``: ``python3 -m mvee run --report ... ARGS``
  with PYTHONPATH=/root/lab in the guest, the report read back as JSON.
"""

from __future__ import annotations

import hashlib
import io
import json
import shlex
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vm import REPO_DIR, cache
from vm.machines.lease import Machine
from vm.machines.ssh import CommandResult

PROGRAMS_DIR = REPO_DIR / "tests" / "programs"
GUEST_DIR = "/root/lab"
ABI_FLAGS = {"x86_64": "-m64", "i386": "-m32"}


@dataclass
class GuestMveeResult:
    returncode: int
    stdout: bytes
    stderr: str
    report: dict[str, Any] | None
    seconds: float


def mvee_tarball() -> bytes:
    """The working tree's mvee package as an uncompressed tar (no bytecode)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted((REPO_DIR / "mvee").rglob("*")):
            if "__pycache__" in path.parts or path.suffix == ".pyc" or not path.is_file():
                continue
            tar.add(path, arcname=str(path.relative_to(REPO_DIR)), recursive=False)
    return buffer.getvalue()


def deploy_mvee(machine: Machine) -> None:
    machine.ssh.run(f"rm -rf {GUEST_DIR}/mvee && mkdir -p {GUEST_DIR}/bin", timeout=60).check()
    machine.ssh.put_bytes(mvee_tarball(), f"{GUEST_DIR}/mvee.tar")
    machine.ssh.run(f"tar -xf {GUEST_DIR}/mvee.tar -C {GUEST_DIR} && rm {GUEST_DIR}/mvee.tar",
                    timeout=60).check()


def build_static(name: str, abi: str, cache_root: Path | None = None) -> Path:
    """tests/programs/NAME.c as a static binary for abi, built once per source."""
    source = PROGRAMS_DIR / f"{name}.c"
    flags = [ABI_FLAGS[abi], "-static", "-O1", "-w"]
    digest = hashlib.sha256(source.read_bytes() + " ".join(flags).encode()).hexdigest()[:12]
    directory = (cache_root or cache.cache_root()) / "programs"
    output = directory / f"{name}-{abi}-{digest}"
    if output.is_file():
        return output
    directory.mkdir(parents=True, exist_ok=True)
    with cache.locked(directory / f".{name}-{abi}.lock"):
        if not output.is_file():
            temporary = output.with_suffix(".tmp")
            subprocess.run(["gcc", *flags, "-o", str(temporary), str(source)], check=True,
                           capture_output=True)
            temporary.replace(output)
    return output


def install_program(machine: Machine, name: str, abi: str) -> str:
    """Copy the static build of NAME for abi into the machine; its path there."""
    remote = f"{GUEST_DIR}/bin/{name}-{abi}"
    machine.ssh.put(build_static(name, abi), remote, mode=0o755)
    return remote


def mvee_command(*arguments: str, report: str | None = f"{GUEST_DIR}/report.json") -> str:
    """The shell line that runs the monitor in the guest."""
    split = arguments.index("--") if "--" in arguments else len(arguments)
    options, program = list(arguments[:split]), list(arguments[split:])
    if report:
        options = ["--report", report, *options]
    return (f"cd {GUEST_DIR} && PYTHONPATH={GUEST_DIR} exec python3 -m mvee run "
            f"{shlex.join(options)} {shlex.join(program)}")


def read_report(machine: Machine, path: str = f"{GUEST_DIR}/report.json") -> dict[str, Any] | None:
    result = machine.ssh.run(f"cat {shlex.quote(path)} 2>/dev/null", timeout=30)
    if result.status != 0 or not result.stdout.strip():
        return None
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def run_mvee(machine: Machine, *arguments: str, timeout: float = 300, stdin: bytes = b"") -> GuestMveeResult:
    """Run the monitor in the machine on ARGUMENTS ("-n", "2", "--", "prog", ...)."""
    machine.ssh.run(f"rm -f {GUEST_DIR}/report.json", timeout=30)
    result: CommandResult = machine.ssh.run(mvee_command(*arguments), timeout=timeout, stdin=stdin)
    return GuestMveeResult(result.status, result.stdout, result.stderr.decode(errors="replace"),
                           read_report(machine), result.seconds)
