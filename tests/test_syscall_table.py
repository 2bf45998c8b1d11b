"""The syscall table read as data: each row against the ABIs it claims.

`problems` lists what is wrong with rows; the table must have none, and each
kind of mistake it looks for is shown to be found in a broken row.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable

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
    OutStruct,
    Pid,
    Policy,
    SigAction,
    SockAddr,
    Syscall,
)
from mvee.syscall_table import BY_ABI, TABLE

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
                  "sigpipe_unless": 1, "policy_cases": 1, "follower_duplicates": 2}
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
    if row.sets_disposition:
        signal_at, act_at = row.sets_disposition_at
        if row.policy is not Policy.EACH or type(row.args[signal_at]) is not Int or \
                not isinstance(row.args[act_at], SigAction):
            found.append(f"{row.name}: sets_disposition wants an EACH row, an Int signal, a SigAction")
    if row.policy in EACH_POLICIES and row.names_processes and row.foreign_process is not Policy.LEADER:
        found.append(f"{row.name}: names processes and runs in each variant: foreign_process must be LEADER")
    if row.foreign_process and not (row.policy in EACH_POLICIES and row.names_processes):
        found.append(f"{row.name}: foreign_process on a row that does not name processes in each variant")
    if row.policy is Policy.UNSUPPORTED and (row.local_when or row.follower_clears or row.sigpipe_on_epipe
                                             or row.sets_disposition or row.changes_mappings
                                             or row.foreign_process):
        found.append(f"{row.name}: an UNSUPPORTED row with attributes that never apply")
    return found


def problems(rows: list[Syscall]) -> list[str]:
    found = [f"{name}: {n} rows" for name, n in Counter(row.name for row in rows).items() if n > 1]
    for row in rows:
        found += _reference_problems(row) + _abi_problems(row) + _policy_problems(row)
    return found


def test_the_table_has_no_problems() -> None:
    assert problems(TABLE) == []


def test_each_abi_looks_up_exactly_the_rows_that_claim_it() -> None:
    for abi in ALL_ABIS:
        assert sorted(BY_ABI[abi]) == sorted(row.name for row in TABLE if abi in row.abis)
    # 38 rows are i386's own (64-bit variants of calls, old multiplexers ...); newfstatat
    # is x86_64's, and so are "mmap" and "select" (i386's are old calls of one pointer to
    # the arguments) and "accept" (i386 has accept4, or socketcall's accept).
    assert sum(row.abis == ("i386",) for row in TABLE) == 38
    assert sorted(row.name for row in TABLE if row.abis == ("x86_64",)) == [
        "accept", "mmap", "newfstatat", "select"]
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
        "kill", "prlimit64", "setpgid", "tgkill", "tkill"]


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
    "disposition of a pointer": ([Syscall("rt_sigaction", (Int("sig"), Addr("act")), Policy.EACH,
                                          sets_disposition=("sig", "act"))], "sets_disposition wants"),
    "foreign PID forgotten": ([Syscall("kill", (Pid("pid"), Int("sig")), Policy.EACH)],
                              "foreign_process must be LEADER"),
    "foreign PID without a PID": ([Syscall("sched_yield", (), Policy.EACH, foreign_process=Policy.LEADER)],
                                  "foreign_process on a row that does not name"),
    "unsupported with attributes": ([Syscall("fork", (Int("x"),), Policy.UNSUPPORTED, sigpipe_on_epipe=True)],
                                    "an UNSUPPORTED row"),
    "not a policy": ([Syscall("read", (Fd("fd"),), "leader")], "is not a Policy"),
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
