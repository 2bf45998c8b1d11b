"""Overhead benchmark (issues 2 and 13): native runs against `mvee run -n 2`.

Three workloads, each timed as the median wall time of several runs (5):

* CPU-bound: ``gzip -9c`` of a generated file (default 50 MB) to /dev/null.
  Target: mvee <= 1.15x native.
* Syscall-heavy: a C program doing N one-byte writes to /dev/null (default
  200,000). From it the monitor's cost per synchronised syscall, next to three
  floors measured in the same run on the same program: a minimal ptrace loop in
  C (the absolute floor), one in Python with ``ptrace.binding`` and ``os.waitpid``
  (one process), and a minimal two-variant lockstep loop in Python (two processes,
  each stopped at every syscall entry and exit, resumed together: the fair floor
  for a two-variant monitor). Target: within 1.2x of the two-variant floor. Its
  0-write run gives the monitor's fixed cost to start and end (mvee minus native;
  target <= 50 ms).
* Short and syscall-heavy: ``tar cf`` of a generated tree of 200 files into a
  file. Target: mvee <= 10x native.

The monitor is byte-compiled first (as an installed package is), so a
PYTHONDONTWRITEBYTECODE environment does not make every run compile it again.

* Children (issue 12): a shell loop that forks, execs and waits for ``/bin/true``
  N times (default 50). The cost per child is the difference to the same loop with
  0 children, divided by N, native and under the monitor in the same run: each child
  is a new set of variants (two processes, one exec each, their start-up syscalls in
  lockstep).

Per-syscall cost of a tracer = (traced wall time - native wall time) / syscalls,
where syscalls is the count the tracer saw (the monitor's report for mvee).
A second figure subtracts a run of the same program with 0 writes from both
sides, so start-up (the monitor's Python start-up, the dynamic loader) drops
out: that is the marginal cost of one more write.

Run: ``scripts/bench_overhead [--runs N] [--quick] [--json PATH] ...``
This is a measurement, not a test: it prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ptrace import binding

HERE = Path(__file__).resolve().parent
PROGRAMS = HERE / "programs"
REPO = HERE.parent
DEFAULT_JSON = HERE / "results" / "overhead.json"

WALL = 0x40000000  # __WALL
PTRACE_O_TRACESYSGOOD = 0x1
PTRACE_O_TRACEEXEC = 0x10
PTRACE_O_EXITKILL = 0x100000
SYSCALL_TRAP = signal.SIGTRAP | 0x80

LAST_CPU = [0.0]  # CPU time of the last command `timed` ran
CPU_TARGET = 1.15
FLOOR_TARGET = 1.2  # against the two-variant floor
START_TARGET_S = 0.050
TAR_TARGET = 10.0
TAR_FILES = 200
VARIANTS = 2


class BenchError(Exception):
    """Aborts the benchmark with one line on stderr."""


# --- measurements ---


@dataclass
class Timing:
    """Wall times of repeated runs of one command."""

    label: str
    samples: list[float] = field(default_factory=list)
    syscalls: int | None = None  # as counted by the tracer, when there is one
    # CPU time (user + system) of the command and its descendants: what the machine's
    # load does not inflate as much as the wall time (commands run by `timed` only).
    cpu_samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def cpu_median(self) -> float | None:
        return statistics.median(self.cpu_samples) if self.cpu_samples else None

    def add(self, elapsed: float) -> None:
        """A sample of a command run by `timed`, with its CPU time."""
        self.samples.append(elapsed)
        self.cpu_samples.append(LAST_CPU[0])


@dataclass
class TracerCost:
    """One tracer's cost per syscall round trip (entry + exit stops) on the write program."""

    tracer: str
    traced_s: float
    native_s: float
    syscalls: int
    whole_run_us: float  # (traced - native) / syscalls
    marginal_us: float  # same with the 0-write run subtracted on both sides, divided by the writes


def timed(command: Sequence[str], *, stdout: int | None = subprocess.DEVNULL,
          environment: dict[str, str] | None = None) -> float:
    """Wall time of one run of `command` (its CPU time in LAST_CPU); any failure aborts
    the benchmark."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, stdout=stdout, stderr=subprocess.PIPE, check=False, env=environment)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    LAST_CPU[0] = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    if result.returncode != 0:
        raise BenchError(f"{' '.join(command)} exited with {result.returncode}: "
                         f"{result.stderr.decode(errors='replace').strip()[-500:]}")
    return elapsed


def timed_parallel(command: Sequence[str], copies: int) -> float:
    """Wall time of `copies` native runs of `command` started together: what the machine
    gives N CPU-bound processes at once, the best a monitor of N variants could reach."""
    start = time.perf_counter()
    processes = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for _ in range(copies)]
    codes = [process.wait() for process in processes]
    elapsed = time.perf_counter() - start
    if any(codes):
        raise BenchError(f"{' '.join(command)} x{copies} exited with {codes}")
    return elapsed


MVEE_OPTIONS: list[str] = []  # --tracing, when given to the benchmark
TRACED_BY: set[str] = set()  # how the variants were traced, from the reports
BASELINE: list[str] = []  # --baseline: another checkout's directory, timed in the same runs


def mvee_command(argv: Sequence[str], report: Path | None = None, options: Sequence[str] = ()) -> list[str]:
    command = [sys.executable, "-m", "mvee", "run", "-n", str(VARIANTS), *options]
    if report is not None:
        command += ["--report", str(report)]
    return command + ["--", *argv]


def timed_mvee(argv: Sequence[str], report: Path, baseline: bool = False) -> tuple[float, int]:
    """Wall time of one mvee run (of the baseline checkout's monitor, with its own
    defaults) and the number of syscalls its report counts."""
    environment = {**os.environ, "PYTHONPATH": BASELINE[0]} if baseline else None
    elapsed = timed(mvee_command(argv, report, () if baseline else MVEE_OPTIONS), environment=environment)
    data = json.loads(report.read_text())
    if data.get("verdict") != "ok":
        raise BenchError(f"mvee verdict {data.get('verdict')!r} for {argv}: {data.get('message')}")
    if not baseline:
        TRACED_BY.update(v.get("traced_by") or "ptrace-syscall" for v in data.get("variants", []))
    return elapsed, int(data.get("syscalls", 0))


def timed_runs(name: str, argv: list[str], report: Path, runs: int,
               parallel: bool = False) -> tuple[Timing, Timing, Timing, Timing, Timing]:
    """Native, mvee, the baseline's mvee (with --baseline), VARIANTS native copies at
    once (`parallel`) and the fair floor loop, interleaved, so drifting machine load
    hits all alike."""
    native, traced = Timing("native"), Timing("mvee")
    baseline, copies = Timing("mvee, baseline"), Timing(f"native x{VARIANTS} at once")
    floor = Timing(f"Python {VARIANTS}-variant lockstep loop")
    for run in range(runs):
        progress(f"{name} run {run + 1}/{runs}")
        native.add(timed(argv))
        if parallel:
            copies.samples.append(timed_parallel(argv, VARIANTS))
        floor.samples.append(timed_lockstep_floor(argv)[0])
        elapsed, traced.syscalls = timed_mvee(argv, report)
        traced.add(elapsed)
        if BASELINE:
            baseline.add(timed_mvee(argv, report, baseline=True)[0])
    return native, traced, baseline, copies, floor


def workload_result(workload: str, native: Timing, traced: Timing, baseline: Timing, floor: Timing,
                    target: float, **extra: Any) -> dict[str, Any]:
    """`floor`: the same command under the fair floor loop, the least a two-variant
    ptrace monitor in Python costs it (no interpreter start, no decoding)."""
    results = {"workload": workload, "native": summary(native), "mvee": summary(traced),
               "ratio": traced.median / native.median, "target": target,
               "lockstep_floor": summary(floor) | {"ratio": floor.median / native.median}, **extra}
    if baseline.samples:
        results["baseline"] = summary(baseline) | {"ratio": baseline.median / native.median}
    return results


def timed_c_tracer(tracer: Path, argv: Sequence[str]) -> tuple[float, int]:
    start = time.perf_counter()
    result = subprocess.run([str(tracer), *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            check=False, text=True)
    elapsed = time.perf_counter() - start
    stops = [line for line in result.stderr.splitlines() if line.startswith("stops ")]
    if result.returncode != 0 or not stops:
        raise BenchError(f"C tracer failed ({result.returncode}): {result.stderr.strip()[-500:]}")
    return elapsed, (int(stops[-1].split()[1]) + 1) // 2


def timed_python_tracer(argv: Sequence[str], environment: dict[str, str] | None = None,
                        stdout: int | None = None) -> tuple[float, int]:
    """The fair floor: fork, PTRACE_TRACEME, exec, then PTRACE_SYSCALL + os.waitpid until exit,
    re-injecting every signal at once. Returns the wall time and the syscalls seen.

    Runs in this process (no interpreter start-up), one ptrace call and one
    waitpid per stop, as little Python as a loop can have.
    """
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the tracee
        try:
            if stdout is not None:
                os.dup2(stdout, 1)
            binding.ptrace_traceme()
            os.execve(argv[0], list(argv), os.environ if environment is None else environment)
        finally:
            os._exit(127)
    _, status = os.waitpid(pid, WALL)  # the exec SIGTRAP
    binding.ptrace_setoptions(pid, PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACEEXEC | PTRACE_O_EXITKILL)
    stops = 0
    deliver = 0
    while True:
        binding.ptrace_syscall(pid, deliver)
        _, status = os.waitpid(pid, WALL)
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            break
        deliver = 0
        if os.WSTOPSIG(status) == SYSCALL_TRAP:
            stops += 1
        elif not status >> 16:  # a signal, not an event stop (a later exec)
            deliver = os.WSTOPSIG(status)
    elapsed = time.perf_counter() - start
    if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
        raise BenchError(f"Python tracer: tracee ended with status {status:#x}")
    return elapsed, (stops + 1) // 2


def timed_lockstep_floor(argv: Sequence[str]) -> tuple[float, int]:
    """The fair floor of a two-variant monitor: two copies, each stopped at every
    syscall entry and exit (PTRACE_SYSCALL), resumed together once both stopped,
    signals re-injected at once; no decoding, no comparison. Their output goes to
    /dev/null. Returns the wall time and the syscalls of one copy."""
    start = time.perf_counter()
    pids = []
    for _ in range(VARIANTS):
        pid = os.fork()
        if pid == 0:
            try:
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, 1)
                binding.ptrace_traceme()
                os.execv(argv[0], list(argv))
            finally:
                os._exit(127)
        os.waitpid(pid, WALL)  # the exec SIGTRAP
        binding.ptrace_setoptions(pid, PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACEEXEC | PTRACE_O_EXITKILL)
        pids.append(pid)
    deliver = dict.fromkeys(pids, 0)
    stops = 0
    while pids:
        for pid in pids:
            binding.ptrace_syscall(pid, deliver[pid])
        for pid in list(pids):
            _, status = os.waitpid(pid, WALL)
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                pids.remove(pid)
                if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
                    raise BenchError(f"two-variant floor: tracee ended with status {status:#x}")
                continue
            deliver[pid] = 0
            if os.WSTOPSIG(status) == SYSCALL_TRAP:
                stops += 1
            elif not status >> 16:
                deliver[pid] = os.WSTOPSIG(status)
    elapsed = time.perf_counter() - start
    return elapsed, (stops // VARIANTS + 1) // 2


# --- inputs ---


def compile_program(name: str, workdir: Path) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise BenchError("gcc not found: it builds the benchmark's C programs")
    output = workdir / name
    result = subprocess.run([gcc, "-O2", "-Wall", "-o", str(output), str(PROGRAMS / f"{name}.c")],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BenchError(f"compiling {name}.c failed: {result.stderr.strip()}")
    return output


def generate_input(path: Path, size_mb: int, seed: int = 2) -> None:
    """Deterministic mixed data: mostly word text (compressible), some random bytes (not)."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choices(letters, k=rng.randint(2, 11))) for _ in range(5000)]
    chunk = 64 * 1024
    remaining = size_mb * 1024 * 1024
    with path.open("wb") as out:
        while remaining > 0:
            size = min(chunk, remaining)
            if rng.random() < 0.1:
                data = rng.randbytes(size)
            else:
                data = " ".join(rng.choices(words, k=size // 5)).encode()[:size]
                data = data.ljust(size, b"\n")
            out.write(data)
            remaining -= size


def generate_tree(root: Path, files: int, seed: int = 3) -> None:
    """`files` small files (0.5-16 KB of text) in 10 directories."""
    rng = random.Random(seed)
    for index in range(files):
        directory = root / f"d{index % 10}"
        directory.mkdir(parents=True, exist_ok=True)
        size = rng.randint(512, 16384)
        (directory / f"f{index:03d}.txt").write_bytes(rng.randbytes(size // 2).hex().encode()[:size])


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while block := data.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


# --- the workloads ---


def verify_gzip(gzip: str, source: Path, workdir: Path) -> str:
    """Compress once natively and once under mvee into files; abort unless identical."""
    native_out, mvee_out = workdir / "native.gz", workdir / "mvee.gz"
    with native_out.open("wb") as out:
        timed([gzip, "-9c", str(source)], stdout=out.fileno())
    with mvee_out.open("wb") as out:
        timed(mvee_command([gzip, "-9c", str(source)]), stdout=out.fileno())
    native_sum, mvee_sum = sha256_of(native_out), sha256_of(mvee_out)
    if native_sum != mvee_sum:
        raise BenchError(f"gzip output under mvee differs from native: sha256 {mvee_sum} != {native_sum}")
    native_out.unlink()
    mvee_out.unlink()
    return native_sum


def bench_cpu(options: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    gzip = shutil.which("gzip")
    if gzip is None:
        raise BenchError("gzip not found")
    source = workdir / "input.txt"
    progress(f"generating {options.size_mb} MB of input")
    generate_input(source, options.size_mb)
    progress("verifying gzip output under mvee (sha256)")
    digest = verify_gzip(gzip, source, workdir)
    argv = [gzip, "-9c", str(source)]
    report = workdir / "report-gzip.json"
    native, traced, baseline, parallel, floor = timed_runs("gzip", argv, report, options.runs, parallel=True)
    return workload_result(f"gzip -9c {options.size_mb} MB", native, traced, baseline, floor, CPU_TARGET,
                           native_parallel=summary(parallel),
                           ratio_vs_native_parallel=traced.median / parallel.median, output_sha256=digest)


def bench_tar(options: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    tar = shutil.which("tar")
    if tar is None:
        raise BenchError("tar not found")
    tree = workdir / "tree"
    generate_tree(tree, TAR_FILES)
    archive = workdir / "tree.tar"
    # Relative paths from the tree's parent; a file, not /dev/null (GNU tar reads no
    # file when it writes to /dev/null).
    argv = [tar, "cf", str(archive), "-C", str(workdir), "tree"]
    report = workdir / "report-tar.json"
    native, traced, baseline, _, floor = timed_runs("tar", argv, report, runs=options.runs)
    return workload_result(f"tar cf of {TAR_FILES} files", native, traced, baseline, floor, TAR_TARGET)


def tracer_cost(name: str, full: Timing, empty: Timing, native_full: Timing, native_empty: Timing,
                writes: int) -> TracerCost:
    assert full.syscalls is not None
    extra = (full.median - empty.median) - (native_full.median - native_empty.median)
    return TracerCost(
        tracer=name,
        traced_s=full.median,
        native_s=native_full.median,
        syscalls=full.syscalls,
        whole_run_us=(full.median - native_full.median) / full.syscalls * 1e6,
        marginal_us=extra / writes * 1e6 if writes else float("nan"),
    )


def bench_syscalls(options: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    program = compile_program("writes", workdir)
    c_tracer = compile_program("min_tracer", workdir)
    report = workdir / "report-writes.json"
    measures: dict[str, Callable[[list[str]], tuple[float, int | None]]] = {
        "native": lambda argv: (timed(argv), None),
        "mvee": lambda argv: timed_mvee(argv, report),
        "c": lambda argv: timed_c_tracer(c_tracer, argv),
        "python": timed_python_tracer,
        "lockstep": timed_lockstep_floor,
    }
    if BASELINE:
        measures["baseline"] = lambda argv: timed_mvee(argv, report, baseline=True)
    counts = (options.writes, 0)
    timings = {key: {count: Timing(key) for count in counts} for key in measures}
    for run in range(options.runs):  # interleaved, so drifting machine load hits all alike
        progress(f"writes run {run + 1}/{options.runs}: native, mvee -n {VARIANTS}, C floor, Python floors")
        for count in counts:
            argv = [str(program), str(count)]
            for key, measure in measures.items():
                elapsed, syscalls = measure(argv)
                if key in ("native", "mvee", "baseline"):  # run by `timed`
                    timings[key][count].add(elapsed)
                else:
                    timings[key][count].samples.append(elapsed)
                timings[key][count].syscalls = syscalls
    return syscall_results(timings, options.writes)


def syscall_results(timings: dict[str, dict[int, Timing]], writes: int) -> dict[str, Any]:
    native = timings["native"]
    names = {"mvee": f"mvee run -n {VARIANTS}",
             "lockstep": f"Python {VARIANTS}-variant lockstep loop (fair floor)",
             "python": "Python minimal loop, one process", "c": "C minimal loop, one process"}
    if "baseline" in timings:
        names["baseline"] = f"mvee run -n {VARIANTS}, baseline checkout"
    costs = {key: tracer_cost(name, timings[key][writes], timings[key][0], native[writes], native[0], writes)
             for key, name in names.items()}
    monitor = costs["mvee"]
    return {
        "workload": f"{writes} writes",
        "writes": writes,
        "cpu_by_count": {str(count): {key: timings[key][count].cpu_median for key in timings
                                      if key in ("native", "mvee", "baseline")} for count in (writes, 0)},
        "native": summary(native[writes]),
        "mvee": summary(timings["mvee"][writes]),
        "ratio": timings["mvee"][writes].median / native[writes].median,
        "zero_write_runs": {key: summary(by_count[0]) for key, by_count in timings.items()},
        "per_syscall": {key: asdict(cost) for key, cost in costs.items()},
        "start_and_end_s": timings["mvee"][0].median - native[0].median,
        **({"baseline_start_and_end_s": timings["baseline"][0].median - native[0].median}
           if "baseline" in timings else {}),
        "start_target_s": START_TARGET_S,
        "monitor_vs_lockstep_floor": monitor.marginal_us / costs["lockstep"].marginal_us,
        "monitor_vs_python_floor": monitor.marginal_us / costs["python"].marginal_us,
        "monitor_vs_c_floor": monitor.marginal_us / costs["c"].marginal_us,
        "monitor_vs_python_floor_whole_run": monitor.whole_run_us / costs["python"].whole_run_us,
        "monitor_vs_c_floor_whole_run": monitor.whole_run_us / costs["c"].whole_run_us,
        "floor_target": FLOOR_TARGET,
    }


CHILD_LOOP = 'i=0; while [ "$i" -lt "$1" ]; do /bin/true; i=$((i + 1)); done'


def bench_children(options: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    report = workdir / "report-children.json"
    counts = (options.children, 0)
    native = {count: Timing("native") for count in counts}
    traced = {count: Timing("mvee") for count in counts}
    for run in range(options.runs):  # interleaved, so drifting machine load hits all alike
        progress(f"children run {run + 1}/{options.runs}: native, mvee -n {VARIANTS}")
        for count in counts:
            argv = ["/bin/sh", "-c", CHILD_LOOP, "loop", str(count)]
            native[count].samples.append(timed(argv))
            elapsed, traced[count].syscalls = timed_mvee(argv, report)
            traced[count].samples.append(elapsed)
    children = options.children
    per_child = {key: (timings[children].median - timings[0].median) / children * 1000
                 for key, timings in (("native", native), ("mvee", traced))}
    return {
        "workload": f"{children} x fork + exec + wait of /bin/true in a shell loop",
        "native": summary(native[children]),
        "mvee": summary(traced[children]),
        "zero_child_runs": {"native": summary(native[0]), "mvee": summary(traced[0])},
        "per_child_ms": per_child,
        "ratio": per_child["mvee"] / per_child["native"],
    }


def summary(timing: Timing) -> dict[str, Any]:
    return asdict(timing) | {"median": timing.median, "cpu_median": timing.cpu_median}


# --- output ---


def machine_facts() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "load_before": " ".join(f"{load:.1f}" for load in os.getloadavg()),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "gzip": first_line([shutil.which("gzip") or "gzip", "--version"]),
        "gcc": first_line([shutil.which("gcc") or "gcc", "--version"]),
        "mvee_commit": first_line(["git", "-C", str(REPO), "rev-parse", "HEAD"]),
        "mvee_uncommitted_changes": first_line(["git", "-C", str(REPO), "status", "--porcelain", "--",
                                                "mvee"]) is not None,
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def first_line(command: list[str]) -> str | None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError:
        return None
    lines = result.stdout.splitlines()
    return lines[0].strip() if result.returncode == 0 and lines else None


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                       for i, (cell, width) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def verdict(value: float, target: float) -> str:
    return "ok" if value <= target else "MISSED"


def floor_row(result: dict[str, Any], ratio_format: str) -> list[str]:
    floor = result["lockstep_floor"]
    return [f"  Python {VARIANTS}-variant lockstep loop (floor)", f"{result['native']['median']:.3f}",
            f"{floor['median']:.3f}", f"{floor['ratio']:{ratio_format}}x", "(reference)", ""]


def render(results: dict[str, Any]) -> str:
    cpu, sys_, tar = results["cpu_bound"], results["syscall_heavy"], results["tar"]
    workloads = [["workload", "native s", f"mvee -n {VARIANTS} s", "ratio", "target", "result"]]
    workloads.append([cpu["workload"], f"{cpu['native']['median']:.3f}", f"{cpu['mvee']['median']:.3f}",
                      f"{cpu['ratio']:.2f}x", f"<= {CPU_TARGET:.2f}x", verdict(cpu["ratio"], CPU_TARGET)])
    workloads.append([f"  vs {VARIANTS} native copies at once", f"{cpu['native_parallel']['median']:.3f}",
                      f"{cpu['mvee']['median']:.3f}", f"{cpu['ratio_vs_native_parallel']:.2f}x",
                      "(reference)", ""])
    workloads.append(floor_row(cpu, ".2f"))
    if "baseline" in cpu:
        workloads.append(["  baseline checkout", f"{cpu['native']['median']:.3f}",
                          f"{cpu['baseline']['median']:.3f}", f"{cpu['baseline']['ratio']:.2f}x", "", ""])
    workloads.append([tar["workload"], f"{tar['native']['median']:.3f}", f"{tar['mvee']['median']:.3f}",
                      f"{tar['ratio']:.1f}x", f"<= {TAR_TARGET:.0f}x", verdict(tar["ratio"], TAR_TARGET)])
    workloads.append(floor_row(tar, ".1f"))
    if "baseline" in tar:
        workloads.append(["  baseline checkout", f"{tar['native']['median']:.3f}",
                          f"{tar['baseline']['median']:.3f}", f"{tar['baseline']['ratio']:.1f}x", "", ""])
    workloads.append([sys_["workload"], f"{sys_['native']['median']:.3f}", f"{sys_['mvee']['median']:.3f}",
                      f"{sys_['ratio']:.1f}x", "see below", ""])
    start = sys_["start_and_end_s"]
    workloads.append(["start and end (0 writes, mvee - native)", "", f"{start:.3f}", "",
                      f"<= {START_TARGET_S:.3f} s", verdict(start, START_TARGET_S)])
    if "baseline_start_and_end_s" in sys_:
        workloads.append(["  baseline checkout", "", f"{sys_['baseline_start_and_end_s']:.3f}", "", "", ""])
    children = results["children"]
    per_child = children["per_child_ms"]
    workloads.append([children["workload"], f"{children['native']['median']:.3f}",
                      f"{children['mvee']['median']:.3f}", f"{children['ratio']:.1f}x", "(per child)", ""])
    workloads.append(["  per child, ms (0-child loop subtracted)", f"{per_child['native']:.2f}",
                      f"{per_child['mvee']:.2f}", f"{children['ratio']:.1f}x", "", ""])
    costs = [["tracer (same write program)", "traced s", "syscalls", "us/syscall", "us/syscall marginal",
              "mvee / this"]]
    monitor = sys_["per_syscall"]["mvee"]
    for cost in sys_["per_syscall"].values():
        costs.append([cost["tracer"], f"{cost['traced_s']:.3f}", str(cost["syscalls"]),
                      f"{cost['whole_run_us']:.1f}", f"{cost['marginal_us']:.1f}",
                      f"{monitor['marginal_us'] / cost['marginal_us']:.2f}x"])
    cpu_rows = [["CPU time (command and its variants)", "native s", "mvee s", "baseline s"]]
    for result in (cpu, tar):
        cpu_rows.append([result["workload"], *(f"{result[key]['cpu_median']:.3f}" if key in result else ""
                                               for key in ("native", "mvee", "baseline"))])
    for count, label in ((sys_["writes"], sys_["workload"]), (0, "0 writes")):
        runs = sys_["cpu_by_count"][str(count)]
        cpu_rows.append([label, *(f"{runs[key]:.3f}" if key in runs else ""
                                  for key in ("native", "mvee", "baseline"))])
    ratio = sys_["monitor_vs_lockstep_floor"]
    floor_line = (f"monitor vs two-variant floor (marginal): {ratio:.2f}x, target <= {FLOOR_TARGET:.1f}x: "
                  f"{verdict(ratio, FLOOR_TARGET)}; vs one-process Python floor: "
                  f"{sys_['monitor_vs_python_floor']:.2f}x; vs C floor: {sys_['monitor_vs_c_floor']:.2f}x")
    machine = results["machine"]
    header = (f"{machine['cpu_model']}, {machine['nproc']} CPUs, Linux {machine['kernel']}, "
              f"Python {machine['python']}, load {machine['load_before']}, median of {results['runs']} "
              f"runs; variants traced by {', '.join(results['traced_by']) or '?'}")
    return "\n\n".join([header, table(workloads), table(costs), floor_line, table(cpu_rows)])


def progress(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench_overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=None, help="runs per measurement, median taken (5)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"results file ({DEFAULT_JSON})")
    parser.add_argument("--size-mb", type=int, default=None, help="gzip input size in MB (50)")
    parser.add_argument("--writes", type=int, default=None, help="writes of the syscall workload (200000)")
    parser.add_argument("--children", type=int, default=None, help="children of the shell loop (50)")
    parser.add_argument("--quick", action="store_true", help="small sizes and 1 run, for smoke checks")
    parser.add_argument("--cpu", type=int, default=None,
                        help="pin the benchmark and everything it runs to this CPU (default: unpinned)")
    parser.add_argument("--tracing", choices=("seccomp", "ptrace-syscall"), default=None,
                        help="mvee's --tracing (default: the monitor's own default)")
    parser.add_argument("--baseline", type=Path, default=None, metavar="DIR",
                        help="also time the monitor of another checkout (DIR holds its mvee/) in the same "
                             "runs, with its own defaults: a before/after")
    options = parser.parse_args(argv)
    quick = options.quick
    options.runs = options.runs if options.runs is not None else (1 if quick else 5)
    options.size_mb = options.size_mb if options.size_mb is not None else (2 if quick else 50)
    options.writes = options.writes if options.writes is not None else (5000 if quick else 200000)
    options.children = options.children if options.children is not None else (5 if quick else 50)
    if options.runs < 1 or options.size_mb < 1 or options.writes < 1 or options.children < 1:
        parser.error("--runs, --size-mb, --writes and --children must be at least 1")
    return options


def byte_compile(package: Path) -> None:
    """The monitor the runs start, byte-compiled as an installed one is."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=False,
                   stdout=subprocess.DEVNULL)


def run(options: argparse.Namespace) -> dict[str, Any]:
    if options.cpu is not None:
        os.sched_setaffinity(0, {options.cpu})
    if options.tracing:
        MVEE_OPTIONS[:] = ["--tracing", options.tracing]
    if options.baseline:
        if not (options.baseline / "mvee" / "__main__.py").is_file():
            raise BenchError(f"--baseline {options.baseline}: no mvee/ there")
        BASELINE[:] = [str(options.baseline.resolve())]
        byte_compile(options.baseline / "mvee")
    import mvee

    byte_compile(Path(mvee.__file__).parent)
    with tempfile.TemporaryDirectory(prefix="mvee-bench-") as temporary:
        workdir = Path(temporary)
        results: dict[str, Any] = {
            "machine": machine_facts(),
            "runs": options.runs,
            "pinned_cpu": options.cpu,
            "quick": options.quick,
        }
        results["cpu_bound"] = bench_cpu(options, workdir)
        results["syscall_heavy"] = bench_syscalls(options, workdir)
        results["tar"] = bench_tar(options, workdir)
        results["children"] = bench_children(options, workdir)
    results["traced_by"] = sorted(TRACED_BY)
    results["monitor"] = str(Path(mvee.__file__).parent)
    results["baseline"] = BASELINE[0] if BASELINE else None
    return results


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    try:
        options.json.parent.mkdir(parents=True, exist_ok=True)  # fail now, not after minutes of runs
        results = run(options)
    except (BenchError, OSError) as error:
        print(f"bench_overhead: {error}", file=sys.stderr)
        return 1
    print(render(results))
    options.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nJSON written to {options.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
