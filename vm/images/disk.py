"""The image's root disk: an ext4 file system made from a directory, as qcow2."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT_LABEL = "mvee-root"


def make_root_disk(root: Path, disk: Path, size_mib: int) -> None:
    """Write root's tree as an ext4 file system of size_mib into the qcow2 file disk."""
    raw = disk.with_suffix(".raw")
    try:
        with open(raw, "wb") as f:
            f.truncate(size_mib * 1024 * 1024)
        subprocess.run(
            ["mke2fs", "-q", "-F", "-t", "ext4", "-m", "0", "-L", ROOT_LABEL,
             "-d", str(root), str(raw)],
            check=True, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        )
        subprocess.run(
            ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-c",
             "-o", "compression_type=zstd", str(raw), str(disk)],
            check=True, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        )
    finally:
        raw.unlink(missing_ok=True)
