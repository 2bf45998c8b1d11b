"""The lab's images as local Vagrant boxes for vagrant-libvirt.

``python -m vm.images.boxes [NAME...]`` (scripts/package-boxes) makes a libvirt
box of each built image (all recipes by default) and adds it to Vagrant as
``mvee-lab/<recipe>-<hash>-<key>``: the image's hash and the lab key it authorises
are in the box's name, so a box is added once per build and a rebuilt image gets a
new box (and vagrant-libvirt a new volume in its storage pool, never a stale one of
the same name).

A box holds:

- ``box.img``: a copy of the image's root disk with qemu-guest-agent installed
  (vagrant-libvirt asks the agent for the guest's address when the VM has no
  management network, as in the isolated set-up of the Vagrantfile). The images
  do not carry the agent: it is installed here into a copy of the disk, through
  a loop mount and apt in a chroot, so the images' recipes (and their hashes,
  shared with the QEMU lab) stay as they are.
- ``vmlinuz``, ``initrd.img``: the images have no boot loader; the box's
  Vagrantfile boots this kernel directly with the image's command line.
- ``metadata.json``, ``Vagrantfile``, ``mvee-lab.json`` (recipe, hash, cmdline).

The kernel and initramfs are also copied to /var/lib/libvirt/boot/mvee-lab/
(``BOOT_DIR``): QEMU under qemu:///system runs as libvirt-qemu, which cannot
read a box under /root/.vagrant.d; the repository's Vagrantfile boots from
there when the copy exists. Must run as root (loop mount, chroot).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from vm import cache
from vm.images import recipe, ssh_key
from vm.images.build import BuildError, BuiltImage, _built_image, ensure_image, images_dir, recipe_hash

BOX_PREFIX = "mvee-lab/"
BOOT_DIR = Path(os.environ.get("MVEE_VAGRANT_BOOT_DIR", "/var/lib/libvirt/boot/mvee-lab"))
AGENT_PACKAGE = "qemu-guest-agent"

BOX_VAGRANTFILE = """\
# mvee-lab box {box}: {recipe} image {hash}, with qemu-guest-agent.
# The image has no boot loader: boot its own kernel and initramfs directly.
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.kernel = File.join(__dir__, "vmlinuz")
    libvirt.initrd = File.join(__dir__, "initrd.img")
    libvirt.cmd_line = {cmdline!r}
    libvirt.disk_bus = "virtio"
  end
end
"""


class BoxError(Exception):
    """Packaging failed; the message is one line for the user."""


def boxes_file() -> Path:
    """What the Vagrantfile reads: recipe -> box name, image hash, cmdline, kernel, initrd."""
    return cache.cache_root() / "vagrant" / "boxes.json"


def cached_image(name: str, log) -> BuiltImage:
    """The image of recipe name: this checkout's build if cached, else the newest
    finished build of another version of the recipe in the cache (with a warning:
    worktrees share one cache, and building here would replace theirs), else built now."""
    rec = recipe.load(name)
    root = cache.cache_root()
    parent = images_dir(root)
    current = parent / f"{name}-{recipe_hash(rec)}"
    others = sorted(
        (p for p in parent.glob(f"{name}-*")
         if re.fullmatch(re.escape(name) + "-[0-9a-f]{16}", p.name) and (p / "manifest.json").is_file()),
        key=lambda p: p.stat().st_mtime, reverse=True)
    if (current / "manifest.json").is_file() or not others:
        return ensure_image(name, progress=log)
    log(f"[{name}] warning: no build of this checkout's recipe ({current.name}) in the cache; "
        f"packaging {others[0].name}")
    return _built_image(rec, others[0], ssh_key.ensure_key(root))


def box_name(image: BuiltImage) -> str:
    """mvee-lab/<recipe>-<image hash>-<lab key>: an image is rebuilt under its name for another
    lab key (another cache), and a box of it must not stand for the one of the first key."""
    key = hashlib.sha256(ssh_key.public_key(image.ssh_key).encode()).hexdigest()[:8]
    return f"{BOX_PREFIX}{image.recipe.name}-{image.manifest['recipe_hash']}-{key}"


def installed_boxes() -> set[str]:
    out = subprocess.run(["vagrant", "box", "list", "--machine-readable"], check=True,
                         capture_output=True, text=True, stdin=subprocess.DEVNULL).stdout
    names = set()
    for line in out.splitlines():
        fields = line.split(",")
        if len(fields) >= 4 and fields[2] == "box-name":
            names.add(fields[3])
    return names


def ensure_box(image: BuiltImage, work_root: Path, log=print) -> dict:
    """Add image as a Vagrant box unless already there; return what the inventory needs."""
    name = box_name(image)
    info = {"recipe": image.recipe.name, "hash": image.manifest["recipe_hash"], "box": name,
            "cmdline": image.manifest["cmdline"], "architecture": image.recipe.architecture}
    boot = install_boot_files(image)
    info["kernel"], info["initrd"] = str(boot / "vmlinuz"), str(boot / "initrd.img")
    if name in installed_boxes():
        log(f"[{image.recipe.name}] box {name} already added")
        return info
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="box-", dir=work_root) as tmp:
        box_dir = Path(tmp) / "box"
        box_dir.mkdir()
        virtual_size = build_disk(image, box_dir / "box.img", Path(tmp), log)
        shutil.copyfile(image.kernel, box_dir / "vmlinuz")
        shutil.copyfile(image.initrd, box_dir / "initrd.img")
        (box_dir / "metadata.json").write_text(json.dumps(
            {"provider": "libvirt", "format": "qcow2", "virtual_size": virtual_size}) + "\n")
        (box_dir / "Vagrantfile").write_text(BOX_VAGRANTFILE.format(
            box=name, recipe=image.recipe.name, hash=info["hash"], cmdline=info["cmdline"]))
        (box_dir / "mvee-lab.json").write_text(json.dumps(info, indent=2) + "\n")
        box_file = Path(tmp) / f"{image.recipe.name}.box"
        with tarfile.open(box_file, "w") as tar:  # uncompressed: box.img is compressed qcow2
            for f in sorted(box_dir.iterdir()):
                tar.add(f, arcname=f.name)
        subprocess.run(["vagrant", "box", "add", "--force", "--name", name, str(box_file)],
                       check=True, stdin=subprocess.DEVNULL)
    remove_older_boxes(image.recipe.name, name, log)
    log(f"[{image.recipe.name}] box {name} added in {time.monotonic() - started:.1f} s")
    return info


def install_boot_files(image: BuiltImage) -> Path:
    """Kernel and initramfs where QEMU (as libvirt-qemu under qemu:///system) can read them."""
    dest = BOOT_DIR / f"{image.recipe.name}-{image.manifest['recipe_hash']}"
    if not (dest / "initrd.img").is_file():
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for d in (BOOT_DIR, *BOOT_DIR.parents):
            if d == Path("/") or d.stat().st_mode & 0o005 == 0o005:
                break
            d.chmod(d.stat().st_mode | 0o755)
        shutil.copyfile(image.kernel, tmp / "vmlinuz")
        shutil.copyfile(image.initrd, tmp / "initrd.img")
        for f in tmp.iterdir():
            f.chmod(0o644)
        tmp.chmod(0o755)
        tmp.rename(dest)
    for old in BOOT_DIR.glob(f"{image.recipe.name}-*"):
        if old != dest and re.fullmatch(re.escape(image.recipe.name) + "-[0-9a-f]{16}", old.name):
            shutil.rmtree(old, ignore_errors=True)
    return dest


def build_disk(image: BuiltImage, out: Path, tmp: Path, log) -> int:
    """Copy of the image's disk with qemu-guest-agent; returns its virtual size in GiB."""
    raw = tmp / "root.raw"
    _run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(image.disk), str(raw)])
    mnt = tmp / "mnt"
    mnt.mkdir()
    _run(["mount", "-o", "loop", str(raw), str(mnt)])
    try:
        install_agent(mnt, image.recipe.name, log)
    finally:
        for sub in ("dev/pts", "dev", "proc", "sys"):
            subprocess.run(["umount", "-l", str(mnt / sub)], capture_output=True)
        _run(["umount", str(mnt)])
    _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-c", "-o", "compression_type=zstd",
          str(raw), str(out)])
    raw.unlink()
    info = json.loads(_run(["qemu-img", "info", "--output=json", str(out)]))
    return max(1, math.ceil(info["virtual-size"] / 2**30))


def install_agent(root: Path, name: str, log) -> None:
    """apt-get install qemu-guest-agent in the mounted root, with the host's network."""
    started = time.monotonic()
    for sub, fstype in (("proc", "proc"), ("sys", "sysfs")):
        _run(["mount", "-t", fstype, fstype, str(root / sub)])
    _run(["mount", "--bind", "/dev", str(root / "dev")])
    resolv = root / "etc/resolv.conf"
    saved = tmp_resolv = None
    if resolv.is_symlink() or resolv.exists():
        saved = root / "etc/resolv.conf.mvee-box"
        resolv.rename(saved)
    tmp_resolv = resolv
    shutil.copyfile("/etc/resolv.conf", tmp_resolv)
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive",
           "LC_ALL": "C"}
    try:
        _run(["chroot", str(root), "apt-get", "-q", "update"], env=env)
        _run(["chroot", str(root), "apt-get", "-q", "-y", "--no-install-recommends",
              "install", AGENT_PACKAGE], env=env)
        _run(["chroot", str(root), "apt-get", "clean"], env=env)
        version = _run(["chroot", str(root), "dpkg-query", "-W", "-f=${Version}", AGENT_PACKAGE],
                       env=env)
    finally:
        policy.unlink(missing_ok=True)
        tmp_resolv.unlink(missing_ok=True)
        if saved is not None:
            saved.rename(resolv)
        shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
        (root / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
    log(f"[{name}] {AGENT_PACKAGE} {version} installed in {time.monotonic() - started:.1f} s")


def remove_older_boxes(recipe_name: str, keep: str, log) -> None:
    pattern = re.compile(re.escape(BOX_PREFIX + recipe_name) + "-[0-9a-f]{16}(-[0-9a-f]{8})?")
    for old in installed_boxes():
        if old != keep and pattern.fullmatch(old):
            subprocess.run(["vagrant", "box", "remove", "--force", "--all", old],
                           stdin=subprocess.DEVNULL)
            log(f"[{recipe_name}] removed outdated box {old}")
            _delete_pool_volumes(old)


def _delete_pool_volumes(box: str) -> None:
    """vagrant-libvirt's copies of an outdated box in the isolated set-up's pool, if any."""
    pool = os.environ.get("MVEE_VAGRANT_POOL", "mvee-lab")
    prefix = box.replace("/", "-VAGRANTSLASH-") + "_vagrant_box_image_"
    listing = subprocess.run(["virsh", "-q", "vol-list", pool], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL)
    for line in listing.stdout.splitlines():
        volume = line.split()[0] if line.split() else ""
        if volume.startswith(prefix):
            subprocess.run(["virsh", "-q", "vol-delete", "--pool", pool, volume],
                           capture_output=True, stdin=subprocess.DEVNULL)


def _run(argv: list[str], env: dict | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise BoxError(f"{' '.join(argv)} failed ({proc.returncode}): " + " | ".join(tail))
    return proc.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="package-boxes", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="recipes (default: all)")
    parser.add_argument("--json", type=Path, help="write what was added (box, cmdline, ...) here")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("package-boxes: must run as root (loop mount and chroot)", file=sys.stderr)
        return 1
    names = args.names or recipe.all_names()
    work_root = cache.cache_root() / "vagrant"
    work_root.mkdir(parents=True, exist_ok=True)
    boxes = {}
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    known = json.loads(boxes_file().read_text()) if boxes_file().is_file() else {}
    try:
        for name in names:
            boxes[name] = ensure_box(cached_image(name, log), work_root, log=log)
            known[name] = boxes[name]
            tmp = boxes_file().with_suffix(".tmp")
            tmp.write_text(json.dumps(known, indent=2) + "\n")
            tmp.rename(boxes_file())
    except (BuildError, BoxError, recipe.RecipeError, subprocess.CalledProcessError) as error:
        print(f"package-boxes: {error}", file=sys.stderr)
        return 1
    if args.json:
        args.json.write_text(json.dumps(boxes, indent=2) + "\n")
    print(json.dumps(boxes, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
