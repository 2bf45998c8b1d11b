"""The image builder: from a recipe to a bootable, cached lab image.

``ensure_image(name)`` returns the image built from images/<name>.toml, building
it first when the cache has none for this recipe and this builder. A build runs
mmdebstrap (minbase variant) into a work directory inside the cache, configures
the root through vm.images.customize's hooks, takes out kernel and initramfs, writes
the root disk as qcow2 and a manifest, then renames the work directory to its
final name: an interrupted build never leaves anything that looks finished, and
work directories of dead builds are removed by the next one.

Command line: ``python -m vm.images.build [NAME...]`` builds the named images (all by
default) and prints build time and size per image.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vm import REPO_DIR, cache
from vm.images import mirror, recipe, ssh_key
from vm.images.customize import kernel_versions
from vm.images.disk import make_root_disk
from vm.images.manifest import make_manifest
from vm.images.recipe import Recipe, RecipeError

VM_DIR = Path(__file__).resolve().parent.parent
# The modules whose change changes what a build produces (paths under vm/): part of every
# image's hash. tests/test_cache.py checks that it names every vm module the builder loads.
BUILDER_SOURCES = (
    "__init__.py", "cache.py", "images/__init__.py", "images/build.py", "images/customize.py",
    "images/disk.py", "images/manifest.py", "images/mirror.py", "images/recipe.py", "images/ssh_key.py",
)

# What every lab VM needs besides the recipe's packages: init, device nodes, the
# SSH server, the initramfs generator and its compressor, `ip`, and the C++
# runtime of keystone's library.
BASE_PACKAGES = (
    "systemd-sysv", "udev", "openssh-server", "initramfs-tools", "zstd", "iproute2",
    "libstdc++6",
)
# Documentation, manual pages and translations: of no use in a lab VM.
DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
)
# How long a stopped mmdebstrap may take to clean up before it is killed.
STOP_GRACE_SECONDS = 20
# A build holds a root tree, a raw file system and its qcow2 copy at the same time.
MIN_FREE_BYTES = 3 * 1024**3

DISK_FILE = "root.qcow2"
KERNEL_FILE = "vmlinuz"
INITRD_FILE = "initrd.img"
MANIFEST_FILE = "manifest.json"
# The public key the image authorises: an image built for another lab key is stale.
AUTHORIZED_KEY_FILE = "authorized_key.pub"

Progress = Callable[[str], None]


class BuildError(Exception):
    """A build that failed; the message is one line for the user."""


@dataclass(frozen=True)
class BuiltImage:
    recipe: Recipe
    directory: Path
    disk: Path
    kernel: Path
    initrd: Path
    ssh_key: Path
    manifest: dict[str, Any]

    @property
    def cmdline(self) -> str:
        return self.recipe.cmdline


def print_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def recipe_hash(rec: Recipe) -> str:
    """Digest of the recipe file and the builder's source."""
    digest = hashlib.sha256(rec.path.read_bytes())
    for source in BUILDER_SOURCES:
        digest.update(source.encode() + b"\0" + (VM_DIR / source).read_bytes())
    return digest.hexdigest()[:16]


def images_dir(cache_root: Path) -> Path:
    return cache_root / "images"


def ensure_image(
    name: str, cache_root: Path | None = None, progress: Progress = print_progress
) -> BuiltImage:
    """The built image for recipe name, from the cache or built now."""
    rec = recipe.load(name)
    root = cache_root or cache.cache_root()
    key = ssh_key.ensure_key(root)
    parent = images_dir(root)
    digest = recipe_hash(rec)
    final = parent / f"{name}-{digest}"
    with cache.locked(parent / f".{name}.lock"):
        for stale in cache.remove_stale_temp_dirs(parent):
            progress(f"[{name}] removed unfinished build {stale.name}")
        if _is_current(final, key):
            progress(f"[{name}] cached: {final}")
        else:
            _build(rec, digest, final, key, root, progress)
    return _built_image(rec, final, key)


def _is_current(final: Path, key: Path) -> bool:
    return (final / MANIFEST_FILE).is_file() and (
        (final / AUTHORIZED_KEY_FILE).read_text().strip() == ssh_key.public_key(key)
    )


def _built_image(rec: Recipe, final: Path, key: Path) -> BuiltImage:
    return BuiltImage(
        recipe=rec,
        directory=final,
        disk=final / DISK_FILE,
        kernel=final / KERNEL_FILE,
        initrd=final / INITRD_FILE,
        ssh_key=key,
        manifest=json.loads((final / MANIFEST_FILE).read_text()),
    )


def _build(
    rec: Recipe, digest: str, final: Path, key: Path, cache_root: Path, progress: Progress
) -> None:
    start = time.monotonic()

    def step(message: str) -> None:
        progress(f"[{rec.name} {time.monotonic() - start:6.1f}s] {message}")

    final.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(final.parent).free
    if free < MIN_FREE_BYTES:
        raise BuildError(
            f"{rec.name}: only {free / 1024**3:.1f} GiB free in {final.parent}, "
            f"a build needs {MIN_FREE_BYTES / 1024**3:.0f} GiB"
        )
    log = cache_root / "logs" / f"{rec.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    work = cache.temp_dir_for(final.parent, final.name)
    try:
        step(f"building in {work} (log: {log})")
        wheels = _download_wheels(rec, work / "wheels", log)
        step(f"downloaded {', '.join(w.name for w in wheels)}")
        tree = work / "root"
        _mmdebstrap(rec, tree, wheels, ssh_key.public_key(key), log, step)
        kernels = kernel_versions(tree)
        if len(kernels) != 1:
            raise BuildError(f"{rec.name}: expected one kernel in the image, found {kernels}")
        kernel_version = kernels[0]
        shutil.copyfile(tree / "boot" / f"vmlinuz-{kernel_version}", work / KERNEL_FILE)
        shutil.copyfile(tree / "boot" / f"initrd.img-{kernel_version}", work / INITRD_FILE)
        manifest = make_manifest(rec, digest, tree, kernel_version, wheels)
        shutil.rmtree(tree / "var/lib/apt/lists")
        step(f"kernel {kernel_version}, {len(manifest['packages'])} packages; writing root disk")
        make_root_disk(tree, work / DISK_FILE, rec.disk_mib)
        cache.remove_tree(tree)
        shutil.rmtree(work / "wheels")
        (work / AUTHORIZED_KEY_FILE).write_text(ssh_key.public_key(key) + "\n")
        (work / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        cache.remove_tree(final)
        work.rename(final)
    except BaseException:
        cache.remove_tree(work)
        raise
    size = (final / DISK_FILE).stat().st_size
    step(f"done: {final} ({size / 1024**2:.0f} MiB disk)")


def _download_wheels(rec: Recipe, dest: Path, log: Path) -> list[Path]:
    dest.mkdir()
    for spec in rec.wheels:
        _run_logged(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "--platform", rec.wheel_platform, "--dest", str(dest), spec],
            log, f"pip download {spec}",
        )
    return sorted(dest.glob("*.whl"))


def _mmdebstrap(
    rec: Recipe, tree: Path, wheels: list[Path], authorized_key: str, log: Path, step: Progress
) -> None:
    hook = f"{shlex.quote(sys.executable)} -m vm.images.customize"
    configure = [
        "configure", '"$1"', "--hostname", rec.name, "--authorized-key", authorized_key,
        *(arg for wheel in wheels for arg in ("--wheel", str(wheel))),
    ]
    command = [
        "mmdebstrap", "--mode=root", "--variant=minbase", f"--architectures={rec.architecture}",
        "--include=" + ",".join((*BASE_PACKAGES, rec.kernel_package, *rec.packages)),
        *(f"--dpkgopt={option}" for option in DPKG_OPTIONS),
        # The manifest reads the Release files' dates; the build removes the lists after.
        "--skip=cleanup/apt/lists",
        f'--setup-hook={hook} setup "$1"',
        f'--essential-hook={hook} hold-initramfs "$1"',
        "--customize-hook=" + hook + " " + " ".join(
            a if a == '"$1"' else shlex.quote(a) for a in configure
        ),
        rec.suite, str(tree),
    ]
    command += mirror.apt_sources(rec.suite)
    env = {**os.environ, "PYTHONPATH": str(REPO_DIR)}
    _run_logged(command, log, "mmdebstrap", step, env)


def _run_logged(
    command: list[str],
    log: Path,
    what: str,
    step: Progress | None = None,
    env: dict[str, str] | None = None,
) -> None:
    """Run command with its output appended to log; mmdebstrap's "I:" lines go to step."""
    with open(log, "a") as log_file:
        log_file.write(f"$ {shlex.join(command)}\n")
        log_file.flush()
        # A session of its own, so that stopping it reaches everything it started.
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
        )
        assert process.stdout is not None
        try:
            for line in process.stdout:
                log_file.write(line)
                if step and line.startswith("I: "):
                    step(line[3:].rstrip())
            returncode = process.wait()
        except BaseException:
            log_file.write(_stop(process))
            raise
    if returncode:
        raise BuildError(f"{what} failed (exit {returncode}): {_reason(log)} (log: {log})")


# The most telling lines of a failed command's output, best first: the mirror out
# of reach, a full disk, an exception in a hook, apt's or pip's own error.
_REASONS = (
    re.compile(r"Could not (connect|resolve).*"),
    re.compile(r".*No space left on device.*"),
    re.compile(r"^\w+(Error|Exception): .*"),
    re.compile(r"^(E: |ERROR: ).*"),
)


def _stop(process: subprocess.Popen[str]) -> str:
    """Stop process and everything it started, and return the rest of its output:
    politely first (mmdebstrap then unmounts what it mounted), by force if it hangs
    (the caller unmounts what is left)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        output, _ = process.communicate(timeout=STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
    return output or ""


def _reason(log: Path) -> str:
    """The most telling line of a failed command's output."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines()]
    for pattern in _REASONS:
        for line in lines:
            found = pattern.search(line)
            if found:
                return found.group(0)
    return next((line for line in reversed(lines) if line), "no output")


def _describe(error: BaseException) -> str:
    if isinstance(error, subprocess.CalledProcessError):
        output = (error.stderr or error.stdout or "").strip().splitlines()
        detail = output[-1] if output else "no output"
        return f"{shlex.join(map(str, error.cmd))} failed (exit {error.returncode}): {detail}"
    return str(error)


class Terminated(Exception):
    """SIGTERM arrived: stop the build, removing what it had made so far."""


def _raise_on_sigterm() -> None:
    def handler(signum: int, frame: object) -> None:
        raise Terminated

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="build-images", description="Build the lab's images.")
    parser.add_argument("names", nargs="*", metavar="NAME", help="recipes (default: all)")
    parser.add_argument("--report", type=Path, help="write the time/size table as JSON here")
    args = parser.parse_args(argv)
    _raise_on_sigterm()
    rows = []
    try:
        names = args.names or recipe.all_names()
        for name in names:
            recipe.load(name)
        for name in names:
            start = time.monotonic()
            image = ensure_image(name)
            rows.append({
                "image": name,
                "seconds": round(time.monotonic() - start, 1),
                "disk_mib": round(image.disk.stat().st_size / 1024**2, 1),
                "kernel": image.manifest["kernel_version"],
                "packages": len(image.manifest["packages"]),
                "path": str(image.disk),
            })
    except (RecipeError, BuildError, OSError, subprocess.CalledProcessError) as error:
        print(f"build-images: {_describe(error)}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Terminated):
        print("build-images: interrupted; nothing half-built was kept", file=sys.stderr)
        return 130
    print(f"{'image':<18} {'time (s)':>9} {'disk (MiB)':>11}  kernel")
    for row in rows:
        print(f"{row['image']:<18} {row['seconds']:>9} {row['disk_mib']:>11}  {row['kernel']}")
    report = args.report or cache.cache_root() / "build-report.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
