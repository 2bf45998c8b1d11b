"""Race stress: the signal flag idioms and workers taking turns, many times each.

Real programs handle signals by a flag that their main code tests between two syscalls or
in a loop with none, or (CPython) by a handler the eval loop runs at its next check; their
threads and worker processes take turns at one job in another order in each variant
(mvee.thread_pairing). Each run of such a program under ``mvee run`` must give the native
run's stdout and exit status: a false alarm (divergence) between identical variants is
the failure this looks for.

Programs (tests/programs/), each built with ``gcc -m64`` and ``gcc -m32`` as the tests do:
* ``flags spin``: a one-shot timer, ``while (!flag) work();`` with no syscall;
* ``flags check``: a 1 kHz timer, ``work(); if (flag) ...; write()``;
* ``waiter``: ``while (!got) nanosleep()``, SIGUSR1 sent to the monitor right after the
  variants print "ready" (natively: to the program);
* ``py_alarm.py`` (/usr/bin/python3, x86_64 only): a CPython SIGALRM handler that writes
  while the main code computes and prints;
* ``kill_child``: a parent signals the child it just forked, twice, and waits for it in
  sigsuspend (a set's first signal; a follower's own instance and the monitor's copy);
* ``gil_waiter.py`` (x86_64 only): SIGUSR1 to the monitor while CPython's main thread naps
  and waits for the GIL beside a computing thread;
* ``turns``: three threads take turns at writing the next line under a mutex (their
  partners change), and ``turns -p``, three forked worker processes sharing the mutex.
Each runs ROUNDS times with ``-n 2`` and ``-n 3``, rounds interleaved over the cases so
that the machine's drifting load hits them all alike.

Run: ``scripts/stress [--rounds N] [--json PATH]``. Prints a table, writes JSON;
exits 1 if any run was not identical to native, 2 on bad options.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.bench_overhead import BenchError, machine_facts, progress, table
from mvee.signals import POLICIES

HERE = Path(__file__).resolve().parent
TEST_PROGRAMS = HERE.parent / "tests" / "programs"
DEFAULT_JSON = HERE / "results" / "stress.json"
PYTHON = "/usr/bin/python3"  # a plain interpreter, not a pyenv shim
ABIS = {"x86_64": "-m64", "i386": "-m32"}
DIVERGENCE_EXIT = 120
PY_ALARM_STEPS = "300000"  # about 0.1 s natively: some 50-100 ticks
READY = b"ready\n"
RUN_TIMEOUT_S = 120  # a run that hangs is a failure, not a stuck stress run
READY_TIMEOUT_S = 60


@dataclass(frozen=True)
class Program:
    """One flag idiom: its name (a C program and its arguments, or a Python script's), the
    ABIs it runs for, whether it waits for SIGUSR1, and the script's arguments."""

    name: str
    abis: tuple[str, ...]
    sends_sigusr1: bool = False
    script_arguments: tuple[str, ...] | None = None  # a Python script (tests/programs/NAME.py)


PROGRAMS = (Program("flags spin", ("x86_64", "i386")), Program("flags check", ("x86_64", "i386")),
            Program("waiter", ("x86_64", "i386"), sends_sigusr1=True),
            Program("py_alarm", ("x86_64",), script_arguments=(PY_ALARM_STEPS,)),
            Program("kill_child", ("x86_64", "i386")),
            Program("gil_waiter", ("x86_64",), sends_sigusr1=True, script_arguments=()),
            Program("turns 200 3", ("x86_64", "i386")), Program("turns -p 200 3", ("x86_64", "i386")))


@dataclass
class Outcome:
    returncode: int | None  # None: timed out
    stdout: bytes
    stderr: str = ""
    report: dict[str, Any] | None = None


@dataclass
class Case:
    program: Program
    abi: str
    variants: int
    argv: list[str]
    native: Outcome
    identical: int = 0
    divergent: int = 0
    other: int = 0
    failures: list[str] = field(default_factory=list)
    ways: dict[str, int] = field(default_factory=dict)  # delivered signals per way, over the runs
    partner_changes: int = 0  # over the runs (mvee.thread_pairing)

    @property
    def runs(self) -> int:
        return self.identical + self.divergent + self.other

    def record(self, round_index: int, outcome: Outcome) -> None:
        self.partner_changes += int((outcome.report or {}).get("partner_changes") or 0)
        signals = (outcome.report or {}).get("signals") or {}
        for way, figures in (signals.get("ways") or {}).items():
            self.ways[way] = self.ways.get(way, 0) + int(figures.get("delivered") or 0)
        if (outcome.returncode, outcome.stdout) == (self.native.returncode, self.native.stdout):
            self.identical += 1
            return
        if outcome.returncode == DIVERGENCE_EXIT:
            self.divergent += 1
        else:
            self.other += 1
        self.failures.append(f"round {round_index + 1}: {describe(outcome, self.native)}")

    def summary(self) -> dict[str, Any]:
        return {"program": self.program.name, "abi": self.abi, "variants": self.variants,
                "runs": self.runs, "identical": self.identical, "divergent": self.divergent,
                "other_failures": self.other, "failures": self.failures, "delivered_by_way": self.ways,
                "partner_changes": self.partner_changes}


def describe(outcome: Outcome, native: Outcome) -> str:
    """One line: why a run was not identical to native."""
    if outcome.returncode is None:
        return f"timed out after {RUN_TIMEOUT_S} s"
    report = outcome.report or {}
    message = report.get("message") or (outcome.stderr.strip().splitlines() or [""])[-1]
    if outcome.returncode != native.returncode:
        verdict = report.get("verdict")
        return f"exit status {outcome.returncode}" + (f" ({verdict})" if verdict else "") + \
            (f": {message}" if message else "")
    return f"stdout differs from native: {outcome.stdout[-120:]!r} (native {native.stdout[-120:]!r})"


# --- running one program ---


def execute(command: list[str], sends_sigusr1: bool, report: Path | None = None) -> Outcome:
    """Run to the end; for waiter, SIGUSR1 to the started process once "ready" is out.
    The process gets its own session, so a timed-out run's group is killed whole."""
    if report is not None:
        report.unlink(missing_ok=True)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    assert process.stdout is not None
    head = b""
    try:
        if sends_sigusr1:
            readable, _, _ = select.select([process.stdout], [], [], READY_TIMEOUT_S)
            head = process.stdout.readline() if readable else b""
            if head == READY:
                process.send_signal(signal.SIGUSR1)
        stdout, stderr = process.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return Outcome(None, head)
    parsed = json.loads(report.read_text()) if report is not None and report.exists() else None
    return Outcome(process.returncode, head + stdout, stderr.decode(errors="replace"), parsed)


def mvee_command(variants: int, report: Path, argv: list[str], policy: str | None) -> list[str]:
    chosen = ["--signal-policy", policy] if policy else []
    return [sys.executable, "-m", "mvee", "run", "-n", str(variants), *chosen, "--report", str(report),
            "--", *argv]


def build(program: str, abi: str, workdir: Path) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise BenchError("gcc not found: it builds the C test programs")
    output = workdir / f"{program}-{abi}"
    source = TEST_PROGRAMS / f"{program}.c"
    result = subprocess.run([gcc, ABIS[abi], "-O1", "-w", "-o", str(output), str(source)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BenchError(f"gcc {ABIS[abi]} {program}.c failed: {result.stderr.strip().splitlines()[-1:]}")
    return output


def program_argv(program: Program, abi: str, workdir: Path) -> list[str]:
    if program.script_arguments is not None:
        return [PYTHON, str(TEST_PROGRAMS / f"{program.name}.py"), *program.script_arguments]
    source, *arguments = program.name.split()
    return [str(build(source, abi, workdir)), *arguments]


def cases(options: argparse.Namespace, workdir: Path) -> list[Case]:
    found = []
    for program in PROGRAMS:
        if program.name not in options.programs:
            continue
        for abi in program.abis:
            argv = program_argv(program, abi, workdir)
            native = execute(argv, program.sends_sigusr1)
            if native.returncode != 0:
                raise BenchError(f"{program.name} ({abi}) natively: {describe(native, Outcome(0, b''))}")
            found += [Case(program, abi, n, argv, native) for n in options.variants]
    return found


# --- the stress run ---


def run(options: argparse.Namespace) -> dict[str, Any]:
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="mvee-stress-") as temporary:
        workdir = Path(temporary)
        report = workdir / "report.json"
        found = cases(options, workdir)
        for round_index in range(options.rounds):
            progress(f"round {round_index + 1}/{options.rounds}, load {os.getloadavg()[0]:.2f}")
            for case in found:
                command = mvee_command(case.variants, report, case.argv, options.signal_policy)
                case.record(round_index, execute(command, case.program.sends_sigusr1, report))
    return {"machine": machine_facts() | {"loadavg_at_start": load_start, "loadavg_at_end": os.getloadavg()},
            "rounds": options.rounds, "policy": options.signal_policy or "default",
            "results": [case.summary() for case in found]}


def render(results: dict[str, Any]) -> str:
    machine = results["machine"]
    start, end = machine["loadavg_at_start"], machine["loadavg_at_end"]
    header = (f"{machine['cpu_model']}, {machine['nproc']} CPUs, Linux {machine['kernel']}; "
              f"load average (1/5/15 min) at start {start[0]:.2f}/{start[1]:.2f}/{start[2]:.2f}, "
              f"at end {end[0]:.2f}/{end[1]:.2f}/{end[2]:.2f}; "
              f"{results['rounds']} round(s), {results['policy']} policy\n"
              "ways: signals delivered in-code / at-syscall / wait-loop, over the runs; "
              "partners: partner changes of threads or workers, over the runs")
    rows = [["program", "abi", "n", "runs", "identical", "divergent", "other failures", "ways",
             "partners", "first failure"]]
    for r in results["results"]:
        ways = r["delivered_by_way"]
        rows.append([r["program"], r["abi"], str(r["variants"]), str(r["runs"]), str(r["identical"]),
                     str(r["divergent"]), str(r["other_failures"]),
                     "/".join(str(ways.get(w, 0)) for w in ("in-code", "at-syscall", "wait-loop")),
                     str(r["partner_changes"]), r["failures"][0][:160] if r["failures"] else ""])
    return f"{header}\n\n{table(rows)}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="stress", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50, help="runs of each case (50)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"results file ({DEFAULT_JSON})")
    names = [p.name for p in PROGRAMS]
    parser.add_argument("--programs", default=",".join(names),
                        help=f"comma-separated subset of: {', '.join(names)} (all)")
    parser.add_argument("--variants", default="2,3", help="comma-separated variant counts (2,3)")
    parser.add_argument("--signal-policy", choices=POLICIES, default=None,
                        help="pass this policy to the monitor (default: the monitor's default)")
    options = parser.parse_args(argv)
    if options.rounds < 1:
        parser.error("--rounds must be at least 1")
    options.programs = [name.strip() for name in options.programs.split(",") if name.strip()]
    unknown = sorted(set(options.programs) - set(names))
    if unknown or not options.programs:
        parser.error(f"--programs: unknown {', '.join(unknown) or '(empty)'}; choose from {', '.join(names)}")
    try:
        options.variants = [int(n) for n in options.variants.split(",")]
    except ValueError:
        parser.error("--variants takes comma-separated numbers, e.g. 2,3")
    if not options.variants or any(not 2 <= n <= 16 for n in options.variants):
        parser.error("--variants: each count must be 2..16")
    return options


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    try:
        options.json.parent.mkdir(parents=True, exist_ok=True)  # fail now, not after the runs
        results = run(options)
        print(render(results))
        options.json.write_text(json.dumps(results, indent=2) + "\n")
    except (BenchError, OSError) as error:
        print(f"stress: {error}", file=sys.stderr)
        return 2
    print(f"\nJSON written to {options.json}")
    runs = sum(r["runs"] for r in results["results"])
    identical = sum(r["identical"] for r in results["results"])
    return 0 if identical == runs else 1


if __name__ == "__main__":
    sys.exit(main())
