"""Faults: the monitor killed, variants killed from outside, forks and threads, ending signals.

Every run is tagged (tests/mvee_run.py): a process left behind is found by scanning /proc.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mvee.verdict import EXIT_STATUS, Verdict
from tests.conftest import ABIS
from tests.mvee_run import (
    MVEE,
    MveeProcess,
    MveeResult,
    blocked_in,
    process_state,
    signal_pending_in,
    wait_until,
    wait_until_gone,
)

ROOT = Path(__file__).parents[1]
DIVERGENCE_EXIT, NON_COMPLIANT_EXIT, UNSUPPORTED_EXIT, ERROR_EXIT = (
    EXIT_STATUS[v] for v in (Verdict.DIVERGENCE, Verdict.NON_COMPLIANT, Verdict.UNSUPPORTED, Verdict.ERROR))
# Long: files, stdout, getpid, a self-sent SIGUSR1 and a 1 kHz timer, for minutes.
LONG_SCRIPT = '-DSCRIPT="O0;W0:41;R0;C0;P;K10;L1;J100000"'
SHORT_SCRIPT = '-DSCRIPT="S:41;E0"'
FAULT_SETTINGS = settings(max_examples=6, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture])


def start(report: Path, *arguments: str, **options: object) -> MveeProcess:
    """`mvee run --report REPORT ARGUMENTS` in the background."""
    return MveeProcess("run", *arguments, report=report, **options)


def assert_one_line(stderr: str) -> None:
    assert "Traceback" not in stderr and stderr.count("\n") == 1, stderr


# --- kill -9 of the monitor ---


@FAULT_SETTINGS
@given(delay=st.floats(0, 0.5), workload=st.sampled_from(["long", "short"]))
def test_sigkill_of_the_monitor_leaves_no_variant_and_no_half_report(delay: float, workload: str,
                                                                     build_program, tmp_path: Path) -> None:
    program = build_program("script", "x86_64", LONG_SCRIPT if workload == "long" else SHORT_SCRIPT)
    directory = tmp_path / uuid.uuid4().hex
    directory.mkdir()
    report = directory / "report.json"
    monitor = start(report, "-n", "2", "--", str(program), str(directory), "timer",
                    stdout=subprocess.DEVNULL)
    time.sleep(delay)
    children = monitor.variant_pids()
    still_running = monitor.process.poll() is None
    monitor.process.kill()
    monitor.process.communicate()
    assert wait_until_gone(children, monitor.tag) == []
    if workload == "long":
        assert still_running  # it was killed mid-run, not after it
    leftovers = list(directory.glob(".mvee-report-*"))
    if report.exists():
        assert isinstance(json.loads(report.read_text()), dict)  # never half a report
    # A kill between the temporary file's creation and its rename leaves that file
    # (SIGKILL allows no clean-up), but then the report itself was not replaced.
    assert not leftovers or not report.exists(), leftovers


# --- variants killed or stopped from outside ---


@pytest.mark.parametrize("signum,index", [(signal.SIGKILL, 0), (signal.SIGKILL, 1), (signal.SIGTERM, 1),
                                          (signal.SIGSEGV, 0), (signal.SIGUSR2, 1)])
def test_variant_killed_from_outside_is_a_divergence(signum: int, index: int, build_program,
                                                     tmp_path: Path) -> None:
    monitor = start(tmp_path / "r.json", "-n", "2", "--", str(build_program("waiter", "x86_64")),
                    ready=b"ready\n")
    pids = monitor.variant_pids()
    os.kill(pids[index], signum)
    result = monitor.finish()
    assert result.returncode == DIVERGENCE_EXIT, result.stderr
    assert_one_line(result.stderr)
    assert f"variant {index} killed by {signal.Signals(signum).name}" in result.stderr
    report = result.report
    assert report["verdict"] == "divergence"
    assert report["variants"][index]["signal"] == signal.Signals(signum).name
    assert wait_until_gone(pids, monitor.tag) == []


# A variant SIGKILLed while stopped, before the monitor's next ptrace call on it: that
# call fails with ESRCH (the race behind a rare internal error of the test above).
KILLED_WHILE_STOPPED = """
import os, signal
from mvee.monitor import Monitor
from mvee.variant import start
from tests.mvee_run import process_state, wait_until
variants = [start(i, "/bin/true", ["true"]) for i in range(2)]  # stopped after exec
os.kill(variants[1].pid, signal.SIGKILL)
# It dies (a zombie, not reaped): ptrace calls on it find no such process.
wait_until(lambda: process_state(variants[1].pid) == "Z", "a zombie")
outcome = Monitor(variants).run()
print(outcome.verdict, outcome.message)
"""


def test_variant_killed_while_stopped_is_a_divergence_not_an_error() -> None:
    result = subprocess.run([sys.executable, "-c", KILLED_WHILE_STOPPED], capture_output=True, text=True,
                            timeout=60, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("divergence variant 1 killed by SIGKILL"), result.stdout


def test_handled_signal_sent_to_one_variant_is_non_compliant(build_program, tmp_path: Path) -> None:
    monitor = start(tmp_path / "r.json", "-n", "2", "--wait-loop-ms", "300", "--",
                    str(build_program("stubborn", "x86_64")), ready=b"ready\n")
    pids = monitor.variant_pids()
    os.kill(pids[1], signal.SIGTERM)  # stubborn has a handler: it would run in one variant only
    result = monitor.finish()
    assert result.returncode == NON_COMPLIANT_EXIT, result.stderr
    assert_one_line(result.stderr)
    assert b"got" not in result.stdout
    assert result.report["alarm"]["variant"] == 0
    assert wait_until_gone(pids, monitor.tag) == []


def test_sigstop_to_one_variant_does_not_hang_the_run(build_program, tmp_path: Path) -> None:
    """Job control is not synchronised: the stop is swallowed and the run goes on. The
    variants wait in pause(): in the nap loop, the later SIGUSR1 met the flag-between-syscalls
    limit (tests/test_signal_delivery.py) in about 1 run in 8 under heavy load."""
    monitor = start(tmp_path / "r.json", "-n", "2", "--", str(build_program("waiter", "x86_64")), "pause",
                    ready=b"ready\n")
    pids = monitor.variant_pids()
    wait_until(lambda: all(blocked_in(pid, "pause") for pid in pids), "every variant in pause()")
    os.kill(pids[1], signal.SIGSTOP)
    # Its pause() is interrupted: it stops for the monitor, which holds it there.
    wait_until(lambda: process_state(pids[1]) == "t", "variant 1 in a ptrace stop")
    os.kill(pids[1], signal.SIGCONT)
    os.kill(monitor.pid, signal.SIGUSR1)
    result = monitor.finish()
    assert (result.returncode, result.stdout) == (0, b"got SIGUSR1\n"), result.stderr
    assert wait_until_gone(pids, monitor.tag) == []


# --- processes and threads ---


@pytest.mark.parametrize("how", ["fork", "vfork", "thread", "spawn", "system"])
@pytest.mark.parametrize("abi", sorted(ABIS))
def test_a_new_process_or_thread_runs_in_its_own_set(abi: str, how: str, build_program,
                                                     tmp_path: Path) -> None:
    witness = tmp_path / "witness"
    program = build_program("spawn", abi, "-pthread")
    native = subprocess.run([str(program), how, str(tmp_path / "native")], capture_output=True, timeout=30)
    assert native.stdout == b"before\nafter\n" and (tmp_path / "native").read_text() == "ran\n"
    monitor = start(tmp_path / "r.json", "-n", "2", "--", str(program), how, str(witness))
    result = monitor.finish()
    assert (result.returncode, result.stdout, result.stderr) == (0, native.stdout, "")
    assert witness.read_text() == "ran\n"  # written once, by the leader's child or thread
    report = result.report
    assert report["verdict"] == "ok"
    created = report["sets"][1:]
    assert created and all(s["parent"] is not None and len(s["pids"]) == 2 for s in created)
    assert [s["thread"] for s in created] == [how == "thread"] * len(created)
    pids = [pid for s in report["sets"] for pid in s["pids"]]
    assert wait_until_gone(pids, monitor.tag) == []


# --- signals sent to the monitor ---


def assert_ended_as_natively(result: MveeResult, signum: int, variants: int) -> None:
    """A ^C, SIGTERM or SIGHUP to the monitor or its process group ends the program as it
    ends a native run: every variant dies of it, the status is 128+N, no alarm."""
    name = signal.Signals(signum).name
    assert result.report is not None, result.stderr
    assert (result.returncode, result.stderr) == (128 + signum, ""), result.report["message"]
    assert (result.report["verdict"], result.report["message"]) == ("ok", f"all variants killed by {name}")
    assert [v["signal"] for v in result.report["variants"]] == [name] * variants


@pytest.mark.parametrize("to", ["monitor", "group"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_ending_signal_to_the_monitor_ends_the_variants_with_it(signum: int, to: str, build_program,
                                                                tmp_path: Path) -> None:
    """`kill PID` of the monitor, or `kill -- -PGID` of its process group (the variants
    have it from the sender and from the monitor)."""
    monitor = start(tmp_path / "r.json", "-n", "3", "--", str(build_program("waiter", "x86_64")),
                    ready=b"ready\n", new_session=to == "group")
    pids = monitor.variant_pids()
    if to == "group":
        os.killpg(monitor.pid, signum)
    else:
        os.kill(monitor.pid, signum)
    result = monitor.finish()
    assert_ended_as_natively(result, signum, 3)
    assert result.stdout == b""  # waiter prints nothing more: its handler never ran
    assert wait_until_gone(pids, monitor.tag) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_every_ending_signal_is_forwarded_every_time(signum: int, build_program, tmp_path: Path) -> None:
    """A program that handles its SIGINT or SIGTERM gets each one the monitor is sent."""
    monitor = start(tmp_path / "r.json", "-n", "2", "--", str(build_program("stubborn", "x86_64")),
                    ready=b"ready\n")
    pids = monitor.variant_pids()
    assert monitor.process.stdout is not None
    for _ in range(3):
        os.kill(monitor.pid, signum)
        assert monitor.process.stdout.readline() == f"got {signum}\n".encode()  # caught: the run goes on
    os.kill(monitor.pid, signal.SIGKILL)
    monitor.process.wait()
    assert wait_until_gone(pids, monitor.tag) == []


def test_a_daemon_reloads_on_three_sighups_and_ends_on_sigterm(build_program, tmp_path: Path) -> None:
    program = str(build_program("stubborn", "x86_64"))
    native = subprocess.Popen([program, "hups"], stdout=subprocess.PIPE)
    monitor = start(tmp_path / "r.json", "-n", "2", "--", program, "hups", ready=b"ready\n")
    assert native.stdout is not None and monitor.process.stdout is not None
    assert native.stdout.readline() == b"ready\n"
    lines = {"native": [], "monitor": []}
    for count in range(1, 4):
        for name, target, output in (("native", native.pid, native.stdout),
                                     ("monitor", monitor.pid, monitor.process.stdout)):
            os.kill(target, signal.SIGHUP)
            lines[name].append(output.readline())
            assert lines[name][-1] == f"hup {count}\n".encode(), (name, lines)
    native.send_signal(signal.SIGTERM)
    os.kill(monitor.pid, signal.SIGTERM)
    native_rest, _ = native.communicate(timeout=30)
    result = monitor.finish()
    assert (result.returncode, result.stdout) == (-native.returncode + 128, native_rest), result.stderr
    assert_ended_as_natively(result, signal.SIGTERM, 2)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_the_way_out_a_second_signal_while_the_first_is_undelivered(signum: int, build_program,
                                                                   tmp_path: Path) -> None:
    """The program blocks the signal: the first is forwarded and waits, undelivered, in the
    leader (the others get the leader's instance once it takes it); a second within 2 s
    ends the run, with the signal's status and its own verdict."""
    monitor = start(tmp_path / "r.json", "-n", "2", "--", str(build_program("stubborn", "x86_64")), "block",
                    ready=b"ready\n")
    pids = monitor.variant_pids()
    os.kill(monitor.pid, signum)
    wait_until(lambda: signal_pending_in(pids[0], signum), "the signal pending in the leader")
    os.kill(monitor.pid, signum)
    result = monitor.finish()
    assert result.returncode == 128 + signum, result.stderr
    assert_one_line(result.stderr)
    name = signal.Signals(signum).name
    assert f"a second {name} within 2 s while the first was still undelivered" in result.stderr
    assert result.report["verdict"] == "interrupted"
    assert wait_until_gone(pids, monitor.tag) == []


@FAULT_SETTINGS
@given(delay=st.floats(0, 0.3), signum=st.sampled_from([signal.SIGINT, signal.SIGTERM]))
def test_ending_signal_at_a_random_moment_of_the_run(delay: float, signum: int, build_program,
                                                     tmp_path: Path) -> None:
    """Once the program runs (the monitor is past its start-up): the variants end with the
    signal, the report says so, nothing is left."""
    report = tmp_path / f"{uuid.uuid4().hex}.json"
    monitor = start(report, "-n", "2", "--", str(build_program("waiter", "x86_64")), ready=b"ready\n")
    pids = monitor.variant_pids()
    time.sleep(delay)
    os.kill(monitor.pid, signum)
    assert_ended_as_natively(monitor.finish(), signum, 2)
    assert wait_until_gone(pids, monitor.tag) == []


# --- holes found here (monitor bugs, reproduced on purpose) ---


def test_forwarded_sigterm_ends_variants_of_different_speeds_alike(build_program, tmp_path: Path) -> None:
    script = '-DSCRIPT="S:72656164790a;L100;P;J100000"'  # "ready", then spin and getpid for ever
    fast = build_program("script", "x86_64", script, "-DSPIN_STEPS=0")
    slow = build_program("script", "x86_64", script)
    for attempt in range(5):
        monitor = start(tmp_path / f"r{attempt}.json", "--exe", str(fast), "--exe", str(slow), "--",
                        "script", str(tmp_path), ready=b"ready\n")
        time.sleep(0.05)
        os.kill(monitor.pid, signal.SIGTERM)
        assert_ended_as_natively(monitor.finish(), signal.SIGTERM, 2)


FORK_HOOK = """
import os, sys, time
def slow_hook():  # stands for the at-fork hooks a process has anyway (logging's _releaseLock)
    sys.stderr.write("forked\\n"); sys.stderr.flush()
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        pass
os.register_at_fork(after_in_parent=slow_hook)
sys.stderr.write("hooked\\n"); sys.stderr.flush()
from mvee.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigint_during_variant_start_is_not_lost(build_program, tmp_path: Path) -> None:
    program = build_program("script", "x86_64", LONG_SCRIPT)
    monitor = MveeProcess("run", "-n", "2", "--", str(program), str(tmp_path),
                          entry=(sys.executable, "-c", FORK_HOOK), stdout=subprocess.DEVNULL)
    stderr = monitor.process.stderr
    assert stderr is not None and stderr.readline() == b"hooked\n"
    assert stderr.readline() == b"forked\n"
    os.kill(monitor.pid, signal.SIGINT)  # the monitor is in the hook of its first os.fork
    try:
        monitor.finish(timeout=30)  # a lost SIGINT: the variants run on for minutes
    finally:
        assert wait_until_gone([], monitor.tag) == []


# Put on PYTHONPATH as sitecustomize: it holds the monitor's imports at mvee.monitor
# (a heavy one) for a second and says so, so that a SIGINT lands in the middle of them.
IMPORT_PAUSE = """
import sys, time
class PauseAtMonitor:
    def find_spec(self, name, path=None, target=None):
        if name == "mvee.monitor":
            sys.stderr.write("importing\\n"); sys.stderr.flush(); time.sleep(1)
        return None
sys.meta_path.insert(0, PauseAtMonitor())
"""
ENTRY_POINTS = {"python -m mvee": MVEE, "mvee": (str(Path(sys.executable).parent / "mvee"),)}


@pytest.mark.parametrize("entry", ENTRY_POINTS.values(), ids=ENTRY_POINTS.keys())
def test_sigint_while_the_monitor_loads_is_forwarded_without_a_traceback(entry: tuple[str, ...],
                                                                         tmp_path: Path) -> None:
    """A ^C while the monitor's modules load (a fifth of a second) waits, blocked, for
    the monitor and is forwarded to the variants. (One during CPython's own start-up,
    before any code of mvee runs, gets Python's default: a KeyboardInterrupt.)"""
    (tmp_path / "sitecustomize.py").write_text(IMPORT_PAUSE)
    monitor = MveeProcess("run", "-n", "2", "--", "/bin/sleep", "5", entry=entry, pythonpath=tmp_path,
                          stdout=subprocess.DEVNULL)
    assert monitor.process.stderr is not None and monitor.process.stderr.readline() == b"importing\n"
    started = time.monotonic()
    os.kill(monitor.pid, signal.SIGINT)
    result = monitor.finish(timeout=30)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 128 + signal.SIGINT, result.stderr  # the variants died of it
    assert time.monotonic() - started < 4  # not after sleep's 5 s


def test_helpers_see_a_tagged_process(tmp_path: Path) -> None:
    """The leftover check itself can fail: a tagged sleeper is found until it is killed."""
    tag = uuid.uuid4().hex
    sleeper = subprocess.Popen(["sleep", "30"], env={**os.environ, "MVEE_FAULT_TAG": tag})
    try:
        assert wait_until_gone([sleeper.pid], tag, timeout=0.05) == [sleeper.pid]
    finally:
        sleeper.kill()
        sleeper.wait()
    assert wait_until_gone([sleeper.pid], tag) == []



def test_program_with_a_10khz_timer_finishes(build_program, tmp_path: Path) -> None:
    """A timer faster than a delivery (each takes longer than its 100 us period) once
    livelocked the program: a signal at a handler's return is now held back (up to
    DEFERRAL, or the variant's next syscall), so main runs between deliveries, the ticks
    coalesced. 100 M steps (0.1 s natively): held back only until another variant's
    tick, it made no progress in minutes."""
    monitor = start(tmp_path / "r.json", "-n", "2", "--", str(build_program("ticker", "x86_64")),
                    "10000", "100", "1")
    try:
        result = monitor.finish(timeout=10)
    finally:
        wait_until_gone([], monitor.tag)
    assert result.returncode == 0 and result.stdout.endswith(b"yes\n"), result.stderr
