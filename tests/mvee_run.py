"""Running the monitor in tests: `python -m mvee ...` to its end, or in the background.

Every run carries a unique MVEE_FAULT_TAG in its environment (the monitor passes its own
on to the variants), so a process left behind is found by scanning /proc, even one the
monitor had not yet reported as its child.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).parents[1]
MVEE = (sys.executable, "-m", "mvee")


@dataclass
class MveeResult:
    returncode: int
    stdout: bytes
    stderr: str
    report: dict | None  # the parsed --report, when one was asked for and written
    tag: str


def _command(entry: tuple[str, ...], arguments: tuple[str, ...], report: Path | None) -> list[str]:
    if report is None:
        return [*entry, *arguments]
    assert arguments[:1] == ("run",), "a report is an option of `mvee run`"
    if report.exists():  # a report left by an earlier run of the same test is not this run's
        report.unlink()
    return [*entry, "run", "--report", str(report), *arguments[1:]]


def _environment(tag: str, pythonpath: Path) -> dict[str, str]:
    return {**os.environ, "MVEE_FAULT_TAG": tag, "PYTHONPATH": str(pythonpath)}


def _read_report(report: Path | None) -> dict | None:
    return json.loads(report.read_text()) if report is not None and report.exists() else None


def run_mvee(*arguments: str, report: Path | None = None, stdin: bytes = b"", timeout: float = 120,
             cwd: Path = ROOT, entry: tuple[str, ...] = MVEE, pythonpath: Path = ROOT) -> MveeResult:
    """`python -m mvee ARGUMENTS` to its end; with `report`, `mvee run --report REPORT ...`."""
    tag = uuid.uuid4().hex
    completed = subprocess.run(_command(entry, arguments, report), input=stdin, capture_output=True,
                               timeout=timeout, cwd=cwd, env=_environment(tag, pythonpath))
    return MveeResult(completed.returncode, completed.stdout, completed.stderr.decode(),
                      _read_report(report), tag)


class MveeProcess:
    """The same in the background, for tests that act on the run (send signals, read its
    output as it comes); with `ready`, until the variants printed that first line."""

    def __init__(self, *arguments: str, report: Path | None = None, ready: bytes | None = None,
                 stdout: int = subprocess.PIPE, entry: tuple[str, ...] = MVEE, pythonpath: Path = ROOT,
                 new_session: bool = False, cwd: Path = ROOT) -> None:
        self.tag = uuid.uuid4().hex
        self.report = report
        self.process = subprocess.Popen(_command(entry, arguments, report), stdout=stdout,
                                        stderr=subprocess.PIPE, cwd=cwd,
                                        env=_environment(self.tag, pythonpath), start_new_session=new_session)
        if ready is not None:
            assert self.process.stdout is not None
            readable, _, _ = select.select([self.process.stdout], [], [], 60)
            assert readable, "the variants never printed their first line"
            assert self.process.stdout.readline() == ready

    @property
    def pid(self) -> int:
        return self.process.pid

    def variant_pids(self) -> list[int]:
        try:
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except OSError:
            return []
        return sorted(int(p) for p in children.split())

    def finish(self, timeout: float = 60) -> MveeResult:
        try:
            stdout, stderr = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            raise AssertionError(f"the monitor did not end within {timeout} s") from None
        return MveeResult(self.process.returncode, stdout or b"", stderr.decode(), _read_report(self.report),
                          self.tag)


# --- what a run left behind ---


DEAD = ("Z", "X", None)  # a zombie counts as dead: PID 1 here does not reap orphans


def process_state(pid: int) -> str | None:
    """The state letter of /proc/PID/stat (R, S, t, Z ...), None for no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def tagged_processes(tag: str) -> list[int]:
    """Live (not zombie) processes whose environment carries the tag."""
    found = []
    needle = f"MVEE_FAULT_TAG={tag}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes() and process_state(int(entry.name)) not in DEAD:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def wait_until_gone(pids: list[int], tag: str, timeout: float = 5) -> list[int]:
    """The pids (and tagged processes) still alive after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        alive = sorted({p for p in pids if process_state(p) not in DEAD} | set(tagged_processes(tag)))
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.01)


# --- where a variant is ---


def _signal_masks(pid: int) -> tuple[int, int]:
    """(pending, blocked) signal masks of a process: bit N-1 is signal N."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    return int(fields["SigPnd"], 16) | int(fields["ShdPnd"], 16), int(fields["SigBlk"], 16)


def blocked_in(pid: int, function: str) -> bool:
    """The process sleeps in the kernel in a function whose name has `function` (its
    wchan: `pause` for __do_sys_pause), with no signal pending that would wake it."""
    try:
        pending, blocked = _signal_masks(pid)
        wchan = Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False
    return process_state(pid) == "S" and function in wchan and not pending & ~blocked


def signal_pending_in(pid: int, signum: int) -> bool:
    """The signal waits in the process's kernel (blocked, or not yet taken)."""
    try:
        return bool(_signal_masks(pid)[0] >> (signum - 1) & 1)
    except OSError:
        return False


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    """Polls `condition` until it holds; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not {what} within {timeout} s"
        time.sleep(0.001)
