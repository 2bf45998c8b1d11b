"""Processes and threads in the variants: each set of counterparts runs in lockstep on its own.

Real Debian programs (x86_64) and tests/programs/family.c (x86_64 and i386 variants),
with 2 and 3 variants, give the output and exit status of a native run.
"""

from __future__ import annotations

import hashlib
import os
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest

from mvee.verdict import EXIT_STATUS, Verdict
from tests.conftest import ABIS, PROGRAMS
from tests.mvee_run import MveeProcess, process_state, tagged_processes, wait_until, wait_until_gone

DIVERGENCE_EXIT = EXIT_STATUS[Verdict.DIVERGENCE]
PYTHON = "/usr/bin/python3"  # not a pyenv shim: its interpreter is what runs
NON_PIE = ("-O0", "-no-pie", "-fno-pie", "-fno-toplevel-reorder")
VARIANTS = ("2", "3")
SIGNAL_RUNS = 20  # a one-in-ten false alarm shows in nine of ten test runs


def native(argv: list[str], cwd: Path, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, cwd=cwd, input=stdin, capture_output=True, timeout=120)


def assert_as_natively(run_mvee, argv: list[str], variants: str, cwd: Path) -> dict:
    """The run's output and status are the native run's; the report, for more checks."""
    expected = native(argv, cwd)
    result = run_mvee("-n", variants, "--", *argv, cwd=cwd)
    assert result.returncode == expected.returncode, result.stderr
    assert result.stdout == expected.stdout
    assert result.report["verdict"] == "ok"
    return result.report


@pytest.mark.parametrize("variants", VARIANTS)
def test_bash_pipeline_with_command_substitution(variants: str, run_mvee, tmp_path: Path) -> None:
    script = 'n=$(printf "b\\na\\nc\\n" | sort | head -n 2 | tr "\\n" " "); echo "first two: $n"; exit 3'
    report = assert_as_natively(run_mvee, ["/bin/bash", "-c", script], variants, tmp_path)
    sets = report["sets"]
    assert [len(s["pids"]) for s in sets] == [int(variants)] * len(sets)
    assert sets[0]["parent"] is None and all(s["parent"] is not None for s in sets[1:])
    programs = {Path(s["program"]).name for s in sets}
    assert {"bash", "sort", "head", "tr"} <= programs


@pytest.mark.parametrize("variants", VARIANTS)
def test_find_exec_runs_a_child_per_file(variants: str, run_mvee, tmp_path: Path) -> None:
    """A child per file, each reaped before the next fork: the SIGCHLD of one comes to a
    follower (mirrored from the leader) while it makes the next. Its kernel abandoned
    that fork to restart it after the signal, the leader's child was taken for its own,
    and the run hung (half the runs at -n 3 here)."""
    files = tmp_path / "files"
    files.mkdir()
    for number in range(30):
        (files / f"f{number:02}").write_text(f"{number}\n")
    argv = ["/usr/bin/find", "files", "-type", "f", "-exec", "cat", "{}", ";"]
    for _ in range(3):
        report = assert_as_natively(run_mvee, argv, variants, tmp_path)
        assert len(report["sets"]) == 31


@pytest.mark.parametrize("variants", VARIANTS)
def test_sh_pipeline_of_seq_sort_tail(variants: str, run_mvee, tmp_path: Path) -> None:
    assert_as_natively(run_mvee, ["/bin/sh", "-c", "seq 1 100000 | sort -n | tail -1"], variants, tmp_path)


@pytest.mark.parametrize("variants", VARIANTS)
def test_make_of_two_targets(variants: str, run_mvee, tmp_path: Path) -> None:
    for run in ("native", "mvee"):
        (tmp_path / run).mkdir()
        (tmp_path / run / "Makefile").write_text(
            "all: b\na:\n\techo made-a > a\nb: a\n\tcat a > b; echo made-b\n")
    expected = native(["/usr/bin/make"], tmp_path / "native")
    result = run_mvee("-n", variants, "--", "/usr/bin/make", cwd=tmp_path / "mvee")
    assert (result.returncode, result.stdout) == (expected.returncode, expected.stdout), result.stderr
    assert expected.stdout == b"echo made-a > a\ncat a > b; echo made-b\nmade-b\n"
    assert (tmp_path / "mvee" / "b").read_text() == "made-a\n"
    assert len(result.report["sets"]) >= 3  # make, and a shell per recipe


# subprocess: run and call; asyncio: each variant's pidfd names its own child and becomes
# readable when that child ends (asyncio's child watcher since Python 3.12, chosen here).
PYTHON_CHILDREN = {
    "subprocess": ("import subprocess, sys\n"
                   "r = subprocess.run(['/bin/sh', '-c', 'echo out; echo err >&2; exit 5'],\n"
                   "                   capture_output=True)\n"
                   "print(r.returncode, r.stdout, r.stderr)\n"
                   "sys.exit(subprocess.call(['/bin/true']))\n"),
    # On expiry Python kills the child (SIGKILL): each variant's parent kills its own, the
    # leader's child dying in its sleep a moment before the others' (once an alarm).
    "subprocess-timeout": ("import subprocess\n"
                           "try:\n"
                           "    subprocess.run(['/bin/sleep', '5'], timeout=0.3)\n"
                           "except subprocess.TimeoutExpired:\n"
                           "    print('timeout')\n"),
    # A queue's lock is a semaphore in a file mapping (sem_open), shared by the parent and
    # its child, not with the other variants' (test_a_shared_file_mapping_...).
    "multiprocessing-queue": ("import multiprocessing as m\n"
                              "q = m.Queue()\n"
                              "p = m.Process(target=q.put, args=(5,))\n"
                              "p.start()\n"
                              "print(q.get())\n"
                              "p.join()\n"),
    # A writable shared mapping of a file open read-only fails in every variant (not only
    # the leader's: a follower's must not become its own memory then).
    "shared-mapping-refused": ("import mmap, os\n"
                               "with open('mapped', 'wb') as f:\n"
                               "    f.write(b'x' * 4096)\n"
                               "fd = os.open('mapped', os.O_RDONLY)\n"
                               "try:\n"
                               "    mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)\n"
                               "except PermissionError as error:\n"
                               "    print('refused', error.errno)\n"),
    "asyncio-pidfd": ("import asyncio, os, select, subprocess, warnings\n"
                      "warnings.simplefilter('ignore', DeprecationWarning)\n"
                      "child = subprocess.Popen(['/bin/sh', '-c', 'exit 3'])\n"
                      "pidfd = os.pidfd_open(child.pid)\n"
                      "print(select.select([pidfd], [], [], 30)[0] == [pidfd], child.wait())\n"
                      "async def main():\n"
                      "    proc = await asyncio.create_subprocess_exec('/bin/echo', 'hi',\n"
                      "                                                stdout=subprocess.PIPE)\n"
                      "    print(await proc.communicate(), proc.returncode)\n"
                      "asyncio.set_child_watcher(asyncio.PidfdChildWatcher())\n"
                      "asyncio.run(main())\n"),
}


@pytest.mark.parametrize("variants", VARIANTS)
@pytest.mark.parametrize("program", sorted(PYTHON_CHILDREN))
def test_python_children_run_as_natively(program: str, variants: str, run_mvee, tmp_path: Path) -> None:
    assert_as_natively(run_mvee, [PYTHON, "-c", PYTHON_CHILDREN[program]], variants, tmp_path)


@pytest.mark.parametrize("variants", VARIANTS)
def test_a_wrapper_script_that_execs_the_program(variants: str, run_mvee, tmp_path: Path) -> None:
    wrapper = tmp_path / "wrapper"
    wrapper.write_text('#!/bin/sh\nexport GREETING=hello\n'
                       'exec /usr/bin/env sh -c \'echo "$GREETING $0 $1"\' "$@"\n')
    wrapper.chmod(0o755)
    report = assert_as_natively(run_mvee, [str(wrapper), "a", "b"], variants, tmp_path)
    assert Path(report["variants"][0]["executable"]).name in ("dash", "bash", "sh")


@pytest.mark.parametrize("variants", VARIANTS)
@pytest.mark.parametrize("abi", sorted(ABIS))
def test_family_of_processes_and_threads(abi: str, variants: str, build_program, run_mvee,
                                         tmp_path: Path) -> None:
    """fork, PIDs as the child and parent see them, kill and setpgid by the PID fork gave,
    posix_spawn, two threads: as natively."""
    program = build_program("family", abi, "-pthread")
    report = assert_as_natively(run_mvee, [str(program), "/bin/echo"], variants, tmp_path)
    assert b"differs" not in native([str(program), "/bin/echo"], tmp_path).stdout
    threads = [s for s in report["sets"] if s["thread"]]
    assert len(threads) == 2 and all(s["parent"] == 0 for s in threads)


@pytest.mark.parametrize("abi", sorted(ABIS))
def test_forked_child_with_the_layout_dependent_overwrite_is_stopped_before_its_write(
        abi: str, build_program, run_mvee, tmp_path: Path) -> None:
    plain = build_program("overwrite", abi, *NON_PIE, "-DFORKED")
    shifted = build_program("overwrite", abi, *NON_PIE, "-DFORKED", "-DSHIFTED")
    symbols = subprocess.run(["nm", str(plain)], capture_output=True, text=True, check=True).stdout
    payload = int(next(line.split()[0] for line in symbols.splitlines() if line.endswith(" payload")), 16)
    exploit = b"A" * 16 + struct.pack("<Q" if abi == "x86_64" else "<I", payload)
    assert native([str(plain)], tmp_path, exploit).stdout == b"PWNED\nchild exited 66\n"  # it works natively

    result = run_mvee("--exe", str(plain), "--exe", str(shifted), "--", "overwrite", stdin=exploit)
    assert b"PWNED" not in result.stdout
    assert result.returncode == DIVERGENCE_EXIT, result.stderr
    assert "set 1" in result.report["message"] and result.report["verdict"] == "divergence"
    assert wait_until_gone([], result.tag) == []
    benign = run_mvee("--exe", str(plain), "--exe", str(shifted), "--", "overwrite", stdin=b"hello\n")
    assert (benign.returncode, benign.stdout) == (0, b"benign\nchild exited 0\n"), benign.stderr


@pytest.mark.parametrize("variants", VARIANTS)
def test_python_threads_hashing_print_in_order(variants: str, run_mvee, tmp_path: Path) -> None:
    code = ("import hashlib, threading\n"
            "results = [None] * 4\n"
            "def work(i):\n"
            "    h = hashlib.sha256()\n"
            "    for k in range(20000):\n"
            "        h.update(f'{i}-{k}'.encode())\n"
            "    results[i] = h.hexdigest()\n"
            "threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]\n"
            "for t in threads: t.start()\n"
            "for t in threads: t.join()\n"
            "for i, r in enumerate(results): print(i, r)\n")
    report = assert_as_natively(run_mvee, [PYTHON, "-c", code], variants, tmp_path)
    assert sum(s["thread"] for s in report["sets"]) == 4
    expected = hashlib.sha256(b"".join(f"0-{k}".encode() for k in range(20000))).hexdigest()
    assert f"0 {expected}".encode() in native([PYTHON, "-c", code], tmp_path).stdout


def test_sigkill_of_the_monitor_during_a_pipeline_leaves_nothing(tmp_path: Path) -> None:
    monitor = MveeProcess("run", "-n", "3", "--", "/bin/sh", "-c", "echo ready; sleep 60 | cat | cat",
                          report=tmp_path / "r.json", ready=b"ready\n")
    # sh, sleep and two cats, three variants each, all started.
    wait_until(lambda: len(tagged_processes(monitor.tag)) >= 12, "every process started", timeout=30)
    os.kill(monitor.pid, signal.SIGKILL)
    monitor.process.wait(timeout=10)
    assert wait_until_gone([], monitor.tag) == []


def test_sigterm_to_the_monitor_reaches_every_set_and_the_report_is_written(tmp_path: Path) -> None:
    monitor = MveeProcess("run", "-n", "2", "--", "/bin/sh", "-c", "echo ready; sleep 60 | cat",
                          report=tmp_path / "r.json", ready=b"ready\n")
    wait_until(lambda: len(tagged_processes(monitor.tag)) >= 6, "every process started", timeout=30)
    started = time.monotonic()
    os.kill(monitor.pid, signal.SIGTERM)
    result = monitor.finish()
    assert time.monotonic() - started < 10  # the sleep was ended, not waited out
    assert result.report is not None and result.returncode == 128 + signal.SIGTERM, result.stderr
    assert len(result.report["sets"]) >= 3
    assert wait_until_gone([], monitor.tag) == []


def _sigint_by_default() -> None:
    """In a native run's child: SIGINT as a shell's foreground job has it (a test runner
    started in the background hands its children SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _all_asleep(pids: list[int]) -> bool:
    """Every thread of these processes sleeps in the kernel or is stopped by the monitor."""
    try:
        tids = [tid for pid in pids for tid in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return False
    return len(tids) == 4 * len(pids) and all(process_state(int(tid)) in ("S", "t") for tid in tids)


KILLING_REPEATS = 20  # alternately 2 and 3 variants


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_killing_signal_ends_threads_blocked_in_different_calls_as_natively(signum: signal.Signals,
                                                                              build_program,
                                                                              tmp_path: Path) -> None:
    """A signal sent to the monitor, with its default action, to a program whose threads wait
    in accept, read, nanosleep and a futex: each variant's kernel tears its threads down one
    by one, so a thread set sees its variants die at different points (one thread gone,
    its counterpart still at a syscall or in a call). The run ends as natively, every
    time: the program's status, every variant killed by the signal, no alarm (a false
    divergence in about half the runs before)."""
    program = str(build_program("blocked_threads", "x86_64", "-pthread"))
    native = subprocess.Popen([program], stdout=subprocess.PIPE, preexec_fn=_sigint_by_default)
    assert native.stdout is not None and native.stdout.readline() == b"ready\n"
    native.send_signal(signum)
    assert native.wait(30) == -signum
    for repeat in range(KILLING_REPEATS):
        variants = 2 + repeat % 2
        monitor = MveeProcess("run", "-n", str(variants), "--", program, report=tmp_path / "r.json",
                              ready=b"ready\n")
        wait_until(lambda monitor=monitor: _all_asleep(monitor.variant_pids()),
                   "every thread waiting in its call")
        monitor.process.send_signal(signum)
        result = monitor.finish()
        assert result.report is not None, result.stderr
        assert (result.returncode, result.report["verdict"]) == (128 + signum, "ok"), \
            (repeat, result.report["message"])
        assert [v["signal"] for v in result.report["variants"]] == [signum.name] * variants
        assert len(result.report["sets"]) == 4
        assert wait_until_gone([], result.tag) == []


@pytest.mark.parametrize("variants", VARIANTS)
def test_a_signal_to_the_monitor_reaches_a_threaded_pythons_main_thread(variants: str,
                                                                        tmp_path: Path) -> None:
    """A Python main thread that naps and waits for the GIL (a timed futex wait, LOCAL)
    while another thread computes: a signal sent to the monitor goes to the main thread,
    as natively (not to the computing thread because the monitor stopped the main one at
    a syscall: its handler's flag would reach the main thread's loop at a point of each
    variant's own), and the wait it interrupts is restarted as LOCAL as it began (not a
    restart_syscall the others do not make). Both false alarms came in about half of
    the runs here."""
    for run in range(SIGNAL_RUNS // 2):
        monitor = MveeProcess("run", "-n", variants, "--", PYTHON, str(PROGRAMS / "gil_waiter.py"),
                              report=tmp_path / "report.json", ready=b"ready\n")
        time.sleep(0.1)  # the main thread in its loop
        monitor.process.send_signal(signal.SIGUSR1)
        result = monitor.finish()
        assert (result.returncode, result.stdout) == (0, b"got it\n"), (run, result.stderr)


@pytest.mark.parametrize("variants", VARIANTS)
@pytest.mark.parametrize("abi", sorted(ABIS))
def test_a_shared_file_mapping_is_each_variants_own_memory(abi: str, variants: str, build_program,
                                                            tmp_path: Path) -> None:
    """A writable shared mapping of a file (a POSIX semaphore's, a multiprocessing lock's)
    is shared with the processes a variant forks, not with the other variants: the
    leader maps the file, which it alone writes, each follower shared anonymous memory
    that held the file's bytes (mmap2's offset counts pages). Shared with the leader's,
    two variants' processes took turns at one semaphore: a stall alarm in every run of
    a multiprocessing.Pool."""
    program = build_program("shared_file", abi)
    expected = native([str(program)], tmp_path)
    assert expected.stdout == b"ready\nmap hellochild. file hellochild\n"
    (tmp_path / "shared").unlink()
    monitor = MveeProcess("run", "-n", variants, "--", str(program), report=tmp_path / "report.json",
                          ready=b"ready\n", cwd=tmp_path)
    mapped = [[line.split(maxsplit=5)[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
               if " rw-s " in line] for pid in monitor.variant_pids()]
    result = monitor.finish()
    assert (result.returncode, result.stdout) == (0, expected.stdout[len(b"ready\n"):]), result.stderr
    assert mapped == [[str(tmp_path / "shared")]] + [["/dev/zero (deleted)"]] * (int(variants) - 1)
    assert (tmp_path / "shared").read_bytes()[4096:4106] == b"hellochild"


# --- threads (or processes sharing a lock) whose interleaving decides their calls ---

POOL = ("from multiprocessing import Pool\n"
        "def square(x): return x * x\n"
        "if __name__ == '__main__':\n"
        "    with Pool(2) as pool: print(sum(pool.map(square, range(100))))\n")


@pytest.fixture(scope="module")
def large_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("large") / "numbers"
    path.write_bytes(b"".join(b"%d\n" % ((i * 7919) % 300007) for i in range(300000)))
    return path


WORK_SHARING = {"xz": ["/usr/bin/xz", "-T2", "-1", "--block-size=200KiB", "-c"],
                "pool": [PYTHON, "-c", POOL]}
RUNS = 10  # natively, each run shares the work out differently


def _work_sharing(command: str, large_input: Path) -> list[str]:
    return WORK_SHARING[command] + ([str(large_input)] if command != "pool" else [])


@pytest.mark.parametrize("variants", VARIANTS)
def test_xz_threads_run_as_natively_with_the_lock_agent(variants: str, large_input: Path, run_mvee,
                                                       tmp_path: Path) -> None:
    """Which of xz's threads compresses which block, and so when the main thread reads and
    writes, is decided by the order in which they take locks; the lock agent makes the
    followers take the leader's (docs/architecture.md). 50 runs of 50 here, each n."""
    argv = _work_sharing("xz", large_input)
    expected = native(argv, tmp_path)
    for _ in range(RUNS):
        result = run_mvee("-n", variants, "--lock-agent", "--", *argv, cwd=tmp_path)
        assert (result.report["verdict"], result.returncode) == ("ok", expected.returncode), result.stderr
        assert result.stdout == expected.stdout
        assert result.report["lock_agent"]["processes"] >= 1
        assert any(s["thread"] for s in result.report["sets"])
    assert wait_until_gone([], result.tag) == []


@pytest.mark.parametrize("variants", VARIANTS)
@pytest.mark.parametrize("abi", list(ABIS))
@pytest.mark.parametrize("workers", ["threads", "processes"])
def test_workers_that_take_turns_change_partners(workers: str, abi: str, variants: str, build_program,
                                                 run_mvee, tmp_path: Path) -> None:
    """Three workers take turns at writing the next line under a mutex (turns.c): in a
    follower, another worker than the leader's writes a line while its counterpart
    sleeps on the mutex. The two pairs stalled crosswise (an interleaving alarm after
    3 s, before); now the follower's workers change partners (mvee.thread_pairing) and
    the lines come out as natively. Threads, and processes that share the mutex in
    shared memory (as a multiprocessing.Pool's workers share a semaphore)."""
    program = build_program("turns", abi, "-pthread")
    argv = [str(program), *(["-p"] if workers == "processes" else []), "200", "3"]
    changes = []
    while sum(changes) == 0 and len(changes) < 4:  # 200 turns: some, in one run at least,
        report = assert_as_natively(run_mvee, argv, variants, tmp_path)  # in another order
        changes.append(report["partner_changes"])
        threads = sum(s["thread"] for s in report["sets"])
        assert (threads, len(report["sets"])) == ((3, 4) if workers == "threads" else (0, 4))
    assert sum(changes) >= 1, changes


@pytest.mark.parametrize("variants", VARIANTS)
@pytest.mark.parametrize("abi", list(ABIS))
def test_threads_opening_files_change_the_fd_tables_in_one_order(abi: str, variants: str, build_program,
                                                                  run_mvee, tmp_path: Path) -> None:
    """Three threads each open, read and close the file of the item they took, outside
    their lock (turns.c with a directory). A leader-first open runs in the leader, then
    in the others: two threads' opens in between gave the fds in another order in a
    follower ("openat gave 3 in variant 1 but 4 in the leader", before); a thread's call
    that every variant runs now waits for another's (Process.every_calls)."""
    items = tmp_path / "items"
    items.mkdir()
    for item in range(100):
        (items / str(item)).write_bytes(b"x" * (item * 37 + 5))
    program = build_program("turns", abi, "-pthread")
    report = assert_as_natively(run_mvee, [str(program), "100", "3", str(items)], variants, tmp_path)
    assert sum(s["thread"] for s in report["sets"]) == 3


@pytest.mark.parametrize("variants", VARIANTS)
def test_git_grep_runs_as_natively(variants: str, run_mvee, tmp_path: Path) -> None:
    """git grep's worker threads take files from a queue and open each one they took:
    the leader's thread A opens a file that a follower's thread B opens, while the
    follower's A opens the one the leader's B does (an alarm at once, before: the
    variants' threads at different calls). Such threads change partners at once.
    `--no-color`: with colour "auto", git's workers race to fill a static cache of
    isatty(1), so how many of them make the ioctl differs from run to run (natively too):
    a race outside any lock, the limit in docs/architecture.md, not what this tests."""
    repository = tmp_path / "repository"
    repository.mkdir()
    for number in range(60):
        (repository / f"file{number}.txt").write_text("".join(
            f"line {line} {'needle' if (number + line) % 7 == 0 else 'hay'}\n" for line in range(50)))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-C", str(repository)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    report = assert_as_natively(run_mvee, ["/usr/bin/git", "-C", str(repository), "grep", "--no-color", "-n",
                                            "needle"], variants, tmp_path)
    assert report["partner_changes"] >= 1  # 60 files: some were taken in another order (8 to 46 here)


@pytest.mark.parametrize("variants", VARIANTS)
@pytest.mark.parametrize("options", [[], ["--parallel=2"]], ids=["default", "parallel"])
def test_sort_of_a_large_input_runs_as_natively(options: list[str], variants: str, large_input: Path,
                                                run_mvee, tmp_path: Path) -> None:
    """sort of a large input sorts in threads (one per CPU) and merges in a tree whose
    root writes the output: which thread merges the root, and so makes each write, depends
    on a race outside its locks (a node's end, written under its child's lock, is read
    under the node's). The followers' threads change partners where the leader's took the
    other turn: every run as natively, without the lock agent (an alarm in every run,
    before)."""
    argv = ["/usr/bin/sort", *options, str(large_input)]
    for _ in range(5):  # each run shares the merging out differently
        report = assert_as_natively(run_mvee, argv, variants, tmp_path)
        assert any(s["thread"] for s in report["sets"])


@pytest.mark.parametrize("agent", [[], ["--lock-agent"]], ids=["", "lock-agent"])
@pytest.mark.parametrize("command", ["xz", "pool"])
def test_work_sharing_runs_as_natively_or_stops_with_the_interleaving_alarm(
        command: str, agent: list[str], large_input: Path, run_mvee, tmp_path: Path) -> None:
    """Without the lock agent, and with it where threads also race on memory outside their
    locks (CPython's GIL hand-over in the Pool's parent), the variants' threads may decide
    differently what to do next (xz's main thread reads more input or writes a block,
    by how far its workers got; two Pool workers race for the task lock, processes
    that cannot change partners): such a run either agrees, or stops with an alarm that
    says so: never a hang, never another output, nothing left behind."""
    argv = _work_sharing(command, large_input)
    expected = native(argv, tmp_path)
    result = run_mvee("-n", "2", *agent, "--", *argv, cwd=tmp_path)
    if result.report["verdict"] == "ok":
        assert (result.returncode, result.stdout) == (expected.returncode, expected.stdout)
    else:
        assert result.returncode == DIVERGENCE_EXIT, result.stderr
        message = result.report["message"]
        assert "interleaving" in message or " calls " in message or "lock operations" in str(
            result.report["alarm"]["views"]), message
        assert expected.stdout.startswith(result.stdout)
    assert any(s["thread"] for s in result.report["sets"])
    assert wait_until_gone([], result.tag) == []


@pytest.mark.parametrize("variants", VARIANTS)
def test_sigchld_is_an_asynchronous_signal_to_the_parents_set(variants: str, run_mvee,
                                                              tmp_path: Path) -> None:
    """Each parent variant's kernel raises SIGCHLD when its own child ends, at a different
    point in each: the parent's set delivers it at one point, to a handler that counts."""
    code = ("import os, signal, subprocess\n"
            "seen = []\n"
            "signal.signal(signal.SIGCHLD, lambda s, f: seen.append(s))\n"
            "for _ in range(4):\n"
            "    subprocess.run(['/bin/true'])\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    os._exit(4)\n"
            "_, status = os.waitpid(pid, 0)\n"
            "print('status', os.waitstatus_to_exitcode(status), 'handled', len(seen) >= 1)\n")
    report = assert_as_natively(run_mvee, [PYTHON, "-c", code], variants, tmp_path)
    assert report["signals"]["delivered"] >= 1
    assert len(report["sets"]) == 6



@pytest.mark.parametrize("variants", VARIANTS)
@pytest.mark.parametrize("abi", ABIS)
def test_a_parent_that_signals_its_child_and_waits_in_sigsuspend(abi: str, variants: str, build_program,
                                                                 run_mvee, tmp_path: Path) -> None:
    """GNU timeout's and dash's way (tests/programs/kill_child.c): SIGCHLD blocked but in
    sigsuspend, which its SIGCHLD interrupts in every variant, a common point where it is
    delivered (set aside, it came back blocked at the call's next entry, again and again,
    a thousand sigsuspends until a variant parked with it blocked: a non-compliance alarm);
    and two kills of the child in a row, which its variants count as the leader's kernel
    does."""
    program = build_program("kill_child", abi)
    expected = native([str(program)], tmp_path)
    assert expected.stdout == b"got SIGUSR1: 1\nchild status 7\n"
    for run in range(SIGNAL_RUNS):
        result = run_mvee("-n", variants, "--", str(program), cwd=tmp_path)
        assert (result.returncode, result.stdout) == (0, expected.stdout), (run, result.stderr)
        parent = result.report["sets"][0]
        assert parent["syscalls"] < 100, (run, parent)  # a few sigsuspends at most, not a loop


@pytest.mark.parametrize("variants", VARIANTS)
def test_timeout_interrupts_a_python_child_and_reaps_it(variants: str, run_mvee, tmp_path: Path) -> None:
    """`timeout -s INT` (coreutils): on expiry it sends SIGINT to the child, then to its
    process group (the child may get two), then SIGCONT likewise, and waits for the child's
    SIGCHLD in sigsuspend. The child, Python with a SIGINT handler, ends its sleep loop:
    124, as natively, every time, without a loop of sigsuspends."""
    child = tmp_path / "child.py"
    child.write_text("import signal, time\n"
                     "got = []\n"
                     "signal.signal(signal.SIGINT, lambda *a: got.append(1))\n"
                     "print('ready', flush=True)\n"
                     "while not got:\n"
                     "    time.sleep(0.01)\n"
                     "print('interrupted')\n")
    argv = ["/usr/bin/timeout", "-s", "INT", "1.5", PYTHON, str(child)]  # its handler set by then
    expected = native(argv, tmp_path)
    assert (expected.returncode, expected.stdout) == (124, b"ready\ninterrupted\n")
    for run in range(SIGNAL_RUNS):
        result = run_mvee("-n", variants, "--", *argv, cwd=tmp_path)
        assert (result.returncode, result.stdout) == (124, expected.stdout), (run, result.stderr)
        assert result.report["sets"][0]["syscalls"] < 300, run  # no sigsuspend loop


@pytest.mark.parametrize("variants", VARIANTS)
def test_sh_signals_a_python_child_twice_and_waits(variants: str, run_mvee, tmp_path: Path) -> None:
    """sh sends SIGUSR1 twice in a row to a Python child with a handler (the instances one
    kernel coalesces, another may not: every variant takes the leader's) and waits for it."""
    receiver = tmp_path / "receiver.py"
    receiver.write_text("import signal, time\n"
                        "got = []\n"
                        "signal.signal(signal.SIGUSR1, lambda *a: got.append(1))\n"
                        "open('ready', 'w').close()\n"
                        "time.sleep(1)\n"
                        "print('got', bool(got))\n")
    script = (f"{PYTHON} {receiver} & while [ ! -e ready ]; do sleep 0.05; done; "
              "kill -USR1 $!; kill -USR1 $!; wait $!; echo status $?")
    for run in range(SIGNAL_RUNS // 2):
        (tmp_path / "ready").unlink(missing_ok=True)
        result = run_mvee("-n", variants, "--", "/bin/sh", "-c", script, cwd=tmp_path)
        assert (result.returncode, result.stdout) == (0, b"got True\nstatus 0\n"), (run, result.stderr)
