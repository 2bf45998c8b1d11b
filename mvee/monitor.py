"""The lockstep loop: rendezvous at every syscall entry, compare, execute by policy.

Variants run freely between syscalls. When every live variant stopped at a
syscall entry, the engine compares their calls; a difference stops everything
before the call executes in any of them. An agreed call executes according to
its policy (mvee.syscall_spec.Policy), then all variants are released together.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field

from mvee import engine, ptrace_api
from mvee.engine import Call
from mvee.ptrace_api import Memory, SyscallStop
from mvee.syscall_spec import Flags, Policy
from mvee.variant import State, Variant

SYSCALL_TRAP = signal.SIGTRAP | 0x80
_OPEN_FLAGS_ONLY_ONCE = 0o100 | 0o200 | 0o1000  # O_CREAT | O_EXCL | O_TRUNC


class Alarm(Exception):
    """Stops the run: all variants are killed before the offending call executes."""

    def __init__(self, verdict: str, message: str, calls: list[Call] | None = None,
                 variant: int | None = None) -> None:
        super().__init__(message)
        self.verdict = verdict
        self.message = message
        self.calls = calls or []
        self.variant = variant


@dataclass
class Outcome:
    verdict: str
    message: str
    exit_code: int | None  # the program's own status when the verdict is "ok"
    alarm: Alarm | None = None
    syscalls: int = 0
    details: dict[str, object] = field(default_factory=dict)


class Monitor:
    def __init__(self, variants: list[Variant]) -> None:
        self.variants = variants
        self.by_pid = {v.pid: v for v in variants}
        self.leader = variants[0]
        self.syscalls = 0  # synchronised calls
        self.local_syscalls = 0  # calls each variant ran at its own pace

    # --- the main loop ---

    def run(self) -> Outcome:
        try:
            for variant in self.variants:  # released together from their exec stops
                ptrace_api.resume_to_syscall(variant.pid)
            while True:
                self._wait_for_rendezvous()
                live = [v for v in self.variants if v.alive]
                if not live:
                    return self._final_outcome()
                if len(live) < len(self.variants):
                    raise self._alarm_for_early_exit(live)
                calls = [v.call for v in self.variants]
                reason = engine.compare(calls)
                if reason:
                    raise Alarm("divergence", reason, calls)
                unsupported = calls[0].unsupported_reason
                if unsupported:
                    raise Alarm("unsupported", unsupported, calls)
                self._execute(calls)
                self.syscalls += 1
        except Alarm as alarm:
            self.kill_all()
            return Outcome(alarm.verdict, alarm.message, None, alarm, self.syscalls)

    def kill_all(self) -> None:
        for variant in self.variants:
            variant.kill()
        for variant in self.variants:
            while variant.alive:
                try:
                    _, status = os.waitpid(variant.pid, ptrace_api.WALL)
                except ChildProcessError:
                    variant.state = State.EXITED
                    break
                if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                    variant.record_exit(status)

    # --- waiting for stops ---

    def _wait_for_rendezvous(self) -> None:
        while any(v.state is State.RUNNING for v in self.variants):
            pid, status = os.waitpid(-1, ptrace_api.WALL)
            variant = self.by_pid.get(pid)
            if variant is None:
                continue
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                variant.record_exit(status)
                continue
            self._on_stop(variant, status)

    def _on_stop(self, variant: Variant, status: int) -> None:
        stop_signal = os.WSTOPSIG(status)
        if stop_signal == SYSCALL_TRAP:
            info = ptrace_api.syscall_info(variant.pid)
            if info.op == ptrace_api.SYSCALL_INFO_ENTRY:
                variant.abi_name = info.abi.name
                call = engine.decode(info.abi, info.nr, info.args, variant.memory)
                if call.spec and call.spec.policy_for(call.args) is Policy.LOCAL:
                    self.local_syscalls += 1
                else:
                    variant.state = State.AT_ENTRY
                    variant.call = call
                    return
            # The exit of a LOCAL call or of an execve: nothing to synchronise.
            ptrace_api.resume_to_syscall(variant.pid)
        elif status >> 16 == ptrace_api.PTRACE_EVENT_EXEC:
            self._after_exec(variant)
        elif status >> 16:
            raise Alarm("unsupported", f"variant {variant.index} created a process or thread",
                        variant=variant.index)
        else:
            # A signal-delivery-stop: delivered as it comes for now.
            ptrace_api.resume_to_syscall(variant.pid, stop_signal)

    def _after_exec(self, variant: Variant) -> None:
        variant.memory.close()
        variant.memory = Memory(variant.pid)
        ptrace_api.resume_to_syscall(variant.pid)

    def _wait_for_exit(self, variant: Variant) -> SyscallStop | None:
        """Wait for `variant`, resumed from a syscall entry, to reach that syscall's exit."""
        while True:
            _, status = os.waitpid(variant.pid, ptrace_api.WALL)
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                variant.record_exit(status)
                return None
            if os.WSTOPSIG(status) == SYSCALL_TRAP:
                info = ptrace_api.syscall_info(variant.pid)
                if info.op == ptrace_api.SYSCALL_INFO_EXIT:
                    return info
                raise Alarm("error", f"variant {variant.index}: syscall entry while one was running")
            if status >> 16 == ptrace_api.PTRACE_EVENT_EXEC:
                variant.memory.close()
                variant.memory = Memory(variant.pid)
                ptrace_api.resume_to_syscall(variant.pid)
            else:
                ptrace_api.resume_to_syscall(variant.pid, os.WSTOPSIG(status) if not status >> 16 else 0)

    # --- executing an agreed call ---

    def _execute(self, calls: list[Call]) -> None:
        spec = calls[0].spec
        assert spec is not None
        policy = spec.policy
        if policy in (Policy.EACH, Policy.EACH_LEADER_RESULT) and self._names_foreign_process(calls[0]):
            policy = Policy.LEADER  # signalling a process outside the variants happens once
        followers = self.variants[1:]
        if policy is Policy.LEADER:
            for follower in followers:
                self._skip(follower)
            result = self._run_leader(calls[0])
            for follower in followers:
                self._finish_skipped(follower, result)
                engine.replicate_outputs(calls[0], self.leader.memory, follower.call, follower.memory,
                                         result)
        elif policy is Policy.LEADER_FIRST:
            result = self._run_leader(calls[0])
            for follower in followers:
                if engine.is_error(result):
                    self._skip(follower)
                    self._finish_skipped(follower, result)
                else:
                    self._run_follower_open(follower, result)
        else:
            results = self._run_each(calls)
            if policy is Policy.EACH_LEADER_RESULT and results[0] is not None:
                for follower in followers:
                    if follower.alive:
                        ptrace_api.poke_user(follower.pid, "ax", results[0])
        for variant in self.variants:
            if variant.alive:
                variant.state = State.RUNNING
                variant.call = None
                ptrace_api.resume_to_syscall(variant.pid)

    def _run_leader(self, call: Call) -> int:
        ptrace_api.resume_to_syscall(self.leader.pid)
        exit_stop = self._wait_for_exit(self.leader)
        if exit_stop is None:
            raise Alarm("divergence", f"variant 0 {self.leader.termination()} in {call.name} "
                        "while the others wait at it", variant=0)
        return exit_stop.return_value

    def _skip(self, variant: Variant) -> None:
        """Replace the call at this entry by one the kernel rejects (nr -1) and run to its exit."""
        ptrace_api.poke_user(variant.pid, "orig_ax", -1)
        ptrace_api.resume_to_syscall(variant.pid)

    def _finish_skipped(self, variant: Variant, result: int) -> None:
        if self._wait_for_exit(variant) is None:
            raise Alarm("divergence", f"variant {variant.index} {variant.termination()} at a syscall",
                        variant=variant.index)
        ptrace_api.poke_user(variant.pid, "ax", result)

    def _run_follower_open(self, follower: Variant, leader_fd: int) -> None:
        call = follower.call
        assert isinstance(call, Call)
        flags_at = next((i for i, kind in enumerate(call.kinds)
                         if isinstance(kind, Flags) and kind.name == "flags"), None)
        with _ArgumentOverride(follower, call) as override:
            if flags_at is not None:
                override.set(flags_at, call.args[flags_at] & ~_OPEN_FLAGS_ONLY_ONCE)
            ptrace_api.resume_to_syscall(follower.pid)
            exit_stop = self._wait_for_exit(follower)
            if exit_stop is None:
                raise Alarm("divergence", f"variant {follower.index} {follower.termination()} in "
                            f"{call.name}", variant=follower.index)
        if exit_stop.return_value != leader_fd:
            raise Alarm("error", f"{call.name} gave fd {exit_stop.return_value} in variant "
                        f"{follower.index} but {leader_fd} in the leader: fd tables diverged",
                        variant=follower.index)

    def _run_each(self, calls: list[Call]) -> list[int | None]:
        overrides = []
        for follower in self.variants[1:]:
            override = _ArgumentOverride(follower, calls[follower.index])
            for position in engine.pid_arguments(calls[0]):
                if calls[0].args[position] == self.leader.pid:
                    override.set(position, follower.pid)
            overrides.append(override)
        for variant in self.variants:
            ptrace_api.resume_to_syscall(variant.pid)
        results: list[int | None] = []
        for variant in self.variants:
            exit_stop = self._wait_for_exit(variant)
            results.append(exit_stop.return_value if exit_stop else None)
        for override in overrides:
            override.restore()
        return results

    def _names_foreign_process(self, call: Call) -> bool:
        return any(call.args[i] not in (0, self.leader.pid) for i in engine.pid_arguments(call))

    # --- endings ---

    def _alarm_for_early_exit(self, live: list[Variant]) -> Alarm:
        gone = next(v for v in self.variants if not v.alive)
        waiting = live[0]
        calls = [v.call for v in live if isinstance(v.call, Call)]
        return Alarm("divergence", f"variant {gone.index} {gone.termination()} while variant "
                     f"{waiting.index} calls {waiting.call.name if waiting.call else '?'}",
                     calls, variant=gone.index)

    def _final_outcome(self) -> Outcome:
        endings = {v.termination() for v in self.variants}
        if len(endings) > 1:
            detail = "; ".join(f"variant {v.index} {v.termination()}" for v in self.variants)
            alarm = Alarm("divergence", f"variants ended differently: {detail}")
            return Outcome("divergence", alarm.message, None, alarm, self.syscalls)
        leader = self.leader
        code = leader.exit_status if leader.term_signal is None else 128 + leader.term_signal
        return Outcome("ok", f"all variants {leader.termination()}", code, None, self.syscalls)


class _ArgumentOverride:
    """Rewrites syscall argument registers of a stopped variant and restores them after
    the call: the syscall ABI promises user space those registers survive the call."""

    def __init__(self, variant: Variant, call: Call) -> None:
        self.variant = variant
        self.registers = call.abi.syscall_arg_registers
        self.saved: dict[str, int] = {}
        self.original_args = call.args

    def set(self, position: int, value: int) -> None:
        register = self.registers[position]
        self.saved.setdefault(register, self.original_args[position])
        ptrace_api.poke_user(self.variant.pid, register, value)

    def restore(self) -> None:
        if self.variant.alive:
            for register, value in self.saved.items():
                ptrace_api.poke_user(self.variant.pid, register, value)

    def __enter__(self) -> _ArgumentOverride:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()
