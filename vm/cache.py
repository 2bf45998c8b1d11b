"""The lab cache: where built images, downloaded wheels, build logs and the lab's
SSH key live (~/.cache/mvee-lab, or $MVEE_LAB_CACHE), and the file-system
chores around it: locks, atomic publication and removal of unfinished builds.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

TEMP_PREFIX = ".tmp-"


def cache_root() -> Path:
    override = os.environ.get("MVEE_LAB_CACHE")
    if override:
        return Path(override)
    return Path.home() / ".cache" / "mvee-lab"


@contextlib.contextmanager
def locked(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock on lock_file (created if needed) for the block."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def temp_dir_for(parent: Path, name: str) -> Path:
    """A fresh work directory in parent, named so a later run knows who owned it."""
    path = parent / f"{TEMP_PREFIX}{name}-{os.getpid()}"
    remove_tree(path)
    path.mkdir(parents=True)
    return path


def remove_stale_temp_dirs(parent: Path) -> list[Path]:
    """Remove work directories left in parent by processes that no longer run."""
    removed = []
    for path in parent.glob(f"{TEMP_PREFIX}*"):
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not process_exists(int(pid)):
            remove_tree(path)
            removed.append(path)
    return removed


def remove_tree(path: Path) -> None:
    """Remove a directory tree, first unmounting anything mounted inside it
    (a chroot build mounts /proc, /sys and /dev there: never delete through them)."""
    if not path.exists():
        return
    for mount_point in sorted(_mount_points_under(path), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", mount_point], check=True)
    shutil.rmtree(path)


def _mount_points_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            # Field 5 is the mount point, with spaces and such escaped as octal.
            point = line.split()[4].encode().decode("unicode_escape")
            if point.startswith(prefix):
                points.append(point)
    return points


def process_exists(pid: int) -> bool:
    """Whether a process of that pid exists (a zombie included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
