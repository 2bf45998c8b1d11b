"""The running machines of the repository's Vagrantfile, as a backend of the lease
interface: an inventory of SSH hosts read from ``vagrant ssh-config``.

``running_inventory()`` is the one function that finds them: the pytest plugin
calls it (plain ``pytest`` after ``vagrant up`` runs the lab tests on them) and
scripts/vagrant-lab writes its output to a file (``python -m vm.machines.vagrant
inventory FILE``) that ``--lab-hosts`` reads. Vagrant is asked only when
``.vagrant/machines/*/libvirt/id`` says a machine was created, so that a plain
``pytest`` without machines costs no Vagrant start-up (seconds of Ruby).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from vm import REPO_DIR
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vm.machines.vagrant",
                                     description="The running machines of the repository's Vagrantfile.")
    commands = parser.add_subparsers(dest="command", required=True)
    write = commands.add_parser("inventory", help="write their inventory (JSON, for --lab-hosts)")
    write.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    try:
        entries = running_inventory()
    except (VagrantError, InventoryError) as e:
        print(f"vagrant inventory: {e}", file=sys.stderr)
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
