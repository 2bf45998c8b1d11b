"""The JSON report: verdict, variants and, for an alarm, each variant's view of the call."""

from __future__ import annotations

import json
import os
import signal
import tempfile
from typing import Any

from mvee.variant import Variant
from mvee.verdict import Outcome, Verdict

VERDICTS = frozenset(verdict.value for verdict in Verdict)


def build(outcome: Outcome, variants: list[Variant]) -> dict[str, Any]:
    report: dict[str, Any] = {
        "verdict": outcome.verdict.value,
        "message": outcome.message,
        "exit_code": outcome.exit_code,
        "syscalls": outcome.syscalls,
        "variants": [
            {
                "index": v.index,
                "executable": v.executable,
                "pid": v.pid,
                "abi": v.abi_name or None,
                "traced_by": v.traced_by,
                "stops": v.stops,
                "exit_status": v.exit_status,
                "signal": signal.Signals(v.term_signal).name if v.term_signal else None,
            }
            for v in variants
        ],
    }
    alarm = outcome.alarm
    if alarm is not None:
        first = alarm.calls[0] if alarm.calls else None
        report["alarm"] = {
            "kind": alarm.verdict.value,
            "variant": alarm.variant,
            "syscall": {"nr": first.nr, "name": first.name, "abi": first.abi.name} if first else None,
            "views": [call.render() for call in alarm.calls],
        }
    report.update(outcome.details)
    return report


_LARGEST_REPORT = 16 << 20  # bytes; reports are far smaller (the delay list is a bounded sample)


def may_replace(path: str) -> bool:
    """Whether a report may be written at `path`: nothing there, an empty file, or an
    earlier report. Anything else is the user's, and is never overwritten."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return True
    if size == 0:
        return True
    if size > _LARGEST_REPORT:
        return False
    try:
        with open(path, "rb") as existing:
            earlier = json.loads(existing.read())
    except (OSError, ValueError):
        return False
    return isinstance(earlier, dict) and earlier.get("verdict") in VERDICTS


def make_temporary(directory: str) -> str:
    """An empty file in `directory` with the mode a new file gets there (umask applied)."""
    fd, temporary = tempfile.mkstemp(prefix=".mvee-report-", dir=directory)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
    os.close(fd)
    return temporary


def write(path: str, report: dict[str, Any]) -> None:
    """Write atomically: a reader (or a kill -9) never sees half a report."""
    temporary = make_temporary(os.path.dirname(os.path.abspath(path)))
    try:
        with open(temporary, "w") as out:
            json.dump(report, out, indent=2)
            out.write("\n")
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
