"""Real Debian programs and the test programs, monitored, against native runs."""

from __future__ import annotations

import hashlib
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ABIS


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 2 MB of text with repeats, so the compressors have work to do."""
    rng = random.Random(1234)
    words = ["alpha", "beta", "gamma", "delta", "lockstep", "variant", "monitor", "signal"]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 12))) + f" {rng.random()}"
             for _ in range(60000)]
    path = tmp_path_factory.mktemp("data") / "input.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


PYTHON_SCRIPT = """
import hashlib, json, sys
src, dst = sys.argv[1], sys.argv[2]
with open(src, "rb") as f:
    data = f.read()
summary = {"sha256": hashlib.sha256(data).hexdigest(), "lines": data.count(b"\\n"),
           "words": sorted(set(data.split()))[:5]}
summary["words"] = [w.decode() for w in summary["words"]]
with open(dst, "w") as f:
    json.dump(summary, f, sort_keys=True)
print(json.dumps(summary, sort_keys=True))
"""

COMMANDS = {
    "cat": ["cat", "{data}"],
    "sha256sum": ["sha256sum", "{data}"],
    "sort": ["sort", "{data}"],
    "wc": ["wc", "{data}"],
    "ls": ["ls", "-la", "/usr/bin/"],
    "gzip": ["gzip", "-9c", "{data}"],
    "bzip2": ["bzip2", "-c", "{data}"],
    "xz": ["xz", "-c", "{data}"],
}


def _native(argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, capture_output=True, timeout=120)


@pytest.mark.parametrize("variants", [2, 3])
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_debian_program_matches_native(name: str, variants: int, data_file: Path, run_mvee) -> None:
    argv = [shutil.which(COMMANDS[name][0]) or COMMANDS[name][0]]
    argv += [a.format(data=data_file) for a in COMMANDS[name][1:]]
    native = _native(argv)
    monitored = run_mvee("-n", str(variants), "--", *argv)
    assert monitored.report["verdict"] == "ok", monitored.stderr
    assert monitored.returncode == native.returncode
    assert hashlib.sha256(monitored.stdout).hexdigest() == hashlib.sha256(native.stdout).hexdigest()
    assert [v["abi"] for v in monitored.report["variants"]] == ["x86_64"] * variants


@pytest.mark.parametrize("variants", [2, 3])
def test_python3_script_matches_native(variants: int, data_file: Path, tmp_path: Path, run_mvee) -> None:
    script = tmp_path / "summary.py"
    script.write_text(PYTHON_SCRIPT)
    native = _native(["/usr/bin/python3", str(script), str(data_file), str(tmp_path / "native.json")])
    monitored = run_mvee("-n", str(variants), "--", "/usr/bin/python3", str(script), str(data_file),
                         str(tmp_path / "monitored.json"))
    assert monitored.report["verdict"] == "ok", monitored.stderr
    assert monitored.stdout == native.stdout
    assert (tmp_path / "monitored.json").read_bytes() == (tmp_path / "native.json").read_bytes()


def test_gzip_writes_its_file_once_and_identically(data_file: Path, tmp_path: Path, run_mvee) -> None:
    copy = tmp_path / "input.txt"
    shutil.copy(data_file, copy)
    monitored = run_mvee("-n", "2", "--", "gzip", "-9", str(copy))
    assert monitored.returncode == 0, monitored.stderr
    assert not copy.exists()  # gzip removed its input: the unlink ran (once: no error)
    assert subprocess.run(["gzip", "-dc", str(copy) + ".gz"], capture_output=True).stdout \
        == data_file.read_bytes()


@pytest.mark.parametrize("variants", [2, 3])
@pytest.mark.parametrize("abi", sorted(ABIS))
def test_c_program_matches_native(abi: str, variants: int, build_program, tmp_path: Path, run_mvee) -> None:
    program = build_program("files", abi)
    native = subprocess.run([str(program), str(tmp_path / "native.out")], capture_output=True)
    monitored = run_mvee("-n", str(variants), "--", str(program), str(tmp_path / "monitored.out"))
    assert native.returncode == 7
    assert monitored.returncode == native.returncode, monitored.stderr
    assert monitored.stdout == native.stdout
    assert monitored.report["verdict"] == "ok"
    assert {v["abi"] for v in monitored.report["variants"]} == {abi}
    assert not (tmp_path / "monitored.out").exists()  # unlinked at the end, exactly once
