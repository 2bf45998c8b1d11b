"""Semi-synchronous signal delivery on this host, for x86_64 and i386 variants."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mvee import waitloop
from mvee.verdict import EXIT_STATUS, Verdict
from tests.conftest import ABIS
from tests.mvee_run import MVEE, MveeProcess, blocked_in, process_state, wait_until

NON_COMPLIANT_EXIT = EXIT_STATUS[Verdict.NON_COMPLIANT]
PYTHON = "/usr/bin/python3"  # a plain interpreter, not a shell-script shim
ROOT = Path(__file__).parents[1]


@pytest.mark.parametrize("options", [(), ("--wait-loop", "spin"), ("--signal-policy", "sync")])
@pytest.mark.parametrize("variants", [2, 3, 4])
@pytest.mark.parametrize("abi", sorted(ABIS))
def test_cpu_bound_program_with_a_1khz_timer(abi: str, variants: int, options: tuple[str, ...], build_program,
                                             run_mvee) -> None:
    program = build_program("ticker", abi)
    # 1 kHz, 300 M steps, at least 5 ticks handled. Long enough to be computing: in its
    # first 100 ms without a syscall, converge holds the ticks for one (coalesced), up to
    # 4x that for a variant the machine starved; with 100 M steps, under the load of the
    # suite, the computation sometimes ended with two ticks handled.
    argv = [str(program), "1000", "300", "5"]
    native = subprocess.run(argv, capture_output=True, timeout=60)
    result = run_mvee("-n", str(variants), *options, "--", *argv, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout == native.stdout, result.report["signals"]
    assert result.stdout.endswith(b"yes\n")
    signals = result.report["signals"]
    assert signals["delivered"] >= 5
    assert signals["delay_ms"]["p50"] is not None and signals["delay_ms"]["max"] >= signals["delay_ms"]["p50"]
    assert signals["loop_trap"] in (None, "int80", "syscall")


@pytest.mark.parametrize("policy", ["converge", "sync"])
@pytest.mark.parametrize("abi", sorted(ABIS))
def test_a_tick_after_the_program_ran_on_from_a_handler_is_delivered(abi: str, policy: str, build_program,
                                                                      run_mvee) -> None:
    """Only a signal stop right at a handler's return, before the code it interrupted ran
    an instruction, is set aside (a timer faster than a delivery would starve the program
    otherwise). The next 100 Hz tick, 10 ms of computing later, is delivered: taken for
    one at the handler's return (the rule once looked only at whether a handler had
    returned since the last stop), every other tick waited for the next."""
    program = build_program("ticker", abi)
    argv = [str(program), "100", "300", "5"]  # about 30 ticks natively
    native = subprocess.run(argv, capture_output=True, timeout=60)
    result = run_mvee("-n", "2", "--signal-policy", policy, "--", *argv, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout == native.stdout
    signals = result.report["signals"]
    assert signals["delivered"] >= 10
    assert signals["set_aside_at_handler_return"] <= signals["delivered"] // 4, signals


@pytest.mark.parametrize("variants", [2, 3])
@pytest.mark.parametrize("mode", ["restart", "norestart"])
@pytest.mark.parametrize("abi", sorted(ABIS))
def test_blocking_syscalls_interrupted_as_natively(abi: str, mode: str, variants: int, build_program,
                                                   run_mvee) -> None:
    program = build_program("interrupts", abi)
    native = subprocess.run([str(program), mode], capture_output=True, timeout=60)
    assert b"Interrupted system call" in native.stdout
    result = run_mvee("-n", str(variants), "--", str(program), mode)
    assert result.returncode == 0, result.stderr
    assert result.stdout == native.stdout
    assert result.report["signals"]["delivered"] == 4


def test_at_syscall_policy_runs_the_ticker_too(build_program, run_mvee) -> None:
    program = build_program("ticker", "x86_64")
    result = run_mvee("-n", "2", "--signal-policy", "at-syscall", "--", str(program), "1000", "30", "1")
    assert result.returncode == 0, result.stderr
    assert result.report["signals"]["policy"] == "at-syscall"


def start(program: Path, report: Path, *options: str, arguments: tuple[str, ...] = ()) -> MveeProcess:
    """The monitor on waiter.c, in the background, until the variants said "ready"."""
    return MveeProcess("run", *options, "--", str(program), *arguments, report=report, ready=b"ready\n")


@pytest.mark.parametrize("abi", sorted(ABIS))
def test_external_sigusr1_to_the_monitor_reaches_every_variant(abi: str, build_program, tmp_path: Path
                                                               ) -> None:
    monitor = start(build_program("waiter", abi), tmp_path / "r.json", "-n", "3", arguments=("pause",))
    # Every variant in pause() (in a nap loop, see the two tests below).
    wait_until(lambda: all(blocked_in(pid, "pause") for pid in monitor.variant_pids()), "all in pause()")
    os.kill(monitor.pid, signal.SIGUSR1)
    result = monitor.finish()
    assert (result.returncode, result.stdout) == (0, b"got SIGUSR1\n"), result.stderr
    assert result.report["signals"]["delivered"] == 1


# waiter built to spin some 30 ms in user code between each nap and its flag test.
SLOW_WAITER = "-DSPIN_STEPS=30000000"


def _sigusr1_to_fast_and_slow(build_program, abi: str, report: Path, *options: str) -> list[tuple[int, str]]:
    """Two builds of waiter, the first (the leader) slow, and SIGUSR1 to the monitor while
    the fast one waits at its next nap's entry and the slow one spins before its flag test:
    the signal meets the leader in its own code, and its copy the other in the kernel. Ten
    runs, or up to the first that fails."""
    program = build_program("waiter", abi)
    options = ("--exe", str(build_program("waiter", abi, SLOW_WAITER)), "--exe", str(program), *options)
    outcomes = []
    for _ in range(10):
        monitor = start(program, report, *options)
        slow, fast = monitor.variant_pids()
        wait_until(lambda fast=fast, slow=slow: process_state(fast) == "t" and process_state(slow) == "R",
                   "the fast variant stopped while the slow one runs")
        os.kill(monitor.pid, signal.SIGUSR1)
        result = monitor.finish()
        outcomes.append((result.returncode, result.stdout.decode() + result.stderr))
        if (result.returncode, result.stdout) != (0, b"got SIGUSR1\n"):
            break
    return outcomes


@pytest.mark.parametrize("abi", sorted(ABIS))
def test_at_syscall_policy_runs_the_handler_at_one_syscall_in_all(abi: str, build_program, tmp_path: Path
                                                                   ) -> None:
    outcomes = _sigusr1_to_fast_and_slow(build_program, abi, tmp_path / "r.json",
                                         "--signal-policy", "at-syscall")
    assert all(status == 0 for status, _ in outcomes), outcomes


@pytest.mark.xfail(strict=True, reason=(
    "limit of the semi-synchronous algorithm (README, Signals): the slow variant, held in user "
    "code, runs the handler before its `while (!got)` test, the fast one, parked at the nap's "
    "entry after its test, naps once more: one calls clock_nanosleep, the other newfstatat "
    "(exit 120) in 70-80% of runs here, so in one of ten at least. (Identical "
    "variants, -n 3, SIGUSR1 right after ready: 2% to 60% of runs, with the machine's load.) "
    "The converge policy, the default, has no such race: the test below"))
def test_sync_policy_with_a_flag_read_between_two_syscalls(build_program, tmp_path: Path) -> None:
    outcomes = _sigusr1_to_fast_and_slow(build_program, "x86_64", tmp_path / "r.json",
                                         "--signal-policy", "sync")
    assert all(status == 0 for status, _ in outcomes), outcomes


@pytest.mark.parametrize("abi", sorted(ABIS))
def test_converge_policy_sees_a_flag_read_between_two_syscalls_alike(abi: str, build_program,
                                                                     tmp_path: Path) -> None:
    """The same signal under the default policy: the slow variant, stopped by it in its own
    code, runs on without it to the nap the fast one waits at, and both get it there."""
    outcomes = _sigusr1_to_fast_and_slow(build_program, abi, tmp_path / "r.json")
    assert all(status == 0 for status, _ in outcomes), outcomes


FLAG_IDIOM_ROUNDS = 3  # scripts/stress runs them many more times


@pytest.mark.parametrize("variants", [2, 3])
@pytest.mark.parametrize("mode", ["spin", "check"])
@pytest.mark.parametrize("abi", sorted(ABIS))
def test_flag_idioms_run_as_natively(abi: str, mode: str, variants: int, build_program, run_mvee) -> None:
    """`while (!flag) work();` (no syscall to deliver at: the fallback, in their code) and
    `work(); if (flag) ...; write()` (the flag between two syscalls) under a timer."""
    program = build_program("flags", abi)
    native = subprocess.run([str(program), mode], capture_output=True, timeout=60)
    for _ in range(FLAG_IDIOM_ROUNDS):
        result = run_mvee("-n", str(variants), "--", str(program), mode, timeout=120)
        assert (result.returncode, result.stdout) == (0, native.stdout), result.stderr
        assert result.report["signals"]["delivered"] >= 1


@pytest.mark.parametrize("abi", sorted(ABIS))
def test_flag_check_under_a_timer_faster_than_a_signal_stop(abi: str, build_program, run_mvee) -> None:
    """A 20 us timer, monitor and variants on one CPU: every expiry used to stop a variant
    running on to its syscall, and it made no progress (no end in 120 s; under TCG even
    1 kHz did). Held back while it runs on, the signal coalesces as natively."""
    program = build_program("flags", abi)
    native = subprocess.run([str(program), "check", "20"], capture_output=True, timeout=60)
    pinned = ("taskset", "-c", str(min(os.sched_getaffinity(0))), *MVEE)
    result = run_mvee("-n", "2", "--", str(program), "check", "20", entry=pinned, timeout=120)
    assert (result.returncode, result.stdout) == (0, native.stdout), result.stderr
    assert result.report["signals"]["ways"]["at-syscall"]["delivered"] >= 50


@pytest.mark.parametrize("variants", [2, 3])
def test_cpython_handler_that_writes_while_main_computes_and_prints(variants: int, run_mvee) -> None:
    """Every CPython handler is deferred to the eval loop's next check: under `sync` this
    diverged in 20 runs of 20 ("variant 0 calls setitimer, variant 1 calls write")."""
    argv = [PYTHON, str(ROOT / "tests" / "programs" / "py_alarm.py"), "300000"]
    native = subprocess.run(argv, capture_output=True, timeout=60)
    for _ in range(FLAG_IDIOM_ROUNDS):
        result = run_mvee("-n", str(variants), "--", *argv, timeout=120)
        assert (result.returncode, result.stdout) == (0, native.stdout), result.stderr
        assert result.report["signals"]["policy"] == "converge"


def _trap_cases() -> list[tuple[str, str]]:
    cases = [(abi, trap) for abi in sorted(ABIS) for trap in ("int80", "syscall")]
    return [case for case in cases if not (case == ("x86_64", "int80") and not waitloop.int80_works())]


@pytest.mark.parametrize("wait", ["sleep", "spin"])
@pytest.mark.parametrize("abi,trap", _trap_cases())
def test_variant_that_never_gets_its_signal_is_non_compliant(abi: str, trap: str, wait: str, build_program,
                                                             tmp_path: Path) -> None:
    monitor = start(build_program("waiter", abi), tmp_path / "r.json", "-n", "2",
                    "--loop-trap", trap, "--wait-loop", wait, "--wait-loop-ms", "300")
    leader, _ = monitor.variant_pids()
    sent = time.monotonic()
    os.kill(leader, signal.SIGUSR1)  # to one variant only
    result = monitor.finish()
    elapsed = time.monotonic() - sent
    assert result.returncode == NON_COMPLIANT_EXIT, result.stderr
    assert b"got SIGUSR1" not in result.stdout
    assert "non-compliant" in result.stderr and "SIGUSR1" in result.stderr and result.stderr.count("\n") == 1
    report = result.report
    assert report["verdict"] == "non-compliant"
    assert report["alarm"]["variant"] == 1
    # i386 code has one trap, int 0x80; x86_64 code uses the one asked for.
    assert report["signals"]["loop_trap"] == (trap if abi == "x86_64" else "int80")
    assert report["signals"]["wait_loop"] == wait
    # The loop is calibrated to 300 ms (or sleeps 300 ms): the alarm comes after it, not much later.
    assert 0.15 < elapsed < 15, elapsed
    assert not any(Path(f"/proc/{v['pid']}").exists() for v in report["variants"])


def test_at_syscall_policy_gives_up_when_no_syscall_comes(build_program, run_mvee) -> None:
    """`while (!flag) work();` waits for a handler that at-syscall would only run at a
    syscall: once hung for good, now a non-compliance alarm after the wait-loop time."""
    program = build_program("flags", "x86_64")
    sent = time.monotonic()
    result = run_mvee("-n", "2", "--signal-policy", "at-syscall", "--wait-loop-ms", "300", "--",
                      str(program), "spin", timeout=60)
    assert result.returncode == NON_COMPLIANT_EXIT, result.stderr
    assert "SIGALRM could not be delivered: no syscall came within 300 ms" in result.stderr
    assert result.stderr.count("\n") == 1
    assert time.monotonic() - sent < 30
