"""What time from the kernel costs (issue 11): a clock-heavy loop, native against
`mvee run -n 2`, in the same run.

Under the monitor the vDSO is hidden (mvee.vdso): every clock_gettime is a syscall
that the variants meet at and the leader alone runs; every rdtsc traps (mvee.tsc)
and is completed by the monitor. The per-read cost is the slope between a run of N
reads and a run of none (start-up drops out), median of several runs each.

Run: ``scripts/bench_clock [--runs N] [--reads N] [--json PATH]``.
This is a measurement, not a test: it prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = ROOT / "benchmarks" / "programs" / "clock_loop.c"
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "clock.json"


def _wall(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--reads", type=int, default=5000, help="clock reads under the monitor")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    options = parser.parse_args(argv)
    monitor = [sys.executable, "-m", "mvee", "run", "-n", "2", "--"]
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        program = str(Path(directory) / "clock_loop")
        subprocess.run(["gcc", "-O2", "-o", program, str(PROGRAM)], check=True)
        for mode in ("clock", "tsc"):
            native_reads = options.reads * 1000  # natively a read takes nanoseconds
            native = (_wall([program, mode, str(native_reads)], options.runs)
                      - _wall([program, mode, "0"], options.runs)) / native_reads
            empty = _wall([*monitor, program, mode, "0"], options.runs)
            full = _wall([*monitor, program, mode, str(options.reads)], options.runs)
            monitored = (full - empty) / options.reads
            rows.append({"read": "clock_gettime" if mode == "clock" else "rdtsc",
                         "native_ns": native * 1e9, "mvee_us": monitored * 1e6,
                         "mvee_run_s": full, "reads": options.reads,
                         "ratio": monitored / native if native > 0 else None})
    print(f"{'read':<14} {'native per read':>16} {'mvee -n 2 per read':>19} {'ratio':>9}")
    for row in rows:
        ratio = f"{row['ratio']:.0f}x" if row["ratio"] else "-"
        print(f"{row['read']:<14} {row['native_ns']:>13.1f} ns {row['mvee_us']:>16.1f} us {ratio:>9}")
    options.json.parent.mkdir(parents=True, exist_ok=True)
    options.json.write_text(json.dumps({
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": platform.machine(), "kernel": platform.release(), "runs": options.runs,
        "results": rows}, indent=2) + "\n")
    print(f"written: {options.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
