"""The running machines of the repository's Vagrantfile, as a backend of the lease
interface: an inventory of SSH hosts read from ``vagrant ssh-config``.

``running_inventory()`` is the one function that finds them: the pytest plugin
calls it (plain ``pytest`` after ``vagrant up`` runs the lab tests on them) and
scripts/vagrant-lab writes its output to a file (``python -m vm.machines.vagrant
inventory FILE``) that ``--lab-hosts`` reads. Vagrant is asked only when
``.vagrant/machines/*/libvirt/id`` says a machine was created, so that a plain
``pytest`` without machines costs no Vagrant start-up (seconds of Ruby).

What a machine leaves in libvirt (scripts/vagrant-setup and scripts/vagrant-lab
use these): ``orphans`` are domains of this Vagrantfile that .vagrant does not
name (an interrupted ``vagrant up``), removed with their volumes; ``leftovers``
lists every domain, volume and QEMU process of this Vagrantfile's machines (after
``vagrant destroy -f``: none).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

from vm import REPO_DIR
from vm.images.recipe import all_boot_targets
from vm.machines.hosts import HostsBackend
from vm.machines.inventory import HostEntry, InventoryError, dump, from_ssh_config

VAGRANT_TIMEOUT_S = 120


class VagrantError(Exception):
    """Vagrant could not tell about its machines; one line."""


def created_machines(root: Path = REPO_DIR) -> list[str]:
    """Machines of root's Vagrantfile that vagrant-libvirt created (not destroyed since)."""
    machines = root / ".vagrant" / "machines"
    if not (root / "Vagrantfile").is_file() or not machines.is_dir():
        return []
    return sorted(m.name for m in machines.iterdir() if (m / "libvirt" / "id").is_file())


def _vagrant(root: Path, *arguments: str) -> str:
    try:
        proc = subprocess.run(["vagrant", *arguments], cwd=root, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=VAGRANT_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise VagrantError(f"vagrant {arguments[0]}: {e}") from None
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
        raise VagrantError(f"vagrant {arguments[0]} failed ({proc.returncode}): "
                           f"{lines[0].strip() if lines else 'no output'}")
    return proc.stdout


def running_machines(root: Path = REPO_DIR) -> list[str]:
    """Machines of root's Vagrantfile that are running now."""
    created = created_machines(root)
    if not created or shutil.which("vagrant") is None:
        return []
    out = _vagrant(root, "status", "--machine-readable", *created)
    return sorted(fields[1] for fields in (line.split(",") for line in out.splitlines())
                  if len(fields) >= 4 and fields[2] == "state" and fields[3] == "running")


def running_inventory(root: Path = REPO_DIR) -> list[HostEntry]:
    """The running machines of root's Vagrantfile as inventory entries (empty if none)."""
    running = running_machines(root)
    if not running:
        return []
    return from_ssh_config(_vagrant(root, "ssh-config", *running), "vagrant ssh-config")


def backend(entries: list[HostEntry], root: Path = REPO_DIR) -> HostsBackend:
    return HostsBackend(entries, f"the running Vagrant machines of {root / 'Vagrantfile'}", how="vagrant")


# Both set-ups' connections (the Vagrantfile's); as root they reach the same daemon.
LIBVIRT_URIS = ("qemu:///session", "qemu:///system")


def domain_prefix(root: Path = REPO_DIR) -> str:
    """vagrant-libvirt's domain names: <checkout directory>_<machine>, odd characters dropped."""
    return re.sub(r"[^-a-z0-9_.]", "", root.name + "_", flags=re.IGNORECASE)


def _virsh(uri: str, *arguments: str) -> list[str]:
    proc = subprocess.run(["virsh", "-q", "-c", uri, *arguments], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=VAGRANT_TIMEOUT_S)
    return [line.strip() for line in proc.stdout.splitlines() if line.strip()] if proc.returncode == 0 else []


def _domains(uri: str, root: Path) -> dict[str, str]:
    """This Vagrantfile's domains under uri: name -> UUID."""
    prefix = domain_prefix(root)
    names = [n for n in _virsh(uri, "list", "--all", "--name") if n.startswith(prefix)
             and n[len(prefix):] in all_boot_targets()]
    return {n: (_virsh(uri, "domuuid", n) or [""])[0] for n in names}


def _volumes(uri: str, pool: str, root: Path) -> list[str]:
    """This Vagrantfile's machine volumes in pool (<domain>.img; not the boxes' base volumes)."""
    prefix = domain_prefix(root)
    return [line.split()[0] for line in _virsh(uri, "vol-list", pool)
            if line.split()[0].startswith(prefix) and line.split()[0].endswith(".img")]


def _qemu_processes(root: Path) -> list[str]:
    prefix = domain_prefix(root)
    out = subprocess.run(["pgrep", "-a", "-f", f"guest={prefix}"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if "qemu-system" in line]


def clean_orphans(pool: str, root: Path = REPO_DIR) -> list[str]:
    """Remove this Vagrantfile's domains that .vagrant does not name, and their volumes."""
    known = {(m / "libvirt" / "id").read_text().strip()
             for m in (root / ".vagrant" / "machines").glob("*") if (m / "libvirt" / "id").is_file()}
    removed = []
    for uri in LIBVIRT_URIS:
        for name, uuid in _domains(uri, root).items():
            if uuid in known:
                continue
            _virsh(uri, "destroy", name)
            _virsh(uri, "undefine", name, "--remove-all-storage", "--nvram")
            _virsh(uri, "undefine", name)
            removed.append(f"domain {name}")
        for volume in _volumes(uri, pool, root):
            domain = volume.removesuffix(".img")
            if domain not in _domains(uri, root):
                _virsh(uri, "vol-delete", "--pool", pool, volume)
                removed.append(f"volume {volume}")
    return removed


def leftovers(pool: str, root: Path = REPO_DIR) -> list[str]:
    """Every domain, machine volume and QEMU process of this Vagrantfile's machines."""
    found = {f"domain {n}" for uri in LIBVIRT_URIS for n in _domains(uri, root)}
    found |= {f"volume {v}" for uri in LIBVIRT_URIS for v in _volumes(uri, pool, root)}
    found |= {f"QEMU process {pid}" for pid in _qemu_processes(root)}
    return sorted(found)


def recipes(machines: list[str]) -> list[str]:
    """The image recipes of the named machines (all machines when none is named)."""
    targets = all_boot_targets()
    unknown = [m for m in machines if m not in targets]
    if unknown:
        raise VagrantError(f"unknown machine {unknown[0]!r} (known: {', '.join(sorted(targets))})")
    return sorted({targets[m][0].name for m in machines or targets})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vm.machines.vagrant",
                                     description="The machines of the repository's Vagrantfile.")
    commands = parser.add_subparsers(dest="command", required=True)
    write = commands.add_parser("inventory", help="write the running machines' inventory (for --lab-hosts)")
    write.add_argument("file", type=Path)
    for name, text in (("clean-orphans", "remove domains .vagrant does not know, and their volumes"),
                       ("leftovers", "list domains, volumes, QEMU processes (exit 1 if any)")):
        command = commands.add_parser(name, help=text)
        command.add_argument("--pool", default="mvee-lab")
    names = commands.add_parser("recipes", help="the image recipes of the named machines")
    names.add_argument("machines", nargs="*")
    args = parser.parse_args(argv)
    try:
        if args.command == "recipes":
            print("\n".join(recipes(args.machines)))
            return 0
        if args.command == "clean-orphans":
            for line in clean_orphans(args.pool):
                print(f"removed {line} (left by an interrupted vagrant up)", file=sys.stderr)
            return 0
        if args.command == "leftovers":
            found = leftovers(args.pool)
            for line in found:
                print(line)
            return 1 if found else 0
        entries = running_inventory()
    except (VagrantError, InventoryError) as e:
        print(f"vagrant {args.command}: {e}", file=sys.stderr)
        return 1
    if not entries:
        print("vagrant inventory: no machine of the Vagrantfile is running (vagrant up first)",
              file=sys.stderr)
        return 1
    args.file.parent.mkdir(parents=True, exist_ok=True)
    args.file.write_text(dump(entries))
    print(dump(entries), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
