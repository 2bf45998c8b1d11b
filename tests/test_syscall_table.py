"""The syscall table read as data: each row against the ABIs it claims.

`problems` lists what is wrong with rows; the table must have none, and each
kind of mistake it looks for is shown to be found in a broken row.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from mvee import engine
from mvee.abi import BY_NAME as ABIS
from mvee.abi import I386, X86_64
from mvee.syscall_spec import (
    ALL_ABIS,
    Addr,
    Arg,
    CString,
    Depends,
    Fd,
    Flags,
    InBuffer,
    InOutArray,
    InStruct,
    Int,
    IovecIn,
    IovecOut,
    OutBuffer,
    OutSized,
    OutStruct,
    Pid,
    Policy,
    SigAction,
    SockAddr,
    Syscall,
)
from mvee.syscall_table import BY_ABI, REFUSED, TABLE

EACH_POLICIES = (Policy.EACH, Policy.EACH_LEADER_RESULT)


def _kinds(row: Syscall) -> list[tuple[int, Arg]]:
    """(position, kind) of every kind an argument of the row can take."""
    return [(position, kind) for position, arg in enumerate(row.args) for kind in arg.kinds()]


def _reference_problems(row: Syscall) -> list[str]:
    found = []
    names = [arg.name for arg in row.args]
    found += [f"{row.name}: two arguments named {name!r}" for name, n in Counter(names).items() if n > 1]
    for position, kind in _kinds(row):
        for reference in kind.references:
            wanted, at = getattr(kind, reference), getattr(kind, f"{reference}_at")
            if not (0 <= at < len(row.args)) or row.args[at].name != wanted:
                found.append(f"{row.name}.{kind.name}: {reference} {wanted!r} resolved to position {at}")
            elif at == position:
                found.append(f"{row.name}.{kind.name}: refers to itself")
            elif reference in kind.pointer_references:
                if row.args[at].by_value:
                    found.append(f"{row.name}.{kind.name}: {reference} {wanted!r} is not a pointer")
            elif not row.args[at].by_value:
                found.append(f"{row.name}.{kind.name}: {reference} {wanted!r} is not a number")
    attributes = {"local_when": 1, "follower_clears": 1, "sets_disposition": 2, "changes_mappings": 2,
                  "replaces_when": 1, "sigpipe_unless": 1, "policy_cases": 1, "follower_duplicates": 2,
                  "follower_reaps": 2, "local_in_threads": 1}
    for attribute, named in attributes.items():
        declared, resolved = getattr(row, attribute), getattr(row, f"{attribute}_at")
        if declared is None:
            continue
        for wanted, at in list(zip(declared, resolved, strict=True))[:named]:
            if wanted is None and at is None:  # an optional argument (accept has no flags)
                continue
            if not (0 <= at < len(row.args)) or row.args[at].name != wanted:
                found.append(f"{row.name}: {attribute} {wanted!r} resolved to position {at}")
    return found


def _abi_problems(row: Syscall) -> list[str]:
    if not row.abis or set(row.abis) - set(ABIS):
        return [f"{row.name}: ABIs {row.abis} are not a choice of {sorted(ABIS)}"]
    found = [f"{row.name} is not a syscall of {abi}" for abi in row.abis
             if row.name not in ABIS[abi].syscall_numbers]
    for _, kind in _kinds(row):
        struct = getattr(kind, "struct", None)
        found += [f"{row.name}.{kind.name}: struct {struct} has no size in {abi}"
                  for abi in row.abis if struct is not None and struct not in ABIS[abi].struct_sizes]
    return found


def _policy_problems(row: Syscall) -> list[str]:
    found = []
    if not isinstance(row.policy, Policy):
        return [f"{row.name}: policy {row.policy!r} is not a Policy"]
    can_be_local = row.policy is Policy.LOCAL or row.local_when is not None
    if row.local_when and row.policy not in EACH_POLICIES:
        found.append(f"{row.name}: local_when on a {row.policy.name} row (only EACH calls turn LOCAL)")
    if row.follower_clears and row.policy is not Policy.LEADER_FIRST:
        found.append(f"{row.name}: follower_clears on a {row.policy.name} row")
    if row.sigpipe_on_epipe and row.policy is not Policy.LEADER:
        found.append(f"{row.name}: sigpipe_on_epipe on a {row.policy.name} row (only the leader runs it)")
    if row.sigpipe_unless and not row.sigpipe_on_epipe:
        found.append(f"{row.name}: sigpipe_unless without sigpipe_on_epipe")
    if row.follower_duplicates and row.policy is not Policy.LEADER_FIRST:
        found.append(f"{row.name}: follower_duplicates on a {row.policy.name} row")
    if row.follower_reaps and row.policy is not Policy.LEADER_FIRST:
        found.append(f"{row.name}: follower_reaps on a {row.policy.name} row")
    if row.policy_cases and (row.policy not in EACH_POLICIES or any(
            policy in (Policy.LOCAL, Policy.LEADER_FIRST) for policy in row.policy_cases[1].values())):
        found.append(f"{row.name}: policy_cases turn an EACH row into LEADER or EACH_LEADER_RESULT only")
    if (row.policy is Policy.UNSUPPORTED) != (row.reason is not None):
        found.append(f"{row.name}: an UNSUPPORTED row says why (reason), and only such a row")
    if row.multiplexes is not None and row.policy is not Policy.UNSUPPORTED:
        found.append(f"{row.name}: a multiplexer whose call selects no row must be UNSUPPORTED")
    for call, (name, words) in (row.multiplexes or {}).items():
        for abi in row.abis:
            selected = BY_ABI[abi].get(name) if row in TABLE else None
            if selected is not None and not 0 < words <= len(selected.args):
                found.append(f"{row.name} call {call}: {words} words for {len(selected.args)} arguments")
    if row.changes_mappings and not can_be_local:
        found.append(f"{row.name}: changes_mappings on a row that never runs LOCAL (the check is not made)")
    if row.replaces_when and not (row.changes_mappings and row.local_when
                                  and row.replaces_when[0] == row.local_when[0]):
        found.append(f"{row.name}: replaces_when without changes_mappings and a local_when on the same "
                     "argument (the seccomp filter tests one word)")
    if row.sets_disposition:
        signal_at, act_at = row.sets_disposition_at
        if row.policy is not Policy.EACH or type(row.args[signal_at]) is not Int or \
                not isinstance(row.args[act_at], SigAction):
            found.append(f"{row.name}: sets_disposition wants an EACH row, an Int signal, a SigAction")
    if row.policy in EACH_POLICIES and row.names_processes and row.foreign_process is None:
        found.append(f"{row.name}: names processes and runs in each variant: foreign_process must say "
                     "how one outside the variants is treated")
    if row.foreign_process and not (row.policy in EACH_POLICIES and row.names_processes):
        found.append(f"{row.name}: foreign_process on a row that does not name processes in each variant")
    if row.policy is Policy.UNSUPPORTED and (row.local_when or row.follower_clears or row.sigpipe_on_epipe
                                             or row.sets_disposition or row.changes_mappings
                                             or row.foreign_process):
        found.append(f"{row.name}: an UNSUPPORTED row with attributes that never apply")
    return found


def problems(rows: list[Syscall]) -> list[str]:
    # One row per name and ABI (clone's arguments come in another order on i386).
    per_abi = Counter((row.name, abi) for row in rows for abi in row.abis)
    found = list(dict.fromkeys(f"{name}: {n} rows" for (name, _), n in per_abi.items() if n > 1))
    for row in rows:
        found += _reference_problems(row) + _abi_problems(row) + _policy_problems(row)
    return found


def test_the_table_has_no_problems() -> None:
    assert problems(TABLE) == []


def test_each_abi_looks_up_exactly_the_rows_that_claim_it() -> None:
    for abi in ALL_ABIS:
        assert sorted(BY_ABI[abi]) == sorted(row.name for row in TABLE if abi in row.abis)
    # 45 rows are i386's own (64-bit variants of calls, old multiplexers, clone's other
    # argument order ...); newfstatat is x86_64's, and so are "mmap" and "select" (i386's
    # are old calls of one pointer to the arguments), "accept" (i386 has accept4, or
    # socketcall's accept) and its order of clone's arguments.
    assert sum(row.abis == ("i386",) for row in TABLE) == 45
    assert sorted(row.name for row in TABLE if row.abis == ("x86_64",)) == [
        "accept", "clone", "mmap", "newfstatat", "select"]
    old_mmap = engine.decode(I386, I386.syscall_numbers["mmap"], (0x1000,) + (0,) * 5, None)
    assert old_mmap.spec is None and "old_mmap" in (old_mmap.unsupported_reason or "")


def test_each_abi_maps_its_wait_loop_page_with_a_six_argument_mmap_row() -> None:
    for abi in (X86_64, I386):
        row = BY_ABI[abi.name][abi.mmap_syscall]
        assert [arg.name for arg in row.args][:4] == ["addr", "length", "prot", "flags"]
        assert len(row.args) == 6


def test_the_policy_once_known_by_name_is_in_the_rows() -> None:
    by_name = {row.name: row for row in TABLE}
    assert by_name["openat"].follower_clears == ("flags", os.O_CREAT | os.O_EXCL | os.O_TRUNC)
    assert by_name["openat"].follower_clears_at == (2, os.O_CREAT | os.O_EXCL | os.O_TRUNC)
    assert [row.name for row in TABLE if row.sets_disposition] == ["rt_sigaction"]
    assert sorted(row.name for row in TABLE if row.changes_mappings) == [
        "madvise", "mmap", "mmap2", "mprotect", "mremap", "munmap"]
    assert by_name["mremap"].changes_mappings_at == (0, 1)
    assert sorted(row.name for row in TABLE if row.foreign_process) == [
        "ioprio_set", "kill", "pidfd_open", "prlimit64", "sched_setaffinity", "sched_setparam",
        "sched_setscheduler", "setpgid", "setpriority", "tgkill", "tkill"]


_SIX = (Addr("addr"), Int("length"), Flags("prot"), Flags("flags"), Fd("fd"), Int("offset"))

BROKEN_ROWS = {
    "duplicate": ([Syscall("read", (Fd("fd"),), Policy.LEADER)] * 2, "read: 2 rows"),
    "other ABI's name": ([Syscall("mmap2", _SIX, Policy.EACH)], "mmap2 is not a syscall of x86_64"),
    "unknown ABI": ([Syscall("read", (Fd("fd"),), Policy.LEADER, abis=("arm64",))], "are not a choice"),
    "no ABI": ([Syscall("read", (Fd("fd"),), Policy.LEADER, abis=())], "are not a choice"),
    "struct of one ABI": ([Syscall("stat", (CString("path"), OutStruct("buf", "stat64")), Policy.LEADER)],
                          "struct stat64 has no size in x86_64"),
    "struct in a case": ([Syscall("ioctl", (Fd("fd"), Int("request"), Depends("arg", on="request", cases={
        1: InStruct("t", "nothing")})), Policy.LEADER)], "struct nothing has no size"),
    "length not a number": ([Syscall("read", (Fd("fd"), OutBuffer("buf", length="path"), CString("path")),
                                     Policy.LEADER)], "read.buf: length 'path' is not a number"),
    "refers to itself": ([Syscall("poll", (InOutArray("fds", "pollfd", count="fds"), Int("nfds")),
                                  Policy.LEADER)], "poll.fds: refers to itself"),
    "two arguments, one name": ([Syscall("read", (Fd("fd"), Int("fd")), Policy.LEADER)],
                                "two arguments named 'fd'"),
    "local_when on LEADER": ([Syscall("mmap", _SIX, Policy.LEADER, local_when=("flags", 0x20))],
                             "local_when on a LEADER row"),
    "clears on EACH": ([Syscall("openat", (Fd("dirfd"), CString("path"), Flags("flags")), Policy.EACH,
                                follower_clears=("flags", os.O_CREAT))], "follower_clears on a EACH row"),
    "sigpipe on EACH": ([Syscall("write", (Fd("fd"),), Policy.EACH, sigpipe_on_epipe=True)],
                        "sigpipe_on_epipe on a EACH row"),
    "mappings never LOCAL": ([Syscall("mmap", _SIX, Policy.EACH, changes_mappings=("addr", "length"))],
                             "changes_mappings on a row that never runs LOCAL"),
    "replaces without local_when": ([Syscall("mmap", _SIX, Policy.LOCAL, changes_mappings=("addr", "length"),
                                             replaces_when=("flags", 0x10))], "replaces_when without"),
    "disposition of a pointer": ([Syscall("rt_sigaction", (Int("sig"), Addr("act")), Policy.EACH,
                                          sets_disposition=("sig", "act"))], "sets_disposition wants"),
    "foreign PID forgotten": ([Syscall("kill", (Pid("pid"), Int("sig")), Policy.EACH)],
                              "foreign_process must say"),
    "foreign PID without a PID": ([Syscall("sched_yield", (), Policy.EACH, foreign_process=Policy.LEADER)],
                                  "foreign_process on a row that does not name"),
    "unsupported with attributes": ([Syscall("fork", (Int("x"),), Policy.UNSUPPORTED, sigpipe_on_epipe=True)],
                                    "an UNSUPPORTED row"),
    "not a policy": ([Syscall("read", (Fd("fd"),), "leader")], "is not a Policy"),
    "sigpipe_unless alone": ([Syscall("sendto", (Fd("fd"), Flags("flags")), Policy.LEADER,
                                      sigpipe_unless=("flags", 0x4000))], "sigpipe_unless without"),
    "duplicates on LEADER": ([Syscall("accept4", (Fd("fd"), Flags("flags")), Policy.LEADER,
                                      follower_duplicates=("fd", "flags"))], "follower_duplicates on a"),
    "reaps on LEADER": ([Syscall("wait4", (Pid("pid"), Flags("options")), Policy.LEADER,
                                 follower_reaps=("pid", "options"))], "follower_reaps on a"),
    "same ABI twice": ([Syscall("clone", (Flags("flags"),), Policy.EACH, abis=("i386",)),
                        Syscall("clone", (Flags("flags"),), Policy.EACH)], "clone: 2 rows"),
    "cases on LEADER": ([Syscall("fcntl", (Fd("fd"), Int("cmd")), Policy.LEADER,
                                 policy_cases=("cmd", {6: Policy.EACH}))], "policy_cases turn an EACH row"),
    "cases to LOCAL": ([Syscall("fcntl", (Fd("fd"), Int("cmd")), Policy.EACH,
                                policy_cases=("cmd", {6: Policy.LOCAL}))], "policy_cases turn an EACH row"),
    "unsupported without a reason": ([Syscall("fork", (), Policy.UNSUPPORTED)], "says why"),
    "a reason on a supported row": ([Syscall("read", (Fd("fd"),), Policy.LEADER, reason="no")], "says why"),
    "length pointer is a number": ([Syscall("getpeername", (Fd("fd"), OutSized("addr", length="addrlen"),
                                                            Int("addrlen")), Policy.LEADER)],
                                   "getpeername.addr: length 'addrlen' is not a pointer"),
}


@pytest.mark.parametrize("case", BROKEN_ROWS)
def test_a_broken_row_is_found(case: str) -> None:
    rows, expected = BROKEN_ROWS[case]
    found = problems(rows)
    assert any(expected in problem for problem in found), found


@pytest.mark.parametrize("make", [
    lambda: InBuffer("buf", length="size"),
    lambda: OutBuffer("buf", length="size"),
    lambda: SockAddr("addr", length="size"),
    lambda: InOutArray("fds", "pollfd", count="size"),
    lambda: IovecIn("iov", count="size"),
    lambda: IovecOut("iov", count="size"),
    lambda: Depends("arg", on="size", cases={}),
    lambda: Depends("arg", on="fd", cases={1: OutBuffer("buf", length="size")}),
], ids=["InBuffer", "OutBuffer", "SockAddr", "InOutArray", "IovecIn", "IovecOut", "Depends", "Depends case"])
def test_a_reference_to_a_missing_argument_refuses_the_row(make: Callable[[], Arg]) -> None:
    with pytest.raises(ValueError, match=r"row broken: no single argument named 'size'"):
        Syscall("broken", (Fd("fd"), make(), Int("count")), Policy.LEADER)


@pytest.mark.parametrize("attribute", ["local_when", "follower_clears", "sets_disposition",
                                       "changes_mappings"])
def test_a_row_attribute_naming_a_missing_argument_refuses_the_row(attribute: str) -> None:
    value = ("size", 1) if attribute in ("local_when", "follower_clears") else ("fd", "size")
    with pytest.raises(ValueError, match=r"row broken: no single argument named 'size'"):
        Syscall("broken", (Fd("fd"), Int("count")), Policy.EACH, **{attribute: value})


def test_references_resolve_to_the_positions_of_the_names() -> None:
    row = Syscall("pread64", (Fd("fd"), OutBuffer("buf", length="count"), Int("count"), Int("offset")),
                  Policy.LEADER)
    assert row.args[1] == OutBuffer("buf", length="count", length_at=2)
    ioctl = Syscall("ioctl", (Fd("fd"), Flags("request"), Depends("arg", on="request", cases={
        7: OutBuffer("buf", length="fd")})), Policy.LEADER)
    depends = ioctl.args[2]
    assert isinstance(depends, Depends) and depends.on_at == 1
    assert depends.resolve((3, 7, 0)) == OutBuffer("buf", length="fd", length_at=0)
    assert depends.resolve((3, 8, 0)) is None


# --- coverage: every syscall of each ABI has a row or a reason ---


def test_every_syscall_of_each_abi_has_a_row_or_a_reason_it_is_refused() -> None:
    for abi in ALL_ABIS:
        numbers = ABIS[abi].syscall_numbers
        assert [name for name in numbers if name not in BY_ABI[abi] and name not in REFUSED] == [], abi
    # a reason for a call that has a row wherever it exists is dead
    assert [name for name in REFUSED if all(name in BY_ABI[abi] for abi in ALL_ABIS
                                            if name in ABIS[abi].syscall_numbers)] == []
    assert all(ABIS[abi].syscall_numbers.get(name) is not None for name in REFUSED
               for abi in ALL_ABIS[:1] if name in ABIS[abi].syscall_numbers)
    mount = engine.decode(X86_64, X86_64.syscall_numbers["mount"], (0,) * 6, None)
    assert "machine-wide" in (mount.unsupported_reason or "")
    shmat = engine.decode(I386, I386.syscall_numbers["ipc"], (21,) + (0,) * 5, None)
    assert "System V IPC" in (shmat.unsupported_reason or "")


def test_docs_syscalls_md_is_generated_from_the_table() -> None:
    script = Path(__file__).parents[1] / "scripts" / "gen-syscall-docs"
    checked = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    text = (Path(__file__).parents[1] / "docs" / "syscalls.md").read_text()
    assert "| 52 | getpeername | leader | fd: Fd, addr: OutSized, addrlen: InStruct |" in text
    assert "| 31 | shmctl | refused | System V IPC" in text
    assert "NOT IN THE TABLE" not in text


# --- the vocabulary's meanings, on a fake memory ---


class FakeMemory:
    def __init__(self, contents: dict[int, bytes]) -> None:
        self.bytes = {address + i: b for address, data in contents.items() for i, b in enumerate(data)}

    def read(self, address: int, size: int) -> bytes:
        try:
            return bytes(self.bytes[address + i] for i in range(size))
        except KeyError:
            raise OSError(14, "Bad address") from None

    def read_cstring(self, address: int, limit: int = 4096) -> bytes:
        raise NotImplementedError

    def write(self, address: int, data: bytes) -> None:
        self.bytes.update({address + i: b for i, b in enumerate(data)})


def _decode(abi, name: str, args: tuple[int, ...], memory: FakeMemory) -> engine.Call:
    return engine.decode(abi, abi.syscall_numbers[name], args + (0,) * (6 - len(args)), memory)


def test_an_alarm_shows_signed_values_as_signed() -> None:
    for abi in (X86_64, I386):
        close = _decode(abi, "close", (2**32 - 42,), FakeMemory({}))
        assert close.render() == "close(fd=-42)"
        mkdirat = _decode(abi, "mkdirat", (2**32 - 100, 0, 0o755), FakeMemory({}))
        assert mkdirat.render() == "mkdirat(dirfd=-100, path='NULL', mode=493)"
    lseek = _decode(X86_64, "lseek", (3, 2**64 - 5, 2), FakeMemory({}))
    assert lseek.render() == "lseek(fd=3, offset=-5, whence=2)"


def _pollfd(fd: int, events: int, revents: int) -> bytes:
    return fd.to_bytes(4, "little") + events.to_bytes(2, "little") + revents.to_bytes(2, "little")


@pytest.mark.parametrize("abi", [X86_64, I386], ids=["x86_64", "i386"])
def test_what_the_kernel_ignores_is_not_compared(abi) -> None:
    half = abi.struct_sizes["timespec"] // 2

    def timespec(seconds: int, nanoseconds: int) -> bytes:
        return seconds.to_bytes(half, "little") + nanoseconds.to_bytes(half, "little")

    def utimensat(seconds: int, nanoseconds: int) -> object:
        memory = FakeMemory({0x100: timespec(seconds, nanoseconds) + timespec(5, 0)})
        return _decode(abi, "utimensat", (2**32 - 100, 0, 0x100, 0), memory).values

    assert utimensat(1234, (1 << 30) - 2) == utimensat(99, (1 << 30) - 2)  # UTIME_OMIT
    assert utimensat(1234, (1 << 30) - 1) == utimensat(99, (1 << 30) - 1)  # UTIME_NOW
    assert utimensat(1234, 7) != utimensat(99, 7)

    def poll(revents: int, events: int = 1) -> object:
        return _decode(abi, "poll", (0x100, 1, 1000), FakeMemory({0x100: _pollfd(3, events, revents)})).values

    assert poll(0x1234) == poll(0x7777) and poll(0, events=1) != poll(0, events=4)


@pytest.mark.parametrize("abi", [X86_64, I386], ids=["x86_64", "i386"])
def test_timeouts_and_deadlines_compare_what_they_mean(abi) -> None:
    def poll(timeout: int) -> object:
        return _decode(abi, "poll", (0, 0, timeout), FakeMemory({})).values[2]

    assert poll(1000) == poll(999) == "a while"
    assert poll(0) == "no wait" and poll(2**32 - 1) == poll(2**64 - 1) == "forever"
    size = abi.struct_sizes["timespec"]

    def nanosleep(flags: int, seconds: int) -> object:
        memory = FakeMemory({0x100: seconds.to_bytes(size, "little")})
        return _decode(abi, "clock_nanosleep", (1, flags, 0x100, 0), memory).values[2]

    assert nanosleep(1, 100) == nanosleep(1, 101) == "absolute"  # TIMER_ABSTIME
    assert nanosleep(0, 100) != nanosleep(0, 101)
    select = _decode(abi, "pselect6", (0, 0, 0, 0, 0x100, 0), FakeMemory({0x100: b"\1" + bytes(size - 1)}))
    assert select.values[4] == "a while"


def _epoll_event(events: int, data: int) -> bytes:
    return events.to_bytes(4, "little") + data.to_bytes(8, "little")


@pytest.mark.parametrize("abi", [X86_64, I386], ids=["x86_64", "i386"])
def test_each_follower_gets_its_own_epoll_cookie(abi) -> None:
    leader = FakeMemory({0x100: _epoll_event(1, 0xAAAA0000)})
    follower = FakeMemory({0x200: _epoll_event(1, 0xBBBB0000)})
    cookies: dict = {}
    ctl = _decode(abi, "epoll_ctl", (5, 1, 7, 0x100), leader)
    assert ctl.values == _decode(abi, "epoll_ctl", (5, 1, 7, 0x200), follower).values  # data not compared
    engine.replicate_outputs(ctl, leader, _decode(abi, "epoll_ctl", (5, 1, 7, 0x200), follower), follower, 0,
                             cookies)
    assert cookies == {(5, 0xAAAA0000): 0xBBBB0000}
    leader.write(0x300, _epoll_event(4, 0xAAAA0000) + _epoll_event(1, 0x42))
    follower.write(0x400, bytes(24))
    wait = (_decode(abi, "epoll_wait", (5, 0x300, 2, 0), leader), _decode(abi, "epoll_wait", (5, 0x400, 2, 0),
                                                                           follower))
    engine.replicate_outputs(wait[0], leader, wait[1], follower, 2, cookies)
    assert follower.read(0x400, 24) == _epoll_event(4, 0xBBBB0000) + _epoll_event(1, 0x42)


def test_an_epoll_ctl_del_ignores_its_event() -> None:
    def ctl(op: int, events: int) -> tuple:
        memory = FakeMemory({0x100: _epoll_event(events, 0)})
        return _decode(X86_64, "epoll_ctl", (5, op, 7, 0x100), memory).values

    assert ctl(2, 0x1234) == ctl(2, 0x5678)  # EPOLL_CTL_DEL: CPython leaves the event uninitialised
    assert ctl(1, 1) != ctl(1, 4)  # an ADD's events are compared


def test_an_epoll_instance_waited_on_through_a_dup_gives_the_cookie_set_through_another_fd() -> None:
    abi = X86_64
    leader = FakeMemory({0x300: _epoll_event(1, 0xAAAA0000)})
    follower = FakeMemory({0x400: bytes(12)})
    cookies = {(5, 0xAAAA0000): 0xBBBB0000, (5, 0x1234): 0x5678}
    wait = [_decode(abi, "epoll_wait", (9, address, 1, 0), memory)  # 9: a dup of 5
            for address, memory in ((0x300, leader), (0x400, follower))]
    engine.replicate_outputs(wait[0], leader, wait[1], follower, 1, cookies)
    assert follower.read(0x400, 12) == _epoll_event(1, 0xBBBB0000)
    cookies[(6, 0xAAAA0000)] = 0xCCCC0000  # another instance, another cookie: no guess
    engine.replicate_outputs(wait[0], leader, wait[1], follower, 1, cookies)
    assert follower.read(0x400, 12) == _epoll_event(1, 0xAAAA0000)


def _cmsg(abi, level: int, kind: int, data: bytes, padding: bytes) -> bytes:
    return abi.pack_word(abi.word_size + 8 + len(data)) + struct.pack("<ii", level, kind) + data + padding


@pytest.mark.parametrize("abi", [X86_64, I386], ids=["x86_64", "i386"])
def test_sent_control_messages_are_compared_without_their_padding(abi) -> None:
    def sendmsg(control: bytes) -> object:
        header = b"".join(abi.pack_word(w) for w in (0, 0, 0, 0, 0x200, len(control), 0))
        return _decode(abi, "sendmsg", (3, 0x100, 0), FakeMemory({0x100: header, 0x200: control})).values[1]

    pad = (-(abi.word_size + 12)) % abi.word_size
    rights = sendmsg(_cmsg(abi, 1, 1, (7).to_bytes(4, "little"), b"\xaa" * pad))
    assert rights == sendmsg(_cmsg(abi, 1, 1, (7).to_bytes(4, "little"), b"\x55" * pad))
    assert rights != sendmsg(_cmsg(abi, 1, 1, (8).to_bytes(4, "little"), b"\xaa" * pad))  # another fd


@pytest.mark.parametrize("abi", [X86_64, I386], ids=["x86_64", "i386"])
def test_received_descriptors_are_named_as_the_leaders_only(abi) -> None:
    control = _cmsg(abi, 1, 1, (7).to_bytes(4, "little") + (8).to_bytes(4, "little"), bytes(8))
    header = b"".join(abi.pack_word(w) for w in (0, 0, 0, 0, 0x200, len(control), 0))
    memory = FakeMemory({0x100: header, 0x200: control})
    call = _decode(abi, "recvmsg", (3, 0x100, 0), memory)
    assert "received 2 file descriptors (SCM_RIGHTS)" in (engine.leader_only_outputs(call, memory, 1) or "")
    credentials = _cmsg(abi, 1, 2, bytes(12), b"")  # SCM_CREDENTIALS: nothing made
    memory.write(0x200, credentials + bytes(len(control) - len(credentials)))
    assert engine.leader_only_outputs(call, memory, 1) is None


def test_socketcall_is_decoded_as_the_row_it_selects() -> None:
    words = (3, 0x100, 0x200)  # accept(3, addr, &addrlen)
    memory = FakeMemory({0x50: b"".join(w.to_bytes(4, "little") for w in words),
                         0x200: (16).to_bytes(4, "little")})
    call = _decode(I386, "socketcall", (5, 0x50), memory)
    assert (call.name, call.spec.name, call.args, call.nr) == ("accept4", "accept4", (3, 0x100, 0x200, 0),
                                                               102)
    assert call.unsupported_reason is None
    unknown = _decode(I386, "socketcall", (99, 0x50), memory)
    assert "selects no socket call" in (unknown.unsupported_reason or "")
    memory.write(0x60, bytes(16))  # sendmmsg(0, NULL, 0, 0)
    sendmmsg = _decode(I386, "socketcall", (20, 0x60), memory)
    assert (sendmmsg.name, sendmmsg.args, sendmmsg.unsupported_reason) == ("sendmmsg", (0, 0, 0, 0), None)


def test_a_received_message_reaches_the_followers_buffers() -> None:
    abi = X86_64

    def msghdr(name: int, namelen: int, iov: int, iovlen: int, control: int, controllen: int) -> bytes:
        return b"".join(abi.pack_word(w) for w in (name, namelen, iov, iovlen, control, controllen, 0))

    leader = FakeMemory({0x100: msghdr(0x200, 16, 0x300, 2, 0, 0), 0x200: bytes(16),
                         0x300: b"".join(abi.pack_word(w) for w in (0x400, 3, 0x500, 10)),
                         0x400: b"abc", 0x500: b"defgh" + bytes(5)})
    follower = FakeMemory({0x1100: msghdr(0x1200, 16, 0x1300, 2, 0, 0), 0x1200: bytes(16),
                           0x1300: b"".join(abi.pack_word(w) for w in (0x1400, 3, 0x1500, 10)),
                           0x1400: bytes(3), 0x1500: bytes(10)})
    leader.write(0x200, b"\2\0" + bytes(14))
    leader.write(0x100 + 8, abi.pack_word(16))
    calls = [_decode(abi, "recvmsg", (4, address, 0), memory) for address, memory in
             ((0x100, leader), (0x1100, follower))]
    assert calls[0].values == calls[1].values
    engine.replicate_outputs(calls[0], leader, calls[1], follower, 8, {})
    assert follower.read(0x1400, 3) + follower.read(0x1500, 5) == b"abcdefgh"
    assert follower.read(0x1200, 2) == b"\2\0"


def test_fcntl_takes_locks_in_the_leader_and_reads_its_flags() -> None:
    fcntl = BY_ABI["x86_64"]["fcntl"]
    assert fcntl.policy_for((3, 6, 0)) is Policy.LEADER  # F_SETLK
    assert fcntl.policy_for((3, 38, 0)) is Policy.LEADER  # F_OFD_SETLKW
    assert fcntl.policy_for((3, 3, 0)) is Policy.EACH_LEADER_RESULT  # F_GETFL
    assert fcntl.policy_for((3, 0, 5)) is Policy.EACH  # F_DUPFD
    assert BY_ABI["i386"]["fcntl64"].args[2].resolve((3, 37, 0)).struct == "flock64"
    assert BY_ABI["i386"]["fcntl"].args[2].resolve((3, 37, 0)).struct == "flock"
