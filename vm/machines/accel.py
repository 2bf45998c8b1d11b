"""Which QEMU accelerator really boots a guest here: KVM where it works, else TCG.

``/dev/kvm`` existing is not enough: on some machines (nested virtualisation,
restricted hosts) QEMU starts with ``-accel kvm`` but the guest never runs. The
probe boots a 512-byte boot sector, assembled with keystone, that writes one
byte to the serial port and halts; KVM counts only if that byte comes out within
a few seconds. The verdict is cached per host boot (``/proc/sys/kernel/random/boot_id``)
in ``<cache>/accel.json``; ``MVEE_LAB_ACCEL=kvm|tcg`` overrides the probe.

Command line: ``python -m vm.machines.accel`` prints the verdict and how it was reached.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from keystone import KS_ARCH_X86, KS_MODE_16, Ks

from vm import cache

PROBE_TIMEOUT_S = 5.0
PROBE_BYTE = b"K"
ACCELS = ("kvm", "tcg")
_BOOT_SECTOR_SOURCE = f"""
    cli
    mov dx, 0x3f8
    mov al, {PROBE_BYTE[0]}
    out dx, al
halt:
    hlt
    jmp halt
"""


def boot_sector() -> bytes:
    """A boot sector that writes PROBE_BYTE to COM1 and halts."""
    encoding, _ = Ks(KS_ARCH_X86, KS_MODE_16).asm(_BOOT_SECTOR_SOURCE)
    code = bytes(encoding or [])
    return code + b"\0" * (510 - len(code)) + b"\x55\xaa"


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def kvm_boots(qemu: str = "qemu-system-x86_64", timeout: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """Boot the probe sector under KVM: (did the byte come out in time, why)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is missing or not accessible"
    if shutil.which(qemu) is None:
        return False, f"{qemu} is not installed"
    with tempfile.TemporaryDirectory(prefix="mvee-accel-") as tmp:
        disk = Path(tmp) / "boot.img"
        disk.write_bytes(boot_sector())
        serial = Path(tmp) / "serial.out"
        command = [
            qemu, "-accel", "kvm", "-nodefaults", "-display", "none", "-no-reboot", "-m", "16",
            "-drive", f"file={disk},format=raw,if=floppy", "-serial", f"file:{serial}",
        ]
        start = time.monotonic()
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, start_new_session=True)
        try:
            while time.monotonic() - start < timeout:
                if serial.exists() and PROBE_BYTE in serial.read_bytes():
                    return True, f"probe guest ran under KVM in {time.monotonic() - start:.2f} s"
                if process.poll() is not None:
                    error = (process.stderr.read() if process.stderr else b"").decode(errors="replace")
                    last = error.strip().splitlines()[-1:] or [f"exit {process.returncode}"]
                    return False, f"qemu -accel kvm failed: {last[0]}"
                time.sleep(0.05)
            return False, f"probe guest printed nothing under KVM within {timeout:g} s"
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()


def choose(cache_root: Path | None = None) -> tuple[str, str]:
    """(accelerator, reason): "kvm" or "tcg", probed once per host boot."""
    forced = os.environ.get("MVEE_LAB_ACCEL")
    if forced:
        if forced not in ACCELS:
            raise ValueError(f"MVEE_LAB_ACCEL={forced!r}: expected one of {', '.join(ACCELS)}")
        return forced, "MVEE_LAB_ACCEL"
    cache_file = (cache_root or cache.cache_root()) / "accel.json"
    current = boot_id()
    try:
        cached = json.loads(cache_file.read_text())
        if cached.get("boot_id") == current and cached.get("accel") in ACCELS:
            return cached["accel"], f"cached for this boot: {cached.get('reason')}"
    except (OSError, ValueError):
        pass
    works, reason = kvm_boots()
    accel = "kvm" if works else "tcg"
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"boot_id": current, "accel": accel, "reason": reason}) + "\n")
        tmp.replace(cache_file)
    except OSError:
        pass  # a read-only cache only costs a probe per run
    return accel, reason


def main() -> None:
    start = time.monotonic()
    accel, reason = choose()
    print(f"{accel} ({reason}; {time.monotonic() - start:.2f} s)")


if __name__ == "__main__":
    main()
