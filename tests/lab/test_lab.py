"""The monitor inside each lab target (QEMU VM or --lab-hosts host): run with --lab.

Every test is parametrized over the boot targets with lab_targets() (one xdist
group per target). What each target proves:
- the machine is the target's: kernel architecture, IA-32 emulation on or off, and
  a Python with python-ptrace and keystone;
- a lease of it as an SSH host is exclusive: a second lease waits, and gives up
  naming the holder;
- a real program of the guest (gzip) runs in 2 variants with the native output;
- the corpus's base-system command lines (tests/corpus, marked `lab`: the guest's own
  Debian programs, i386 ones on the i386 target) run as natively, without a false
  divergence;
- what a synchronised syscall costs under the monitor there (for the session's table);
- a CPU-bound program with a timer whose handler makes syscalls gets its signals
  synchronously (no false alarm), for each ABI the target runs;
- a handler that only sets a flag, tested in a loop with no syscall, is seen alike in
  both variants (the converge policy);
- threads that take turns in another order in each variant (tests/programs/turns.c);
- processes and threads (tests/programs/family.c: fork, PIDs, kill, setpgid,
  posix_spawn, two threads) and a shell pipeline of the guest's own sh run in their
  sets as natively, for each ABI (the i386 kernel's clone takes its arguments in
  another order);
- a variant that never receives its signal is declared non-compliant within the
  wait loop's timeout, and the report says which trap ended the loop: int 0x80
  where IA-32 emulation exists, the `syscall` fallback where it does not; forcing
  int 0x80 without IA-32 emulation still ends in the alarm (SIGSEGV at the trap).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import tarfile
from pathlib import Path

import pytest

from tests import corpus_run
from vm.machines.deploy import GUEST_DIR, install_program, mvee_command, read_report, run_mvee
from vm.machines.hosts import HostsBackend
from vm.machines.inventory import HostEntry
from vm.machines.lease import LeaseError, Machine
from vm.machines.pytest_plugin import lab_targets

NON_COMPLIANT_EXIT = 121
ABIS = ("x86_64", "i386")
# Under TCG a guest runs 10-50x slower than the host, and under the monitor every tick
# costs ptrace round trips: a 20 Hz timer, so that a tick costs far less than its period
# (at 100 Hz the program nearly stalls). How fast the loop runs depends on the ABI and
# on the emulator: the work grows until a native run handles MIN_TICKS ticks.
TICKER_HZ, TICKER_MIN_TICKS = "20", "2"
# The work is chosen so that a native run handles twice that: in a program's first 100 ms
# without a syscall, the converge policy holds the ticks for one and they coalesce.
TICKER_NATIVE_TICKS = "4"
TICKER_WORK = (5, 20, 80, 320)  # million steps, tried in turn
WAIT_LOOP_MS = 300
SYSCALL_COST_BYTES = (200, 1000)  # dd bs=1 counts: two runs, the cost from their difference


def _skip_unrunnable(machine: Machine, abi: str) -> None:
    if abi not in machine.target.abis:
        if machine.target.arch == "i386":
            pytest.skip(f"{machine.name}: a 32-bit kernel runs no x86_64 binaries")
        pytest.skip(f"{machine.name}: IA-32 binaries cannot run with ia32_emulation=0")


@pytest.mark.parametrize("target", lab_targets())
def test_machine_is_its_target(target: str, lab_machine: Machine) -> None:
    """The machine leased for target (a VM, an inventory's host, a Vagrant machine) is one."""
    ssh = lab_machine.ssh
    assert ssh.run("uname -m", timeout=60).check().text.strip() == (
        "i686" if lab_machine.target.arch == "i386" else "x86_64")
    cmdline = ssh.run("cat /proc/cmdline", timeout=60).check().text.split()
    assert ("ia32_emulation=0" in cmdline) == (not lab_machine.target.ia32)
    assert ssh.run("python3 -c 'import ptrace, keystone; print(1)'", timeout=120).check().text.strip() == "1"


@pytest.mark.parametrize("target", lab_targets())
def test_a_machine_is_leased_to_one_holder_at_a_time(target: str, lab_machine: Machine) -> None:
    """Leases of the machine as an SSH host (what --lab-hosts and the Vagrant machines give)
    never overlap: they share its working directory."""
    ssh = lab_machine.ssh
    again = HostsBackend([HostEntry("again", target, ssh.host, ssh.port, ssh.user, ssh.key_file)],
                         "this machine again", lock_wait_s=2)
    # A host's or Vagrant machine's lease (this test's own) holds it already; a QEMU VM is
    # this lease's alone, so the first lease here is taken now.
    held_by_fixture = lab_machine.how in ("host", "vagrant")
    with contextlib.ExitStack() as first:
        if not held_by_fixture:
            first.enter_context(again.lease(target))
        with pytest.raises(LeaseError, match=rf"still leased to \S+ pid {os.getpid()}\b.* after 2 s"), \
                again.lease(target):
            pass
    if not held_by_fixture:
        with again.lease(target) as machine:  # free again once the first lease ended
            assert machine.ssh.run("echo free", timeout=60).check().text == "free\n"


@pytest.mark.parametrize("target", lab_targets())
def test_real_program_in_two_variants_matches_native(target: str, lab_machine: Machine) -> None:
    ssh = lab_machine.ssh
    gzip = ssh.run("command -v gzip", timeout=30).check().text.strip()
    ssh.run(f"head -c 300000 $(command -v python3) > {GUEST_DIR}/input", timeout=60).check()
    native = ssh.run(f"{gzip} -6 -n -c {GUEST_DIR}/input", timeout=120).check()
    result = run_mvee(lab_machine, "-n", "2", "--", gzip, "-6", "-n", "-c", f"{GUEST_DIR}/input", timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout == native.stdout
    assert result.report is not None and result.report["verdict"] != "non-compliant"
    # Every lab kernel (6.1, 6.12; i386 and amd64) takes the seccomp filter, and its
    # stops: the follower skips gzip's writes at their entry, without an exit stop.
    variants = result.report["variants"]
    assert [v["traced_by"] for v in variants] == ["seccomp", "seccomp"]
    assert variants[1]["stops"] < variants[0]["stops"]


def _tar_of(paths: dict[str, Path]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, path in paths.items():
            tar.add(path, arcname=name)
    return buffer.getvalue()


@pytest.mark.parametrize("target", lab_targets())
def test_corpus_sample_runs_as_natively(target: str, lab_machine: Machine, tmp_path: Path) -> None:
    """The corpus runner itself, in the guest, on the entries marked `lab`, with the
    fixture made here (the guests have neither sqlite3 nor git to make it)."""
    fixture = tmp_path / "fixture"
    corpus_run.make_fixture(fixture)
    ssh = lab_machine.ssh
    runner = {"tests/corpus_run.py": Path(corpus_run.__file__), "tests/corpus": corpus_run.CORPUS}
    ssh.put_bytes(_tar_of(runner), f"{GUEST_DIR}/corpus.tar")
    ssh.put_bytes(_tar_of({".": fixture}), f"{GUEST_DIR}/fixture.tar")
    ssh.run(f"cd {GUEST_DIR} && tar -xf corpus.tar && rm corpus.tar", timeout=60).check()
    run = ssh.run(f"cd {GUEST_DIR} && python3 tests/corpus_run.py --lab --jobs 1 "
                  f"--fixture-tar {GUEST_DIR}/fixture.tar --json {GUEST_DIR}/corpus.json", timeout=1800)
    results = json.loads(ssh.run(f"cat {GUEST_DIR}/corpus.json", timeout=60).check().stdout)
    print(f"{target}: corpus (lab): {results['summary']}; refused: {results['refused']}")
    outcomes = {r["name"]: r["outcome"] for r in results["results"]}
    assert len(outcomes) == sum(c.lab for c in corpus_run.load())
    assert set(outcomes.values()) <= {"identical", "refused"}, run.stdout.decode(errors="replace")
    assert run.status == 0


def _guest_seconds(machine: Machine, command: str) -> float:
    """Wall time of a shell command inside the guest (no SSH round trip in it); it must succeed."""
    out = machine.ssh.run(f"t0=$(date +%s%N); ({command}) >/dev/null || exit 97; t1=$(date +%s%N); "
                          f"echo $((t1 - t0))", timeout=900)
    assert out.status == 0, (command, out.stderr)
    return int(out.text) / 1e9


@pytest.mark.parametrize("target", lab_targets())
def test_syscall_cost_per_target(target: str, lab_machine: Machine, lab_record_syscall_cost) -> None:
    """The monitor's cost per synchronised syscall: dd copying byte by byte (a read and a write
    per byte) at two lengths; the difference cancels the start-up, native time is subtracted."""
    measured = {}
    for count in SYSCALL_COST_BYTES:
        dd = f"dd if=/dev/zero of=/dev/null bs=1 count={count} status=none"
        native = _guest_seconds(lab_machine, dd)
        monitored = _guest_seconds(lab_machine, mvee_command("-n", "2", "--", *shlex.split(dd)))
        report = read_report(lab_machine)
        assert report is not None and report["verdict"] == "ok", report
        measured[count] = (native, monitored, report["syscalls"])
    (n1, m1, s1), (n2, m2, s2) = (measured[c] for c in SYSCALL_COST_BYTES)
    assert s2 - s1 >= 2 * (SYSCALL_COST_BYTES[1] - SYSCALL_COST_BYTES[0])  # a read and a write per byte
    us_per_syscall = ((m2 - m1) - (n2 - n1)) / (s2 - s1) * 1e6
    assert us_per_syscall > 0
    lab_record_syscall_cost(us_per_syscall, s2 - s1, "dd bs=1")


@pytest.mark.parametrize("abi", ABIS)
@pytest.mark.parametrize("target", lab_targets())
def test_timer_signals_reach_a_cpu_bound_program_synchronously(target: str, abi: str, lab_machine: Machine,
                                                               lab_record_signals) -> None:
    _skip_unrunnable(lab_machine, abi)
    program = install_program(lab_machine, "ticker", abi)
    for work in TICKER_WORK:
        probe = [program, TICKER_HZ, str(work), TICKER_NATIVE_TICKS]
        if lab_machine.ssh.run(shlex.join(probe), timeout=300).check().stdout.endswith(b"yes\n"):
            break
    else:
        pytest.fail(f"{TICKER_WORK[-1]} M steps end before {TICKER_NATIVE_TICKS} ticks")
    argv = [program, TICKER_HZ, str(work), TICKER_MIN_TICKS]
    native = lab_machine.ssh.run(shlex.join(argv), timeout=300).check()
    result = run_mvee(lab_machine, "-n", "2", "--", *argv, timeout=900)
    assert result.returncode == 0, result.stderr  # no false alarm
    assert result.stdout == native.stdout  # the same checksum, and the ticks were handled
    assert result.report is not None
    lab_record_signals(result.report, f"ticker-{abi}")
    signals = result.report["signals"]
    assert signals["delivered"] >= int(TICKER_MIN_TICKS)
    assert signals["delay_ms"]["max"] >= signals["delay_ms"]["p50"] is not None
    if signals["loop_trap"] is not None:  # a variant was parked in the wait loop
        expected = "int80" if abi == "i386" or lab_machine.target.ia32 else "syscall"
        assert signals["loop_trap"] == expected


# Under TCG a signal stop costs the monitor more than the 1 kHz timer's period: `check`
# made no progress (every expiry stopped a variant running on to its syscall) until the
# monitor blocked a set-aside standard signal in it, as a pending signal coalesces.
@pytest.mark.parametrize("mode", ["spin", "check"])
@pytest.mark.parametrize("abi", ABIS)
@pytest.mark.parametrize("target", lab_targets())
def test_flag_idioms_run_as_natively(target: str, abi: str, mode: str, lab_machine: Machine,
                                     lab_record_signals) -> None:
    """A handler that only sets a flag, tested in a syscall-free loop, under the default
    converge policy: the native output, no alarm."""
    _skip_unrunnable(lab_machine, abi)
    program = install_program(lab_machine, "flags", abi)
    native = lab_machine.ssh.run(shlex.join([program, mode]), timeout=300).check()
    for _ in range(2):
        result = run_mvee(lab_machine, "-n", "2", "--", program, mode, timeout=900)
        signals = result.report["signals"] if result.report else None
        assert (result.returncode, result.stdout) == (0, native.stdout), (result.stderr, signals)
        assert result.report is not None and result.report["signals"]["policy"] == "converge"
    lab_record_signals(result.report, f"flags-{mode}-{abi}")


@pytest.mark.parametrize("abi", ABIS)
@pytest.mark.parametrize("target", lab_targets())
def test_processes_and_threads_run_as_natively(target: str, abi: str, lab_machine: Machine) -> None:
    _skip_unrunnable(lab_machine, abi)
    program = install_program(lab_machine, "family", abi)
    native = lab_machine.ssh.run(shlex.join([program, "/bin/echo"]), timeout=300).check()
    result = run_mvee(lab_machine, "-n", "2", "--", program, "/bin/echo", timeout=900)
    assert (result.returncode, result.stdout) == (0, native.stdout), result.stderr
    assert b"differs" not in native.stdout
    assert result.report is not None
    assert sum(s["thread"] for s in result.report["sets"]) == 2


@pytest.mark.parametrize("abi", ABIS)
@pytest.mark.parametrize("target", lab_targets())
def test_threads_taking_turns_run_as_natively(target: str, abi: str, lab_machine: Machine) -> None:
    """Threads that take turns at writing lines, and at opening the files of the items
    they took (tests/programs/turns.c): in another order in each variant, they change
    partners (mvee.thread_pairing), on this target's kernel."""
    _skip_unrunnable(lab_machine, abi)
    program = install_program(lab_machine, "turns", abi)
    items = f"{GUEST_DIR}/items"
    lab_machine.ssh.run(f"mkdir -p {items} && for i in $(seq 0 59); do seq 1 $i > {items}/$i; done",
                        timeout=60).check()
    for argv in ([program, "60", "3"], [program, "60", "3", items]):
        native = lab_machine.ssh.run(shlex.join(argv), timeout=300).check()
        result = run_mvee(lab_machine, "-n", "2", "--", *argv, timeout=900)
        assert (result.returncode, result.stdout) == (0, native.stdout), result.stderr
        assert result.report is not None
        assert sum(s["thread"] for s in result.report["sets"]) == 3


@pytest.mark.parametrize("target", lab_targets())
def test_shell_pipeline_runs_as_natively(target: str, lab_machine: Machine) -> None:
    script = 'seq 1 3000 | sort -rn | tail -1; echo "$(echo sub | tr a-z A-Z)"'
    native = lab_machine.ssh.run(shlex.join(["/bin/sh", "-c", script]), timeout=300).check()
    result = run_mvee(lab_machine, "-n", "2", "--", "/bin/sh", "-c", script, timeout=900)
    assert (result.returncode, result.stdout) == (0, native.stdout), result.stderr
    assert native.stdout == b"1\nSUB\n"
    assert result.report is not None and len(result.report["sets"]) >= 5


def _kill_one_variant(machine: Machine, abi: str, *options: str) -> tuple[int, float, str, dict]:
    """Run waiter under the monitor in the guest, send SIGUSR1 to one variant only:
    (monitor's exit status, seconds from kill to exit, its stderr, report)."""
    program = install_program(machine, "waiter", abi)
    command = mvee_command("-n", "2", "--wait-loop-ms", str(WAIT_LOOP_MS), *options, "--", program)
    script = f"""
cd {GUEST_DIR}; rm -f report.json out err
({command}) >out 2>err &
M=$!
for i in $(seq 1 1800); do
    grep -q ready out 2>/dev/null && break; kill -0 $M 2>/dev/null || break; sleep 0.1
done
grep -q ready out || {{ echo never-ready; cat err; kill -9 $M; exit 99; }}
# the monitor is the subshell's exec'd python: its children are the variants
leader=$(cat /proc/$M/task/*/children | tr ' ' '\\n' | grep . | sort -n | head -1)
t0=$(date +%s%N); kill -USR1 "$leader"; wait $M; rc=$?; t1=$(date +%s%N)
echo "rc=$rc ms=$(( (t1 - t0) / 1000000 ))"
cat err >&2
"""
    out = machine.ssh.run(f"bash -c {shlex.quote(script)}", timeout=600)
    found = re.search(r"rc=(\d+) ms=(\d+)", out.text)
    assert found, (out.text, out.stderr)
    report = read_report(machine)
    assert report is not None, out.stderr
    return int(found.group(1)), int(found.group(2)) / 1000, out.stderr.decode(errors="replace"), report


def _assert_non_compliant(status: int, seconds: float, stderr: str, report: dict) -> None:
    assert status == NON_COMPLIANT_EXIT, stderr
    assert "non-compliant" in stderr and "SIGUSR1" in stderr
    assert report["verdict"] == "non-compliant"
    # Calibrated to WAIT_LOOP_MS in the guest; emulation and a busy host stretch it, not 100x.
    assert seconds < 60, seconds


@pytest.mark.parametrize("target", lab_targets())
def test_unsignalled_variant_is_non_compliant_and_auto_picks_the_working_trap(target: str,
                                                                              lab_machine: Machine) -> None:
    abi = lab_machine.target.abis[0]
    status, seconds, stderr, report = _kill_one_variant(lab_machine, abi, "--loop-trap", "auto")
    _assert_non_compliant(status, seconds, stderr, report)
    fallback = "int80" if lab_machine.target.ia32 else "syscall"
    expected = {"bookworm-i386": "int80", "bookworm-amd64": "int80", "trixie-amd64": "int80",
                "trixie-amd64-noia32": "syscall"}.get(target, fallback)
    assert report["signals"]["loop_trap"] == expected


@pytest.mark.parametrize("trap", ["int80", "syscall"])
@pytest.mark.parametrize("target", lab_targets())
def test_forced_trap_still_ends_in_the_alarm(target: str, trap: str, lab_machine: Machine) -> None:
    if lab_machine.target.arch == "i386" and trap == "syscall":
        pytest.skip("i386 code has one trap, int 0x80 (the auto test covers it)")
    status, seconds, stderr, report = _kill_one_variant(lab_machine, lab_machine.target.abis[0],
                                                        "--loop-trap", trap)
    # Without IA-32 emulation int 0x80 raises SIGSEGV at the trap: the monitor takes it as the trap.
    _assert_non_compliant(status, seconds, stderr, report)
    assert report["signals"]["loop_trap"] == trap
