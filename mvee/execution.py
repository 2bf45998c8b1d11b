"""Executing a call the variants agreed on, by its policy (mvee.syscall_spec.Policy).

`LEADER` runs the call in variant 0 only: the others skip it (nr -1) and get its
result and out-buffers; a follower under the seccomp filter skips it at its one stop,
after the leader's call, with the result already there (no exit stop).
`LEADER_FIRST` (opens) runs it in the leader, then in the others without
O_CREAT|O_EXCL|O_TRUNC. `EACH` runs it in every variant, with the leader's PID in an
argument turned into each variant's own. A leader's call that a signal interrupted
is mirrored into the others (mvee.signal_executor).
"""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from mvee import engine, ptrace_api
from mvee.abi import HOST
from mvee.engine import Call
from mvee.events import Exited, WaitFor, Waiting
from mvee.own_files import OwnFiles
from mvee.pids import PidMap
from mvee.shared_mappings import FileRange, own_copy
from mvee.signal_executor import SignalExecutor, interrupted_by_signal
from mvee.signals import Disposition
from mvee.syscall_spec import Cookies, Policy, Syscall, signed
from mvee.variant import SECCOMP, Variant
from mvee.verdict import Alarm, Verdict

F_DUPFD, F_DUPFD_CLOEXEC = 0, 1030
# How long the others have to end the way a variant just ended (its thread's process
# ending; a SIGKILL whose copies for the others are on their way) before it is an alarm.
ENDING_GRACE = 2.0  # seconds


class PolicyExecutor:
    def __init__(self, variants: list[Variant], signal_executor: SignalExecutor, pids: PidMap) -> None:
        self.variants = variants
        self.pids = pids
        self.signals = signal_executor  # runs the variants to their stops, signal-aware
        # Each follower's epoll cookies, against the leader's (mvee.syscall_spec.EpollEvent).
        self.cookies: dict[int, Cookies] = {follower.index: {} for follower in variants[1:]}
        self.own_files = OwnFiles(variants)

    # The set's list, read each time: a follower's thread may change sets (mvee.thread_pairing).
    @property
    def leader(self) -> Variant:
        return self.variants[0]

    @property
    def followers(self) -> list[Variant]:
        return self.variants[1:]

    def execute(self, calls: list[Call]) -> Waiting[None]:
        """Run the agreed call (every variant at its entry), then release them all. A
        generator: it yields when it waits for a call that may block (mvee.events.Waiting)."""
        spec = calls[0].spec
        assert spec is not None
        policy = spec.policy_for(calls[0].args)
        if spec.foreign_process and self._names_foreign_process(calls[0]):
            policy = spec.foreign_process  # signalling a process outside the variants happens once
        own_open = self.own_files.opens_own(calls[0])
        if own_open:
            policy = Policy.EACH  # each variant opens its own /proc file (mvee.own_files)
        results: list[int | None] = []
        if policy is Policy.LEADER:
            if not (yield from self._run_leader_only(calls[0], spec)):
                return  # killed, every variant
        elif policy is Policy.LEADER_FIRST:
            result = yield from self._run_leader(calls[0])
            if result is None:
                return
            for follower in self.followers:
                if engine.is_error(result) or (spec.follower_reaps_at and result == 0):
                    self._give_result(follower, calls[0], result, skipped=False)
                else:
                    yield from self._run_follower(follower, result)
                    assert follower.call is not None
                    engine.replicate_outputs(calls[0], self.leader.memory, follower.call, follower.memory,
                                             result, self.cookies[follower.index])
            results = [result] * len(self.variants)
        else:
            with self.own_files.own_paths(calls) if own_open else nullcontext(), \
                    _creating(self.variants) if spec.creates_process else nullcontext():
                results = yield from self._run_each(calls)
            if policy is Policy.EACH_LEADER_RESULT and results[0] is not None:
                for follower in self.followers:
                    if follower.alive:
                        ptrace_api.poke_user(follower.pid, "ax", results[0])
            if spec.sets_disposition_at:
                self._note_disposition(calls[0], results[0], *spec.sets_disposition_at)
            if spec.returns_from_handler:
                self.signals.on_handler_return()
        if results:
            self.own_files.after_call(calls[0], own_open, results)
        for variant in self.variants:
            if variant.alive:
                self.signals.resume(variant, synchronised=calls[variant.index].nr)

    def _run_leader_only(self, call: Call, spec: Syscall) -> Waiting[bool]:
        """False if every variant was killed meanwhile."""
        skipped = [f for f in self.followers if f.traced_by != SECCOMP]  # on their way meanwhile
        for follower in skipped:
            ptrace_api.skip_syscall(follower.pid)
        result = yield from self._run_leader(call)
        if result is None:
            return False
        unshared = engine.leader_only_outputs(call, self.leader.memory, result)
        if unshared:  # the fd tables would differ from here on
            raise Alarm(Verdict.UNSUPPORTED, f"{call.name} {unshared}", [call])
        for follower in self.followers:
            self._give_result(follower, call, result, skipped=follower in skipped)
            assert follower.call is not None
            engine.replicate_outputs(call, self.leader.memory, follower.call, follower.memory, result,
                                     self.cookies[follower.index], interrupted=interrupted_by_signal(result))
            unless = spec.sigpipe_unless_at
            if result == -errno.EPIPE and spec.sigpipe_on_epipe and not (
                    unless and call.args[unless[0]] & unless[1]):
                follower.signal(signal.SIGPIPE)  # the leader's kernel raised one, in that thread
        return True

    def _note_disposition(self, call: Call, result: int | None, signal_at: int, act_at: int) -> None:
        act = call.values[act_at]
        if result != 0 or not isinstance(act, tuple):
            return
        handler, flags, _ = act
        disposition = {0: Disposition.DEFAULT, 1: Disposition.IGNORE}.get(handler, Disposition.HANDLER)
        self.signals.signals.set_disposition(call.args[signal_at], disposition, flags)

    def _run_leader(self, call: Call) -> Waiting[int | None]:
        """The leader's result; None if it was killed and the others were too."""
        ptrace_api.resume_to_syscall(self.leader.pid)
        exit_stop = yield from self.signals.exit_of(self.leader)
        if exit_stop is None:
            if (yield from self._killed_alike()):
                return None
            raise Alarm(Verdict.DIVERGENCE, f"variant 0 {self.leader.termination()} in {call.name} "
                        "while the others wait at it", variant=0)
        if interrupted_by_signal(exit_stop.return_value):
            self.signals.mirror_pending_timer_signals()
        return exit_stop.return_value

    def _killed_alike(self) -> Waiting[bool]:
        """The leader was killed (SIGKILL) in a call the others wait at: by a process of
        another set (a timeout's kill of its child), whose counterparts kill the others
        too, a moment later. Whether they all were, within the grace."""
        if self.leader.term_signal != signal.SIGKILL:
            return False
        deadline = time.monotonic() + ENDING_GRACE
        waiting = {follower.pid for follower in self.followers if follower.alive}
        while waiting:
            event = yield WaitFor(frozenset(waiting), deadline)
            if event is None or not isinstance(event, Exited):
                return False  # (a follower at its entry makes no other stop)
            self.signals.in_call(event)
            waiting.discard(event.variant.pid)
        return all(follower.term_signal == signal.SIGKILL for follower in self.followers)

    def _give_result(self, follower: Variant, call: Call, result: int, skipped: bool) -> None:
        """The leader's result into a follower at its entry (`skipped`: on its way to the
        exit of its skipped call already). Under the seccomp filter it is given at the
        entry, without an exit stop, unless the leader's call was interrupted: its kernel
        state is mirrored at the exit."""
        if not skipped and follower.traced_by == SECCOMP and not interrupted_by_signal(result):
            ptrace_api.skip_with_result(follower.pid, result)
            return
        if not skipped:
            ptrace_api.skip_syscall(follower.pid)
        self._finish_skipped(follower, call, result)

    def _finish_skipped(self, variant: Variant, call: Call, result: int) -> None:
        """At the skipped call's exit: the leader's result, or its interrupted state."""
        if self.signals.wait_for_exit(variant, skipped=True) is None:
            raise Alarm(Verdict.DIVERGENCE, f"variant {variant.index} {variant.termination()} at a "
                        "syscall", variant=variant.index)
        if interrupted_by_signal(result):
            self.signals.mirror_interrupted(variant, call.nr, call.abi, result)
        else:
            ptrace_api.poke_user(variant.pid, "ax", result)

    def _run_follower(self, follower: Variant, leader_result: int) -> Waiting[None]:
        """A follower's LEADER_FIRST call, after the leader's gave `leader_result`."""
        call = follower.call
        assert call is not None and call.spec is not None
        expected = leader_result
        with _ArgumentOverride(follower, call) as override:
            if call.spec.follower_clears_at:
                flags_at, once_only = call.spec.follower_clears_at
                override.set(flags_at, call.args[flags_at] & ~once_only)
            if call.spec.follower_duplicates_at:
                fd_at, flags_at = call.spec.follower_duplicates_at
                cloexec = flags_at is not None and call.args[flags_at] & os.O_CLOEXEC
                override.set_call(call.abi.syscall_numbers["fcntl"], call.args[fd_at],
                                  F_DUPFD_CLOEXEC if cloexec else F_DUPFD, leader_result)
            if call.spec.follower_reaps_at:
                # It waits for its own counterpart of the process the leader reaped, which
                # has ended there too or is about to (the sets run in lockstep).
                pid_at, options_at = call.spec.follower_reaps_at
                expected = self.pids.to_real(follower.index, leader_result)
                override.set(pid_at, expected)
                override.set(options_at, call.args[options_at] & ~os.WNOHANG)
            with _signals_blocked([follower]) if call.spec.follower_reaps_at else nullcontext():
                # Not interrupted: its signals come at the set's next point, as the leader's.
                ptrace_api.resume_to_syscall(follower.pid)
                exit_stop = yield from self.signals.exit_of(follower)
            if exit_stop is None:
                raise Alarm(Verdict.DIVERGENCE, f"variant {follower.index} {follower.termination()} "
                            f"in {call.name}", variant=follower.index)
        if exit_stop.return_value != expected:
            raise Alarm(Verdict.ERROR, f"{call.name} gave {exit_stop.return_value} in variant "
                        f"{follower.index} but {leader_result} in the leader: the variants' fd tables or "
                        "processes diverged", variant=follower.index)
        if expected != leader_result:
            ptrace_api.poke_user(follower.pid, "ax", leader_result)  # the virtual PID

    def _run_each(self, calls: list[Call]) -> Waiting[list[int | None]]:
        overrides = []
        copies: list[tuple[Variant, FileRange]] = []
        for follower in self.followers:
            override = _ArgumentOverride(follower, calls[follower.index])
            for position in engine.pid_arguments(calls[0]):
                own = self.pids.to_real(follower.index, calls[0].args[position])
                if own != signed(calls[follower.index].args[position], 32):
                    override.set(position, own)
            made_own = own_copy(follower, calls[follower.index])  # mvee.shared_mappings
            if made_own:
                arguments, file_range = made_own
                for position, value in arguments.items():
                    override.set(position, value)
                copies.append((follower, file_range))
            overrides.append(override)
        for variant in self.variants:
            ptrace_api.resume_to_syscall(variant.pid)
        results: list[int | None] = [None] * len(self.variants)
        running = {variant.pid: variant for variant in self.variants}
        deadline = None
        while running:  # in any order: a vfork returns once the child set has run to its exec
            event = yield WaitFor(frozenset(running), deadline)
            if event is None:
                waiting = next(iter(running.values()))
                raise Alarm(Verdict.NON_COMPLIANT, f"variant {waiting.index} stayed in a blocking "
                            "syscall after the others were interrupted by a signal", variant=waiting.index)
            done, exit_stop = self.signals.in_call(event)
            if not done:
                continue
            variant = running.pop(event.variant.pid)
            results[variant.index] = exit_stop.return_value if exit_stop else None
            if exit_stop and interrupted_by_signal(exit_stop.return_value) and variant is self.leader:
                self.signals.mirror_pending_timer_signals()
            if exit_stop and interrupted_by_signal(exit_stop.return_value) and deadline is None:
                # Interrupted here: a variant still blocked must get its signal in time too.
                deadline = time.monotonic() + self.signals.options.wait_loop_seconds()
        for override in overrides:
            override.restore()
        for follower, file_range in copies:
            address = results[follower.index]
            if address is not None and follower.alive and not engine.is_error(address):
                file_range.copy_into(follower, address)
        return results

    def _names_foreign_process(self, call: Call) -> bool:
        """Whether a call names a process outside the variants' sets."""
        return not all(self.pids.is_known(call.args[i]) for i in engine.pid_arguments(call))


@contextmanager
def _signals_blocked(variants: list[Variant]) -> Iterator[dict[int, int]]:
    """Every signal blocked in variants stopped at a syscall entry, while their call runs;
    their masks (by PID) are what it yields."""
    masks = {variant.pid: ptrace_api.signal_mask(variant.pid) for variant in variants}
    for variant in variants:
        ptrace_api.set_signal_mask(variant.pid, (1 << 64) - 1)
    try:
        yield masks
    finally:
        for variant in variants:
            if variant.alive:
                ptrace_api.set_signal_mask(variant.pid, masks[variant.pid])


@contextmanager
def _creating(variants: list[Variant]) -> Iterator[None]:
    """A fork or clone in every variant, with their signals blocked: a signal pending in
    one (a SIGCHLD the monitor mirrored) made its kernel abandon the call to restart it
    after the signal (ERESTARTNOINTR), with no child, while the others made theirs. The
    signal comes right after the call instead, as it could natively; each child gets
    its parent's mask back at its first stop (`Variant.children_mask`, mvee.monitor)."""
    with _signals_blocked([variant for variant in variants if variant.alive]) as masks:
        for variant in variants:
            variant.children_mask = masks.get(variant.pid)
        yield


class _ArgumentOverride:
    """Rewrites syscall argument registers of a stopped variant and restores them after
    the call: the syscall ABI promises user space those registers survive the call."""

    def __init__(self, variant: Variant, call: Call) -> None:
        self.variant = variant
        self.registers = call.abi.syscall_arg_registers
        self.saved: dict[str, int] = {}
        self.original: bytes | None = None  # the registers, read at the first change

    def set(self, position: int, value: int) -> None:
        register = self.registers[position]
        if self.original is None:
            self.original = ptrace_api.get_regs(self.variant.pid)
        self.saved.setdefault(register, HOST.register(self.original, register))
        ptrace_api.poke_user(self.variant.pid, register, value)

    def set_call(self, nr: int, *args: int) -> None:
        """Another call instead, with these arguments (its result is the variant's)."""
        ptrace_api.poke_user(self.variant.pid, "orig_ax", nr)
        for position, value in enumerate(args):
            self.set(position, value)

    def restore(self) -> None:
        if self.variant.alive:
            for register, value in self.saved.items():
                ptrace_api.poke_user(self.variant.pid, register, value)

    def __enter__(self) -> _ArgumentOverride:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()
