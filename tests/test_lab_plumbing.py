"""The lab's plumbing that needs no VM: inventory validation, run directories (stale ones reaped, a
failed start leaving none), the KVM probe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.mvee_run import wait_until
from vm.machines import accel, hosts, qemu, results, scheduling, vagrant
from vm.machines.inventory import InventoryError, dump, from_ssh_config, load


def test_inventory_toml_and_json(tmp_path: Path) -> None:
    toml = tmp_path / "hosts.toml"
    toml.write_text('[[hosts]]\nname = "a"\ntarget = "bookworm-i386"\nhost = "127.0.0.1"\nport = 2222\n')
    [entry] = load(toml)
    assert (entry.name, entry.target, entry.port, entry.user) == ("a", "bookworm-i386", 2222, "root")
    js = tmp_path / "hosts.json"
    js.write_text(json.dumps({"hosts": [{"name": "b", "target": "trixie-amd64-noia32", "host": "h",
                                         "key": "/k"}]}))
    [entry] = load(js)
    assert (entry.port, entry.key) == (22, Path("/k"))


@pytest.mark.parametrize("text,message", [
    ("hosts = []", "non-empty list 'hosts'"),
    ('[[hosts]]\nname = "a"\ntarget = "sparc"\nhost = "h"', "unknown target 'sparc'"),
    ('[[hosts]]\nname = "a"\ntarget = "bookworm-i386"', "field 'host' must be a non-empty string"),
    ('[[hosts]]\nname = "a"\ntarget = "bookworm-i386"\nhost = "h"\nport = 0', "field 'port'"),
    ('[[hosts]]\nname = "a"\ntarget = "bookworm-i386"\nhost = "h"\nsize = 1', "unknown field 'size'"),
    ("[[hosts]\n", "not valid TOML"),
    ('[[hosts]]\nname = "a"\ntarget = "bookworm-i386"\nhost = "h"\nport = 2201\n'
     '[[hosts]]\nname = "b"\ntarget = "trixie-amd64"\nhost = "h"\nport = 2201', "h:2201 is 'a' already"),
])
def test_inventory_errors_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "hosts.toml"
    path.write_text(text)
    with pytest.raises(InventoryError, match=message) as error:
        load(path)
    assert "\n" not in str(error.value)


def test_a_run_directory_of_a_dead_owner_is_reaped_with_its_process(tmp_path: Path) -> None:
    dead_pid = int(Path("/proc/sys/kernel/pid_max").read_text())  # no process can have it
    run_dir = tmp_path / qemu.RUN_DIR / f"trixie-amd64-{dead_pid}-0"
    run_dir.mkdir(parents=True)
    # A stand-in for QEMU: its command line names the run directory, as QEMU's does.
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(run_dir)],
                                start_new_session=True)
    (run_dir / qemu.QEMU_PID_FILE).write_text(f"{stand_in.pid}\n")
    (run_dir / "disk.qcow2").write_bytes(b"x")
    try:
        # Until its exec, its command line is still pytest's (under load, long enough to
        # be passed over as a reused PID).
        wait_until(lambda: str(run_dir).encode() in Path(f"/proc/{stand_in.pid}/cmdline").read_bytes(),
                   "the stand-in's exec")
        assert qemu.reap_stale(tmp_path) == [run_dir]
        assert not run_dir.exists()
        # reap_stale may have collected its status itself (then wait says 0): whichever,
        # it has ended, where it would otherwise sleep on past the timeout.
        stand_in.wait(timeout=10)
    finally:
        stand_in.kill()


def test_a_live_owner_keeps_its_run_directory(tmp_path: Path) -> None:
    """From the moment it exists: two xdist workers start VMs at once, and one's reaping
    must not take the directory the other has just made (it did, between the mkdir and
    the owner's pid file that followed)."""
    run_dir = qemu.new_run_dir("trixie-amd64", tmp_path)
    assert list(run_dir.iterdir()) == []  # nothing written into it yet
    assert qemu.reap_stale(tmp_path) == [] and run_dir.is_dir()


@pytest.mark.parametrize("make_disk,system,error", [
    (["false"], "true", subprocess.CalledProcessError),  # the disk cannot be made
    (["touch"], "false", qemu.QemuError),  # QEMU exits at once
])
def test_a_vm_that_never_ran_leaves_no_run_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_disk: list[str], system: str,
        error: type[Exception]) -> None:
    monkeypatch.setenv("MVEE_LAB_CACHE", str(tmp_path))
    spec = qemu.MachineSpec("t", system, "pc", "max", 64, 1, tmp_path / "vmlinuz", tmp_path / "initrd",
                            "console=ttyS0", "tcg")
    with pytest.raises(error), qemu.run_vm(spec, tmp_path / "key", make_disk, 5, "cold"):
        pytest.fail("a VM that never ran was yielded")
    assert list(qemu.run_root(tmp_path).iterdir()) == []


def test_boot_sector_and_cached_verdict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sector = accel.boot_sector()
    assert len(sector) == 512 and sector.endswith(b"\x55\xaa")
    monkeypatch.delenv("MVEE_LAB_ACCEL", raising=False)
    monkeypatch.setattr(accel, "kvm_boots", lambda: (False, "probe says no"))
    assert accel.choose(tmp_path) == ("tcg", "probe says no")
    monkeypatch.setattr(accel, "kvm_boots", lambda: pytest.fail("probed twice in one boot"))
    assert accel.choose(tmp_path)[0] == "tcg"


def test_the_kvm_probe_never_hangs() -> None:
    start = time.monotonic()
    accel.kvm_boots(timeout=2.0)
    assert time.monotonic() - start < 10


SSH_CONFIG = """\
Host bookworm-i386
  HostName 127.0.0.1
  User root
  Port 2202
  UserKnownHostsFile /dev/null
  StrictHostKeyChecking no
  PasswordAuthentication no
  IdentityFile "/root/.cache/mvee-lab/ssh/id_ed25519"
  IdentitiesOnly yes
  LogLevel FATAL

Host trixie-amd64-noia32
  HostName 127.0.0.1
  User root
  Port 2204
  IdentityFile /root/.cache/mvee-lab/ssh/id_ed25519
"""


def test_the_vagrant_inventory_the_script_writes_is_the_one_the_plugin_reads(tmp_path: Path) -> None:
    # scripts/vagrant-lab writes dump(from_ssh_config(`vagrant ssh-config`)); --lab-hosts loads it.
    written = from_ssh_config(SSH_CONFIG)
    path = tmp_path / "lab-hosts.json"
    path.write_text(dump(written))
    read = load(path)
    assert read == written
    key = Path("/root/.cache/mvee-lab/ssh/id_ed25519")
    assert [(e.name, e.target, e.host, e.port, e.user, e.key) for e in read] == [
        ("bookworm-i386", "bookworm-i386", "127.0.0.1", 2202, "root", key),
        ("trixie-amd64-noia32", "trixie-amd64-noia32", "127.0.0.1", 2204, "root", key),
    ]


def test_an_ssh_config_host_that_is_no_target_is_refused() -> None:
    with pytest.raises(InventoryError, match="unknown target 'default'"):
        from_ssh_config("Host default\n  HostName 127.0.0.1\n  Port 2222\n")


def test_vagrant_machines_are_found_only_when_created(tmp_path: Path) -> None:
    (tmp_path / "Vagrantfile").write_text("")
    assert vagrant.created_machines(tmp_path) == []
    (tmp_path / ".vagrant/machines/bookworm-i386/libvirt").mkdir(parents=True)
    (tmp_path / ".vagrant/machines/trixie-amd64/libvirt").mkdir(parents=True)
    (tmp_path / ".vagrant/machines/trixie-amd64/libvirt/id").write_text("0c1f-uuid")
    assert vagrant.created_machines(tmp_path) == ["trixie-amd64"]
    assert vagrant.domain_prefix(Path("/srv/my clone")) == "myclone_"


@pytest.mark.parametrize("nodeid,target", [
    ("tests/lab/test_lab.py::test_machine_is_its_target[bookworm-i386]", "bookworm-i386"),
    ("tests/lab/test_lab.py::test_flag_idioms_run_as_natively[trixie-amd64-noia32-x86_64-spin]",
     "trixie-amd64-noia32"),
    ("tests/lab/test_lab.py::test_flag_idioms_run_as_natively[trixie-amd64-i386-spin]", "trixie-amd64"),
    ("tests/test_cli.py::test_run[x86_64]", None),
    ("tests/bookworm-i386/test_x.py::test_y", None),
])
def test_the_scheduler_finds_a_lab_tests_target_in_its_id(nodeid: str, target: str | None) -> None:
    assert scheduling.target_of(nodeid) == target


# Vagrant "finds" two running machines (nothing is leased: the tests only say where they ran).
FAKE_VAGRANT = """\
from pathlib import Path
from vm.machines import vagrant
from vm.machines.inventory import HostEntry
vagrant.running_inventory = lambda root=None: [
    HostEntry(t, t, "127.0.0.1", 2201 + i, "root", Path("/nonexistent"))
    for i, t in enumerate({targets!r})]
"""
WHERE = """\
import os, pytest
from vm.machines.pytest_plugin import lab_targets

@pytest.mark.parametrize("n", range(6))
@pytest.mark.parametrize("target", lab_targets())
def test_where(target, n):
    with open(os.environ["WHERE_LOG"], "a") as log:
        log.write(f"{target} {os.environ['PYTEST_XDIST_WORKER']}\\n")
"""


@pytest.mark.parametrize("how", ["implied by running Vagrant machines", "--lab"])
def test_with_xdist_one_worker_runs_all_of_a_targets_lab_tests(tmp_path: Path, how: str) -> None:
    # Under xdist's loadgroup with pytest 9.2 they were spread over the workers: two workers
    # used one Vagrant machine at once (a deploy race, a report overwritten).
    targets = ["bookworm-amd64", "bookworm-i386"]
    (tmp_path / "conftest.py").write_text(FAKE_VAGRANT.format(targets=targets if how != "--lab" else []))
    (tmp_path / "test_where.py").write_text(WHERE)
    log = tmp_path / "where.log"
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", "2",
            f"--lab-targets={','.join(targets)}", *(["--lab"] if how == "--lab" else []), "test_where.py"]
    proc = subprocess.run(argv, cwd=tmp_path, env={**os.environ, "WHERE_LOG": str(log)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "12 passed" in proc.stdout
    workers: dict[str, set[str]] = {}
    for line in log.read_text().splitlines():
        target, worker = line.split()
        workers.setdefault(target, set()).add(worker)
    assert sorted(workers) == targets
    assert all(len(w) == 1 for w in workers.values()), workers


def test_the_host_lease_lock_lets_one_holder_in_and_names_it_to_the_next(tmp_path: Path) -> None:
    # The shell line a lease runs over SSH (tests/lab/test_lab.py leases a real machine twice).
    lock = str(tmp_path / "run" / "lease")

    def lease(who: str, wait_s: float) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["sh", "-c", hosts.lock_command(who, wait_s, lock)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE)

    first = lease("first pid 1", 5)
    assert first.stdout is not None and first.stdout.readline() == hosts.LEASED
    second = lease("second pid 2", 1)
    out, _ = second.communicate(timeout=30)
    assert (second.returncode, out) == (75, b"still leased to first pid 1 after 1 s\n")
    third = lease("third pid 3", 30)  # waits while first holds the lock
    time.sleep(0.5)
    assert third.poll() is None
    first.communicate(timeout=30)  # stdin closed: the lease ends
    out, _ = third.communicate(timeout=30)
    assert (first.returncode, third.returncode, out) == (0, 0, hosts.LEASED)


def _run(target: str, delivered: int, p50: float, p99: float, maximum: float) -> dict:
    return {"target": target, "test": "t", "program": "p", "delivered": delivered, "loop_trap": None,
            "delay_ms": {"mean": (p50 + maximum) / 2, "p50": p50, "p99": p99, "max": maximum}}


def test_a_targets_delay_distribution_weighs_its_runs_by_their_signals() -> None:
    runs = [_run("a", 100, 1.0, 4.0, 5.0), _run("a", 300, 2.0, 3.0, 6.0), _run("a", 0, 9.0, 9.0, 9.0)]
    assert results.delay_distribution(runs) == [
        (1.0, 0.125),  # half of the first run's 100 of 400
        (2.0, 0.5),  # and half of the second's 300
        (3.0, (50 + 0.99 * 300) / 400),
        (4.0, (99 + 297) / 400),
        (5.0, (100 + 297) / 400),
        (6.0, 1.0),
    ]


def test_the_lab_results_are_drawn_beside_the_json(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    tables = results.LabTables(None)  # type: ignore[arg-type]
    tables.records = [_run("bookworm-i386", 9, 40.0, 55.0, 56.0), _run("trixie-amd64", 52, 5.0, 11.0, 11.0)]
    tables.costs = [{"target": "bookworm-i386", "us_per_syscall": 8713.0},
                    {"target": "trixie-amd64", "us_per_syscall": 2100.0},
                    {"target": "trixie-amd64", "us_per_syscall": 2300.0}]
    table = tables.table()
    assert table["trixie-amd64"]["us_per_syscall"] == 2200.0
    assert table["bookworm-i386"]["delivered"] == 9
    path = tmp_path / "lab-signals.png"
    assert results.plot(tables.records, table, path) == f"drawn in {path}"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert results.plot([], {}, tmp_path / "none.png").startswith("nothing drawn")
    assert not (tmp_path / "none.png").exists()
