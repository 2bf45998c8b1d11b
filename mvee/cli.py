"""Command line: `mvee run -n N -- PROG ARGS` and `mvee run --exe A --exe B -- PROG ARGS`.

Exit statuses (also in README): the program's own or an alarm's (mvee.verdict), and
  2                   usage error
  126                 the program cannot be executed
  127                 the program was not found
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import signal
import sys
from collections.abc import Sequence

from mvee import lock_agent, seccomp_filter, waitloop
from mvee.forwarded import FORWARDED
from mvee.monitor import Monitor
from mvee.signal_executor import SignalOptions
from mvee.signals import POLICIES
from mvee.variant import PTRACE_SYSCALL, SECCOMP, StartError, Variant, kill_all, start
from mvee.verdict import Outcome, Verdict

EXIT_USAGE = 2
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127
MAX_VARIANTS = 16
DEFAULT_WAIT_MS = 1000.0
DEFAULT_POLICY = "converge"
DEFAULT_CONVERGE_MS = 50.0


class UsageError(Exception):
    pass


class ProgramError(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mvee", description="Run N variants of a program in lockstep under ptrace.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = commands.add_parser("run", help="run variants of a program",
                              usage="mvee run [-n N | --exe PATH ...] [--report FILE] -- PROG [ARGS...]")
    run.add_argument("-n", "--variants", type=int, metavar="N",
                     help=f"number of variants of PROG (2 to {MAX_VARIANTS}; default 2)")
    run.add_argument("--exe", action="append", default=[], metavar="PATH",
                     help="executable of one variant, once per variant (diversified builds); "
                          "each runs with the argv given after --")
    run.add_argument("--report", metavar="FILE", help="write a JSON report to FILE")
    run.add_argument("--signal-policy", choices=POLICIES, default=DEFAULT_POLICY,
                     help="converge: deliver at a syscall all variants meet at when one comes "
                          "soon, else as sync; sync: Orchestra's semi-synchronous delivery with "
                          "the wait loop; at-syscall: hold every signal until all variants meet "
                          f"at a syscall (default {DEFAULT_POLICY})")
    run.add_argument("--converge-ms", type=float, metavar="MS", default=DEFAULT_CONVERGE_MS,
                     help="converge: how long variants may run on towards a syscall to meet "
                          "at before the signal is delivered where they are "
                          f"(default {DEFAULT_CONVERGE_MS:g})")
    run.add_argument("--loop-trap", choices=("auto", "int80", "syscall"), default="auto",
                     help="how the wait loop traps back when it runs out (default: int80 where "
                          "the kernel has IA-32 emulation, else syscall)")
    run.add_argument("--wait-loop", choices=waitloop.WAIT_MODES, default="sleep",
                     help="how a parked variant waits for its signal: sleep in the kernel (no CPU; "
                          "default) or spin in a counted loop (Orchestra's)")
    timeout = run.add_mutually_exclusive_group()
    timeout.add_argument("--wait-loop-ms", type=float, metavar="MS",
                         help=f"wait-loop timeout, calibrated on this machine (default {DEFAULT_WAIT_MS:g})")
    timeout.add_argument("--wait-loop-iterations", type=int, metavar="N",
                         help="wait-loop timeout as a fixed iteration count (Orchestra: 1000000000)")
    run.add_argument("--tracing", choices=(SECCOMP, PTRACE_SYSCALL), default=SECCOMP,
                     help="seccomp: a filter stops each variant only at the calls the monitor "
                          "synchronises, once at the entry (ptrace-syscall where the kernel does not "
                          "allow it); ptrace-syscall: a stop at every call's entry and exit "
                          f"(default {SECCOMP}; the report says which each variant got)")
    run.add_argument("--lock-agent", action="store_true",
                     help="preload the lock agent, which makes the other variants' threads take the "
                          "leader's order of lock operations (mutexes, condition variables, "
                          "semaphores): for threads whose interleaving decides their calls (xz -T2, "
                          "a multiprocessing.Pool); the report says whether it was enabled")
    run.add_argument("argv", nargs=argparse.REMAINDER, help="PROG and its arguments")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Signals meant for the variants wait (blocked) until the monitor forwards them;
    # blocked from here on, none is lost or turned into a traceback while starting up.
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    try:
        options = build_parser().parse_args(argv)
        executables, program_argv = _resolve(options)
        _check_report_path(options.report)
        monitor_options = _monitor_options(options)
    except UsageError as error:
        print(f"mvee: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ProgramError as error:
        print(f"mvee: {error}", file=sys.stderr)
        return error.exit_code
    use_filter = options.tracing == SECCOMP and seccomp_filter.kernel_supported()
    return _run(executables, program_argv, options.report, monitor_options,
                seccomp_filter.Filter() if use_filter else None, options.lock_agent)


def _resolve(options: argparse.Namespace) -> tuple[list[str], list[str]]:
    program_argv = list(options.argv)
    if program_argv and program_argv[0] == "--":
        program_argv.pop(0)
    if not program_argv:
        raise UsageError("no program given (usage: mvee run -n 2 -- PROG [ARGS...])")
    if options.exe:
        if options.variants is not None and options.variants != len(options.exe):
            raise UsageError(f"-n {options.variants} conflicts with {len(options.exe)} --exe options")
        executables = [_find_executable(path) for path in options.exe]
    else:
        count = 2 if options.variants is None else options.variants
        executables = [_find_executable(program_argv[0])] * count
    if not 2 <= len(executables) <= MAX_VARIANTS:
        raise UsageError(f"the number of variants must be 2 to {MAX_VARIANTS}, not {len(executables)}")
    return executables, program_argv


def _monitor_options(options: argparse.Namespace) -> SignalOptions:
    if options.wait_loop_iterations is not None:
        if not 1 <= options.wait_loop_iterations < 2**32:
            raise UsageError("--wait-loop-iterations must be 1 to 4294967295")
        iterations, milliseconds = options.wait_loop_iterations, None
        if options.wait_loop == "sleep":  # a count means the time it spins here
            milliseconds = iterations / waitloop.iterations_per_ms()
    else:
        milliseconds = DEFAULT_WAIT_MS if options.wait_loop_ms is None else options.wait_loop_ms
        if not 0 < milliseconds <= 3_600_000:
            raise UsageError("--wait-loop-ms must be above 0 and at most 3600000")
        iterations = min(2**32 - 1, max(1, round(milliseconds * waitloop.iterations_per_ms())))
    if not 0 < options.converge_ms <= 3_600_000:
        raise UsageError("--converge-ms must be above 0 and at most 3600000")
    return SignalOptions(policy=options.signal_policy, converge_ms=options.converge_ms,
                         wait_loop=options.wait_loop, loop_trap=waitloop.choose_trap(options.loop_trap),
                         wait_loop_iterations=iterations, wait_loop_ms=milliseconds)


def _find_executable(name: str) -> str:
    path = name if "/" in name else shutil.which(name)
    if path is None or not os.path.lexists(path):
        raise ProgramError(f"{name}: program not found", EXIT_NOT_FOUND)
    if os.path.isdir(path):
        raise ProgramError(f"{name}: is a directory", EXIT_CANNOT_EXECUTE)
    if not os.access(path, os.X_OK):
        raise ProgramError(f"{name}: permission denied (not executable)", EXIT_CANNOT_EXECUTE)
    return os.path.abspath(path)


def _check_report_path(path: str | None) -> None:
    if path is None:
        return
    from mvee import report  # only with --report: its imports cost a short run's start-up

    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"report directory does not exist: {directory}")
    if os.path.isdir(path):
        raise UsageError(f"report path is a directory: {path}")
    if os.path.lexists(path) and (os.path.islink(path) or not os.path.isfile(path)):
        raise UsageError(f"report path exists and is not a regular file: {path}")
    if not report.may_replace(path):
        raise UsageError(f"report path exists and is not an mvee report (not overwritten): {path}")
    try:  # the report is written atomically through a file in that directory: try one now
        os.unlink(report.make_temporary(directory))
    except OSError as error:
        raise UsageError(f"report directory is not writable: {directory} ({error.strerror})") from None


def _run(executables: list[str], program_argv: list[str], report_path: str | None,
         options: SignalOptions, seccomp: seccomp_filter.Filter | None, use_lock_agent: bool) -> int:
    variants: list[Variant] = []
    monitor: Monitor | None = None
    with lock_agent.session(len(executables), use_lock_agent) as agent:
        try:
            for index, executable in enumerate(executables):
                variants.append(start(index, executable, program_argv, seccomp, agent.environment()))
            monitor = Monitor(variants, options, change_partners=not use_lock_agent)
            outcome = monitor.run()
        except StartError as error:
            kill_all(variants)
            print(f"mvee: {error}", file=sys.stderr)
            return EXIT_NOT_FOUND if error.errno == errno.ENOENT else EXIT_CANNOT_EXECUTE
        except Exception as error:  # a monitor bug must still end the variants and say so
            kill_all(variants)
            outcome = Outcome(Verdict.ERROR, f"internal error: {type(error).__name__}: {error}", None,
                              syscalls=monitor.syscalls if monitor else 0)
        agent_report = agent.describe()
    if outcome.verdict is not Verdict.OK:
        print(f"mvee: {outcome.verdict}: {outcome.message}", file=sys.stderr)
    if report_path:
        from mvee import report

        report.write(report_path, {**report.build(outcome, variants), "lock_agent": agent_report})
    return outcome.exit_status
