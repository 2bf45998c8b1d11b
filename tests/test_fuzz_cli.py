"""Fuzzing the command line: `mvee.cli.main(argv)` with random argv never raises.

It returns a documented status and prints at most one line, never a traceback.
Valid command lines really run programs, so the only tokens with a '/' are ./true (a
copy of /bin/true: a token may become a report path, and the fuzz must not bet a
system file on the report-path checks it is testing), /bin and paths that do not
exist, and main runs with an empty PATH (free text names no program) in a scratch
directory (free-text report paths land there).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import time
import traceback
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mvee import cli
from mvee.verdict import EXIT_STATUS

DOCUMENTED = {0, cli.EXIT_USAGE, *EXIT_STATUS.values(), cli.EXIT_CANNOT_EXECUTE, cli.EXIT_NOT_FOUND}
OPTIONS = ["-n", "--variants", "--exe", "--report", "--signal-policy", "--loop-trap", "--wait-loop-ms",
           "--wait-loop-iterations", "--", "-", "--bogus", "-x", "--exe=./true", "--variants=2", "-n2"]
PROGRAMS = ["./true", "/no/such/program", "/no/such/dir/", "/bin"]


free_text = st.text(st.characters(codec="ascii", exclude_characters="/\x00"), max_size=12)
numbers = st.one_of(st.integers(-3, 20).map(str), st.floats(allow_nan=True, allow_infinity=True).map(str),
                    st.sampled_from(["0x2", "1e3", "", " 2", "4294967296", "nan", "-0"]))
values = st.sampled_from(["sync", "at-syscall", "auto", "int80", "syscall", "SYNC", "r.json", "run"])
token = st.one_of(st.sampled_from(OPTIONS), st.sampled_from(PROGRAMS), numbers, values, free_text)
argv_strategy = st.one_of(
    st.lists(token, max_size=8),
    st.lists(token, max_size=8).map(lambda rest: ["run", *rest]),
    st.tuples(st.lists(token, max_size=6), st.lists(st.sampled_from(PROGRAMS) | free_text, max_size=3))
    .map(lambda parts: ["run", *parts[0], "--", *parts[1]]),
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("fuzz-cwd")
    (directory / "empty-path").mkdir()
    shutil.copy2("/bin/true", directory / "true")
    return directory


def run_main_in_child(argv: list[str], scratch: Path, timeout: float = 30) -> dict:
    """cli.main(argv) in a forked child of this process: single-threaded as the real CLI is
    (a pytest-xdist worker has other threads, which would take the monitor's SIGCHLD), with
    PATH empty and its own signal mask. Returns what main returned, raised and printed."""
    results, results_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        outcome: dict = {}
        try:
            os.close(results)
            stderr = io.StringIO()
            os.chdir(scratch)
            os.environ["PATH"] = str(scratch / "empty-path")
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
                try:
                    outcome["status"] = cli.main(argv)
                except SystemExit as leaving:
                    outcome["exit"] = leaving.code if isinstance(leaving.code, int) else str(leaving.code)
                except BaseException:  # noqa: B036 - anything main lets out is the finding
                    outcome["raised"] = traceback.format_exc()
            outcome["stderr"] = stderr.getvalue()
            outcome["status_type"] = type(outcome.get("status")).__name__
        finally:
            os.write(results_write, json.dumps(outcome).encode())
            os._exit(0)
    os.close(results_write)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if os.waitpid(pid, os.WNOHANG)[0]:
                break
            time.sleep(0.005)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"cli.main({argv!r}) did not return within {timeout} s")
        with os.fdopen(results, "rb") as pipe:
            return json.loads(pipe.read() or b"{}")
    finally:
        with contextlib.suppress(OSError):
            os.close(results)


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=argv_strategy)
def test_main_returns_a_documented_status_for_any_argv(argv: list[str], scratch: Path) -> None:
    outcome = run_main_in_child(argv, scratch)
    assert "raised" not in outcome, outcome.get("raised")
    if "exit" in outcome:  # argparse's own --help/-h: prints help and exits 0
        assert {"-h", "--help"} & set(argv) and outcome["exit"] == 0, (argv, outcome)
        return
    status, text = outcome["status"], outcome["stderr"]
    event(f"status {status}")
    assert outcome["status_type"] == "int" and status in DOCUMENTED, (argv, outcome)
    echoed = sum(word.count("\n") for word in argv)  # a name with a newline is quoted as it is
    assert "Traceback" not in text and text.count("\n") <= 1 + echoed, (argv, text)
    if status != 0:
        assert text.startswith("mvee: "), (argv, text)


@pytest.mark.parametrize("argv", [["run", "-n", "2", "--", "./true"],
                                  ["run", "--exe", "./true", "--exe", "./true", "--", "true"],
                                  ["run", "-n", "2", "--", "/no/such/program"]])
def test_the_fuzz_target_reaches_the_monitor(argv: list[str], scratch: Path) -> None:
    outcome = run_main_in_child(argv, scratch)
    assert outcome["status"] == (127 if "/no/such/program" in argv else 0), outcome
