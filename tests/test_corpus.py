"""The corpus (tests/corpus/commands.txt): every everyday command line runs under
`mvee run -n 2` (some -n 3) as natively. A refusal (unsupported: setpriority for now) is
counted; an alarm or a difference while native runs agree is a false divergence and
fails. The summary line "N identical / R refused / D divergent" is printed at the end
of the session (tests/conftest.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import corpus_run
from tests.corpus_run import Command, CorpusError, Setting

COMMANDS = corpus_run.load()


@pytest.fixture(scope="module")
def corpus_setting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setting]:
    with corpus_run.setting(tmp_path_factory.mktemp("corpus")) as where:
        yield where


def test_the_corpus_is_large_enough() -> None:
    assert len(COMMANDS) >= 60
    assert sum(3 in c.variant_counts for c in COMMANDS) >= 10


@pytest.mark.parametrize("command", COMMANDS, ids=[c.name for c in COMMANDS])
def test_command_runs_as_natively(command: Command, corpus_setting: Setting,
                                  request: pytest.FixtureRequest) -> None:
    result = corpus_run.judge(command, corpus_setting)
    if result.outcome == "missing":
        pytest.skip(result.detail)
    request.node.user_properties.append(("corpus", result.outcome))
    if result.outcome == "refused":
        request.node.user_properties.append(("corpus-refused", result.detail))
    assert result.outcome in ("identical", "refused"), f"{result.command}: {result.outcome}: {result.detail}"


# --- the runner finds what it is there to find ---

def test_a_clock_read_without_a_mask_is_unstable(corpus_setting: Setting) -> None:
    result = corpus_run.judge(Command("clock", ("date", "+%s.%N")), corpus_setting)
    assert result.outcome == "unstable", result
    masked = Command("clock", ("date", "+%s.%N"), masks=(r"[0-9]{10}\.[0-9]{9}",))
    assert corpus_run.judge(masked, corpus_setting).outcome == "identical"


def test_an_output_difference_under_the_monitor_is_divergent(corpus_setting: Setting) -> None:
    # a variant's own status file names its tracer: nobody natively, the monitor under it
    result = corpus_run.judge(Command("tracer", ("grep", "TracerPid", "/proc/self/status")), corpus_setting)
    assert result.outcome == "divergent", result
    assert "stdout differs" in result.detail


def test_a_file_left_differently_is_a_difference(tmp_path: Path) -> None:
    command = Command("files", ("true",))
    (tmp_path / "kept").write_text("one\n")
    before = corpus_run.Observation(0, "", "", corpus_run._files(tmp_path, command))
    (tmp_path / "kept").write_text("two\n")
    (tmp_path / "new").symlink_to("kept")
    after = corpus_run.Observation(0, "", "", corpus_run._files(tmp_path, command))
    found = corpus_run.differences(before, after)
    assert [line.split(":")[0] for line in found] == ["kept", "new"]


@pytest.mark.parametrize(("line", "message"), [
    ("cat a.txt", "expected `NAME [OPTION ...] : COMMAND`"),
    ("Cat : cat a.txt", "bad name 'Cat'"),
    ("cat n4 : cat a.txt", "unknown option 'n4'"),
    ("cat mask=( : cat a.txt", "bad mask '('"),
    ("cat : 'cat", "No closing quotation"),
    ("cat : < a.txt", "no command"),
])
def test_a_bad_corpus_line_is_one_clear_error(line: str, message: str) -> None:
    with pytest.raises(CorpusError, match=r"^here:1: ") as error:
        corpus_run.parse_line(line, "here:1")
    assert message in str(error.value)


def test_a_corpus_line_reads_its_options() -> None:
    command = corpus_run.parse_line(r"t n3 mask=[0-9]+ skip=a/* status=4 : tr a-z A-Z < in.txt", "here:1")
    assert command == Command("t", ("tr", "a-z", "A-Z"), "in.txt", (2, 3), ("[0-9]+",), ("a/*",), 4)
    assert command.masked("at 12:34") == "at #:#"


@pytest.mark.parametrize(("arguments", "message"), [
    (["--jobs", "0"], "corpus: --jobs must be at least 1"),
    (["-k", "no-such-command"], "corpus: no command matches"),
    (["--json", "/nonexistent/corpus.json"], "corpus: no such directory: /nonexistent"),
    (["--fixture-tar", "/nonexistent.tar"], "corpus: no such file: /nonexistent.tar"),
])
def test_scripts_corpus_refuses_bad_input_in_one_line(arguments: list[str], message: str) -> None:
    script = Path(__file__).parents[1] / "scripts" / "corpus"
    completed = subprocess.run([str(script), *arguments], capture_output=True, text=True, timeout=60)
    assert (completed.returncode, completed.stderr, completed.stdout) == (2, message + "\n", "")
