"""Shared fixtures: the C test programs, compiled per ABI, and running the monitor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

PROGRAMS = Path(__file__).parent / "programs"
ABIS = {"x86_64": "-m64", "i386": "-m32"}


@dataclass
class MveeResult:
    returncode: int
    stdout: bytes
    stderr: str
    report: dict | None


@pytest.fixture(scope="session")
def build_program(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Compile tests/programs/NAME.c for an ABI with extra flags; cached per session."""
    directory = tmp_path_factory.mktemp("programs")
    built: dict[tuple[str, str, tuple[str, ...]], Path] = {}

    def build(name: str, abi: str = "x86_64", *flags: str) -> Path:
        key = (name, abi, flags)
        if key not in built:
            suffix = "-".join(f.strip("-").replace("=", "_").replace("/", "_") for f in flags)
            output = directory / f"{name}-{abi}{'-' + suffix if suffix else ''}"
            subprocess.run(["gcc", ABIS[abi], "-O1", "-w", "-o", str(output),
                            str(PROGRAMS / f"{name}.c"), *flags], check=True)
            built[key] = output
        return built[key]

    return build


@pytest.fixture
def run_mvee(tmp_path: Path) -> Callable[..., MveeResult]:
    """Run `python -m mvee run OPTIONS -- ARGV` with a JSON report."""

    def run(*arguments: str, stdin: bytes = b"", timeout: float = 120, report: bool = True,
            cwd: Path | None = None) -> MveeResult:
        report_path = tmp_path / "report.json"
        if report_path.exists():
            report_path.unlink()
        command = [sys.executable, "-m", "mvee", "run"]
        if report:
            command += ["--report", str(report_path)]
        split = arguments.index("--") if "--" in arguments else len(arguments)
        command += [*arguments[:split], *arguments[split:]]
        completed = subprocess.run(command, input=stdin, capture_output=True, timeout=timeout,
                                   cwd=cwd, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
        data = json.loads(report_path.read_text()) if report and report_path.exists() else None
        return MveeResult(completed.returncode, completed.stdout, completed.stderr.decode(), data)

    return run
