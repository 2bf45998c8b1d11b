"""pytest plugin of the lab (entry point ``mvee_lab``): run tests inside QEMU VMs or SSH hosts.

Options:
  --lab                 run the tests marked ``lab`` (without it they are skipped, with a reason)
  --lab-hosts FILE      use the SSH hosts of this inventory (TOML or JSON, see vm.machines.inventory)
                        instead of local VMs
  --lab-targets A,B     only these boot targets (default: every target of images/*.toml)
  --lab-results FILE    where the session's signal-delay table goes as JSON
                        (default <cache>/results/lab-signals.json)

A lab test takes the ``lab_machine`` fixture and is parametrized over targets with
``lab_targets()``, which also marks each case ``xdist_group(<target>)``. With
``pytest -n N --dist loadgroup`` every target's tests go to one worker, which leases
that target's machine once from the session's backend (vm.machines.lease) and keeps
it for them: no two workers ever share a machine, and a worker holds one at a time.
``--lab`` with ``-n`` switches xdist's default ``--dist load`` to ``loadgroup``.

Lab tests record their signal statistics with ``lab_record_signals(report)``; at the end
of the session the controller prints one table per target and writes it as JSON.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vm import cache
from vm.machines.deploy import deploy_mvee
from vm.machines.hosts import HostsBackend
from vm.machines.inventory import InventoryError, load
from vm.machines.lease import Backend, Machine, all_targets
from vm.machines.qemu_backend import QemuBackend

SIGNALS_PROPERTY = "lab_signals"
BACKEND = pytest.StashKey[Backend]()
SKIP_REASON = "lab test: boots QEMU VMs; run with --lab (and -n auto --dist loadgroup)"


def lab_targets() -> list[Any]:
    """pytest.param per boot target, each in its own xdist group."""
    return [pytest.param(t, id=t, marks=[pytest.mark.lab, pytest.mark.xdist_group(t)]) for t in all_targets()]


# --- options and collection ---

def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mvee-lab", "mvee lab (QEMU VMs or SSH hosts)")
    group.addoption("--lab", action="store_true", help="run the lab tests (marker 'lab')")
    group.addoption("--lab-hosts", metavar="FILE", help="inventory of SSH hosts (TOML or JSON) to use "
                    "instead of local VMs")
    group.addoption("--lab-targets", metavar="LIST",
                    help="comma-separated boot targets to test (default all)")
    group.addoption("--lab-results", metavar="FILE", help="JSON file for the signal-delay table "
                    "(default <cache>/results/lab-signals.json)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab: runs inside a lab VM or SSH host (needs --lab)")
    hosts = config.getoption("lab_hosts")
    backend: Backend = QemuBackend()
    if hosts:
        try:
            backend = HostsBackend(load(Path(hosts)), hosts)
        except InventoryError as e:
            raise pytest.UsageError(f"--lab-hosts: {e}") from None
    config.stash[BACKEND] = backend
    targets = config.getoption("lab_targets")
    if targets:
        unknown = sorted(set(targets.split(",")) - set(all_targets()))
        if unknown:
            raise pytest.UsageError(f"--lab-targets: unknown target {unknown[0]!r} "
                                    f"(known: {', '.join(all_targets())})")
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(SignalTable(config), "mvee-lab-signal-table")


def pytest_cmdline_main(config: pytest.Config) -> None:
    # Runs after xdist's (tryfirst) turned -n into --dist load: keep a target's tests together.
    if config.getoption("lab") and getattr(config.option, "dist", "no") == "load":
        config.option.dist = "loadgroup"


def _item_target(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("target") if callspec is not None else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    lab_items = [item for item in items if item.get_closest_marker("lab")]
    if not config.getoption("lab"):
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


# --- the session's table ---

class SignalTable:
    """Collects lab_signals records from every test report (xdist workers included)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.records: list[dict[str, Any]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        for name, value in report.user_properties:
            if name == SIGNALS_PROPERTY:
                self.records.append(value)

    def table(self) -> dict[str, dict[str, Any]]:
        per_target: dict[str, dict[str, Any]] = {}
        for target in sorted({r["target"] for r in self.records}):
            runs = [r for r in self.records if r["target"] == target and r["delivered"]]
            delivered = sum(r["delivered"] for r in runs)

            def values(key: str, runs: list[dict[str, Any]] = runs) -> list[float]:
                return [r["delay_ms"][key] for r in runs if r["delay_ms"].get(key) is not None]

            mean = (sum(r["delay_ms"]["mean"] * r["delivered"] for r in runs if r["delay_ms"].get("mean")
                        is not None) / delivered) if delivered else None
            per_target[target] = {
                "runs": len(runs), "delivered": delivered, "mean_ms": mean,
                "p50_ms": statistics.median(values("p50")) if values("p50") else None,
                "p99_ms": max(values("p99"), default=None), "max_ms": max(values("max"), default=None),
                "loop_traps": sorted({str(r["loop_trap"]) for r in self.records
                                      if r["target"] == target and r["loop_trap"]}),
            }
        return per_target

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.records:
            return
        table = self.table()
        tr = terminalreporter
        tr.section("lab: signal delivery delay per target")
        tr.write_line(f"{'target':<22} {'runs':>4} {'signals':>7} {'mean ms':>8} {'p50 ms':>8} "
                      f"{'p99 ms':>8} {'max ms':>8}  loop traps")

        def fmt(value: float | None) -> str:
            return f"{value:8.3f}" if value is not None else f"{'-':>8}"

        for target, row in table.items():
            tr.write_line(f"{target:<22} {row['runs']:>4} {row['delivered']:>7} {fmt(row['mean_ms'])} "
                          f"{fmt(row['p50_ms'])} {fmt(row['p99_ms'])} {fmt(row['max_ms'])}  "
                          f"{','.join(row['loop_traps']) or '-'}")
        path = Path(self.config.getoption("lab_results") or
                    cache.cache_root() / "results" / "lab-signals.json")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"created": time.time(), "pid": os.getpid(), "targets": table,
                                        "runs": self.records}, indent=2) + "\n")
            tr.write_line(f"written to {path}")
        except OSError as e:
            tr.write_line(f"could not write {path}: {e}")
