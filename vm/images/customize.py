"""Hooks that mmdebstrap runs on the image's root while building it.

``setup ROOT`` (setup hook, before any package is installed) lets dpkg skip
its fsync calls for the build: a half-written image is thrown away anyway.

``hold-initramfs ROOT`` (essential hook, before the kernel is installed) puts a
no-op in place of update-initramfs, so installing the kernel and
initramfs-tools' triggers do not build the initramfs again and again.

``configure ROOT ...`` (customize hook, after all packages are installed) makes
the root a lab VM: host name, fstab, DHCP with systemd-networkd, key-only root
login over SSH, the PyPI wheels, a kernel without modules a VM never loads, and
then the initramfs, built once; and dpkg syncs its writes again.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import zipfile
from pathlib import Path

UPDATE_INITRAMFS = "/usr/sbin/update-initramfs"
BUILD_DPKG_CONFIG = "etc/dpkg/dpkg.cfg.d/00mvee-lab-build"

# Kernel module trees that no QEMU lab VM loads (sound, graphics, wireless,
# cameras, ...): dropping them makes the image smaller and the initramfs faster.
UNNEEDED_MODULE_DIRS = (
    "kernel/sound",
    "kernel/drivers/gpu",
    "kernel/drivers/media",
    "kernel/drivers/staging",
    "kernel/drivers/infiniband",
    "kernel/drivers/net/wireless",
    "kernel/drivers/bluetooth",
    "kernel/drivers/iio",
    "kernel/drivers/isdn",
    "kernel/drivers/comedi",
    "kernel/net/wireless",
    "kernel/net/mac80211",
    "kernel/net/bluetooth",
)

NETWORK_UNIT = """\
[Match]
Name=eth* en*

[Network]
DHCP=ipv4
"""

SSHD_CONFIG = """\
# mvee-lab: root logs in with the lab's key, never with a password.
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
"""

# Units that would only slow a short-lived lab VM down or change it behind the tests' back.
MASKED_UNITS = ("apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer")


def setup(root: Path) -> None:
    _write(root / BUILD_DPKG_CONFIG, "force-unsafe-io\n")


def hold_initramfs(root: Path) -> None:
    _chroot(root, "dpkg-divert", "--local", "--rename", "--add", UPDATE_INITRAMFS)
    stub = root / UPDATE_INITRAMFS.lstrip("/")
    stub.write_text("#!/bin/sh\n# mvee-lab: the initramfs is built once, at the end.\nexit 0\n")
    stub.chmod(0o755)


def configure(root: Path, hostname: str, authorized_key: str, wheels: list[Path]) -> None:
    _write(root / "etc/hostname", f"{hostname}\n")
    _write(root / "etc/hosts", f"127.0.0.1 localhost\n127.0.1.1 {hostname}\n")
    _write(root / "etc/fstab", "LABEL=mvee-root / ext4 rw,errors=remount-ro 0 0\n")
    # QEMU's user-mode network serves DNS at 10.0.2.3.
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    _write(root / "etc/resolv.conf", "nameserver 10.0.2.3\n")
    _write(root / "etc/systemd/network/80-dhcp.network", NETWORK_UNIT)
    _chroot(root, "systemctl", "enable", "systemd-networkd.service")
    _chroot(root, "systemctl", "mask", *MASKED_UNITS)
    _write(root / "etc/ssh/sshd_config.d/mvee-lab.conf", SSHD_CONFIG)
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    _write(ssh_dir / "authorized_keys", f"{authorized_key}\n", mode=0o600)
    for wheel in wheels:
        install_wheel(root, wheel)
    for kernel_version in kernel_versions(root):
        _trim_modules(root, kernel_version)
        _chroot(root, "depmod", kernel_version)
    _release_initramfs(root)
    for kernel_version in kernel_versions(root):
        _chroot(root, UPDATE_INITRAMFS, "-c", "-k", kernel_version)
    (root / BUILD_DPKG_CONFIG).unlink()


def install_wheel(root: Path, wheel: Path) -> None:
    """Unpack a pure-layout wheel (no .data directory, like keystone-engine's) into
    the image's version-independent dist-packages, as pip would."""
    target = root / "usr/lib/python3/dist-packages"
    with zipfile.ZipFile(wheel) as archive:
        if any(".data/" in member for member in archive.namelist()):
            raise ValueError(f"{wheel.name}: wheels with a .data directory are not supported")
        archive.extractall(target)
        dist_info = next(m.split("/")[0] for m in archive.namelist() if ".dist-info/" in m)
    (target / dist_info / "INSTALLER").write_text("mvee-lab\n")


def kernel_versions(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "lib/modules").iterdir())


def _trim_modules(root: Path, kernel_version: str) -> None:
    modules = root / "lib/modules" / kernel_version
    for subdir in UNNEEDED_MODULE_DIRS:
        shutil.rmtree(modules / subdir, ignore_errors=True)


def _release_initramfs(root: Path) -> None:
    (root / UPDATE_INITRAMFS.lstrip("/")).unlink()
    _chroot(root, "dpkg-divert", "--local", "--rename", "--remove", UPDATE_INITRAMFS)


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _chroot(root: Path, *command: str) -> None:
    subprocess.run(["chroot", str(root), *command], check=True, stdin=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    steps = parser.add_subparsers(dest="step", required=True)
    for simple_step in ("setup", "hold-initramfs"):
        steps.add_parser(simple_step).add_argument("root", type=Path)
    conf = steps.add_parser("configure")
    conf.add_argument("root", type=Path)
    conf.add_argument("--hostname", required=True)
    conf.add_argument("--authorized-key", required=True)
    conf.add_argument("--wheel", type=Path, action="append", default=[])
    args = parser.parse_args()
    if args.step == "setup":
        setup(args.root)
    elif args.step == "hold-initramfs":
        hold_initramfs(args.root)
    else:
        configure(args.root, args.hostname, args.authorized_key, args.wheel)


if __name__ == "__main__":
    main()
