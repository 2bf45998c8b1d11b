"""Real builds of every lab image (or the cached ones), then a look inside each.

Each image's root disk is mounted read-only from a raw copy, and its own
programs run in a chroot on it: an i386 image's python3 is a 32-bit process,
which this x86_64 host runs natively. Building needs root, mmdebstrap and the
Debian mirror; a build takes one to three minutes, a cached image a second.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from vm.images import recipe, ssh_key
from vm.images.build import BuiltImage, ensure_image, recipe_hash
from vm.images.manifest import installed_packages

pytestmark = [
    pytest.mark.images,
    pytest.mark.skipif(os.geteuid() != 0, reason="building and mounting images needs root"),
]

# The image with the fewest packages and the smallest disk: the one built twice.
SMALLEST = "bookworm-i386"
WORD_BITS = {"amd64": 64, "i386": 32}
VIRTIO_MODULES = ("virtio_blk", "virtio_net", "virtio_pci")


@pytest.fixture(scope="module", params=recipe.all_names())
def image(request: pytest.FixtureRequest) -> BuiltImage:
    return ensure_image(request.param)


@pytest.fixture(scope="module")
def root(image: BuiltImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The image's root file system, mounted read-only."""
    work = tmp_path_factory.mktemp(image.recipe.name)
    raw = work / "root.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image.disk), str(raw)], check=True)
    mount_point = work / "mnt"
    mount_point.mkdir()
    subprocess.run(["mount", "-o", "loop,ro,noload", str(raw), str(mount_point)], check=True)
    # A scratch /run, as at boot: sshd -T wants its privilege separation directory.
    subprocess.run(["mount", "-t", "tmpfs", "run", str(mount_point / "run")], check=True)
    (mount_point / "run/sshd").mkdir()
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point / "run")], check=True)
        subprocess.run(["umount", str(mount_point)], check=True)
        raw.unlink()


def in_image(root: Path, *command: str) -> str:
    result = subprocess.run(
        ["chroot", str(root), *command], capture_output=True, text=True,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"},
    )
    assert result.returncode == 0, f"{command} in {root}: {result.stderr}"
    return result.stdout


def test_kernel_and_initrd_are_the_images_own(image: BuiltImage, root: Path) -> None:
    version = image.manifest["kernel_version"]
    assert image.kernel.read_bytes() == (root / f"boot/vmlinuz-{version}").read_bytes()
    assert image.initrd.read_bytes() == (root / f"boot/initrd.img-{version}").read_bytes()
    assert image.kernel.stat().st_size > 1024**2
    assert version.endswith("-686" if image.recipe.architecture == "i386" else "-amd64")


def test_initramfs_can_mount_a_virtio_root(image: BuiltImage, root: Path) -> None:
    version = image.manifest["kernel_version"]
    listing = in_image(root, "lsinitramfs", f"/boot/initrd.img-{version}")
    builtin = (root / f"lib/modules/{version}/modules.builtin").read_text()
    for module in VIRTIO_MODULES:
        assert f"/{module}.ko" in listing or f"/{module}.ko" in builtin, module
    assert "ext4" in listing or "/ext4.ko" in builtin


def test_sshd_lets_root_in_by_the_lab_key_only(image: BuiltImage, root: Path) -> None:
    settings = dict(
        line.split(" ", 1) for line in in_image(root, "sshd", "-T").splitlines() if " " in line
    )
    assert settings["permitrootlogin"] == "without-password"
    assert settings["passwordauthentication"] == "no"
    assert settings["kbdinteractiveauthentication"] == "no"
    authorized = root / "root/.ssh/authorized_keys"
    assert authorized.read_text().strip() == ssh_key.public_key(image.ssh_key)
    assert authorized.stat().st_mode & 0o777 == 0o600
    assert in_image(root, "systemctl", "is-enabled", "ssh.service").strip() == "enabled"


def test_network_comes_up_by_dhcp(root: Path) -> None:
    unit = (root / "etc/systemd/network/80-dhcp.network").read_text()
    assert "DHCP=ipv4" in unit
    enabled = in_image(root, "systemctl", "is-enabled", "systemd-networkd.service")
    assert enabled.strip() == "enabled"


def test_python_imports_ptrace_and_keystone_in_the_images_architecture(
    image: BuiltImage, root: Path
) -> None:
    script = (
        "import struct, ptrace.debugger, keystone\n"
        "ks = keystone.Ks(keystone.KS_ARCH_X86, keystone.KS_MODE_32)\n"
        "print(struct.calcsize('P') * 8, bytes(ks.asm('int 0x80')[0]).hex())\n"
    )
    bits, encoding = in_image(root, "python3", "-c", script).split()
    assert int(bits) == WORD_BITS[image.recipe.architecture]
    assert encoding == "cd80"


def test_manifest_tells_what_is_inside(image: BuiltImage, root: Path) -> None:
    manifest = image.manifest
    assert manifest["recipe"] == image.recipe.name
    assert manifest["recipe_hash"] == recipe_hash(image.recipe)
    assert image.directory.name == f"{image.recipe.name}-{manifest['recipe_hash']}"
    assert manifest["packages"] == installed_packages(root)
    for package in (image.recipe.kernel_package, "openssh-server", *image.recipe.packages):
        assert package in manifest["packages"]
    (wheel,) = manifest["wheels"]
    assert wheel.startswith("keystone_engine-0.9.2-") and image.recipe.wheel_platform in wheel
    assert manifest["source_date_epoch"] > 1_600_000_000


def test_rebuild_gives_the_same_manifest(tmp_path: Path) -> None:
    # Two fresh builds, each into a cache of its own, a few minutes apart: nothing
    # in the manifest is left out of the comparison. What it cannot control is the
    # mirror: a Debian point release published between the two builds changes the
    # package set (and the Release date), and then this fails rightly.
    first = ensure_image(SMALLEST, cache_root=tmp_path / "first")
    second = ensure_image(SMALLEST, cache_root=tmp_path / "second")
    assert first.directory.name == second.directory.name
    assert json.loads((first.directory / "manifest.json").read_text()) == json.loads(
        (second.directory / "manifest.json").read_text()
    )


def test_unreachable_mirror_fails_in_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    env = {
        **os.environ, "MVEE_LAB_CACHE": str(tmp_path),
        "MVEE_LAB_MIRROR": "http://127.0.0.1:9/debian",
    }
    result = subprocess.run(
        [sys.executable, "-m", "vm.images.build", SMALLEST], env=env, capture_output=True, text=True,
        timeout=300,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("build-images:")]
    assert len(errors) == 1, result.stderr
    assert "Could not connect to 127.0.0.1:9" in errors[0]
    assert [p.name for p in (tmp_path / "images").iterdir()] == [f".{SMALLEST}.lock"]
