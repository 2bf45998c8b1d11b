"""Divergent variants are stopped before the divergent syscall runs in any of them."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from mvee.verdict import EXIT_STATUS, Verdict
from tests.conftest import ABIS

DIVERGENCE_EXIT = EXIT_STATUS[Verdict.DIVERGENCE]
NON_PIE = ("-O0", "-no-pie", "-fno-pie", "-fno-toplevel-reorder")


@pytest.mark.parametrize("abi", sorted(ABIS))
def test_different_write_buffers_stop_before_the_write(abi: str, build_program, tmp_path: Path,
                                                       run_mvee) -> None:
    a = build_program("message", abi, '-DMESSAGE="A-side"')
    b = build_program("message", abi, '-DMESSAGE="B-side"')
    out_file = tmp_path / "message.out"
    result = run_mvee("--exe", str(a), "--exe", str(b), "--", "message", str(out_file))
    assert result.returncode == DIVERGENCE_EXIT
    assert result.stdout == b"before\n"
    assert not out_file.exists()
    assert result.report["verdict"] == "divergence"
    alarm = result.report["alarm"]
    assert alarm["syscall"]["name"] == "write"
    assert "A-side" in alarm["views"][0] and "B-side" in alarm["views"][1]
    assert result.stderr.count("\n") == 1 and "divergence" in result.stderr


@pytest.mark.parametrize("abi", sorted(ABIS))
def test_different_path_argument_creates_no_file(abi: str, build_program, tmp_path: Path, run_mvee) -> None:
    a = build_program("open_path", abi, '-DPATH_SUFFIX="first"')
    b = build_program("open_path", abi, '-DPATH_SUFFIX="second"')
    result = run_mvee("--exe", str(a), "--exe", str(b), "--", "open_path", str(tmp_path))
    assert result.returncode == DIVERGENCE_EXIT
    assert result.report["alarm"]["syscall"]["name"] in ("open", "openat")
    assert list(tmp_path.glob("first")) == [] and list(tmp_path.glob("second")) == []


@pytest.mark.parametrize("abi", sorted(ABIS))
def test_identical_builds_with_o_excl_run_clean(abi: str, build_program, tmp_path: Path, run_mvee) -> None:
    program = build_program("open_path", abi)
    result = run_mvee("-n", "3", "--", str(program), str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "a").read_bytes() == b"created\n"


@pytest.mark.parametrize("abi", sorted(ABIS))
def test_crash_in_one_variant_stops_the_others(abi: str, build_program, run_mvee) -> None:
    good = build_program("crash", abi)
    bad = build_program("crash", abi, "-DCRASH")
    result = run_mvee("--exe", str(good), "--exe", str(bad), "--exe", str(good), "--", "crash")
    assert result.returncode == DIVERGENCE_EXIT
    assert result.stdout == b"before\n"
    assert result.report["variants"][1]["signal"] == "SIGSEGV"
    assert "variant 1 killed by SIGSEGV" in result.report["message"]


@pytest.mark.parametrize("abi", sorted(ABIS))
def test_layout_dependent_overwrite_never_prints_its_payload(abi: str, build_program, tmp_path: Path,
                                                             run_mvee) -> None:
    plain = build_program("overwrite", abi, *NON_PIE)
    shifted = build_program("overwrite", abi, *NON_PIE, "-DSHIFTED")
    symbols = subprocess.run(["nm", str(plain)], capture_output=True, text=True, check=True).stdout
    payload = int(next(line.split()[0] for line in symbols.splitlines() if line.endswith(" payload")), 16)
    exploit = b"A" * 16 + struct.pack("<Q" if abi == "x86_64" else "<I", payload)
    # The exploit is real: natively it takes over the plain build.
    native = subprocess.run([str(plain)], input=exploit, capture_output=True)
    assert native.stdout == b"PWNED\n"

    result = run_mvee("--exe", str(plain), "--exe", str(shifted), "--", "overwrite", stdin=exploit)
    assert b"PWNED" not in result.stdout
    assert result.returncode == DIVERGENCE_EXIT
    assert result.report["verdict"] == "divergence"
    # Harmless input runs clean in both layouts.
    benign = run_mvee("--exe", str(plain), "--exe", str(shifted), "--", "overwrite", stdin=b"hello\n")
    assert (benign.returncode, benign.stdout) == (0, b"benign\n")
