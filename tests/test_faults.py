"""Faults: the monitor killed, variants killed from outside, forks and threads, ending signals.

Every variant started here carries a unique MVEE_FAULT_TAG in its environment (the
monitor passes its own on), so a leftover process is found by scanning /proc, even
one the monitor had not yet reported as its child.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ABIS

ROOT = Path(__file__).parents[1]
DIVERGENCE_EXIT, NON_COMPLIANT_EXIT, UNSUPPORTED_EXIT, ERROR_EXIT = 120, 121, 122, 125
# Long: files, stdout, getpid, a self-sent SIGUSR1 and a 1 kHz timer, for minutes.
LONG_SCRIPT = '-DSCRIPT="O0;W0:41;R0;C0;P;K10;L1;J100000"'
SHORT_SCRIPT = '-DSCRIPT="S:41;E0"'
FAULT_SETTINGS = settings(max_examples=6, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture])


def tagged_processes(tag: str) -> list[int]:
    """Live (not zombie) processes whose environment carries the tag."""
    found = []
    needle = f"MVEE_FAULT_TAG={tag}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes() and _state(int(entry.name)) not in ("Z", "X", None):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def wait_until_gone(pids: list[int], tag: str, timeout: float = 5) -> list[int]:
    """The pids (and tagged processes) still alive after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        alive = sorted({p for p in pids if _state(p) not in ("Z", "X", None)} | set(tagged_processes(tag)))
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.01)


class Monitor:
    """`mvee run` in the background, tagged; optionally until the variants print a line."""

    def __init__(self, report: Path, *arguments: str, ready: bytes | None = None,
                 stdout: int = subprocess.PIPE) -> None:
        self.tag = uuid.uuid4().hex
        self.report = report
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mvee", "run", "--report", str(report), *arguments],
            stdout=stdout, stderr=subprocess.PIPE, cwd=ROOT,
            env={**os.environ, "MVEE_FAULT_TAG": self.tag, "PYTHONPATH": str(ROOT)})
        if ready is not None:
            assert self.process.stdout is not None
            readable, _, _ = select.select([self.process.stdout], [], [], 60)
            assert readable, "the variants never printed their first line"
            assert self.process.stdout.readline() == ready

    def variant_pids(self) -> list[int]:
        pid = self.process.pid
        try:
            return sorted(int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
        except OSError:
            return []

    def finish(self, timeout: float = 30) -> tuple[int, bytes, str]:
        try:
            stdout, stderr = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            raise AssertionError(f"the monitor did not end within {timeout} s") from None
        return self.process.returncode, stdout or b"", stderr.decode()

    def report_data(self) -> dict:
        return json.loads(self.report.read_text())


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
    monitor = Monitor(report, "-n", "2", "--", str(program), str(directory), "timer",
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
    monitor = Monitor(tmp_path / "r.json", "-n", "2", "--", str(build_program("waiter", "x86_64")),
                      ready=b"ready\n")
    pids = monitor.variant_pids()
    os.kill(pids[index], signum)
    status, stdout, stderr = monitor.finish()
    assert status == DIVERGENCE_EXIT, stderr
    assert_one_line(stderr)
    assert f"variant {index} killed by {signal.Signals(signum).name}" in stderr
    report = monitor.report_data()
    assert report["verdict"] == "divergence"
    assert report["variants"][index]["signal"] == signal.Signals(signum).name
    assert wait_until_gone(pids, monitor.tag) == []


# A variant SIGKILLed while stopped, before the monitor's next ptrace call on it: that
# call fails with ESRCH (the race behind a rare internal error of the test above).
KILLED_WHILE_STOPPED = """
import os, signal, sys, time
from mvee.monitor import Monitor
from mvee.variant import start
variants = [start(i, "/bin/true", ["true"]) for i in range(2)]  # stopped after exec
os.kill(variants[1].pid, signal.SIGKILL)
time.sleep(0.2)  # it dies (a zombie now): ptrace calls on it find no such process
outcome = Monitor(variants).run()
print(outcome.verdict, outcome.message)
"""


def test_variant_killed_while_stopped_is_a_divergence_not_an_error() -> None:
    result = subprocess.run([sys.executable, "-c", KILLED_WHILE_STOPPED], capture_output=True, text=True,
                            timeout=60, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("divergence variant 1 killed by SIGKILL"), result.stdout


def test_handled_signal_sent_to_one_variant_is_non_compliant(build_program, tmp_path: Path) -> None:
    monitor = Monitor(tmp_path / "r.json", "-n", "2", "--wait-loop-ms", "300", "--",
                      str(build_program("stubborn", "x86_64")), ready=b"ready\n")
    pids = monitor.variant_pids()
    os.kill(pids[1], signal.SIGTERM)  # stubborn has a handler: it would run in one variant only
    status, stdout, stderr = monitor.finish()
    assert status == NON_COMPLIANT_EXIT, stderr
    assert_one_line(stderr)
    assert b"got" not in stdout
    assert monitor.report_data()["alarm"]["variant"] == 0
    assert wait_until_gone(pids, monitor.tag) == []


def test_sigstop_to_one_variant_does_not_hang_the_run(build_program, tmp_path: Path) -> None:
    """Job control is not synchronised: the stop is swallowed and the run goes on. Under heavy
    load about 1 run in 8 ended instead in a false divergence (variant 1 had handled the later
    SIGUSR1 and called newfstatat for its printf while variant 0 still napped): not a hang,
    and nothing divergent ran, so it is accepted here but reported."""
    monitor = Monitor(tmp_path / "r.json", "-n", "2", "--", str(build_program("waiter", "x86_64")),
                      ready=b"ready\n")
    pids = monitor.variant_pids()
    os.kill(pids[1], signal.SIGSTOP)
    time.sleep(0.2)
    os.kill(pids[1], signal.SIGCONT)
    os.kill(monitor.process.pid, signal.SIGUSR1)
    status, stdout, stderr = monitor.finish()
    if status == DIVERGENCE_EXIT:
        assert stdout == b"" and "divergence" in stderr, stderr
    else:
        assert (status, stdout) == (0, b"got SIGUSR1\n"), stderr
    assert wait_until_gone(pids, monitor.tag) == []


# --- processes and threads ---


@pytest.mark.parametrize("how", ["fork", "vfork", "thread", "spawn", "system"])
@pytest.mark.parametrize("abi", sorted(ABIS))
def test_a_new_process_or_thread_is_unsupported_and_never_runs(abi: str, how: str, build_program,
                                                               tmp_path: Path) -> None:
    witness = tmp_path / "witness"
    program = build_program("spawn", abi, "-pthread")
    native = subprocess.run([str(program), how, str(tmp_path / "native")], capture_output=True, timeout=30)
    assert native.stdout == b"before\nafter\n" and (tmp_path / "native").read_text() == "ran\n"
    monitor = Monitor(tmp_path / "r.json", "-n", "2", "--", str(program), how, str(witness))
    status, stdout, stderr = monitor.finish()
    assert status == UNSUPPORTED_EXIT, stderr
    assert_one_line(stderr)
    assert stdout == b"before\n"
    assert not witness.exists()  # the child or thread never ran
    report = monitor.report_data()
    assert report["verdict"] == "unsupported"
    assert report["alarm"]["syscall"]["name"] in ("fork", "vfork", "clone", "clone3")
    assert wait_until_gone([v["pid"] for v in report["variants"]], monitor.tag) == []


# --- signals sent to the monitor ---


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_ending_signal_to_the_monitor_ends_the_variants_with_it(signum: int, build_program,
                                                                tmp_path: Path) -> None:
    monitor = Monitor(tmp_path / "r.json", "-n", "3", "--", str(build_program("waiter", "x86_64")),
                      ready=b"ready\n")
    pids = monitor.variant_pids()
    os.kill(monitor.process.pid, signum)
    status, stdout, stderr = monitor.finish()
    report = monitor.report_data()
    name = signal.Signals(signum).name
    if status == DIVERGENCE_EXIT:  # the false divergence pinned by an xfail test below (under load)
        assert f"killed by {name} while variant" in report["message"], report["message"]
    else:
        assert (status, stdout, stderr) == (128 + signum, b"", "")
        assert report["verdict"] == "ok"
        assert [v["signal"] for v in report["variants"]] == [name] * 3
    assert wait_until_gone(pids, monitor.tag) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_second_ending_signal_makes_the_monitor_end_the_variants(signum: int, build_program,
                                                                 tmp_path: Path) -> None:
    monitor = Monitor(tmp_path / "r.json", "-n", "2", "--", str(build_program("stubborn", "x86_64")),
                      ready=b"ready\n")
    pids = monitor.variant_pids()
    os.kill(monitor.process.pid, signum)
    assert monitor.process.stdout is not None
    assert monitor.process.stdout.readline() == f"got {signum}\n".encode()  # caught: the run goes on
    os.kill(monitor.process.pid, signum)
    status, stdout, stderr = monitor.finish()
    assert status == ERROR_EXIT, stderr
    assert_one_line(stderr)
    assert f"interrupted by a second {signal.Signals(signum).name}" in stderr
    report = monitor.report_data()
    assert report["verdict"] == "error"
    assert wait_until_gone(pids, monitor.tag) == []


@FAULT_SETTINGS
@given(delay=st.floats(0, 0.3), signum=st.sampled_from([signal.SIGINT, signal.SIGTERM]))
def test_ending_signal_at_a_random_moment_of_the_run(delay: float, signum: int, build_program,
                                                     tmp_path: Path) -> None:
    """Once the program runs (the monitor is past its start-up): the variants end with the
    signal, the report says so, nothing is left."""
    report = tmp_path / f"{uuid.uuid4().hex}.json"
    monitor = Monitor(report, "-n", "2", "--", str(build_program("waiter", "x86_64")), ready=b"ready\n")
    pids = monitor.variant_pids()
    time.sleep(delay)
    os.kill(monitor.process.pid, signum)
    status, stdout, stderr = monitor.finish()
    name = signal.Signals(signum).name
    message = json.loads(report.read_text())["message"]
    if status == DIVERGENCE_EXIT:  # the false divergence pinned by the xfail test below (rare here)
        assert f"killed by {name} while variant" in message, message
    else:
        assert (status, stderr, message) == (128 + signum, "", f"all variants killed by {name}")
    assert wait_until_gone(pids, monitor.tag) == []


# --- holes found here (monitor bugs, reproduced on purpose) ---


def test_forwarded_sigterm_ends_variants_of_different_speeds_alike(build_program, tmp_path: Path) -> None:
    script = '-DSCRIPT="S:72656164790a;L100;P;J100000"'  # "ready", then spin and getpid for ever
    fast = build_program("script", "x86_64", script, "-DSPIN_STEPS=0")
    slow = build_program("script", "x86_64", script)
    outcomes = []
    for attempt in range(5):
        monitor = Monitor(tmp_path / f"r{attempt}.json", "--exe", str(fast), "--exe", str(slow), "--",
                          "script", str(tmp_path), ready=b"ready\n")
        time.sleep(0.05)
        os.kill(monitor.process.pid, signal.SIGTERM)
        status, _, stderr = monitor.finish()
        outcomes.append((status, stderr.strip()))
        if status != 128 + signal.SIGTERM:
            break
    assert all(status == 128 + signal.SIGTERM for status, _ in outcomes), outcomes


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
    tag = uuid.uuid4().hex
    process = subprocess.Popen(
        [sys.executable, "-c", FORK_HOOK, "run", "-n", "2", "--", str(program), str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT,
        env={**os.environ, "MVEE_FAULT_TAG": tag, "PYTHONPATH": str(ROOT)})
    assert process.stderr is not None and process.stderr.readline() == b"hooked\n"
    assert process.stderr.readline() == b"forked\n"
    os.kill(process.pid, signal.SIGINT)  # the monitor is in the hook of its first os.fork
    try:
        process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise AssertionError("SIGINT to the monitor was lost: the variants ran on") from None
    finally:
        assert wait_until_gone([], tag) == []


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
ENTRY_POINTS = {"python -m mvee": [sys.executable, "-m", "mvee"],
                "mvee": [str(Path(sys.executable).parent / "mvee")]}


@pytest.mark.parametrize("command", ENTRY_POINTS.values(), ids=ENTRY_POINTS.keys())
def test_sigint_while_the_monitor_loads_is_forwarded_without_a_traceback(command: list[str],
                                                                         tmp_path: Path) -> None:
    """A ^C while the monitor's modules load (a fifth of a second) waits, blocked, for
    the monitor and is forwarded to the variants. (One during CPython's own start-up,
    before any code of mvee runs, gets Python's default: a KeyboardInterrupt.)"""
    (tmp_path / "sitecustomize.py").write_text(IMPORT_PAUSE)
    process = subprocess.Popen([*command, "run", "-n", "2", "--", "/bin/sleep", "5"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT,
                               env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert process.stderr is not None and process.stderr.readline() == b"importing\n"
    started = time.monotonic()
    os.kill(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert "Traceback" not in stderr.decode(), stderr.decode()
    assert process.returncode == 128 + signal.SIGINT, stderr.decode()  # the variants died of it
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
    livelocked the program: a signal at a handler's return is now deferred past the next
    rendezvous, so main runs between deliveries, the ticks coalesced."""
    monitor = Monitor(tmp_path / "r.json", "-n", "2", "--", str(build_program("ticker", "x86_64")),
                      "10000", "1", "1")
    try:
        status, stdout, stderr = monitor.finish(timeout=10)
    finally:
        wait_until_gone([], monitor.tag)
    assert status == 0 and stdout.endswith(b"yes\n"), stderr
