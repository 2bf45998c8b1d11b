"""Bad input: one line on stderr, a documented status, no traceback, nothing left running.

Complements tests/test_cli.py with more programs that cannot run, option values and
combinations, and report paths. Every run is tagged in its environment so that a
process left behind is found by scanning /proc.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tests.mvee_run import MveeResult, run_mvee, wait_until_gone

USAGE, CANNOT_EXECUTE, NOT_FOUND = 2, 126, 127


def mvee(*arguments: str) -> MveeResult:
    result = run_mvee(*arguments, timeout=60)
    assert wait_until_gone([], result.tag) == [], "a process was left running"
    return result


def assert_one_line_error(result: MveeResult, status: int, *words: str) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == status, result.stderr
    assert result.stderr.startswith("mvee: ") and result.stderr.count("\n") == 1, result.stderr
    for word in words:
        assert word in result.stderr
    assert result.stdout == b""


def executable(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    path.chmod(0o755)
    return path


# --- programs that cannot run ---


def test_program_not_on_path() -> None:
    assert_one_line_error(mvee("run", "--", "no-such-program-anywhere"), NOT_FOUND, "not found")


def test_empty_program_name() -> None:
    assert_one_line_error(mvee("run", "--", ""), NOT_FOUND, "not found")


def test_missing_executable_of_one_variant() -> None:
    assert_one_line_error(mvee("run", "--exe", "/bin/true", "--exe", "/no/such/exe", "--", "true"),
                          NOT_FOUND, "/no/such/exe")


def test_directory_given_with_exe(tmp_path: Path) -> None:
    assert_one_line_error(mvee("run", "--exe", "/bin/true", "--exe", str(tmp_path), "--", "true"),
                          CANNOT_EXECUTE, "is a directory")


def test_read_only_program(tmp_path: Path) -> None:
    path = executable(tmp_path / "prog", b"#!/bin/sh\nexit 0\n")
    path.chmod(stat.S_IRUSR)
    # root may execute a file only when some execute bit is set
    assert_one_line_error(mvee("run", "--", str(path)), CANNOT_EXECUTE, "not executable")


def test_empty_executable_file(tmp_path: Path) -> None:
    path = executable(tmp_path / "empty", b"")
    assert_one_line_error(mvee("run", "--", str(path)), CANNOT_EXECUTE, "Exec format error")


def test_garbage_executable_file(tmp_path: Path) -> None:
    path = executable(tmp_path / "garbage", b"\x7fELF garbage\x00\x01\x02")
    assert_one_line_error(mvee("run", "--", str(path)), CANNOT_EXECUTE, "cannot execute")


def test_interpreter_line_naming_a_directory(tmp_path: Path) -> None:
    path = executable(tmp_path / "script", f"#!{tmp_path}\n".encode())
    assert_one_line_error(mvee("run", "--", str(path)), CANNOT_EXECUTE, "cannot execute")


def test_interpreter_line_naming_a_missing_interpreter(tmp_path: Path) -> None:
    path = executable(tmp_path / "script", b"#!/no/such/interpreter -x\necho hi\n")
    assert_one_line_error(mvee("run", "-n", "3", "--", str(path)), NOT_FOUND, "cannot execute")


def test_symlink_loop_as_program(tmp_path: Path) -> None:
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert_one_line_error(mvee("run", "--", str(tmp_path / "loop")), CANNOT_EXECUTE)


def test_dangling_symlink_as_program(tmp_path: Path) -> None:
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    result = mvee("run", "--", str(tmp_path / "dangling"))
    assert_one_line_error(result, result.returncode)
    assert result.returncode in (CANNOT_EXECUTE, NOT_FOUND)


# --- options ---


@pytest.mark.parametrize("count", ["0", "1", "17", "1000", "abc"])
def test_bad_variant_counts(count: str) -> None:
    assert_one_line_error(mvee("run", "-n", count, "--", "true"), USAGE, "variants")


def test_single_exe_is_too_few_variants() -> None:
    assert_one_line_error(mvee("run", "--exe", "/bin/true", "--", "true"), USAGE, "2 to 16")


def test_seventeen_exes_are_too_many() -> None:
    exes = [part for _ in range(17) for part in ("--exe", "/bin/true")]
    assert_one_line_error(mvee("run", *exes, "--", "true"), USAGE, "2 to 16")


@pytest.mark.parametrize("count", ["2", "4"])
def test_variant_count_conflicting_with_exes(count: str) -> None:
    result = mvee("run", "-n", count, "--exe", "/bin/true", "--exe", "/bin/true", "--exe", "/bin/true",
                  "--", "true")
    assert_one_line_error(result, USAGE, "conflicts")


def test_wait_loop_ms_with_wait_loop_iterations() -> None:
    result = mvee("run", "--wait-loop-ms", "5", "--wait-loop-iterations", "5", "--", "true")
    assert_one_line_error(result, USAGE, "not allowed with")


@pytest.mark.parametrize("value", ["0", "nan", "3600001", "abc"])
def test_bad_wait_loop_ms(value: str) -> None:
    assert_one_line_error(mvee("run", "--wait-loop-ms", value, "--", "true"), USAGE, "--wait-loop-ms")


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "abc"])
def test_bad_converge_ms(value: str) -> None:
    assert_one_line_error(mvee("run", "--converge-ms", value, "--", "true"), USAGE, "--converge-ms")


@pytest.mark.parametrize("value", ["0", "4294967296", "1e9"])
def test_bad_wait_loop_iterations(value: str) -> None:
    result = mvee("run", "--wait-loop-iterations", value, "--", "true")
    assert_one_line_error(result, USAGE, "--wait-loop-iterations")


@pytest.mark.parametrize("option,value", [("--loop-trap", "bogus"), ("--loop-trap", "INT80"),
                                          ("--signal-policy", "async"), ("--wait-loop", "busy")])
def test_unknown_choice_values(option: str, value: str) -> None:
    assert_one_line_error(mvee("run", option, value, "--", "true"), USAGE, "invalid choice")


@pytest.mark.parametrize("arguments", [[], ["bogus"], ["run", "--frobnicate", "--", "true"],
                                       ["run", "--exe"]])
def test_malformed_command_lines(arguments: list[str]) -> None:
    assert_one_line_error(mvee(*arguments), USAGE)


def test_option_after_the_program_goes_to_the_program() -> None:
    """Options after -- (or after PROG) are the program's, not the monitor's."""
    result = mvee("run", "-n", "2", "--", "sh", "-c", 'printf "%s\\n" "$*"', "sh", "-n", "0", "--bogus")
    assert (result.returncode, result.stdout, result.stderr) == (0, b"-n 0 --bogus\n", "")


# --- report paths ---


def test_report_where_a_directory_is_expected(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    result = mvee("run", "--report", str(tmp_path / "file" / "r.json"), "--", "true")
    assert_one_line_error(result, USAGE, "report directory")


def test_report_path_is_a_directory(tmp_path: Path) -> None:
    assert_one_line_error(mvee("run", "--report", str(tmp_path), "--", "true"), USAGE, "is a directory")


def test_report_in_a_missing_directory_nothing_runs(tmp_path: Path) -> None:
    witness = tmp_path / "ran"
    result = mvee("run", "--report", str(tmp_path / "missing" / "r.json"), "--", "touch", str(witness))
    assert_one_line_error(result, USAGE, "does not exist")
    assert not witness.exists()


@pytest.mark.parametrize("directory", ["/proc", "/sys"])
def test_report_in_an_unwritable_pseudo_filesystem(directory: str, tmp_path: Path) -> None:
    witness = tmp_path / "ran"
    result = mvee("run", "--report", f"{directory}/mvee-report.json", "--", "touch", str(witness))
    assert "Traceback" not in result.stderr, result.stderr
    assert_one_line_error(result, USAGE, "report")
    assert not witness.exists()  # refused before the program ran


def test_report_onto_a_device_node_keeps_the_device(tmp_path: Path) -> None:
    device = tmp_path / "null"
    os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a private /dev/null
    result = mvee("run", "--report", str(device), "--", "true")
    assert stat.S_ISCHR(device.lstat().st_mode), f"status {result.returncode}: the device was replaced"


@pytest.mark.parametrize("content", [b"#!/bin/sh\necho precious\n", b"\x7fELF\x02\x01", b'{"data": 1}\n'])
def test_report_over_a_file_that_is_not_a_report_keeps_it(content: bytes, tmp_path: Path) -> None:
    """`--report ./prog -- ./prog`, or a typo naming a data file: the file stays as it was."""
    precious = tmp_path / "precious"
    precious.write_bytes(content)
    precious.chmod(0o755)
    witness = tmp_path / "ran"
    result = mvee("run", "--report", str(precious), "--", "touch", str(witness))
    assert_one_line_error(result, USAGE, "not an mvee report")
    assert precious.read_bytes() == content and precious.stat().st_mode & 0o777 == 0o755
    assert not witness.exists()


def test_an_earlier_report_is_replaced_with_the_usual_mode(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    for program in ("true", "false"):
        result = mvee("run", "--report", str(path), "--", program)
        assert result.returncode == (program == "false"), result.stderr
        assert json.loads(path.read_text())["variants"][0]["exit_status"] == (program == "false")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as any new file here, not mkstemp's 0600
