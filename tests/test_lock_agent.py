"""The lock agent: the followers' threads take the leader's order of lock operations.

tests/programs/lock_order.c (x86_64 and i386) writes what depends on that order: which
value of a mutex-protected counter each thread saw, which consumer of a condition
variable got which item, which process got which token of a semaphore in shared memory.
Natively each run differs; without the agent the variants differ (a divergence alarm);
with it (`--lock-agent`) every run is one a native run could have made, in 2 and 3
variants. The real programs (xz -T2, sort, a multiprocessing.Pool) are in
tests/test_processes.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from tests.conftest import ABIS
from tests.mvee_run import ROOT, wait_until_gone

PYTHON = "/usr/bin/python3"  # not a pyenv shim
RUNS = 10  # each a different native interleaving
PARTS = {b"counter": 120, b"queue": 60, b"tokens": 40}  # lines, and values 0 .. lines-1


def assert_a_possible_run(output: bytes) -> None:
    """Every part's values each once, and each writer's in increasing order."""
    seen: dict[bytes, list[int]] = defaultdict(list)
    by_writer: dict[tuple[bytes, bytes], list[int]] = defaultdict(list)
    for line in output.splitlines():
        part, who, value = line.split()
        seen[part].append(int(value))
        by_writer[part, who].append(int(value))
    assert {part: sorted(values) for part, values in seen.items()} == \
        {part: list(range(count)) for part, count in PARTS.items()}
    assert all(values == sorted(values) for values in by_writer.values())


@pytest.mark.parametrize("variants", ["2", "3"])
@pytest.mark.parametrize("abi", list(ABIS))
def test_lock_dependent_output_is_the_leaders_in_every_variant(abi: str, variants: str, build_program,
                                                               run_mvee, tmp_path: Path) -> None:
    program = str(build_program("lock_order", abi, "-pthread"))
    assert_a_possible_run(subprocess.run([program], capture_output=True, check=True).stdout)
    for _ in range(RUNS):
        result = run_mvee("-n", variants, "--lock-agent", "--", program, cwd=tmp_path)
        assert (result.report["verdict"], result.returncode) == ("ok", 0), result.stderr
        assert_a_possible_run(result.stdout)
        agent = result.report["lock_agent"]
        # The parent maps the log when it starts its first thread; the child inherits it.
        assert agent["enabled"] and agent["processes"] == 1 and agent["operations"] >= sum(PARTS.values())
        assert {s["program"] for s in result.report["sets"]} == {program}
    assert wait_until_gone([], result.tag) == []


def test_a_program_started_through_a_shell_and_python_gets_the_agent(build_program, run_mvee,
                                                                     tmp_path: Path) -> None:
    """The agent hides its variables from the program and gives them back to what it
    executes: sh execve, Python's subprocess (posix_spawn or fork and execve)."""
    program = build_program("lock_order", "x86_64", "-pthread")
    script = f"import subprocess; subprocess.run(['/bin/sh', '-c', 'exec {program}'], check=True)"
    result = run_mvee("-n", "2", "--lock-agent", "--", PYTHON, "-c", script, cwd=tmp_path)
    assert (result.report["verdict"], result.returncode) == ("ok", 0), result.stderr
    assert_a_possible_run(result.stdout)
    assert result.report["lock_agent"]["processes"] == 1  # Python itself: one thread, no log


@pytest.mark.parametrize("preload", [None, "/lib/x86_64-linux-gnu/libm.so.6"])
def test_the_program_sees_its_environment_as_natively(preload: str | None, tmp_path: Path) -> None:
    # LC_ALL: the monitor's Python would otherwise add LC_CTYPE (PEP 538) for the variants
    environment = {"PATH": "/usr/bin:/bin", "FIRST": "1", **({"LD_PRELOAD": preload} if preload else {}),
                   "LAST": "2", "PYTHONPATH": str(ROOT), "LC_ALL": "C"}
    argv = ["/usr/bin/env"]
    native = subprocess.run(argv, env=environment, capture_output=True, check=True).stdout
    monitored = subprocess.run([sys.executable, "-m", "mvee", "run", "-n", "2", "--lock-agent", "--", *argv],
                               env=environment, capture_output=True, timeout=120)
    assert (monitored.returncode, monitored.stdout) == (0, native), monitored.stderr


def test_without_lock_agent_the_variants_run_without_it(run_mvee, tmp_path: Path) -> None:
    result = run_mvee("-n", "2", "--", "/usr/bin/env", cwd=tmp_path)
    assert result.report["lock_agent"] == {"enabled": False, "reason": "off (--lock-agent)"}
    assert b"MVEE_LOCK_AGENT" not in result.stdout and b"LD_PRELOAD" not in result.stdout


def test_without_a_compiler_the_run_goes_on_without_the_agent(tmp_path: Path) -> None:
    """The agent is built at first use: where it cannot be, the report says why."""
    environment = {**os.environ, "PATH": str(tmp_path), "MVEE_LAB_CACHE": str(tmp_path / "cache")}
    completed = subprocess.run([sys.executable, "-m", "mvee", "run", "-n", "2", "--lock-agent", "--report",
                                "r.json", "--", "/bin/echo", "hi"],
                               env=environment, capture_output=True, timeout=120, cwd=tmp_path)
    assert (completed.returncode, completed.stdout, completed.stderr) == (0, b"hi\n", b"")
    assert json.loads((tmp_path / "r.json").read_text())["lock_agent"] == \
        {"enabled": False, "reason": "no C compiler to build it"}
