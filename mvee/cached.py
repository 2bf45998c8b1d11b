"""What the monitor keeps between runs, in the lab cache (`~/.cache/mvee-lab`).

- Facts of this boot of this machine (`per_boot`): whether `int 0x80` works, how fast
  the wait loop spins. Keyed by the CPU model and the kernel's boot id, they are
  measured again after a reboot or on another machine.
- Machine code (`assemble`): assembling is pure (the same source in the same mode
  gives the same bytes), and loading keystone took a tenth of a short run's start-up:
  keystone is loaded only for a source not assembled before.

A cache that cannot be read or written only costs the work again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from mvee.abi import HOST


def cache_dir() -> str:
    return os.environ.get("MVEE_LAB_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mvee-lab")


_loaded: dict[str, dict[str, Any]] = {}  # read once per run


def _load(name: str) -> dict[str, Any]:
    if name in _loaded:
        return _loaded[name]
    _loaded[name] = data = _read(name)
    return data


def _read(name: str) -> dict[str, Any]:
    try:
        with open(os.path.join(cache_dir(), name)) as file:
            data = json.load(file)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _store(name: str, data: dict[str, Any]) -> None:
    path = os.path.join(cache_dir(), name)
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(cache_dir(), exist_ok=True)
        with open(temporary, "w") as file:
            json.dump(data, file)
        os.replace(temporary, path)
    except OSError:
        pass


def _machine_key() -> str:
    model = boot = "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        with open("/proc/sys/kernel/random/boot_id") as boot_id:
            boot = boot_id.read().strip()
    except OSError:
        pass
    return f"{model}|{boot}|{HOST.name}"


_PER_BOOT = "per-boot.json"


def per_boot(name: str, compute: Callable[[], Any]) -> Any:
    """A fact of this boot of this machine, computed once per boot."""
    data = _load(_PER_BOOT)
    key = _machine_key()
    if data.get("key") != key:
        data = {"key": key}
    if name not in data:
        data[name] = compute()
        _store(_PER_BOOT, data)
    return data[name]


_ASSEMBLED = "assembled.json"


def assemble(source: str, bits: int) -> bytes:
    """x86 machine code of `source` for 32- or 64-bit mode."""
    data = _load(_ASSEMBLED)
    key = f"{bits}:{source}"
    if key not in data:
        from keystone import KS_ARCH_X86, KS_MODE_32, KS_MODE_64, Ks  # only for new code

        encoding, _ = Ks(KS_ARCH_X86, KS_MODE_64 if bits == 64 else KS_MODE_32).asm(source)
        data[key] = bytes(encoding or []).hex()
        _store(_ASSEMBLED, data)
    return bytes.fromhex(data[key])
