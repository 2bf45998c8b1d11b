"""An image's manifest: what went into it, so that two builds can be compared.

It lists every Debian package and version, the PyPI wheels and their digests,
the kernel version, the recipe hash and the build date. The build date is
SOURCE_DATE_EPOCH when it is set; otherwise the newest ``Date:`` of the apt
Release files the build used, which names the state of the mirror that the
package set came from. Nothing in it depends on the clock or the host, so a
rebuild from the same mirror state gives the same manifest.
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vm.images.recipe import Recipe


def make_manifest(
    recipe: Recipe, recipe_hash: str, root: Path, kernel_version: str, wheels: list[Path]
) -> dict[str, Any]:
    epoch = source_date_epoch(root)
    return {
        "recipe": recipe.name,
        "recipe_hash": recipe_hash,
        "suite": recipe.suite,
        "architecture": recipe.architecture,
        "kernel_package": recipe.kernel_package,
        "kernel_version": kernel_version,
        "cmdline": recipe.cmdline,
        "source_date_epoch": epoch,
        "build_date": datetime.fromtimestamp(epoch, UTC).isoformat(),
        "packages": installed_packages(root),
        "wheels": {wheel.name: _sha256(wheel) for wheel in wheels},
    }


def installed_packages(root: Path) -> dict[str, str]:
    """Package -> version, from root's dpkg database (an image has one architecture,
    so a package name is never installed twice)."""
    listing = subprocess.run(
        ["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W",
         "-f=${db:Status-Status}\t${Package}\t${Version}\n"],
        check=True, capture_output=True, text=True,
    ).stdout
    packages = {}
    for line in listing.splitlines():
        status, package, version = line.split("\t")
        if status == "installed":
            packages[package] = version
    return dict(sorted(packages.items()))


def source_date_epoch(root: Path) -> int:
    """SOURCE_DATE_EPOCH if set, else the newest Release date among root's apt lists."""
    if os.environ.get("SOURCE_DATE_EPOCH"):
        return int(os.environ["SOURCE_DATE_EPOCH"])
    dates = []
    for release in (root / "var/lib/apt/lists").glob("*Release"):
        for line in release.read_text(errors="replace").splitlines():
            if line.startswith("Date:"):
                dates.append(email.utils.parsedate_to_datetime(line[5:].strip()))
                break
    if not dates:
        raise ValueError(f"no apt Release file with a Date in {root}/var/lib/apt/lists")
    return int(max(dates).timestamp())


def _sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
