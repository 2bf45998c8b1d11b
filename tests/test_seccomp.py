"""Seccomp-filtered tracing (mvee.seccomp_filter): which calls stop a variant, and how often.

Real programs under `mvee run`, once with the filter and once traced with PTRACE_SYSCALL
at every call; the report's per-variant `stops` and `traced_by` say what happened.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess

import pytest

from mvee import seccomp_filter, waitloop
from mvee.seccomp_filter import SECCOMP_RET_ALLOW, SECCOMP_RET_TRACE

MAPS, WRITES = 2000, 1000

pytestmark = pytest.mark.skipif(not seccomp_filter.kernel_supported(),
                                reason="kernel before 4.8: the monitor traces with PTRACE_SYSCALL")


def _run(run_mvee, program, tracing: str, *extra: str):
    result = run_mvee("--tracing", tracing, "--", str(program), str(MAPS), str(WRITES), *extra)
    assert result.returncode == 0, result.stderr
    assert result.report is not None and result.report["verdict"] == "ok"
    return result


@pytest.mark.parametrize("abi", ["x86_64", "i386"])
def test_local_calls_do_not_stop_and_followers_stop_once(build_program, run_mvee, abi):
    program = build_program("anon_maps", abi)
    native = subprocess.run([str(program), str(MAPS), str(WRITES)], capture_output=True, check=True)
    filtered = _run(run_mvee, program, "seccomp")
    traced = _run(run_mvee, program, "ptrace-syscall")
    assert filtered.stdout == traced.stdout == native.stdout
    assert [v["traced_by"] for v in filtered.report["variants"]] == ["seccomp", "seccomp"]
    assert [v["traced_by"] for v in traced.report["variants"]] == ["ptrace-syscall"] * 2
    leader, follower = (v["stops"] for v in filtered.report["variants"])
    # PTRACE_SYSCALL: an entry and an exit stop for every mmap and every write, in each.
    assert all(v["stops"] > 2 * (MAPS + WRITES) for v in traced.report["variants"])
    # The filter: the mmaps never stop; a write stops the leader at its entry and exit,
    # the follower at its entry only (it gets the leader's result there).
    assert 2 * WRITES <= leader < 2 * WRITES + 400
    assert WRITES <= follower < WRITES + 400
    assert filtered.report["syscalls"] == traced.report["syscalls"]


@pytest.mark.parametrize("abi", ["x86_64", "i386"])
def test_a_child_set_is_traced_by_the_inherited_filter(build_program, run_mvee, abi):
    """A forked child runs under its parent's filter and options (the kernel's): its set
    is traced by seccomp, its follower stops once per write, its mmaps not at all."""
    program = build_program("anon_maps", abi)
    argv = ["/bin/sh", "-c", f"{program} {MAPS} {WRITES}; echo done"]
    native = subprocess.run(argv, capture_output=True, check=True)
    result = run_mvee("--tracing", "seccomp", "--", *argv)
    assert result.returncode == 0, result.stderr
    assert result.stdout == native.stdout
    child = next(s for s in result.report["sets"] if s["program"] == str(program))
    assert child["traced_by"] == ["seccomp", "seccomp"]
    leader, follower = child["stops"]
    assert 2 * WRITES <= leader < 2 * WRITES + 400
    assert WRITES <= follower < WRITES + 400


def test_int80_from_64_bit_code_stops_by_the_i386_rules(build_program, run_mvee):
    """The filter tells the ABI by the call's arch: i386's getpid through int 0x80 from
    a 64-bit process is a synchronised call like any other."""
    if not waitloop.int80_works():
        pytest.skip("this kernel has no IA-32 emulation: int 0x80 from 64-bit code faults")
    result = _run(run_mvee, build_program("anon_maps", "x86_64"), "seccomp", "int80")
    assert result.stdout.endswith(b"same pid 1\n")


@pytest.mark.parametrize(("release", "supported"), [
    ("4.7.10", False), ("4.8.0", True), ("6.1.0-18-686-pae", True), ("6.12.9-amd64", True), ("junk", False),
])
def test_kernels_before_4_8_are_traced_with_ptrace_syscall(release, supported):
    assert seccomp_filter.kernel_supported(release) is supported


def test_the_filter_allows_only_calls_without_the_monitors_work():
    """Run over the filter program: brk and anonymous mmaps without MAP_FIXED run, every
    other call (a file mmap, MAP_FIXED, munmap of the wait-loop page, write, an unknown
    number, an unknown ABI) stops."""
    from mvee.abi import I386, X86_64

    program = seccomp_filter.build()

    def verdict(arch: int, nr: int, args: tuple[int, ...] = (0,) * 6) -> int:
        data = nr.to_bytes(4, "little") + arch.to_bytes(4, "little") + bytes(8)
        data += b"".join(a.to_bytes(8, "little") for a in args)
        return _run_bpf(program, data)

    anonymous, fixed = 0x22, 0x32  # MAP_PRIVATE|MAP_ANONYMOUS, and |MAP_FIXED
    for abi, mmap in ((X86_64, "mmap"), (I386, "mmap2")):
        arch, numbers = abi.audit_arch, abi.syscall_numbers
        assert verdict(arch, numbers["brk"]) == SECCOMP_RET_ALLOW
        assert verdict(arch, numbers[mmap], (0, 4096, 3, anonymous, 2**32 - 1, 0)) == SECCOMP_RET_ALLOW
        assert verdict(arch, numbers[mmap], (0, 4096, 3, fixed, 2**32 - 1, 0)) == SECCOMP_RET_TRACE
        assert verdict(arch, numbers[mmap], (0, 4096, 1, 0x02, 3, 0)) == SECCOMP_RET_TRACE  # a file
        for name in ("munmap", "mprotect", "write", "getpid", "nanosleep", "rt_sigreturn"):
            assert verdict(arch, numbers[name]) == SECCOMP_RET_TRACE, name
        assert verdict(arch, 4000) == SECCOMP_RET_TRACE
    assert verdict(X86_64.audit_arch, X86_64.syscall_numbers["brk"] | 0x40000000) == SECCOMP_RET_TRACE  # x32
    assert verdict(0x40000028, 12) == SECCOMP_RET_TRACE  # AUDIT_ARCH_ARM: not one of ours


def test_process_calls_stop_and_thread_coordination_does_not():
    """The calls the sets need stop: a fork's (its exit is run and seen in each variant),
    wait4 (the followers reap their own), a monotonic clock read (LOCAL only in a process
    with threads: the monitor decides, the filter cannot). The calls that only
    coordinate a variant's own threads never stop."""
    from mvee.abi import I386, X86_64

    program = seccomp_filter.build()

    def verdict(arch: int, nr: int) -> int:
        return _run_bpf(program, nr.to_bytes(4, "little") + arch.to_bytes(4, "little") + bytes(56))

    for abi in (X86_64, I386):
        arch, numbers = abi.audit_arch, abi.syscall_numbers
        for name in ("clone", "clone3", "fork", "vfork", "wait4", "waitid", "clock_gettime", "execve",
                     "exit_group", "kill", "tgkill"):
            if name in numbers:
                assert verdict(arch, numbers[name]) == SECCOMP_RET_TRACE, (abi.name, name)
        for name in ("futex", "set_robust_list", "rseq", "sched_yield", "membarrier"):
            assert verdict(arch, numbers[name]) == SECCOMP_RET_ALLOW, (abi.name, name)


def _run_bpf(program: bytes, data: bytes) -> int:
    """A classic BPF interpreter for the instructions a seccomp filter may use here."""
    accumulator, pc = 0, 0
    while True:
        code, jt, jf, k = struct.unpack_from("<HBBI", program, 8 * pc)
        pc += 1
        if code == 0x20:  # ld [k]
            accumulator = int.from_bytes(data[k:k + 4], "little")
        elif code == 0x15:  # jeq
            pc += jt if accumulator == k else jf
        elif code == 0x45:  # jset
            pc += jt if accumulator & k else jf
        elif code == 0x06:  # ret
            return k
        else:
            raise AssertionError(f"unexpected BPF instruction {code:#x}")


@pytest.mark.parametrize("filtered", [True, False])
def test_a_signal_before_the_childs_own_sigstop_is_delivered(monkeypatch, filtered):
    """The child is traced from PTRACE_TRACEME on: a signal that reaches it before its
    own SIGSTOP is its first stop. Start-up delivers it (SIGWINCH: ignored, as natively)
    and still stops the variant after its exec, under the filter when one is given."""
    from mvee import variant as variant_module

    monkeypatch.setattr(variant_module.tsc, "trap_in_this_process",
                        lambda: os.kill(os.getpid(), signal.SIGWINCH))
    started = variant_module.start(0, "/bin/true", ["true"], seccomp_filter.Filter() if filtered else None)
    try:
        assert started.traced_by == ("seccomp" if filtered else "ptrace-syscall")
        assert os.readlink(f"/proc/{started.pid}/exe") == os.path.realpath("/bin/true")
    finally:
        variant_module.kill_all([started])
