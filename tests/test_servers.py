"""Servers, links and locks under the monitor against native runs: C servers on both ABIs
driven by a native client on 127.0.0.1, nc, and everyday programs (ln, cp, tar, sqlite3)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ABIS
from tests.mvee_run import MveeProcess, wait_until, wait_until_gone

PYTHON = "/usr/bin/python3"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _connect(port: int, deadline: float) -> socket.socket:
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=20)
        except ConnectionRefusedError:
            assert time.monotonic() < deadline, f"nothing listens on 127.0.0.1:{port}"
            time.sleep(0.02)


def _echo_clients(port: int, clients: int) -> list[bytes]:
    """Each client sends a message and reads its echo back."""
    answers = []
    for i in range(clients):
        with _connect(port, time.monotonic() + 30) as client:
            message = f"message {i} ".encode() * (i + 1)
            client.sendall(message)
            echoed = b""
            while len(echoed) < len(message) and (chunk := client.recv(4096)):
                echoed += chunk
            answers.append(echoed)
    return answers


def _shouting_client(port: int) -> list[bytes]:
    with _connect(port, time.monotonic() + 30) as client:
        time.sleep(0.1)
        client.sendall(b"shout this")
        return [client.recv(100), client.recv(100)]


def _serve(argv: list[str], client: Callable[[], list[bytes]], monitor: bool, variants: int,
           tmp_path: Path) -> tuple[int, bytes, list[bytes], str]:
    """Runs a server (natively or under the monitor) with a native client in a thread."""
    answers: list[bytes] = []
    thread = threading.Thread(target=lambda: answers.extend(client()))
    if monitor:
        run = MveeProcess("run", "-n", str(variants), "--", *argv, report=tmp_path / "report.json")
        thread.start()
        result = run.finish(timeout=60)
        returncode, stdout, stderr = result.returncode, result.stdout, result.stderr
        assert result.report is not None and result.report["verdict"] == "ok", stderr
    else:
        thread.start()
        completed = subprocess.run(argv, capture_output=True, timeout=60)
        returncode, stdout, stderr = completed.returncode, completed.stdout, completed.stderr.decode()
    thread.join(30)
    return returncode, stdout, answers, stderr


@pytest.mark.parametrize("variants", [2, 3])
@pytest.mark.parametrize("abi", sorted(ABIS))
def test_epoll_echo_server_matches_native(abi: str, variants: int, build_program, tmp_path: Path) -> None:
    program = str(build_program("epoll_echo", abi))
    runs = []
    for monitor in (False, True):
        port = _free_port()
        clients = lambda port=port: _echo_clients(port, 3)  # noqa: E731
        code, out, answers, stderr = _serve([program, str(port), "3"], clients, monitor, variants, tmp_path)
        # the port differs between the runs: the rest of the output is compared
        runs.append((code, out.replace(f":{port}\n".encode(), b":PORT\n"), answers))
    assert runs[0][0] == 0 and runs[0][1].endswith(b"served 3\n")
    assert runs[1] == runs[0], stderr
    assert runs[0][2] == [f"message {i} ".encode() * (i + 1) for i in range(3)]


@pytest.mark.parametrize("variants", [2, 3])
@pytest.mark.parametrize("abi", sorted(ABIS))
def test_poll_and_select_server_matches_native(abi: str, variants: int, build_program,
                                               tmp_path: Path) -> None:
    program = str(build_program("poll_server", abi))
    runs = []
    for monitor in (False, True):
        port = _free_port()
        runs.append(_serve([program, str(port)], lambda port=port: _shouting_client(port), monitor, variants,
                           tmp_path))
    (native_code, native_out, native_answers, _), (code, out, answers, stderr) = runs
    assert native_code == 0 and native_answers == [b"SHOUT THIS", b""]
    assert (code, out, answers) == (native_code, native_out, native_answers), stderr


@pytest.mark.parametrize("variants", [2, 3])
@pytest.mark.parametrize("abi", sorted(ABIS))
def test_links_locks_and_fd_objects_match_native(abi: str, variants: int, build_program, tmp_path: Path,
                                                 run_mvee) -> None:
    program = str(build_program("kernel_objects", abi))
    (tmp_path / "native").mkdir()
    (tmp_path / "monitored").mkdir()
    native = subprocess.run([program, str(tmp_path / "native")], capture_output=True, timeout=60)
    monitored = run_mvee("-n", str(variants), "--", program, str(tmp_path / "monitored"))
    assert native.returncode == 0 and b"cookie is ours 1" in native.stdout
    assert monitored.report["verdict"] == "ok", monitored.stderr
    assert monitored.stdout == native.stdout
    assert sorted(p.name for p in (tmp_path / "monitored").iterdir()) == ["dangling", "data", "hard", "soft"]
    assert (tmp_path / "monitored" / "data").stat().st_nlink == 2


def test_sigterm_ends_a_server_as_natively(build_program, tmp_path: Path) -> None:
    program = str(build_program("epoll_echo", "x86_64"))
    native = subprocess.Popen([program, str(_free_port())], stdout=subprocess.PIPE)
    assert native.stdout is not None and native.stdout.readline().startswith(b"listening")
    native.send_signal(signal.SIGTERM)
    assert native.wait(30) == -signal.SIGTERM
    port = _free_port()
    run = MveeProcess("run", "-n", "2", "--", program, str(port), report=tmp_path / "report.json",
                      ready=f"listening on 127.0.0.1:{port}\n".encode())
    assert _echo_clients(port, 1) == [b"message 0 "]  # serving under the monitor
    run.process.send_signal(signal.SIGTERM)
    result = run.finish(timeout=30)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert result.report["verdict"] == "ok"


@pytest.mark.skipif(shutil.which("nc") is None, reason="nc (netcat-openbsd) is not installed")
@pytest.mark.parametrize("variants", [2, 3])
def test_nc_listens_and_prints_what_a_client_sends(variants: int, tmp_path: Path) -> None:
    def client(port: int) -> list[bytes]:
        with _connect(port, time.monotonic() + 30) as connection:
            connection.sendall(b"hello from a client\n")
            connection.shutdown(socket.SHUT_WR)
            return [connection.recv(100)]

    runs = []
    for monitor in (False, True):
        port = _free_port()
        runs.append(_serve(["nc", "-l", "127.0.0.1", str(port)], lambda port=port: client(port), monitor,
                           variants, tmp_path))
    (native_code, native_out, native_answers, _), (code, out, answers, stderr) = runs
    assert native_out == b"hello from a client\n"
    assert (code, out, answers) == (native_code, native_out, native_answers), stderr


# --- everyday programs ---


def _tree(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    (root / "file").write_text("contents\n")
    (root / "link").symlink_to("file")
    (root / "sub" / "dangling").symlink_to("../nowhere")
    (root / "sub" / "hard").hardlink_to(root / "file")


def _listing(root: Path) -> list[tuple[str, str, int, str]]:
    rows = []
    for path in sorted(root.rglob("*")):
        kind = "link" if path.is_symlink() else "dir" if path.is_dir() else "file"
        content = str(path.readlink()) if kind == "link" else path.read_text() if kind == "file" else ""
        rows.append((str(path.relative_to(root)), kind, path.lstat().st_nlink, content))
    return rows


@pytest.mark.parametrize("variants", [2, 3])
def test_tar_extracts_symlinks_and_hard_links_as_natively(variants: int, tmp_path: Path, run_mvee) -> None:
    _tree(tmp_path / "src" / "tree")
    archive = tmp_path / "tree.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tmp_path / "src" / "tree", arcname="tree")
    for where in ("native", "monitored"):
        (tmp_path / where).mkdir()
    native = subprocess.run(["tar", "xf", str(archive)], cwd=tmp_path / "native", capture_output=True)
    monitored = run_mvee("-n", str(variants), "--", "tar", "xf", str(archive), "-C",
                         str(tmp_path / "monitored"))
    assert native.returncode == 0
    assert monitored.report["verdict"] == "ok", monitored.stderr
    assert _listing(tmp_path / "monitored") == _listing(tmp_path / "native")
    assert ("tree/sub/hard", "file", 2, "contents\n") in _listing(tmp_path / "monitored")


@pytest.mark.parametrize("variants", [2, 3])
@pytest.mark.parametrize("argv", [
    ["ln", "-s", "file", "{dir}/soft"],
    ["ln", "{dir}/file", "{dir}/hard"],
    ["cp", "{dir}/file", "{dir}/copy"],
    ["cp", "-a", "{dir}/file", "{dir}/archived"],
    ["bash", "-c", "echo hi; echo there >&2"],  # every bash start-up calls getpeername(0)
], ids=["ln-s", "ln", "cp", "cp-a", "bash"])
def test_everyday_program_matches_native(argv: list[str], variants: int, tmp_path: Path, run_mvee) -> None:
    listings, outputs = [], []
    for where, monitor in (("native", False), ("monitored", True)):
        directory = tmp_path / where
        directory.mkdir()
        (directory / "file").write_text("contents\n")
        command = [shutil.which(argv[0]) or argv[0], *(a.format(dir=directory) for a in argv[1:])]
        if monitor:
            result = run_mvee("-n", str(variants), "--", *command)
            assert result.report["verdict"] == "ok", result.stderr
            outputs.append((result.returncode, result.stdout))
        else:
            completed = subprocess.run(command, capture_output=True)
            outputs.append((completed.returncode, completed.stdout))
        listings.append(_listing(directory))
    assert outputs[0] == outputs[1]
    assert listings[0] == listings[1] and len(listings[0]) == (1 if argv[0] == "bash" else 2)


DUMP = "import sqlite3, sys; print(list(sqlite3.connect(sys.argv[1]).iterdump()))"
SQLITE_SCRIPT = """
import fcntl, sqlite3, sys
database = sys.argv[1]
with open(database + ".lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB, 10)
    connection = sqlite3.connect(database)
    connection.execute("create table t (k integer primary key, v text)")
    with connection:
        connection.executemany("insert into t (v) values (?)", [(f"row {i}",) for i in range(500)])
    print(connection.execute("select count(*), sum(k), max(v) from t").fetchone())
    connection.close()
"""


@pytest.mark.parametrize("variants", [2, 3])
def test_sqlite3_writes_a_database_as_natively(variants: int, tmp_path: Path, run_mvee) -> None:
    script = tmp_path / "db.py"
    script.write_text(SQLITE_SCRIPT)
    native = subprocess.run([PYTHON, str(script), str(tmp_path / "native.db")], capture_output=True)
    monitored = run_mvee("-n", str(variants), "--", PYTHON, str(script), str(tmp_path / "monitored.db"))
    assert native.returncode == 0, native.stderr
    assert monitored.report["verdict"] == "ok", monitored.stderr
    assert monitored.stdout == native.stdout == b"(500, 125250, 'row 99')\n"
    dump = subprocess.run([PYTHON, "-c", DUMP, str(tmp_path / "monitored.db")], capture_output=True,
                          text=True)
    assert "row 499" in dump.stdout


# --- messages in batches, passed descriptors, epoll through dups (tests/programs/messages.c) ---

@pytest.mark.parametrize("variants", [2, 3])
@pytest.mark.parametrize("abi", sorted(ABIS))
@pytest.mark.parametrize("mode", ["mmsg", "epoll-dup"])
def test_message_batches_and_epoll_dups_match_native(mode: str, abi: str, variants: int, build_program,
                                                     run_mvee) -> None:
    program = str(build_program("messages", abi))
    native = subprocess.run([program, mode], capture_output=True, timeout=60)
    assert native.returncode == 0, native.stderr
    assert b"cookie is ours 0" not in native.stdout and b"= -1" not in native.stdout.split(b"empty")[0]
    result = run_mvee("-n", str(variants), "--", program, mode)
    assert (result.returncode, result.stdout) == (0, native.stdout), result.stderr


@pytest.mark.parametrize("abi", sorted(ABIS))
def test_a_received_descriptor_is_refused_clearly(abi: str, build_program, run_mvee) -> None:
    program = str(build_program("messages", abi))
    assert subprocess.run([program, "rights"], capture_output=True).stdout.endswith(b"the same file 1\n")
    result = run_mvee("-n", "2", "--", program, "rights")
    assert result.returncode == 122, result.stderr
    assert result.report["message"].startswith("recvmsg received 1 file descriptor (SCM_RIGHTS)")
    assert result.stdout == b"socketpair = 0\nsendmsg = 1\n"  # the sent message compared alike


def _listening(port: int) -> bool:
    """Whether a TCP socket listens on 127.0.0.1:PORT (/proc/net/tcp; a probe connection
    would be served by a thread of its own)."""
    with open("/proc/net/tcp") as table:
        return any(fields[1] == f"0100007F:{port:04X}" and fields[3] == "0A"
                   for fields in (line.split() for line in table.readlines()[1:]))


def _threads(pids: list[int]) -> set[int]:
    """How many threads these processes have: each count once."""
    try:
        return {len(os.listdir(f"/proc/{pid}/task")) for pid in pids}
    except OSError:
        return set()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("variants", [2, 3])
def test_python_http_server_answers_curl_as_natively(variants: int, signum: signal.Signals,
                                                     tmp_path: Path) -> None:
    """`python3 -m http.server` (a ThreadingHTTPServer: a thread per request) under the
    monitor, fetched by a native curl on 127.0.0.1, answers as natively, and a signal then
    ends it as natively while a client that sent half a request keeps a request's thread
    waiting in recv beside the main thread's poll: SIGTERM kills it (every thread dies
    wherever the kill finds it; a false divergence or an internal error in about half the
    runs before), SIGINT raises KeyboardInterrupt in the main thread, which http.server
    catches to exit with 0, whichever thread the signal came to."""
    site = tmp_path / "site"
    (site / "sub").mkdir(parents=True)
    (site / "index.html").write_text("<p>hello</p>\n")
    (site / "numbers.txt").write_text("".join(f"{i}\n" for i in range(5000)))
    (site / "sub" / "listed.txt").write_text("in a listing\n")

    def fetch(port: int, between: Callable[[], None]) -> list[bytes]:
        """The three pages; `between` waits between two requests (a request's thread
        closing its socket while the next one opens a file would take fd numbers in
        another order in each variant: the limit of threads)."""
        deadline = time.monotonic() + 60
        while not _listening(port):
            assert time.monotonic() < deadline, f"nothing listens on 127.0.0.1:{port}"
            time.sleep(0.02)
        answers = []
        for name in ("index.html", "numbers.txt", "sub/"):
            if answers:
                between()
            answers.append(subprocess.run(["curl", "-s", f"http://127.0.0.1:{port}/{name}"],
                                          capture_output=True, timeout=60, check=True).stdout)
        return answers

    def argv(port: int) -> list[str]:
        return [PYTHON, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(site), str(port)]

    native_port = _free_port()
    native = subprocess.Popen(argv(native_port), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    native_answers = fetch(native_port, lambda: None)
    with _connect(native_port, time.monotonic() + 30) as client:
        client.sendall(b"GET /index.html HTTP/1.1\r\n")  # no blank line: the request goes on
        time.sleep(0.2)
        native.send_signal(signum)
        native_out, _ = native.communicate(timeout=30)
    killed = signum == signal.SIGTERM  # SIGINT: KeyboardInterrupt, caught, exit 0
    assert native.returncode == (-signum if killed else 0)
    assert native_answers[0] == b"<p>hello</p>\n" and b"listed.txt" in native_answers[2]

    port = _free_port()
    run = MveeProcess("run", "-n", str(variants), "--", *argv(port), report=tmp_path / "report.json")

    def threads_ended() -> None:
        wait_until(lambda: _threads(run.variant_pids()) == {1}, "the request's thread ended")

    answers = fetch(port, threads_ended)
    assert answers == native_answers
    threads_ended()
    with _connect(port, time.monotonic() + 30) as client:
        client.sendall(b"GET /index.html HTTP/1.1\r\n")
        wait_until(lambda: _threads(run.variant_pids()) == {2}, "a thread waiting for the request's end")
        run.process.send_signal(signum)
        result = run.finish(timeout=60)
    assert result.report is not None, result.stderr
    assert (result.returncode, result.report["verdict"]) == (128 + signum if killed else 0, "ok"), \
        result.report["message"]
    assert result.stdout.replace(str(port).encode(), b"PORT") == native_out.replace(str(native_port).encode(),
                                                                                    b"PORT")
    assert len(result.report.get("sets", [])) > 1  # the request threads ran as thread sets
    assert wait_until_gone([v["pid"] for v in result.report["variants"]], result.tag) == []
