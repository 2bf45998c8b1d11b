"""Shared fixtures: the C test programs, compiled per ABI, and running the monitor (tests/mvee_run.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import corpus_run, mvee_run
from tests.mvee_run import MveeResult

PROGRAMS = Path(__file__).parent / "programs"
ABIS = {"x86_64": "-m64", "i386": "-m32"}


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
    """`mvee run OPTIONS -- ARGV` to its end, with a JSON report in the test's directory."""

    def run(*arguments: str, **options: object) -> MveeResult:
        return mvee_run.run_mvee("run", *arguments, report=tmp_path / "report.json", **options)

    return run


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The corpus's summary line (tests/test_corpus.py), from every worker's reports."""
    outcomes, refused = [], {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            properties = dict(getattr(report, "user_properties", ()))
            if getattr(report, "when", None) == "call" and "corpus" in properties:
                outcomes.append(properties["corpus"])
                if "corpus-refused" in properties:
                    name = report.nodeid.split("[")[-1].rstrip("]")
                    refused.setdefault(properties["corpus-refused"], []).append(name)
    if outcomes:
        terminalreporter.write_sep("-", "corpus")
        for reason, names in sorted(refused.items(), key=lambda item: -len(item[1])):
            terminalreporter.write_line(f"refused ({len(names)}): {reason}: {' '.join(sorted(names))}")
        terminalreporter.write_line(f"corpus: {corpus_run.summary(outcomes)}")
