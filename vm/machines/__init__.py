"""Running lab machines and leasing them to tests: one lease interface (lease) and
its backends, one module each: local QEMU VMs restored from golden snapshots (qemu,
with accel), SSH hosts of an inventory (hosts, inventory) and the running machines
of the repository's Vagrantfile (vagrant); SSH (ssh), deploying the monitor
(deploy), and the pytest plugin that leases machines to the lab tests."""
