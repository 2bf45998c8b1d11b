"""The variants' view of the world: the clock, the TSC, their own /proc files and
temporary names, on real Debian programs and the test programs, both ABIs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from mvee.abi import X86_64
from mvee.engine import Call
from mvee.own_files import OwnFiles, own_directory
from mvee.syscall_table import BY_ABI
from mvee.temp_names import layout_name
from mvee.variant import Variant
from tests.conftest import ABIS
from tests.mvee_run import MveeProcess

AT_FDCWD = -100 & X86_64.word_mask

PYTHON = "/usr/bin/python3"


# --- time from the kernel (mvee.vdso) ---

@pytest.mark.parametrize("abi", sorted(ABIS))
def test_vdso_is_hidden_in_every_exec(abi: str, build_program, run_mvee) -> None:
    program = str(build_program("clocks", abi))
    assert subprocess.run([program, "vdso"], capture_output=True).stdout == b"vdso visible\n"
    # through env: the program is the variants' second exec (the monitor's after_exec)
    result = run_mvee("-n", "2", "--", "/usr/bin/env", program, "vdso")
    assert (result.returncode, result.stdout) == (0, b"vdso hidden\n"), result.stderr


@pytest.mark.parametrize("variants", [2, 3])
@pytest.mark.parametrize("abi", sorted(ABIS))
@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
def test_clock_reads_agree_in_every_variant(abi: str, variants: int, static: bool, build_program,
                                            run_mvee) -> None:
    program = build_program("clocks", abi, *(["-static"] if static else []))
    before = time.time()
    result = run_mvee("-n", str(variants), "--", str(program), "clock", "20")
    assert result.returncode == 0, result.stderr
    rows = [[float(field) for field in line.split()] for line in result.stdout.decode().splitlines()]
    assert len(rows) == 20
    for earlier, later in zip(rows, rows[1:], strict=False):
        assert all(a <= b for a, b in zip(earlier[:3], later[:3], strict=True))
    assert before - 1 <= rows[0][0] <= time.time() + 1  # the real clock, not a made-up one


@pytest.mark.parametrize("variants", [2, 3])
def test_date_with_nanoseconds(variants: int, run_mvee) -> None:
    before = time.time()
    result = run_mvee("-n", str(variants), "--", "/usr/bin/date", "+%s.%N")
    assert result.returncode == 0, result.stderr
    assert before - 1 <= float(result.stdout) <= time.time() + 1


@pytest.mark.parametrize("variants", [2, 3])
def test_python_sleeps_until_an_absolute_deadline(variants: int, run_mvee) -> None:
    script = "import time; t = time.monotonic(); time.sleep(0.1); print(time.monotonic() - t >= 0.1)"
    result = run_mvee("-n", str(variants), "--", PYTHON, "-c", script)
    assert (result.returncode, result.stdout) == (0, b"True\n"), result.stderr


# --- the time-stamp counter (mvee.tsc) ---

@pytest.mark.parametrize("variants", [2, 3])
@pytest.mark.parametrize("abi", sorted(ABIS))
def test_rdtsc_and_rdtscp_give_every_variant_the_same_value(abi: str, variants: int, build_program,
                                                            run_mvee) -> None:
    program = str(build_program("clocks", abi))
    # through env: the trap set before the first exec holds after the second
    result = run_mvee("-n", str(variants), "--", "/usr/bin/env", program, "tsc", "50")
    assert result.returncode == 0, result.stderr
    rows = [[int(field) for field in line.split()] for line in result.stdout.decode().splitlines()]
    assert len(rows) == 50  # and non-decreasing: the program checks that itself


@pytest.mark.parametrize(("count", "messages"), [
    ("0", ["read the time-stamp counter a different number of times"]),
    # whichever variant makes that read second is the one named
    ("3", ["variant 1 executed rdtsc where another executed rdtscp",
           "variant 0 executed rdtscp where another executed rdtsc"])])
def test_other_tsc_reads_are_a_divergence(count: str, messages: list[str], build_program, run_mvee) -> None:
    plain, extra = build_program("clocks", "x86_64"), build_program("clocks", "x86_64", "-DEXTRA_TSC")
    result = run_mvee("--exe", str(plain), "--exe", str(extra), "--", "clocks", "tsc", count)
    assert result.returncode == 120, result.stderr
    assert any(message in result.report["message"] for message in messages), result.report["message"]


# --- the variant's own /proc files (mvee.own_files) ---

@pytest.mark.parametrize("variants", [2, 3])
@pytest.mark.parametrize("path", ["self", "pid"])
@pytest.mark.parametrize("abi", sorted(ABIS))
def test_each_variant_reads_its_own_memory_map(abi: str, path: str, variants: int, build_program,
                                               run_mvee) -> None:
    result = run_mvee("-n", str(variants), "--", str(build_program("ownmaps", abi)), path)
    assert (result.returncode, result.stdout) == (0, b"main is in my own map\n"), result.stderr


@pytest.mark.parametrize("variants", [2, 3])
def test_a_status_file_printed_is_the_leaders(variants: int, tmp_path: Path, run_mvee) -> None:
    """`cat /proc/self/status` prints one file, the leader's (its PID is the one every
    variant is told), in every variant: no divergence at the write."""
    result = run_mvee("-n", str(variants), "--report", str(tmp_path / "report.json"), "--",
                      "/bin/cat", "/proc/self/status")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert f"\nPid:\t{report['variants'][0]['pid']}\n".encode() in result.stdout


@pytest.mark.parametrize(("leader", "follower", "own"), [
    (4242, 4243, b"/proc/self/"),
    (42424, 4243, b"/proc//self/"),  # slashes pad it to the leader's path's length
    (424, 425, b"/proc/425/"),  # "self" is longer than a PID under 1000: its own PID
    (424, 42, b"/proc//42/"),
    (424, 4243, None),  # neither fits: it opens the leader's file
])
def test_a_followers_path_names_its_own_process_in_the_same_length(leader: int, follower: int,
                                                                   own: bytes | None) -> None:
    variant = Variant(1, "/bin/true", follower, memory=None)  # type: ignore[arg-type]
    assert own_directory(variant, len(f"/proc/{leader}/")) == own


def _openat(path: bytes, flags: int, pid: int = 4242) -> tuple[OwnFiles, Call]:
    spec = BY_ABI["x86_64"]["openat"]
    args = (AT_FDCWD, 0x1000, flags, 0)
    call = Call(X86_64, 257, "openat", args, spec, spec.args, (AT_FDCWD, path, flags, 0))
    variant = Variant(0, "/bin/true", pid, memory=None)  # type: ignore[arg-type]
    return OwnFiles([variant]), call


@pytest.mark.parametrize(("path", "flags", "own"), [
    (b"/proc/self/maps", os.O_RDONLY, True),
    (b"/proc/thread-self/stat", os.O_RDONLY | os.O_CLOEXEC, True),
    (b"/proc/self/status", os.O_RDONLY, False),  # no layout: the leader's, as any file
    (b"/proc/4242/smaps", os.O_RDONLY, True),  # the PID every variant is told: the leader's
    (b"/proc/4243/maps", os.O_RDONLY, False),  # another process
    (b"/proc/self/maps", os.O_RDWR, False),  # read-only opens only
    (b"/proc/self/comm", os.O_WRONLY, False),
    (b"/proc/self/cwd/secret", os.O_RDONLY, False),  # magic links lead out of /proc
    (b"/proc/self/root/etc/shadow", os.O_RDONLY, False),
    (b"/proc/self/fd/3", os.O_RDONLY, False),
    (b"/proc/self/exe", os.O_RDONLY, False),
    (b"/proc/self/../1/maps", os.O_RDONLY, False),
    (b"proc/self/maps", os.O_RDONLY, False),
])
def test_which_opens_name_the_variants_own_files(path: bytes, flags: int, own: bool) -> None:
    own_files, call = _openat(path, flags)
    assert own_files.opens_own(call) is own
    own_files.after_call(call, own, [3])
    read = Call(X86_64, 0, "read", (3, 0x2000, 100), BY_ABI["x86_64"]["read"],
                BY_ABI["x86_64"]["read"].args, (3, "ptr", 100))
    assert own_files.is_local(own_files.variants[0], read) is own


TEXT_TOOLS = {
    "cmp": ["cmp", "{a}", "{a}"],
    "diff": ["diff", "{a}", "{b}"],
    "grep -r": ["grep", "-r", "-n", "lockstep", "{dir}"],
    "gawk": ["gawk", "-F", " ", "{n += NF} END {print n, NR}", "{a}"],
}


@pytest.mark.parametrize("variants", [2, 3])
@pytest.mark.parametrize("tool", sorted(TEXT_TOOLS))
def test_text_tools_match_native(tool: str, variants: int, tmp_path: Path, run_mvee) -> None:
    argv = TEXT_TOOLS[tool]
    executable = shutil.which(argv[0])
    if executable is None:
        pytest.skip(f"{argv[0]} is not installed")
    (tmp_path / "tree").mkdir()
    a, b = tmp_path / "tree" / "a.txt", tmp_path / "tree" / "b.txt"
    a.write_text("".join(f"line {i} of the lockstep file\n" for i in range(3000)))
    b.write_text("".join(f"line {i} of the {'lockstep' if i % 7 else 'other'} file\n" for i in range(3000)))
    names = {"{a}": str(a), "{b}": str(b), "{dir}": str(tmp_path / "tree")}
    argv = [executable, *(names.get(arg, arg) for arg in argv[1:])]
    native = subprocess.run(argv, capture_output=True)
    result = run_mvee("-n", str(variants), "--", *argv)
    assert (result.returncode, result.stdout) == (native.returncode, native.stdout), result.stderr


# --- names made from the layout (mvee.temp_names) ---

@pytest.mark.parametrize(("leader", "follower", "layout_made"), [
    (b"/tmp/tmp.OuygIvKHsu", b"/tmp/tmp.x9AbQ2mZ0c", True),  # mktemp
    (b"/tmp/sortqMwCTv", b"/tmp/sort4Xx9wW", True),  # sort -T, 6 X's
    (b"/d/sedeIQbFE", b"/d/sedZ0pq1x", True),
    (b"/d/fileAbC123.txt", b"/d/filezZz999.txt", True),  # mkstemps: a common suffix
    (b"/tmp/tmp.OuygIvKHsu", b"/tmp/tmp.OuygIvKHsu", False),  # the same name
    (b"/tmp/a/tmp.OuygIvKHsu", b"/tmp/b/tmp.OuygIvKHsu", False),  # another directory
    (b"/tmp/tmp.OuygIvKHsu", b"/tmp/tmp.OuygIvKHs", False),  # another length
    (b"/tmp/tmp.Ouyg-IvKHs", b"/tmp/tmp.Ouyg_IvKHs", False),  # not letters or digits
    (b"/tmp/x.ab", b"/tmp/x.cd", False),  # too short a run to be mkstemp's
    (b"/etc/passwd", b"/etc/passwe", True),  # a new file only: O_EXCL, the leader's name
])
def test_which_names_differ_only_by_layout(leader: bytes, follower: bytes, layout_made: bool) -> None:
    assert layout_name(leader, follower) is layout_made


@pytest.mark.parametrize("variants", [2, 3])
@pytest.mark.parametrize("directory", [False, True], ids=["file", "directory"])
def test_mktemp_creates_one_name_and_prints_it(directory: bool, variants: int, tmp_path: Path,
                                              run_mvee) -> None:
    (tmp_path / "t").mkdir()
    option = ["-d"] if directory else []  # mkdtemp: a mkdir of the layout-made name
    result = run_mvee("-n", str(variants), "--", "/usr/bin/mktemp", *option, "-p", str(tmp_path / "t"))
    assert result.returncode == 0, result.stderr
    created = list((tmp_path / "t").iterdir())
    assert [str(p) for p in created] == [result.stdout.decode().strip()]
    assert created[0].is_dir() is directory


@pytest.mark.parametrize("variants", [2, 3])
def test_patch_matches_native(variants: int, tmp_path: Path, run_mvee) -> None:
    # patch writes the result to a mkstemp name beside the file, then renames it over
    (tmp_path / "old").write_text("".join(f"line {i}\n" for i in range(50)))
    (tmp_path / "new").write_text("".join(f"line {i * (i % 7 != 3)}\n" for i in range(50)))
    diff = subprocess.run(["diff", "-u", "old", "new"], cwd=tmp_path, capture_output=True).stdout
    (tmp_path / "change.diff").write_bytes(diff)
    result = run_mvee("-n", str(variants), "--", "/usr/bin/patch", str(tmp_path / "old"),
                      str(tmp_path / "change.diff"))
    assert (result.returncode, result.stdout) == (0, f"patching file {tmp_path / 'old'}\n".encode()), \
        result.stderr
    assert (tmp_path / "old").read_text() == (tmp_path / "new").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["change.diff", "new", "old", "report.json"]


@pytest.mark.parametrize("variants", [2, 3])
def test_sort_spilling_to_temporary_files_matches_native(variants: int, tmp_path: Path,
                                                         run_mvee) -> None:
    data = tmp_path / "data.txt"
    data.write_text("".join(f"{(i * 7919) % 20011} line\n" for i in range(20000)))
    spill = tmp_path / "spill"
    spill.mkdir()
    argv = ["/usr/bin/sort", "-T", str(spill), "-S", "1k", str(data)]
    native = subprocess.run(argv, capture_output=True, check=True)
    result = run_mvee("-n", str(variants), "--", *argv)
    assert (result.returncode, result.stdout) == (0, native.stdout), result.stderr
    assert list(spill.iterdir()) == []  # every temporary file removed, by its leader's name


@pytest.mark.parametrize("variants", [2, 3])
def test_sed_in_place(variants: int, tmp_path: Path, run_mvee) -> None:
    directory = tmp_path / "edited"
    directory.mkdir()
    text = directory / "text"
    text.write_text("hello\nworld\n")
    result = run_mvee("-n", str(variants), "--", "/usr/bin/sed", "-i", "s/hello/bye/", str(text))
    assert result.returncode == 0, result.stderr
    assert text.read_text() == "bye\nworld\n"
    assert [p.name for p in directory.iterdir()] == ["text"]  # sed's temporary file renamed over it


def test_openssl_rand_mixes_the_layout_into_its_bytes(run_mvee) -> None:
    """Not a monitor bug: OpenSSL's DRBG nonce holds pthread_self(), an address. With the
    same layout in both variants (setarch -R) they draw the same bytes; with ASLR they
    draw different ones, and the write of them is a divergence."""
    if shutil.which("openssl") is None or shutil.which("setarch") is None:
        pytest.skip("openssl or setarch is not installed")
    same_layout = run_mvee("-n", "2", "--", "setarch", "-R", "openssl", "rand", "-hex", "16")
    assert same_layout.returncode == 0 and len(same_layout.stdout) == 33, same_layout.stderr
    layouts = run_mvee("-n", "2", "--", "openssl", "rand", "-hex", "16")
    assert layouts.returncode == 120, layouts.stderr
    assert layouts.report["message"] == "argument 1 (buf) of write differs in variant 1"


# --- scheduling: each variant's own ---

@pytest.mark.parametrize("variants", [2, 3])
def test_every_variant_takes_the_niceness_and_cpus_it_sets(variants: int, tmp_path: Path) -> None:
    """`nice` and `taskset` set their own process's priority and CPUs (EACH): every
    variant's `sleep` runs at niceness 7 on CPU 0, not the leader's alone."""
    run = MveeProcess("run", "-n", str(variants), "--", "/usr/bin/taskset", "-c", "0", "/usr/bin/nice",
                      "-n", "7", "/bin/sleep", "3", report=tmp_path / "report.json")
    deadline = time.monotonic() + 30
    sleeping: list[int] = []
    while len(sleeping) < variants and time.monotonic() < deadline:
        sleeping = [pid for pid in run.variant_pids() if _comm(pid) == "sleep"]
        time.sleep(0.02)
    seen = {pid: (_niceness(pid), _cpus(pid)) for pid in sleeping}
    result = run.finish(timeout=60)
    assert result.returncode == 0, result.stderr
    assert len(seen) == variants and set(seen.values()) == {(7, "0")}, seen


def _comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def _niceness(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[16])  # field 19 of stat; fields[0] is field 3


def _cpus(pid: int) -> str:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(line.split()[1] for line in status.splitlines() if line.startswith("Cpus_allowed_list:"))
