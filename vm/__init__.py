"""The lab around the monitor, in two rooms: ``vm.images`` makes the VM images
(recipes, builder, Vagrant boxes) and ``vm.machines`` runs machines from them and
leases them to the tests (QEMU VMs, SSH hosts, Vagrant machines). ``vm.cache`` is
the lab cache both use."""

from pathlib import Path

# The checkout this package runs from: images/ (recipes), mvee/, tests/programs/.
REPO_DIR = Path(__file__).resolve().parent.parent
