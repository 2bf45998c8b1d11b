"""Running lab machines and leasing them to tests: one lease interface (lease) and
its backends: local QEMU VMs restored from golden snapshots (qemu_backend, over
accel and qemu), SSH hosts of an inventory (hosts, inventory) and the running
machines of the repository's Vagrantfile (vagrant); SSH (ssh), deploying the
monitor (deploy), and the pytest plugin that leases machines to the lab tests."""
