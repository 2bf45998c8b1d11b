"""Lab benchmark (issue 5): boot-to-SSH per target, cold and restored, and the lab suite's wall time.

For each boot target: the time from QEMU's start to a working SSH command, booted
cold on a fresh overlay and restored from the golden snapshot (``-loadvm ready``),
the median of --runs each; then ``pytest tests/lab --lab`` with ``-n 1`` and
``-n auto`` (golden snapshots already made, as in any run after the first).

Run: ``scripts/bench-lab [--runs N] [--targets A,B] [--no-suite] [--json PATH]``.
Prints a table and writes JSON (default benchmarks/results/lab.json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from vm.machines import accel
from vm.machines.lease import all_targets
from vm.machines.qemu import QemuBackend, ensure_golden, qemu_version

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "lab.json"


def boot_times(target: str, runs: int, cold: bool) -> list[float]:
    times = []
    backend = QemuBackend(cold=cold)
    for _ in range(runs):
        with backend.lease(target) as machine:
            times.append(round(machine.ready_s, 2))
        print(f"  {target} {'cold' if cold else 'restored'}: {machine.ready_s:.1f} s", flush=True)
    return times


def suite_time(workers: str, targets: list[str]) -> dict[str, Any]:
    command = [sys.executable, "-m", "pytest", "tests/lab", "--lab", "-n", workers, "-q",
               "-p", "no:cacheprovider", "--lab-targets", ",".join(targets)]
    start = time.monotonic()
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.monotonic() - start
    last = completed.stdout.strip().splitlines()[-1:] or ["(no output)"]
    print(f"  pytest -n {workers}: {seconds:.0f} s, exit {completed.returncode}: {last[0]}", flush=True)
    return {"workers": workers, "seconds": round(seconds, 1), "exit": completed.returncode,
            "summary": last[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="boots per target and kind (median reported)")
    parser.add_argument("--targets", default=",".join(all_targets()))
    parser.add_argument("--no-cold", action="store_true", help="skip the cold boots (the slow part)")
    parser.add_argument("--no-suite", action="store_true", help="skip the two suite runs")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()
    targets = args.targets.split(",")
    accelerator, reason = accel.choose()
    print(f"accelerator: {accelerator} ({reason}); QEMU {qemu_version()}; {os.cpu_count()} CPUs", flush=True)
    rows: dict[str, dict[str, Any]] = {}
    for target in targets:
        golden_start = time.monotonic()
        ensure_golden(target)
        print(f"  {target} golden snapshot ready ({time.monotonic() - golden_start:.0f} s)", flush=True)
        cold = [] if args.no_cold else boot_times(target, args.runs, cold=True)
        restored = boot_times(target, args.runs, cold=False)
        rows[target] = {
            "cold_s": cold, "cold_median_s": statistics.median(cold) if cold else None,
            "restored_s": restored, "restored_median_s": statistics.median(restored),
        }
    suites = [] if args.no_suite else [suite_time("1", targets), suite_time("auto", targets)]
    print(f"\n{'target':<22} {'cold median s':>14} {'restored median s':>18}")
    for target, row in rows.items():
        cold_text = f"{row['cold_median_s']:.1f}" if row["cold_median_s"] is not None else "-"
        print(f"{target:<22} {cold_text:>14} {row['restored_median_s']:>18.1f}")
    for suite in suites:
        print(f"lab suite, pytest -n {suite['workers']}: {suite['seconds']:.0f} s ({suite['summary']})")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "accelerator": accelerator, "qemu": qemu_version(), "cpus": os.cpu_count(),
        "load_average_at_end": os.getloadavg(), "runs": args.runs, "boot": rows, "suite": suites,
    }, indent=2) + "\n")
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
