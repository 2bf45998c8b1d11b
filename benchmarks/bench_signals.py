"""Signal-delivery benchmark (issue 3): how late timer signals reach CPU-bound variants.

Workloads in the spirit of Orchestra's SPEC CPU2000 runs: the real Debian
``gzip -9c`` and ``bzip2 -9c`` (SPEC's 164.gzip and 256.bzip2) on generated
input, and three integer kernels in C with no syscall in their hot loops
(benchmarks/programs/: sieve, lcg_hash, sort). Every workload runs with
tests/programs/tick_preload.c preloaded: a POSIX timer with absolute expiries at
100 Hz or 1 kHz and a SIGALRM handler that measures, inside the process, handler
entry against the tick's exact schedule (see that file for how).

Each (workload, Hz) runs
* natively;
* under the floor: a minimal single-process tracer in Python (fork, PTRACE_TRACEME,
  exec, PTRACE_SYSCALL + waitpid, every signal re-injected at once);
* under ``mvee run`` (MVEE_MODES): 2 variants with each ``--signal-policy``
  (``converge``, ``sync``, ``at-syscall``) and ``--wait-loop sleep``, and ``converge``
  with ``--wait-loop spin``; 4 variants (more than this machine's 2 cores) with
  ``converge`` and each wait loop. The report gives the monitor-side delay (first
  variant's signal stop to last release) and how each signal was delivered (``ways``:
  in its code, at a common syscall, from the wait loop).
The in-variant delay is the figure comparable across native, floor and mvee.
The preload is started through ``/usr/bin/env LD_PRELOAD=...`` in every mode, so
the monitor itself (a Python process) never loads it.

The flag idioms of tests/programs/ run too, with their own timers and no preload
(Hz "own"): ``flags spin`` (``while (!flag) work();``), ``flags check`` (``work();
if (flag) ...; write()``) and ``py_alarm.py`` (a CPython handler that writes while the
main code computes and prints): wall time, ways, and whether the output is native's.

Targets (issue 10; 2 variants, 1 kHz): under ``converge``, in-variant and monitor mean
delay < 0.5 ms and p99 <= 2 ms, in-variant mean <= 2x the floor's, no more ticks lost
than natively; gzip's wall time under ``converge`` <= 1.10x under ``sync``; 4 variants
with ``--wait-loop sleep`` <= 2.5x native wall time; the flag idioms end as natively
under ``converge``; the plot shows the three policies.

Run: ``scripts/bench_signals [--quick] [--runs N] [--scale F] [--hz 100,1000] [--json PATH] [--png PATH]``.
This is a measurement, not a test: it prints a table and writes JSON and a PNG.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.bench_overhead import (
    BenchError,
    first_line,
    generate_input,
    machine_facts,
    progress,
    table,
    timed_python_tracer,
)
from mvee.signals import POLICIES

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PROGRAMS = HERE / "programs"
TEST_PROGRAMS = REPO / "tests" / "programs"
PRELOAD_SOURCE = TEST_PROGRAMS / "tick_preload.c"
DEFAULT_JSON = HERE / "results" / "signals.json"
DEFAULT_PNG = HERE / "results" / "signals.png"
ENV = "/usr/bin/env"
PYTHON = "/usr/bin/python3"  # a plain interpreter, not a pyenv shim
OWN_TIMER = 0  # the Hz of a workload that arms its own timer (the flag idioms)
WAYS = ("in-code", "at-syscall", "wait-loop")  # the report's signals.ways
# (variants, policy, wait loop) of the monitored runs; --quick keeps the 2-variant ones
MVEE_MODES = ((2, "converge", "sleep"), (2, "sync", "sleep"), (2, "at-syscall", "sleep"),
              (2, "converge", "spin"), (4, "converge", "sleep"), (4, "converge", "spin"))


# the plot's line style per (variants, wait loop) of a monitored run
LINE_STYLES = {(2, "sleep"): "-", (2, "spin"): ":", (4, "sleep"): "--", (4, "spin"): "-."}


# tick_preload.c's results file
TICK_MAGIC = 0x4B54564D
HEADER = struct.Struct("<6I40x")
SLOT = struct.Struct("<2I10Q40x")

TARGET_MEAN_MS = 0.5
TARGET_FLOOR_RATIO = 2.0
TARGET_P99_MS = 2.0
TARGET_VS_SYNC = 1.10  # gzip under the timer, converge's wall time against sync's
TARGET_FOUR_ON_TWO = 2.5  # 4 variants on 2 cores, --wait-loop sleep, against native wall time
LOST_TOLERANCE_PP = 1.0  # percentage points of expiries a monitored run may lose beyond native
MVEE_TIMEOUT_S = 900


# --- the preload's results ---


@dataclass
class TickSlot:
    """One process's view: its ticks and delay samples (ns)."""

    hz: int
    handled: int
    expired: int
    sum_ns: int
    max_ns: int
    overruns: int
    other: int
    samples: list[int]


def read_ticks(path: Path) -> list[TickSlot]:
    """The finished slots of a results file written by tick_preload.so."""
    data = path.read_bytes() if path.exists() else b""
    if len(data) < HEADER.size:
        return []
    magic, _version, claimed, slots, capacity, slot_size = HEADER.unpack_from(data, 0)
    if magic != TICK_MAGIC:
        raise BenchError(f"{path}: not a tick_preload results file")
    found = []
    for index in range(min(claimed, slots)):
        offset = HEADER.size + index * slot_size
        state, hz, _period, _first, _end, handled, expired, sum_ns, max_ns, overruns, other, stored = \
            SLOT.unpack_from(data, offset)
        if state != 2:
            continue  # the destructor did not run (the process was killed)
        stored = min(stored, capacity)
        samples = list(struct.unpack_from(f"<{stored}Q", data, offset + SLOT.size))
        found.append(TickSlot(hz, handled, expired, sum_ns, max_ns, overruns, other, samples))
    return found


# --- one configuration's results over its runs ---


@dataclass
class Config:
    workload: str
    hz: int
    mode: str  # "native", "floor", "mvee"
    variants: int = 1
    policy: str = ""
    wait_loop: str = ""
    walls: list[float] = field(default_factory=list)
    slots: list[TickSlot] = field(default_factory=list)
    monitor: list[dict[str, Any]] = field(default_factory=list)  # report["signals"] per run
    failures: list[str] = field(default_factory=list)
    output_mismatch: bool = False

    @property
    def label(self) -> str:
        if self.mode == "mvee":
            return f"mvee -n {self.variants} {self.policy}/{self.wait_loop}"
        return {"native": "native", "floor": "floor (Python tracer)"}[self.mode]

    def summary(self) -> dict[str, Any]:
        handled = sum(s.handled for s in self.slots)
        expired = sum(s.expired for s in self.slots)
        samples = sorted(x for s in self.slots for x in s.samples)
        inside = {
            "mean": sum(s.sum_ns for s in self.slots) / handled / 1e6 if handled else None,
            "p50": percentile(samples, 0.5) / 1e6 if samples else None,
            "p99": percentile(samples, 0.99) / 1e6 if samples else None,
            "max": max(s.max_ns for s in self.slots) / 1e6 if handled else None,
        }
        return {
            "workload": self.workload, "hz": self.hz, "mode": self.mode, "label": self.label,
            "variants": self.variants, "policy": self.policy or None, "wait_loop": self.wait_loop or None,
            "runs_ok": len(self.walls), "failures": self.failures, "output_mismatch": self.output_mismatch,
            "wall_s": {"median": statistics.median(self.walls) if self.walls else None,
                       "samples": self.walls},
            "ticks": {"processes": len(self.slots), "handled": handled, "expired": expired,
                      "lost": expired - handled,
                      "lost_pct": 100 * (expired - handled) / expired if expired else None,
                      "kernel_overruns": sum(s.overruns for s in self.slots),
                      "other_signals": sum(s.other for s in self.slots)},
            "delay_in_variant_ms": inside,
            "delay_monitor_ms": monitor_delays(self.monitor),
            "monitor_delivered": sum(int(m.get("delivered") or 0) for m in self.monitor) if self.monitor
            else None,
            "loop_trap": sorted({str(m["loop_trap"]) for m in self.monitor if m.get("loop_trap")}) or None,
            "delivered_by_way": delivered_by_way(self.monitor) if self.monitor else None,
        }


def percentile(ordered: Sequence[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def monitor_delays(reports: list[dict[str, Any]]) -> dict[str, float | None]:
    """Merge the monitor's per-run delay summaries: mean weighted by deliveries,
    p50/p99 the median over runs, max the max."""
    runs = [(int(r.get("delivered") or 0), r.get("delay_ms") or {}) for r in reports]
    runs = [(count, delays) for count, delays in runs if count and delays.get("mean") is not None]
    if not runs:
        return {"mean": None, "p50": None, "p99": None, "max": None}
    total = sum(count for count, _ in runs)
    return {
        "mean": sum(count * delays["mean"] for count, delays in runs) / total,
        "p50": statistics.median(delays["p50"] for _, delays in runs),
        "p99": statistics.median(delays["p99"] for _, delays in runs),
        "max": max(delays["max"] for _, delays in runs),
    }


def delivered_by_way(reports: list[dict[str, Any]]) -> dict[str, int]:
    """Signals delivered in each way (in-code, at-syscall, wait-loop), summed over runs."""
    totals: dict[str, int] = {}
    for report in reports:
        for way, figures in (report.get("ways") or {}).items():
            totals[way] = totals.get(way, 0) + int(figures.get("delivered") or 0)
    return totals


# --- running things ---


@dataclass(frozen=True)
class Workload:
    name: str
    argv: list[str]
    preload: bool = True  # False: the program arms its own timer (a flag idiom)


class Runner:
    def __init__(self, workdir: Path, preload: Path) -> None:
        self.workdir = workdir
        self.preload = preload
        self.ticks = workdir / "ticks.bin"
        self.stdout = workdir / "stdout"
        self.report = workdir / "report.json"
        self.native_digest: dict[str, str] = {}

    def wrapped(self, workload: Workload) -> list[str]:
        if not workload.preload:
            return workload.argv
        return [ENV, f"LD_PRELOAD={self.preload}", *workload.argv]

    def environment(self, hz: int) -> dict[str, str]:
        return os.environ | {"MVEE_TICK_HZ": str(hz), "MVEE_TICK_OUT": str(self.ticks)}

    def measure(self, config: Config, workload: Workload) -> None:
        self.ticks.unlink(missing_ok=True)
        self.report.unlink(missing_ok=True)
        argv = self.wrapped(workload)
        try:
            if config.mode == "native":
                wall = self._run(argv, config.hz)
            elif config.mode == "floor":
                wall = self._run_floor(argv, config.hz)
            else:
                command = [sys.executable, "-m", "mvee", "run", "-n", str(config.variants),
                           "--signal-policy", config.policy, "--wait-loop", config.wait_loop,
                           "--report", str(self.report), "--", *argv]
                wall = self._run(command, config.hz, monitored=True)
                report = json.loads(self.report.read_text())
                config.monitor.append(report.get("signals") or {})
                if report.get("verdict") != "ok":
                    raise BenchError(f"verdict {report.get('verdict')}: {report.get('message')}")
        except BenchError as error:
            config.failures.append(str(error))
            progress(f"  FAILED {config.workload} {config.hz} Hz {config.label}: {error}")
            return
        digest = hashlib.sha256(self.stdout.read_bytes()).hexdigest()
        expected = self.native_digest.setdefault(workload.name, digest)
        config.output_mismatch |= digest != expected
        config.walls.append(wall)
        config.slots.extend(read_ticks(self.ticks))

    def _run(self, command: list[str], hz: int, monitored: bool = False) -> float:
        with self.stdout.open("wb") as out:
            start = time.perf_counter()
            try:
                result = subprocess.run(command, stdout=out, stderr=subprocess.PIPE, env=self.environment(hz),
                                        check=False, timeout=MVEE_TIMEOUT_S if monitored else None)
            except subprocess.TimeoutExpired as error:
                raise BenchError(f"timed out after {MVEE_TIMEOUT_S} s") from error
            elapsed = time.perf_counter() - start
        if result.returncode != 0:
            stderr = result.stderr.decode(errors="replace").strip()
            raise BenchError(f"exit status {result.returncode}: {stderr[-400:]}")
        return elapsed

    def _run_floor(self, argv: list[str], hz: int) -> float:
        """The floor: one traced process, stopped at every syscall entry and exit and
        every signal, each signal re-injected at once. Runs in this process."""
        with self.stdout.open("wb") as out:
            elapsed, _ = timed_python_tracer(argv, self.environment(hz), out.fileno())
        return elapsed


# --- inputs ---


def compile_c(source: Path, output: Path, *extra: str) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise BenchError("gcc not found: it builds the benchmark's C programs")
    result = subprocess.run([gcc, "-O2", "-Wall", "-Wextra", *extra, "-o", str(output), str(source)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BenchError(f"compiling {source.name} failed: {result.stderr.strip()}")
    return output


def workloads(options: argparse.Namespace, workdir: Path) -> list[Workload]:
    scale = options.scale
    found: list[Workload] = []
    for tool, size_mb in (("gzip", 30), ("bzip2", 10))[:1 if options.quick else 2]:
        path = shutil.which(tool)
        if path is None:
            raise BenchError(f"{tool} not found")
        size = max(1, round(size_mb * scale))
        source = workdir / f"input-{size}MB.txt"
        if not source.exists():
            progress(f"generating {size} MB of input")
            generate_input(source, size)
        found.append(Workload(f"{tool} -9c {size} MB", [path, "-9c", str(source)]))
    kernels = {} if options.quick else {"sieve": ["4000000", str(max(1, round(60 * scale)))],
               "lcg_hash": [str(max(1, round(200 * scale)))],
               "sort": ["1000000", str(max(1, round(4 * scale)))]}
    for name, arguments in kernels.items():
        program = compile_c(PROGRAMS / f"{name}.c", workdir / name)
        found.append(Workload(f"{name} {' '.join(arguments)}", [str(program), *arguments]))
    return (found[:1] if options.quick else found) + flag_idioms(options, workdir)


def flag_idioms(options: argparse.Namespace, workdir: Path) -> list[Workload]:
    """tests/programs' flag idioms, with their own timers (no preload)."""
    flags = compile_c(TEST_PROGRAMS / "flags.c", workdir / "flags")
    steps = str(max(10, round(3_000_000 * options.scale)))  # 3 M steps: about 1 s natively here
    return [Workload("flags spin", [str(flags), "spin"], preload=False),
            Workload("flags check", [str(flags), "check"], preload=False),
            Workload(f"py_alarm {steps}", [PYTHON, str(TEST_PROGRAMS / "py_alarm.py"), steps], preload=False)]


def configs_for(workload: Workload, hz: int, variant_counts: Sequence[int]) -> list[Config]:
    configs = [Config(workload.name, hz, "native"), Config(workload.name, hz, "floor")]
    configs += [Config(workload.name, hz, "mvee", count, policy, wait_loop)
                for count, policy, wait_loop in MVEE_MODES if count in variant_counts]
    return configs


# --- the benchmark ---


Samples = dict[tuple[str, int, str], list[float]]  # (workload, Hz, label) -> in-variant delays, ms


def run(options: argparse.Namespace) -> tuple[dict[str, Any], Samples]:
    """All configurations, interleaved run by run; the results and the raw samples for the plot."""
    machine = machine_facts() | {"bzip2": bzip2_version(), "loadavg_at_start": os.getloadavg()}
    machine["mvee_uncommitted_changes"] = first_line(["git", "-C", str(REPO), "status", "--porcelain",
                                                      "--", "mvee"]) is not None
    with tempfile.TemporaryDirectory(prefix="mvee-bench-signals-") as temporary:
        workdir = Path(temporary)
        preload = compile_c(PRELOAD_SOURCE, workdir / "tick_preload.so", "-shared", "-fPIC")
        jobs = workloads(options, workdir)
        runner = Runner(workdir, preload)
        table_configs: list[tuple[Workload, Config]] = []
        for workload in jobs:
            for hz in options.hz if workload.preload else [OWN_TIMER]:
                table_configs += [(workload, c) for c in configs_for(workload, hz, options.variants)]
        for run_index in range(options.runs):  # interleaved, so drifting load hits all alike
            for number, (workload, config) in enumerate(table_configs, 1):
                progress(f"run {run_index + 1}/{options.runs} [{number}/{len(table_configs)}] "
                         f"{workload.name}, {config.hz} Hz, {config.label}")
                runner.measure(config, workload)
    rows = [config.summary() for _, config in table_configs]
    samples = {(c.workload, c.hz, c.label): [x / 1e6 for s in c.slots for x in s.samples]
               for _, c in table_configs}
    add_ratios(rows)
    machine["loadavg_at_end"] = os.getloadavg()
    results = {"machine": machine, "runs": options.runs, "quick": options.quick, "hz": options.hz,
               "variants": options.variants, "scale": options.scale, "results": rows,
               "targets": check_targets(rows)}
    return results, samples


def bzip2_version() -> str | None:
    path = shutil.which("bzip2")
    if path is None:
        return None
    result = subprocess.run([path, "--help"], capture_output=True, text=True, check=False)
    lines = result.stderr.splitlines()
    return lines[0].strip() if lines else None


def add_ratios(rows: list[dict[str, Any]]) -> None:
    natives = {(r["workload"], r["hz"]): r for r in rows if r["mode"] == "native"}
    for row in rows:
        native = natives.get((row["workload"], row["hz"]))
        wall, base = row["wall_s"]["median"], native["wall_s"]["median"] if native else None
        row["wall_ratio"] = wall / base if wall and base else None


def below(value: float | None, limit: float | None) -> bool:
    return value is not None and limit is not None and value < limit


def at_most(value: float | None, limit: float | None) -> bool:
    return value is not None and limit is not None and value <= limit


def check_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, per workload: 2 variants at 1 kHz under converge (delays,
    lost ticks, gzip against sync), 4 variants with the sleeping wait loop against native,
    and the flag idioms ending as natively under converge."""
    checks: list[dict[str, Any]] = []
    by_key = {(r["workload"], r["hz"], r["label"]): r for r in rows}
    converge = Config("", 0, "mvee", 2, "converge", "sleep").label
    sync = Config("", 0, "mvee", 2, "sync", "sleep").label
    four = Config("", 0, "mvee", 4, "converge", "sleep").label
    for row in rows:
        name, hz = row["workload"], row["hz"]

        def add(target: str, value: float | None, met: bool, unit: str = "ms", workload: str = name) -> None:
            checks.append({"workload": workload, "target": target, "value": value, "unit": unit, "met": met})

        if row["label"] == converge and hz == OWN_TIMER:
            add("flag idiom ends as natively (converge)", float(len(row["failures"])),
                row["runs_ok"] > 0 and not row["failures"] and not row["output_mismatch"], "failed runs")
        if hz != 1000:
            continue
        if row["label"] == four:
            add("4 variants, sleep: wall <= 2.5x native", row["wall_ratio"],
                at_most(row["wall_ratio"], TARGET_FOUR_ON_TWO), "x")
        if row["label"] != converge:
            continue
        floor = by_key.get((name, 1000, "floor (Python tracer)"))
        native = by_key.get((name, 1000, "native"))
        inside, monitor = row["delay_in_variant_ms"], row["delay_monitor_ms"]
        floor_mean = floor["delay_in_variant_ms"]["mean"] if floor else None
        ratio = inside["mean"] / floor_mean if inside["mean"] is not None and floor_mean else None
        lost = row["ticks"]["lost_pct"]
        native_lost = native["ticks"]["lost_pct"] if native else None
        add("in-variant mean < 0.5 ms", inside["mean"], below(inside["mean"], TARGET_MEAN_MS))
        add("monitor mean < 0.5 ms", monitor["mean"], below(monitor["mean"], TARGET_MEAN_MS))
        add("in-variant mean <= 2x floor's", ratio, at_most(ratio, TARGET_FLOOR_RATIO), "x")
        add("in-variant p99 <= 2 ms", inside["p99"], at_most(inside["p99"], TARGET_P99_MS))
        add("monitor p99 <= 2 ms", monitor["p99"], at_most(monitor["p99"], TARGET_P99_MS))
        add(f"lost ticks <= native + {LOST_TOLERANCE_PP:g} pp", lost,
            at_most(lost, native_lost + LOST_TOLERANCE_PP if native_lost is not None else None), "%")
        against = by_key.get((name, 1000, sync))
        if name.startswith("gzip") and against:
            wall, base = row["wall_s"]["median"], against["wall_s"]["median"]
            vs_sync = wall / base if wall and base else None
            add("gzip: converge wall <= 1.10x sync's", vs_sync, at_most(vs_sync, TARGET_VS_SYNC), "x")
    return checks


def plot_target(plotted: set[str] | None) -> dict[str, Any]:
    """The plot shows the three policies (2 variants): a check made after plotting
    (None: no plot was drawn)."""
    shown = [p for p in POLICIES if Config("", 0, "mvee", 2, p, "sleep").label in (plotted or set())]
    return {"workload": "(plot)", "target": "plot shows the three policies",
            "value": float(len(shown)) if plotted is not None else None, "unit": "policies",
            "met": len(shown) == len(POLICIES)}


# --- output ---


def ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.0f}" if value >= 1000 else f"{value:.1f}"


def render(results: dict[str, Any]) -> str:
    machine = results["machine"]
    start, end = machine["loadavg_at_start"], machine.get("loadavg_at_end") or machine["loadavg_at_start"]
    header = (f"{machine['cpu_model']}, {machine['nproc']} CPUs, Linux {machine['kernel']}, "
              f"Python {machine['python']}; load average (1/5/15 min) at start "
              f"{start[0]:.2f}/{start[1]:.2f}/{start[2]:.2f}, at end {end[0]:.2f}/{end[1]:.2f}/{end[2]:.2f}; "
              f"{results['runs']} run(s) per configuration, scale {results['scale']:g};\n"
              "delays in ms; ticks = handled/expired summed over the variants' processes; Hz 'own': the "
              "program's own timer;\nways = signals delivered in-code/at-syscall/wait-loop")
    rows = [["workload", "Hz", "mode", "ticks", "lost %", "mon mean", "mon p50", "mon p99", "mon max",
             "in mean", "in p50", "in p99", "in max", "ways", "wall s", "ratio", "note"]]
    for r in results["results"]:
        ticks, monitor, inside = r["ticks"], r["delay_monitor_ms"], r["delay_in_variant_ms"]
        lost = ticks["lost_pct"]
        note = "; ".join(filter(None, ["OUTPUT DIFFERS" if r["output_mismatch"] else "",
                                       f"{len(r['failures'])} run(s) failed" if r["failures"] else ""]))
        wall, ratio, ways = r["wall_s"]["median"], r["wall_ratio"], r["delivered_by_way"]
        shown_ways = "/".join(str(ways.get(way, 0)) for way in WAYS) if ways else "-"
        rows.append([r["workload"], str(r["hz"]) if r["hz"] != OWN_TIMER else "own", r["label"],
                     f"{ticks['handled']}/{ticks['expired']}" if ticks["processes"] else "-",
                     f"{lost:.1f}" if lost is not None else "-",
                     ms(monitor["mean"]), ms(monitor["p50"]), ms(monitor["p99"]), ms(monitor["max"]),
                     ms(inside["mean"]), ms(inside["p50"]), ms(inside["p99"]), ms(inside["max"]),
                     shown_ways,
                     f"{wall:.2f}" if wall else "-", f"{ratio:.2f}x" if ratio else "-", note])
    targets = [["target (1 kHz unless a flag idiom)", "workload", "value", "result"]]
    for check in results["targets"]:
        value, unit = check["value"], check["unit"]
        shown = "-" if value is None else f"{value:.2f}x" if unit == "x" else \
            f"{value:.3f} {unit}" if unit in ("ms", "%") else f"{value:g} {unit}"
        targets.append([check["target"], check["workload"], shown, "ok" if check["met"] else "MISSED"])
    failures = [f"{r['workload']} {r['hz'] or 'own'} Hz {r['label']}: {failure}"
                for r in results["results"] for failure in r["failures"]]
    parts = [header, table(rows), table(targets)]
    if failures:
        parts.append("failed runs:\n" + "\n".join(f"  {line}" for line in failures))
    return "\n\n".join(parts)


def plot(results: dict[str, Any], samples: Samples, path: Path) -> set[str] | None:
    """CDFs of the in-variant delay, one panel per (Hz, timed workload): colour by policy
    (grey shades for native and the floor), line style by variants and wait loop. The
    labels drawn; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    timed = [r for r in results["results"] if r["hz"] != OWN_TIMER]
    names = list(dict.fromkeys(r["workload"] for r in timed))
    rates = [hz for hz in results["hz"] if any(r["hz"] == hz for r in timed)]
    if not names or not rates:
        return set()
    size = (max(9.0, 4.2 * len(names)), 3.6 * len(rates))
    figure, axes = plt.subplots(len(rates), len(names), figsize=size, squeeze=False, sharex=True, sharey=True)
    rows = list({r["label"]: r for r in timed}.values())
    colours = {"converge": "tab:blue", "sync": "tab:orange", "at-syscall": "tab:red",
               "native": "black", "floor": "grey"}
    plotted: set[str] = set()
    for row_index, hz in enumerate(rates):
        for column, name in enumerate(names):
            axis = axes[row_index][column]
            for row in rows:
                label = row["label"]
                data = sorted(samples.get((name, hz, label), []))
                if not data:
                    continue
                plotted.add(label)
                style = LINE_STYLES.get((row["variants"], row["wait_loop"]), "-")
                fractions = [(i + 1) / len(data) for i in range(len(data))]
                axis.step([max(x, 1e-3) for x in data], fractions, where="post", linestyle=style,
                          color=colours[row["policy"] or row["mode"]], label=label)
            axis.axvline(TARGET_MEAN_MS, color="grey", linewidth=0.7, linestyle=":")
            axis.axvline(TARGET_P99_MS, color="grey", linewidth=0.7, linestyle="-.")
            axis.set_xscale("log")
            axis.set_title(f"{name}, {hz} Hz", fontsize=9)
            axis.grid(True, which="major", alpha=0.3)
            if row_index == len(rates) - 1:
                axis.set_xlabel("delay in variant (ms)")
            if column == 0:
                axis.set_ylabel("fraction of ticks")
    handles = {label: handle for ax in axes.flat for handle, label in zip(*ax.get_legend_handles_labels(),
                                                                           strict=True)}
    figure.legend(list(handles.values()), list(handles), loc="lower center", ncol=4, fontsize=8)
    figure.suptitle("Timer expiry to handler entry, inside the process (grey lines: 0.5 ms, 2 ms); "
                    "policies: converge blue, sync orange, at-syscall red", fontsize=10)
    figure.tight_layout(rect=(0, 0.12, 1, 0.95))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return plotted


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench_signals", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="runs per configuration (1); wall time is the "
                        "median, ticks and delays are pooled over the runs")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"results file ({DEFAULT_JSON})")
    parser.add_argument("--png", type=Path, default=DEFAULT_PNG, help=f"plot file ({DEFAULT_PNG})")
    parser.add_argument("--quick", action="store_true",
                        help="one workload (gzip), a quarter of the size, 2 variants only: a smoke check")
    parser.add_argument("--scale", type=float, default=None,
                        help="workload size factor (1.0: about 1 s natively here; --quick: 0.25)")
    parser.add_argument("--hz", default="100,1000", help="comma-separated timer rates (100,1000)")
    options = parser.parse_args(argv)
    if options.runs < 1:
        parser.error("--runs must be at least 1")
    options.scale = options.scale if options.scale is not None else (0.25 if options.quick else 1.0)
    if options.scale <= 0:
        parser.error("--scale must be above 0")
    try:
        options.hz = sorted({int(hz) for hz in options.hz.split(",")})
    except ValueError:
        parser.error("--hz takes comma-separated whole numbers, e.g. 100,1000")
    if not options.hz or any(not 1 <= hz <= 10_000 for hz in options.hz):
        parser.error("--hz: each rate must be 1..10000")
    options.variants = [2] if options.quick else [2, 4]
    return options


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    try:
        options.json.parent.mkdir(parents=True, exist_ok=True)  # fail now, not after minutes of runs
        options.png.parent.mkdir(parents=True, exist_ok=True)
        results, samples = run(options)
    except (BenchError, OSError) as error:
        print(f"bench_signals: {error}", file=sys.stderr)
        return 1
    plotted = plot(results, samples, options.png)
    results["targets"].append(plot_target(plotted))
    print(render(results))
    options.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nJSON written to {options.json}")
    print(f"plot written to {options.png}" if plotted is not None
          else "no plot: matplotlib is not installed (pip install matplotlib)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
