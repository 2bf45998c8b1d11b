"""Resource bounds of the monitor (issue 6): memory and file descriptors over a long run.

Two workloads under `mvee run -n 2`, run at the same time (each its own monitor):

* syscalls: ``writes N``, N one-byte writes to /dev/null (default 1,000,000);
* signals: ``signals N HZ``, N self-sent SIGUSR1, each handled, under a 200 Hz
  SIGALRM timer (default 100,000: every one goes through the semi-synchronous
  delivery, the timer's through holding and parking too).

The monitor's VmRSS (/proc/PID/status) and open file descriptors (/proc/PID/fd)
are sampled every --interval seconds. "start" is the first sample after both
variants exist, "warm" the sample at 10% of the run (after the first allocations of
caches, and once the monitor holds its /proc/PID/mem files), "end" the last sample
before the monitor exits. Flat means (end - warm) RSS below 1 byte per synchronised
syscall or signal, at most 1 MB in all (a leak of 100 bytes a syscall would add 100 MB
over a million), and no more fds at the end than warm.

Run: ``scripts/bench_resources [--quick] [--syscalls N] [--signals N] [--json PATH]``
This is a measurement, not a test: it prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.bench_overhead import REPO, BenchError, compile_program, machine_facts, table

HERE = Path(__file__).resolve().parent
DEFAULT_JSON = HERE / "results" / "resources.json"
GROWTH_LIMIT_BYTES_PER_EVENT = 1.0  # (end - warm) RSS per syscall or signal
GROWTH_LIMIT_KB = 1024  # and in all


@dataclass
class Sample:
    seconds: float
    rss_kb: int
    fds: int
    variants: int


@dataclass
class Run:
    name: str
    argv: list[str]
    samples: list[Sample] = field(default_factory=list)
    returncode: int | None = None
    report: dict[str, Any] = field(default_factory=dict)
    wall_seconds: float = 0.0
    error: str | None = None

    def running(self) -> list[Sample]:
        return [s for s in self.samples if s.variants > 0] or self.samples

    def summary(self) -> dict[str, Any]:
        samples = self.running()
        if not samples:
            return {"error": self.error or "no samples"}
        start, end = samples[0], samples[-1]
        warm = samples[len(samples) // 10]
        signals = self.report.get("signals") or {}
        events = (self.report.get("syscalls") or 0) + (signals.get("delivered") or 0)
        growth_kb = end.rss_kb - warm.rss_kb
        per_event = growth_kb * 1024 / max(1, events * 0.9)  # the 90% of the run after "warm"
        return {
            "syscalls": self.report.get("syscalls"),
            "local_syscalls": self.report.get("local_syscalls"),
            "signals_delivered": signals.get("delivered"),
            "verdict": self.report.get("verdict"),
            "exit": self.returncode,
            "wall_s": round(self.wall_seconds, 1),
            "samples": len(samples),
            "rss_kb": {"start": start.rss_kb, "warm": warm.rss_kb, "end": end.rss_kb,
                       "max": max(s.rss_kb for s in samples)},
            "rss_growth_kb": growth_kb,
            "rss_growth_bytes_per_event": round(per_event, 2),
            "fds": {"start": start.fds, "warm": warm.fds, "end": end.fds, "max": max(s.fds for s in samples)},
            "flat": (per_event <= GROWTH_LIMIT_BYTES_PER_EVENT and growth_kb <= GROWTH_LIMIT_KB
                     and end.fds <= warm.fds),
        }


def read_sample(pid: int, began: float) -> Sample | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    rss = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return Sample(round(time.monotonic() - began, 3), rss, fds, len(children))


def monitor_run(run: Run, workdir: Path, interval: float) -> None:
    report = workdir / f"report-{run.name}.json"
    command = [sys.executable, "-m", "mvee", "run", "-n", "2", "--report", str(report), "--", *run.argv]
    began = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    while process.poll() is None:
        sample = read_sample(process.pid, began)
        if sample is not None and process.poll() is None:
            run.samples.append(sample)
        time.sleep(interval)
    run.wall_seconds = time.monotonic() - began
    run.returncode = process.returncode
    assert process.stderr is not None
    stderr = process.stderr.read().decode().strip()
    process.stderr.close()
    if report.exists():
        run.report = json.loads(report.read_text())
    if process.returncode != 0:
        run.error = f"{run.name}: mvee exited with {process.returncode}: {stderr[-300:]}"


def render(results: dict[str, Any]) -> str:
    rows = [["workload", "syscalls", "signals", "wall s", "RSS start", "RSS warm", "RSS end", "RSS max",
             "growth", "B/event", "fds warm", "fds end", "flat"]]
    for name, data in results["workloads"].items():
        if "rss_kb" not in data:
            rows.append([name, *["-"] * 11, "ERROR"])
            continue
        rss, fds = data["rss_kb"], data["fds"]
        rows.append([name, str(data["syscalls"]), str(data["signals_delivered"]), str(data["wall_s"]),
                     *(f"{rss[k] / 1024:.1f} MB" for k in ("start", "warm", "end", "max")),
                     f"{data['rss_growth_kb']:+d} kB", f"{data['rss_growth_bytes_per_event']:.1f}",
                     str(fds["warm"]), str(fds["end"]),
                     "yes" if data["flat"] else "NO"])
    return table(rows)


def run(options: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-resources-") as scratch:
        workdir = Path(scratch)
        writes = compile_program("writes", workdir)
        signals = compile_program("signals", workdir)
        runs = [Run("syscalls", [str(writes), str(options.syscalls)]),
                Run("signals", [str(signals), str(options.signals), str(options.timer_hz)])]
        threads = [threading.Thread(target=monitor_run, args=(r, workdir, options.interval)) for r in runs]
        for thread in threads:
            thread.start()
            if options.sequential:
                thread.join()
        for thread in threads:
            thread.join()
    errors = [r.error for r in runs if r.error]
    if errors:
        raise BenchError("; ".join(errors))
    return {
        "machine": machine_facts(),
        "parameters": {"syscalls": options.syscalls, "signals": options.signals,
                       "timer_hz": options.timer_hz, "interval_s": options.interval,
                       "sequential": options.sequential, "growth_limit_kb": GROWTH_LIMIT_KB,
                       "growth_limit_bytes_per_event": GROWTH_LIMIT_BYTES_PER_EVENT},
        "workloads": {r.name: r.summary() for r in runs},
        "samples": {r.name: [asdict(s) for s in r.samples] for r in runs},
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench_resources", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 syscalls and 10,000 signals")
    parser.add_argument("--syscalls", type=int, help="writes in the syscall workload (default 1000000)")
    parser.add_argument("--signals", type=int, help="SIGUSR1 in the signal workload (default 100000)")
    parser.add_argument("--timer-hz", type=int, default=200, help="the background SIGALRM timer (0: none)")
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between samples")
    parser.add_argument("--sequential", action="store_true", help="one workload after the other")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"default {DEFAULT_JSON}")
    options = parser.parse_args(argv)
    options.syscalls = options.syscalls or (100_000 if options.quick else 1_000_000)
    options.signals = options.signals or (10_000 if options.quick else 100_000)
    return options


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    try:
        options.json.parent.mkdir(parents=True, exist_ok=True)
        results = run(options)
    except (BenchError, OSError) as error:
        print(f"bench_resources: {error}", file=sys.stderr)
        return 1
    print(render(results))
    options.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nJSON written to {options.json}")
    return 0 if all(w.get("flat") for w in results["workloads"].values()) else 3


if __name__ == "__main__":
    sys.exit(main())
