"""Bad input: one line on stderr, a documented status, no traceback, nothing left running."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from mvee.verdict import EXIT_STATUS, Verdict
from tests.mvee_run import DEAD, MveeResult, process_state, run_mvee


def mvee(*arguments: str) -> MveeResult:
    return run_mvee(*arguments, timeout=60)


def assert_one_line_error(result: MveeResult, status: int, words: str) -> None:
    assert result.returncode == status
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("mvee: ") and result.stderr.count("\n") == 1, result.stderr
    assert words in result.stderr


def test_no_program(tmp_path: Path) -> None:
    assert_one_line_error(mvee("run", "-n", "2"), 2, "no program")


@pytest.mark.parametrize("count", ["0", "1", "1000", "-3"])
def test_bad_variant_counts(count: str) -> None:
    assert_one_line_error(mvee("run", "-n", count, "--", "true"), 2, "number of variants")


def test_missing_program() -> None:
    assert_one_line_error(mvee("run", "--", "/no/such/program"), 127, "not found")


def test_directory_as_program(tmp_path: Path) -> None:
    assert_one_line_error(mvee("run", "--", str(tmp_path)), 126, "is a directory")


def test_non_executable_program(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_text("not a program")
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert_one_line_error(mvee("run", "--", str(path)), 126, "not executable")


def test_script_with_bad_interpreter(tmp_path: Path) -> None:
    path = tmp_path / "script"
    path.write_text("#!/no/such/interpreter\n")
    path.chmod(0o755)
    assert_one_line_error(mvee("run", "--", str(path)), 127, "cannot execute")


def test_report_in_missing_directory(tmp_path: Path) -> None:
    result = mvee("run", "--report", str(tmp_path / "missing" / "r.json"), "--", "true")
    assert_one_line_error(result, 2, "report directory does not exist")


def test_conflicting_variant_options() -> None:
    assert_one_line_error(mvee("run", "-n", "3", "--exe", "/bin/true", "--exe", "/bin/true", "--", "true"),
                          2, "conflicts")


def test_exit_status_is_the_programs_own() -> None:
    result = mvee("run", "-n", "2", "--", "sh", "-c", "exit 42")
    # sh -c may fork on some shells; dash execs the builtin exit directly.
    assert result.returncode == 42, result.stderr


def test_no_variant_left_behind_after_an_alarm(tmp_path: Path) -> None:
    """An alarm in one set (a refused waitid) ends the processes of every set (a sleep)."""
    report = tmp_path / "report.json"
    refused = "/usr/bin/python3 -c 'import os; os.waitid(os.P_ALL, 0, os.WEXITED)'"
    result = mvee("run", "--report", str(report), "-n", "2", "--", "sh", "-c", f"sleep 30 & {refused}")
    assert result.returncode == EXIT_STATUS[Verdict.UNSUPPORTED], result.stderr
    written = json.loads(report.read_text())
    assert "waitid" in written["message"]
    pids = [pid for variant_set in written["sets"] for pid in variant_set["pids"]]
    assert len(pids) == 6 and all(process_state(pid) in DEAD for pid in pids)  # sh, sleep, python3
