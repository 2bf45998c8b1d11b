"""The lab session's results, per target: signal-delivery delay and the monitor's cost
per synchronised syscall, as a table in pytest's summary, as JSON and drawn as a PNG
beside it (with matplotlib; a line says why not without it).

The lab tests record (vm.machines.pytest_plugin's fixtures) each monitored run's
signal statistics from the monitor's report (delivered, and the delay's mean, p50,
p99 and max: the report keeps no single delays) and each ``dd bs=1`` cost measurement.
The drawing has, like scripts/bench_signals' plot, one delay distribution per target:
the fraction of the target's deliveries at or below each delay, each run weighted by
its deliveries; from the report's quantiles a run is known to have half its delays at
or below its p50, 99 % at or below p99 and all at or below max, so the curve is a
lower bound of the true one, exact at those points. Beside it, a bar per target: the
cost per syscall.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from vm import cache

SIGNALS_PROPERTY = "lab_signals"  # a test's user property: one monitored run's signals
COST_PROPERTY = "lab_syscall_cost"  # a test's user property: one cost measurement
QUANTILES = (("p50", 0.5), ("p99", 0.99), ("max", 1.0))  # what a report tells of a run's delays


def delay_distribution(runs: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(delay ms, fraction of the deliveries of runs known to be at or below it), at each
    delay a report names, ascending; runs weighted by their deliveries."""
    runs = [r for r in runs if r["delivered"] and all(r["delay_ms"].get(k) is not None for k, _ in QUANTILES)]
    total = sum(r["delivered"] for r in runs)
    points = sorted({r["delay_ms"][k] for r in runs for k, _ in QUANTILES})

    def below(run: dict[str, Any], x: float) -> float:
        return max((q for key, q in QUANTILES if run["delay_ms"][key] <= x), default=0.0)

    return [(x, sum(r["delivered"] * below(r, x) for r in runs) / total) for x in points]


class LabTables:
    """Collects the lab tests' records from every test report (xdist workers included); at the
    end, one table per target: signal-delivery delay and cost per syscall; JSON and a PNG."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.records: list[dict[str, Any]] = []
        self.costs: list[dict[str, Any]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        for name, value in report.user_properties:
            if name == SIGNALS_PROPERTY:
                self.records.append(value)
            elif name == COST_PROPERTY:
                self.costs.append(value)

    def table(self) -> dict[str, dict[str, Any]]:
        per_target: dict[str, dict[str, Any]] = {}
        for target in sorted({r["target"] for r in self.records + self.costs}):
            runs = [r for r in self.records if r["target"] == target and r["delivered"]]
            delivered = sum(r["delivered"] for r in runs)

            def values(key: str, runs: list[dict[str, Any]] = runs) -> list[float]:
                return [r["delay_ms"][key] for r in runs if r["delay_ms"].get(key) is not None]

            mean = (sum(r["delay_ms"]["mean"] * r["delivered"] for r in runs if r["delay_ms"].get("mean")
                        is not None) / delivered) if delivered else None
            costs = [c["us_per_syscall"] for c in self.costs if c["target"] == target]
            per_target[target] = {
                "runs": len(runs), "delivered": delivered, "mean_ms": mean,
                "p50_ms": statistics.median(values("p50")) if values("p50") else None,
                "p99_ms": max(values("p99"), default=None), "max_ms": max(values("max"), default=None),
                "loop_traps": sorted({str(r["loop_trap"]) for r in self.records
                                      if r["target"] == target and r["loop_trap"]}),
                "us_per_syscall": statistics.median(costs) if costs else None,
            }
        return per_target

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.records and not self.costs:
            return
        table = self.table()
        tr = terminalreporter
        tr.section("lab: signal delivery delay and syscall cost per target")
        tr.write_line(f"{'target':<22} {'runs':>4} {'signals':>7} {'mean ms':>8} {'p50 ms':>8} "
                      f"{'p99 ms':>8} {'max ms':>8} {'us/call':>8}  loop traps")

        def fmt(value: float | None, digits: int = 3) -> str:
            return f"{value:8.{digits}f}" if value is not None else f"{'-':>8}"

        for target, row in table.items():
            tr.write_line(f"{target:<22} {row['runs']:>4} {row['delivered']:>7} {fmt(row['mean_ms'])} "
                          f"{fmt(row['p50_ms'])} {fmt(row['p99_ms'])} {fmt(row['max_ms'])} "
                          f"{fmt(row['us_per_syscall'], 0)}  {','.join(row['loop_traps']) or '-'}")
        tr.write_line("us/call: the monitor's cost per synchronised syscall (2 variants), over native")
        path = Path(self.config.getoption("lab_results") or
                    cache.cache_root() / "results" / "lab-signals.json")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"created": time.time(), "pid": os.getpid(), "targets": table,
                                        "runs": self.records, "syscall_costs": self.costs}, indent=2) + "\n")
            tr.write_line(f"written to {path}")
        except OSError as e:
            tr.write_line(f"could not write {path}: {e}")
            return
        tr.write_line(plot(self.records, table, path.with_suffix(".png")))


def plot(records: list[dict[str, Any]], table: dict[str, dict[str, Any]], path: Path) -> str:
    """The delay distribution of each target and its cost per syscall, drawn in path; one
    line saying what was done."""
    targets = list(table)
    curves = {t: delay_distribution([r for r in records if r["target"] == t]) for t in targets}
    costs = {t: row["us_per_syscall"] for t, row in table.items() if row["us_per_syscall"] is not None}
    if not any(curves.values()) and not costs:
        return "nothing drawn: no run delivered a signal and no cost was measured"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import LogLocator, ScalarFormatter
    except ImportError:
        return "nothing drawn: matplotlib is not installed (pip install matplotlib)"
    figure, (delays, cost) = plt.subplots(1, 2, figsize=(12, 4.2), width_ratios=(2, 1))
    colours = {t: f"C{i}" for i, t in enumerate(targets)}
    for target, curve in curves.items():
        if not curve:
            continue
        row = table[target]
        xs, fractions = [x for x, _ in curve], [f for _, f in curve]
        delays.step([xs[0], *xs], [0.0, *fractions], where="post", color=colours[target],
                    label=f"{target}: {row['delivered']} signals, {row['runs']} runs, "
                          f"mean {row['mean_ms']:.3g} ms")
        delays.plot([row["mean_ms"]], [0.02], marker="^", color=colours[target])
    delays.set_xscale("log")
    delays.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    delays.xaxis.set_major_formatter(ScalarFormatter())
    delays.xaxis.set_minor_formatter("")
    delays.set_ylim(0, 1.02)
    delays.set_xlabel("signal delivery delay (ms): first variant's stop to last release (triangle: mean)")
    delays.set_ylabel("fraction of signals (at least)")
    delays.grid(True, which="major", alpha=0.3)
    if any(curves.values()):
        delays.legend(loc="lower right", fontsize=8)
    named = [t for t in targets if t in costs]
    bars = cost.barh(named, [costs[t] for t in named], color=[colours[t] for t in named])
    cost.bar_label(bars, labels=[f"{costs[t]:.0f}" for t in named], fontsize=8, padding=2)
    cost.invert_yaxis()
    cost.tick_params(axis="y", labelsize=8)
    cost.set_xlabel("us per synchronised syscall, over native")
    cost.margins(x=0.2)
    figure.suptitle("Lab: delay distribution and syscall cost per target (delays from each run's "
                    "p50, p99 and max, weighted by its signals)", fontsize=10)
    figure.tight_layout(rect=(0, 0, 1, 0.94))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return f"drawn in {path}"
