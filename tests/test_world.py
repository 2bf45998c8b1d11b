"""The variants' view of the world: the clock, the TSC, their own /proc files and
temporary names, on real Debian programs and the test programs, both ABIs."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.conftest import ABIS

PYTHON = "/usr/bin/python3"


# --- time from the kernel (mvee.vdso) ---

@pytest.mark.parametrize("abi", sorted(ABIS))
def test_vdso_is_hidden_in_every_exec(abi: str, build_program, run_mvee) -> None:
    program = str(build_program("clocks", abi))
    assert subprocess.run([program, "vdso"], capture_output=True).stdout == b"vdso visible\n"
    # through env: the program is the variants' second exec (the monitor's after_exec)
    result = run_mvee("-n", "2", "--", "/usr/bin/env", program, "vdso")
    assert (result.returncode, result.stdout) == (0, b"vdso hidden\n"), result.stderr


@pytest.mark.parametrize("variants", [2, 3])
@pytest.mark.parametrize("abi", sorted(ABIS))
@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
def test_clock_reads_agree_in_every_variant(abi: str, variants: int, static: bool, build_program,
                                            run_mvee) -> None:
    program = build_program("clocks", abi, *(["-static"] if static else []))
    before = time.time()
    result = run_mvee("-n", str(variants), "--", str(program), "clock", "20")
    assert result.returncode == 0, result.stderr
    rows = [[float(field) for field in line.split()] for line in result.stdout.decode().splitlines()]
    assert len(rows) == 20
    for earlier, later in zip(rows, rows[1:], strict=False):
        assert all(a <= b for a, b in zip(earlier[:3], later[:3], strict=True))
    assert before - 1 <= rows[0][0] <= time.time() + 1  # the real clock, not a made-up one


@pytest.mark.parametrize("variants", [2, 3])
def test_date_with_nanoseconds(variants: int, run_mvee) -> None:
    before = time.time()
    result = run_mvee("-n", str(variants), "--", "/usr/bin/date", "+%s.%N")
    assert result.returncode == 0, result.stderr
    assert before - 1 <= float(result.stdout) <= time.time() + 1


@pytest.mark.parametrize("variants", [2, 3])
def test_python_sleeps_until_an_absolute_deadline(variants: int, run_mvee) -> None:
    script = "import time; t = time.monotonic(); time.sleep(0.1); print(time.monotonic() - t >= 0.1)"
    result = run_mvee("-n", str(variants), "--", PYTHON, "-c", script)
    assert (result.returncode, result.stdout) == (0, b"True\n"), result.stderr


# --- the time-stamp counter (mvee.tsc) ---

@pytest.mark.parametrize("variants", [2, 3])
@pytest.mark.parametrize("abi", sorted(ABIS))
def test_rdtsc_and_rdtscp_give_every_variant_the_same_value(abi: str, variants: int, build_program,
                                                            run_mvee) -> None:
    program = str(build_program("clocks", abi))
    # through env: the trap set before the first exec holds after the second
    result = run_mvee("-n", str(variants), "--", "/usr/bin/env", program, "tsc", "50")
    assert result.returncode == 0, result.stderr
    rows = [[int(field) for field in line.split()] for line in result.stdout.decode().splitlines()]
    assert len(rows) == 50  # and non-decreasing: the program checks that itself


@pytest.mark.parametrize(("count", "message"), [
    ("0", "read the time-stamp counter a different number of times"),
    ("3", "variant 1 executed rdtsc where another executed rdtscp")])
def test_other_tsc_reads_are_a_divergence(count: str, message: str, build_program, run_mvee) -> None:
    plain, extra = build_program("clocks", "x86_64"), build_program("clocks", "x86_64", "-DEXTRA_TSC")
    result = run_mvee("--exe", str(plain), "--exe", str(extra), "--", "clocks", "tsc", count)
    assert result.returncode == 120, result.stderr
    assert message in result.report["message"]
