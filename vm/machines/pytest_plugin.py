"""pytest plugin of the lab (entry point ``mvee_lab``): run tests inside QEMU VMs, Vagrant
machines or SSH hosts.

Where machines come from (one backend per session, vm.machines.lease): the SSH hosts of
``--lab-hosts``; else the running machines of the repository's Vagrantfile, when there
are any (``vagrant up && pytest`` runs the lab tests on them, no ``--lab`` needed; the
controller asks Vagrant once and hands the inventory to the xdist workers); else local
QEMU VMs (with ``--lab``). pytest's header says which.

Options:
  --lab                 run the tests marked ``lab`` (without it they are skipped, with a reason)
  --lab-hosts FILE      use the SSH hosts of this inventory (TOML or JSON, see vm.machines.inventory)
                        instead of local VMs
  --lab-targets A,B     only these boot targets (default: every target of images/*.toml)
  --lab-results FILE    where the session's signal-delay table goes as JSON
                        (default <cache>/results/lab-signals.json)

A lab test takes the ``lab_machine`` fixture and is parametrized over targets with
``lab_targets()`` (the target is the case's id). With ``pytest -n N`` (``--dist load``
or ``loadgroup``) and the lab on, the plugin schedules the tests itself
(vm.machines.scheduling): every target's tests go to one worker, which leases that
target's machine once from the session's backend (vm.machines.lease) and keeps it for
them; a worker holds one machine at a time. A lease of an SSH host (or Vagrant
machine) is also exclusive on the host itself (vm.machines.hosts), so that whatever
the scheduling, or another session, two leases never use one machine at once.

Lab tests record their signal statistics with ``lab_record_signals(report)`` and the
monitor's cost per syscall with ``lab_record_syscall_cost``; at the end of the session the
controller prints one table per target, writes it as JSON and draws it as a PNG beside
it (vm.machines.results).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vm.machines import vagrant
from vm.machines.deploy import deploy_mvee
from vm.machines.hosts import HostsBackend
from vm.machines.inventory import InventoryError, dump, load, parse
from vm.machines.lease import Backend, Machine, all_targets
from vm.machines.qemu import QemuBackend
from vm.machines.results import COST_PROPERTY, SIGNALS_PROPERTY, LabTables
from vm.machines.scheduling import target_scheduler

BACKEND = pytest.StashKey[Backend]()
VAGRANT_INVENTORY = pytest.StashKey[str]()  # the running Vagrant machines, as inventory JSON
VAGRANT_PROBLEM = pytest.StashKey[str]()  # why Vagrant could not be asked
VAGRANT_WORKERINPUT = "mvee_lab_vagrant_inventory"
SKIP_REASON = ("lab test: boots QEMU VMs; run with --lab (and -n auto), "
               "or vagrant up first")


def lab_targets() -> list[Any]:
    """pytest.param per boot target, marked lab; its id, the target, is what the scheduler
    groups by (vm.machines.scheduling)."""
    return [pytest.param(t, id=t, marks=pytest.mark.lab) for t in all_targets()]


# --- options and collection ---

def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mvee-lab", "mvee lab (QEMU VMs, Vagrant machines or SSH hosts)")
    group.addoption("--lab", action="store_true", help="run the lab tests (marker 'lab'); implied when "
                    "machines of the Vagrantfile are running")
    group.addoption("--lab-hosts", metavar="FILE", help="inventory of SSH hosts (TOML or JSON) to use "
                    "instead of local VMs")
    group.addoption("--lab-backend", choices=("auto", "qemu", "vagrant"), default="auto",
                    help="where lab machines come from: the running machines of the Vagrantfile when "
                    "there are any, else local QEMU VMs (auto, the default); or only one of them")
    group.addoption("--lab-targets", metavar="LIST",
                    help="comma-separated boot targets to test (default all)")
    group.addoption("--lab-results", metavar="FILE", help="JSON file for the tables "
                    "(default <cache>/results/lab-signals.json; a PNG of the delays beside it)")


def _find_vagrant_machines(config: pytest.Config) -> None:
    """In the controller: the running Vagrant machines, kept for the workers (pytest_configure_node)."""
    choice = config.getoption("lab_backend")
    if config.getoption("lab_hosts") or choice == "qemu":
        return
    try:
        entries = vagrant.running_inventory()
    except (vagrant.VagrantError, InventoryError) as e:
        if choice == "vagrant":
            raise pytest.UsageError(f"--lab-backend vagrant: {e}") from None
        config.stash[VAGRANT_PROBLEM] = str(e)
        return
    if not entries and choice == "vagrant":
        raise pytest.UsageError("--lab-backend vagrant: no machine of the Vagrantfile is running "
                                "(vagrant up first)")
    if entries:
        config.stash[VAGRANT_INVENTORY] = dump(entries)


def lab_enabled(config: pytest.Config) -> bool:
    return bool(config.getoption("lab")) or VAGRANT_INVENTORY in config.stash


def pytest_cmdline_main(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # a worker gets them from the controller
        _find_vagrant_machines(config)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist's controller: a target's lab tests to one worker (xdist's loadgroup does not
    group with pytest 9.2; see vm.machines.scheduling)."""
    if lab_enabled(config) and config.getoption("dist") in ("load", "loadgroup"):
        return target_scheduler(config, log)
    return None


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist: a worker gets the controller's Vagrant machines instead of asking Vagrant again."""
    if VAGRANT_INVENTORY in node.config.stash:
        node.workerinput[VAGRANT_WORKERINPUT] = node.config.stash[VAGRANT_INVENTORY]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab: runs inside a lab VM or SSH host (needs --lab)")
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and VAGRANT_WORKERINPUT in workerinput:
        config.stash[VAGRANT_INVENTORY] = workerinput[VAGRANT_WORKERINPUT]
    hosts = config.getoption("lab_hosts")
    backend: Backend = QemuBackend()
    if hosts:
        try:
            backend = HostsBackend(load(Path(hosts)), hosts)
        except InventoryError as e:
            raise pytest.UsageError(f"--lab-hosts: {e}") from None
    elif VAGRANT_INVENTORY in config.stash:
        backend = vagrant.backend(parse(json.loads(config.stash[VAGRANT_INVENTORY]), "vagrant ssh-config"))
    config.stash[BACKEND] = backend
    targets = config.getoption("lab_targets")
    if targets:
        unknown = sorted(set(targets.split(",")) - set(all_targets()))
        if unknown:
            raise pytest.UsageError(f"--lab-targets: unknown target {unknown[0]!r} "
                                    f"(known: {', '.join(all_targets())})")
    if workerinput is None:
        config.pluginmanager.register(LabTables(config), "mvee-lab-tables")


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = []
    if lab_enabled(config):
        lines.append(f"mvee-lab: lab tests on {config.stash[BACKEND].describe()}")
    if VAGRANT_PROBLEM in config.stash:
        lines.append(f"mvee-lab: Vagrant machines not used: {config.stash[VAGRANT_PROBLEM]}")
    return lines


def _item_target(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("target") if callspec is not None else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    lab_items = [item for item in items if item.get_closest_marker("lab")]
    if not lab_enabled(config):
        skip = pytest.mark.skip(reason=SKIP_REASON)
        for item in lab_items:
            item.add_marker(skip)
        return
    offered = set(config.stash[BACKEND].targets())
    for item in lab_items:
        if _item_target(item) not in offered:
            item.add_marker(pytest.mark.skip(reason=f"no machine for target {_item_target(item)}: "
                                             f"{config.stash[BACKEND].describe()}"))
    wanted = config.getoption("lab_targets")
    if wanted:
        keep = set(wanted.split(","))
        deselected = [item for item in lab_items if _item_target(item) not in keep]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = [item for item in items if item not in deselected]
    # One target's tests in a row: a worker (or a run without xdist) holds one VM at a time.
    order = {target: index for index, target in enumerate(all_targets())}
    items.sort(key=lambda item: order.get(_item_target(item) or "", -1) if item.get_closest_marker("lab")
               else -1)


# --- machines ---

class LabPool:
    """The machines of this process: at most one leased at a time, kept across its target's tests."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.current: Machine | None = None
        self.lease = contextlib.ExitStack()
        self.failed: dict[str, str] = {}

    def get(self, target: str) -> Machine:
        if self.current is not None and self.current.name == target:
            return self.current
        if target in self.failed:  # one failed lease per target, not one per test
            pytest.fail(f"{target}: no machine (failed earlier in this session): {self.failed[target]}")
        self.close()
        try:
            self.current = self.lease.enter_context(self.backend.lease(target))
        except Exception as e:
            self.failed[target] = str(e)
            raise
        return self.current

    def close(self) -> None:
        self.current = None
        self.lease.close()


@pytest.fixture(scope="session")
def lab_pool(request: pytest.FixtureRequest) -> Iterator[LabPool]:
    pool = LabPool(request.config.stash[BACKEND])
    yield pool
    pool.close()


@pytest.fixture
def lab_machine(lab_pool: LabPool, target: str) -> Machine:
    """The machine of this test's target, with the working tree's monitor deployed."""
    machine = lab_pool.get(target)
    if "deployed" not in machine.facts:
        deploy_mvee(machine)
        machine.facts["deployed"] = "mvee"
    return machine


@pytest.fixture
def lab_record_signals(request: pytest.FixtureRequest, target: str) -> Callable[..., None]:
    """Record a monitor report's signal statistics for the session's table."""

    def record(report: dict[str, Any], program: str) -> None:
        signals = report.get("signals") or {}
        request.node.user_properties.append((SIGNALS_PROPERTY, {
            "target": target, "test": request.node.name, "program": program,
            "delivered": signals.get("delivered", 0), "delay_ms": signals.get("delay_ms") or {},
            "loop_trap": signals.get("loop_trap"),
        }))

    return record


@pytest.fixture
def lab_record_syscall_cost(request: pytest.FixtureRequest, target: str) -> Callable[..., None]:
    """Record the monitor's cost per synchronised syscall on this target for the session's table."""

    def record(us_per_syscall: float, syscalls: int, program: str) -> None:
        request.node.user_properties.append((COST_PROPERTY, {
            "target": target, "test": request.node.name, "program": program,
            "us_per_syscall": us_per_syscall, "syscalls": syscalls,
        }))

    return record
