"""The corpus of everyday command lines (tests/corpus/): each run natively and under the
monitor in a fresh copy of a fixture, and compared.

A command's outcome: `identical` (stdout, stderr, exit status and the files left are the
native run's under every variant count asked), `refused` (the monitor stopped it as
unsupported: a syscall without a row, fork for now), `divergent` (an alarm, or a
difference while native runs agree: a false divergence, since the variants are
identical), `unstable` (two native runs differ: the corpus entry needs a mask),
`broken` (the native run does not exit as the entry says: a mistake in the corpus) or
`missing` (the program is not installed here).

Used by `scripts/corpus` (a table, a summary line, JSON), tests/test_corpus.py, and in
the lab guests (run there as a script, on the entries marked `lab`, with the fixture
made on the host: tests/lab/test_lab.py).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import functools
import hashlib
import http.server
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "corpus"
COMMANDS = CORPUS / "commands.txt"
FIXTURE = CORPUS / "fixture.sh"
TIMEOUT = 120.0
OUTCOMES = ("identical", "refused", "divergent", "unstable", "broken", "missing")
UNSUPPORTED_STATUS = 122  # mvee.verdict.EXIT_STATUS[Verdict.UNSUPPORTED]
# The variants' environment, the same natively and under the monitor (which passes its
# own on): fixed locale, zone and git identity and dates, so native runs repeat.
ENVIRONMENT = {
    "PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C", "TZ": "UTC", "PYTHONPATH": str(ROOT),
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "corpus", "GIT_AUTHOR_EMAIL": "corpus@example.org",
    "GIT_COMMITTER_NAME": "corpus", "GIT_COMMITTER_EMAIL": "corpus@example.org",
    "GIT_AUTHOR_DATE": "@1700000000 +0000", "GIT_COMMITTER_DATE": "@1700000000 +0000",
}


class CorpusError(Exception):
    """A line of the corpus that cannot be read."""


@dataclass(frozen=True)
class Command:
    name: str
    argv: tuple[str, ...]
    stdin: str | None = None
    variant_counts: tuple[int, ...] = (2,)
    masks: tuple[str, ...] = ()
    skips: tuple[str, ...] = ()
    status: int = 0  # the native exit status
    lab: bool = False  # also in the lab guests (a program of every Debian base system)

    def masked(self, text: str) -> str:
        for mask in self.masks:
            text = re.sub(mask, "#", text)
        return text


def parse_line(line: str, where: str) -> Command | None:
    """One line of commands.txt (None for a comment or a blank line)."""
    if not line.strip() or line.lstrip().startswith("#"):
        return None
    head, separator, command_line = line.partition(" : ")
    if not separator:
        raise CorpusError(f"{where}: expected `NAME [OPTION ...] : COMMAND`")
    name, *options = head.split()
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]*", name):
        raise CorpusError(f"{where}: bad name {name!r} (lower-case letters, digits, '.', '-')")
    counts, masks, skips, status, lab = [2], [], [], 0, False
    for option in options:
        key, _, value = option.partition("=")
        if option == "n3":
            counts.append(3)
        elif option == "lab":
            lab = True
        elif key == "mask" and value:
            try:
                re.compile(value)
            except re.error as error:
                raise CorpusError(f"{where}: bad mask {value!r}: {error}") from None
            masks.append(value)
        elif key == "skip" and value:
            skips.append(value)
        elif key == "status" and value.isdigit() and int(value) < 256:
            status = int(value)
        else:
            raise CorpusError(f"{where}: unknown option {option!r} "
                              "(n3, lab, mask=REGEX, skip=GLOB, status=N)")
    try:
        argv = shlex.split(command_line)
    except ValueError as error:
        raise CorpusError(f"{where}: {error}") from None
    stdin = None
    if len(argv) >= 2 and argv[-2] == "<":
        stdin, argv = argv[-1], argv[:-2]
    if not argv:
        raise CorpusError(f"{where}: no command")
    return Command(name, tuple(argv), stdin, tuple(counts), tuple(masks), tuple(skips), status, lab)


def load(path: Path = COMMANDS) -> list[Command]:
    commands = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        command = parse_line(line, f"{path.name}:{number}")
        if command is not None:
            commands.append(command)
    names = Counter(c.name for c in commands)
    if twice := sorted(n for n, k in names.items() if k > 1):
        raise CorpusError(f"{path.name}: names used twice: {', '.join(twice)}")
    return commands


# --- the world a command runs in ---

@dataclass(frozen=True)
class Setting:
    base: Path  # each command's runs happen in BASE/NAME/work, one after another
    fixture: Path
    port: int


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def make_fixture(directory: Path) -> None:
    """fixture.sh run in a new DIRECTORY."""
    directory.mkdir(parents=True)
    subprocess.run(["/bin/sh", str(FIXTURE)], cwd=directory, check=True,
                   env={**ENVIRONMENT, "HOME": str(directory)}, stdout=subprocess.DEVNULL)


@contextlib.contextmanager
def setting(base: Path, fixture_tar: Path | None = None) -> Iterator[Setting]:
    """The fixture in BASE (made, or unpacked from a tar of one), and an HTTP server on
    127.0.0.1 serving its www/."""
    fixture = base / "fixture"
    if fixture_tar is None:
        make_fixture(fixture)
    else:
        fixture.mkdir(parents=True)
        subprocess.run(["tar", "-xpf", str(fixture_tar), "-C", str(fixture)], check=True)
    (base / "home").mkdir()  # outside the work tree: the monitor keeps its calibration there
    handler = functools.partial(_QuietHandler, directory=str(fixture / "www"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Setting(base, fixture, server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# --- one run ---

@dataclass
class Observation:
    status: int
    stdout: str
    stderr: str
    files: dict[str, str]
    verdict: str = "native"
    message: str = ""
    syscall: str = ""


def _files(work: Path, command: Command) -> dict[str, str]:
    """What the run left: each path (masked) with its type, mode, and content or target."""
    files = {}
    for path in sorted(work.rglob("*")):
        relative = str(path.relative_to(work))
        info = path.lstat()
        mode = stat.S_IMODE(info.st_mode)
        if stat.S_ISLNK(info.st_mode):
            what = f"symlink -> {os.readlink(path)}"
        elif stat.S_ISDIR(info.st_mode):
            what = f"dir {mode:o}"
        elif not stat.S_ISREG(info.st_mode):  # a fifo, a socket: never opened
            what = f"{stat.filemode(info.st_mode)[0]} {mode:o}"
        elif any(fnmatch(relative, glob) for glob in command.skips):
            what = "file (not compared)"
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
            what = f"file {mode:o} links={info.st_nlink} sha256={digest}"
        files[command.masked(relative)] = what
    return files


def _text(data: bytes) -> str:
    return data.decode("utf-8", "backslashreplace")


def run(command: Command, setting: Setting, variants: int | None) -> Observation:
    """One run in a fresh copy of the fixture: natively (None) or under `mvee run -n N`."""
    directory = setting.base / command.name
    work = directory / "work"
    if work.exists():
        shutil.rmtree(work)
    directory.mkdir(exist_ok=True)
    subprocess.run(["cp", "-a", str(setting.fixture), str(work)], check=True)
    argv = [part.replace("{port}", str(setting.port)) for part in command.argv]
    report = directory / "report.json"
    if variants is not None:
        report.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "mvee", "run", "-n", str(variants), "--report", str(report), "--",
                *argv]
    environment = {**ENVIRONMENT, "HOME": str(setting.base / "home")}
    with (open(work / command.stdin, "rb") if command.stdin else contextlib.nullcontext(subprocess.DEVNULL)
          ) as stdin, subprocess.Popen(argv, cwd=work, env=environment, stdin=stdin, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, start_new_session=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            return Observation(-1, "", "", {}, "timeout", f"no end within {TIMEOUT:g} s")
    observation = Observation(process.returncode, command.masked(_text(stdout)), "", _files(work, command))
    lines = _text(stderr).splitlines(keepends=True)
    monitor_lines = [line for line in lines if variants is not None and line.startswith("mvee: ")]
    observation.stderr = command.masked("".join(line for line in lines if line not in monitor_lines))
    if variants is not None:
        if report.exists():
            outcome = json.loads(report.read_text())
            observation.verdict, observation.message = outcome["verdict"], outcome["message"]
            observation.syscall = ((outcome.get("alarm") or {}).get("syscall") or {}).get("name", "")
        else:
            observation.verdict, observation.message = "no report", "".join(monitor_lines).strip()
    return observation


def differences(expected: Observation, got: Observation) -> list[str]:
    """What differs, one short line each."""
    found = []
    if expected.status != got.status:
        found.append(f"exit status {expected.status} natively, {got.status}")
    for what in ("stdout", "stderr"):
        a, b = getattr(expected, what), getattr(got, what)
        if a != b:
            at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
            found.append(f"{what} differs at byte {at}: {a[at:at + 40]!r} natively, {b[at:at + 40]!r}")
    for path in sorted(set(expected.files) | set(got.files)):
        a, b = expected.files.get(path, "absent"), got.files.get(path, "absent")
        if a != b:
            found.append(f"{path}: {a} natively, {b}")
    return found


# --- one command judged ---

@dataclass
class Result:
    name: str
    command: str
    outcome: str
    detail: str = ""  # the refusal's reason, or what differed
    runs: dict[str, str] = field(default_factory=dict)  # per variant count: its verdict


def refusal_reason(observation: Observation) -> str:
    """The reason, grouped: `clone: processes and threads are not supported yet`."""
    reason = observation.message.split(": ", 1)[-1] if ": " in observation.message else observation.message
    return f"{observation.syscall}: {reason}" if observation.syscall else reason


def judge(command: Command, setting: Setting) -> Result:
    shown = shlex.join(command.argv) + (f" < {command.stdin}" if command.stdin else "")
    if shutil.which(command.argv[0], path=ENVIRONMENT["PATH"]) is None:
        return Result(command.name, shown, "missing", f"{command.argv[0]} is not installed")
    if command.stdin and not (setting.fixture / command.stdin).is_file():
        return Result(command.name, shown, "broken", f"no file {command.stdin} in the fixture")
    first, second = run(command, setting, None), run(command, setting, None)
    if first.verdict == "timeout" or (unstable := differences(first, second)):
        return Result(command.name, shown, "unstable",
                      "natively: " + (first.message if first.verdict == "timeout" else "; ".join(unstable)))
    if first.status != command.status:
        return Result(command.name, shown, "broken", f"natively exits {first.status}, not {command.status}: "
                      f"{first.stderr.strip()[:200]!r}")
    result = Result(command.name, shown, "identical")
    for count in command.variant_counts:
        observation = run(command, setting, count)
        result.runs[f"n{count}"] = observation.verdict
        if observation.verdict == "unsupported" and observation.status == UNSUPPORTED_STATUS:
            result.outcome, result.detail = "refused", refusal_reason(observation)
            return result
        if observation.verdict != "ok":
            result.outcome = "divergent"
            result.detail = f"-n {count}: {observation.verdict}: {observation.message}"
            return result
        if found := differences(first, observation):
            result.outcome, result.detail = "divergent", f"-n {count}: " + "; ".join(found[:3])
            return result
    return result


# --- the table ---

def summary(outcomes: list[str]) -> str:
    """The summary line of these outcomes: `N identical / R refused / D divergent`."""
    counts = Counter(outcomes)
    line = (f"{counts['identical']} identical / {counts['refused']} refused / "
            f"{counts['divergent']} divergent")
    extra = [f"{counts[o]} {o}" for o in ("unstable", "broken", "missing") if counts[o]]
    return line + (f" ({', '.join(extra)})" if extra else "")


def refusals(results: list[Result]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for result in results:
        if result.outcome == "refused":
            grouped.setdefault(result.detail, []).append(result.name)
    return dict(sorted(grouped.items(), key=lambda item: -len(item[1])))


def table(results: list[Result]) -> str:
    width = max((len(r.name) for r in results), default=4)
    lines = [f"{'name':<{width}}  {'outcome':<10} {'runs':<12} detail"]
    for r in results:
        runs = ",".join(f"{k}={v}" for k, v in r.runs.items()) or "-"
        lines.append(f"{r.name:<{width}}  {r.outcome:<10} {runs:<12} {r.detail}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/corpus", description="Run the corpus of everyday "
                                     "command lines natively and under the monitor, and compare.")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the results as JSON to PATH")
    parser.add_argument("--jobs", type=int, default=2, metavar="N", help="commands run at once (default 2)")
    parser.add_argument("-k", metavar="NAME", action="append", default=[],
                        help="only commands whose name has NAME (repeatable)")
    parser.add_argument("--lab", action="store_true", help="only the commands marked `lab`")
    parser.add_argument("--fixture-tar", type=Path, metavar="TAR",
                        help="unpack the fixture from TAR instead of running fixture.sh")
    options = parser.parse_args(argv)
    try:
        commands = load()
    except (CorpusError, OSError) as error:
        print(f"corpus: {error}", file=sys.stderr)
        return 2
    if options.k:
        commands = [c for c in commands if any(k in c.name for k in options.k)]
    if options.lab:
        commands = [c for c in commands if c.lab]
    if not commands:
        print("corpus: no command matches", file=sys.stderr)
        return 2
    if options.jobs < 1:
        print("corpus: --jobs must be at least 1", file=sys.stderr)
        return 2
    if options.fixture_tar is not None and not options.fixture_tar.is_file():
        print(f"corpus: no such file: {options.fixture_tar}", file=sys.stderr)
        return 2
    if options.json is not None and not options.json.parent.is_dir():
        print(f"corpus: no such directory: {options.json.parent}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mvee-corpus-") as base, \
            setting(Path(base), options.fixture_tar) as where, \
            concurrent.futures.ThreadPoolExecutor(options.jobs) as pool:
        results = list(pool.map(lambda command: judge(command, where), commands))
    print(table(results))
    for reason, names in refusals(results).items():
        print(f"refused ({len(names)}): {reason}: {' '.join(names)}")
    print(summary([r.outcome for r in results]))
    if options.json is not None:
        options.json.write_text(json.dumps({
            "summary": summary([r.outcome for r in results]),
            "counts": dict(Counter(r.outcome for r in results)),
            "refused": refusals(results), "results": [asdict(r) for r in results]}, indent=2) + "\n")
    return 0 if all(r.outcome in ("identical", "refused", "missing") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
