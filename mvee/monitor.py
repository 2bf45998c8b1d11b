"""The lockstep loop: rendezvous at every syscall entry, compare, execute by policy.

Variants run freely between syscalls. When every live variant stopped at a
syscall entry, the engine compares their calls; a difference stops everything
before the call executes in any of them. An agreed call executes according to
its policy (mvee.syscall_spec.Policy), then all variants are released together.
Signal stops go to mvee.signals, whose decisions mvee.signal_executor carries out.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass

from mvee import engine, ptrace_api
from mvee.abi import BY_NAME, HOST
from mvee.engine import Call
from mvee.ptrace_api import Memory, SyscallStop
from mvee.signal_executor import InjectionError, SignalExecutor, interrupted_by_signal
from mvee.signals import (
    FAULT_SIGNALS,
    Decision,
    Deliver,
    Disposition,
    Hold,
    NonCompliant,
    Park,
    Proceed,
    Release,
    Resend,
    SignalCoordinator,
    Suppress,
    Unpark,
    Where,
)
from mvee.stops import StopWaiter
from mvee.syscall_spec import Flags, Policy, SigAction
from mvee.variant import Variant, kill_all
from mvee.verdict import Alarm, Outcome, Verdict, early_exit_alarm, final_outcome

SYSCALL_TRAP = signal.SIGTRAP | 0x80
_SKIPPED_EXIT = SyscallStop(ptrace_api.SYSCALL_INFO_EXIT, HOST, 0, 0)
_OPEN_FLAGS_ONLY_ONCE = os.O_CREAT | os.O_EXCL | os.O_TRUNC  # the same on i386 and x86_64
_ENDING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True)
class MonitorOptions:
    signal_policy: str = "sync"
    loop_trap: str = "int80"  # resolved: "int80" or "syscall"
    wait_loop_iterations: int = 1_000_000_000
    wait_loop_ms: float | None = None  # what the iterations were calibrated from, if anything


class Monitor:
    def __init__(self, variants: list[Variant], options: MonitorOptions | None = None) -> None:
        self.options = options or MonitorOptions()
        self.variants = variants
        self.by_pid = {v.pid: v for v in variants}
        self.leader = variants[0]
        self.syscalls = 0  # synchronised calls
        self.local_syscalls = 0  # calls each variant ran at its own pace
        self.signals = SignalCoordinator(len(variants), self.options.signal_policy)
        self.executor = SignalExecutor(len(variants), self.options.loop_trap,
                                       self.options.wait_loop_iterations, self._wait_for_exit)
        self.ending_signals_seen = 0
        self.waiter: StopWaiter | None = None

    # --- the main loop ---

    def run(self) -> Outcome:
        self.waiter = StopWaiter(self._forward_external_signal)
        try:
            try:
                return self._lockstep()
            except ptrace_api.PtraceError as error:
                raise self._vanished(error) from None
        except Alarm as alarm:
            self.kill_all()
            return Outcome(alarm.verdict, alarm.message, None, alarm, self.syscalls,
                           {"signals": self.signal_statistics()})
        except InjectionError as error:
            self.kill_all()
            return Outcome(Verdict.ERROR, str(error), None, None, self.syscalls)
        finally:
            self.waiter.close()

    def _lockstep(self) -> Outcome:
        for variant in self.variants:  # released together from their exec stops
            ptrace_api.resume_to_syscall(variant.pid)
        while True:
            self._wait_for_rendezvous()
            live = [v for v in self.variants if v.alive]
            if not live:
                return self._final_outcome()
            if len(live) < len(self.variants):
                if self._dying_alike(live):
                    continue
                raise early_exit_alarm(self.variants)
            decisions = self.signals.on_rendezvous(time.monotonic())
            if decisions:
                self._carry_out(decisions)
                continue
            calls = [v.call for v in self.variants]
            reason = engine.compare(calls)
            if reason:
                raise Alarm(Verdict.DIVERGENCE, reason, calls)
            unsupported = calls[0].unsupported_reason
            if unsupported:
                raise Alarm(Verdict.UNSUPPORTED, unsupported, calls)
            self._execute(calls)
            self.syscalls += 1

    def _vanished(self, error: ptrace_api.PtraceError) -> Alarm | ptrace_api.PtraceError:
        """A ptrace call found a variant gone: killed from outside (SIGKILL) between its
        stop and the call. Its death is collected and reported like any early death;
        any other ptrace failure stays the monitor's error."""
        variant = self.by_pid.get(error.pid) if error.errno == errno.ESRCH else None
        if variant is None:
            return error
        deadline = time.monotonic() + 5
        while variant.alive:
            found = self._wait(variant.pid, deadline)
            if found is None:
                return error  # not dead after all: a monitor bug
            if os.WIFEXITED(found[1]) or os.WIFSIGNALED(found[1]):
                variant.record_exit(found[1])
        live = [v for v in self.variants if v.alive]
        if not live:
            return Alarm(Verdict.DIVERGENCE, f"variant {variant.index} {variant.termination()} while the "
                         "monitor handled it", variant=variant.index)
        return early_exit_alarm(self.variants)

    def kill_all(self) -> None:
        kill_all(self.variants)

    def signal_statistics(self) -> dict[str, object]:
        delays = self.signals.delays
        sample = sorted(d * 1000 for d in delays.sample)

        def percentile(q: float) -> float | None:
            return sample[min(len(sample) - 1, int(q * len(sample)))] if sample else None

        used = sorted(self.executor.traps_used)
        return {
            "policy": self.options.signal_policy,
            "delivered": delays.count,
            "delay_ms": {"mean": delays.total * 1000 / delays.count if delays.count else None,
                         "p50": percentile(0.5), "p99": percentile(0.99),
                         "max": delays.maximum * 1000 if delays.count else None},
            "loop_trap": used[0] if len(used) == 1 else (used or None),
            "wait_loop_iterations": self.options.wait_loop_iterations,
            "wait_loop_ms": self.options.wait_loop_ms,
        }

    # --- waiting for stops ---

    def _wait(self, pid: int = -1, deadline: float | None = None) -> tuple[int, int] | None:
        assert self.waiter is not None
        return self.waiter.wait(pid, deadline)

    def _wait_for_rendezvous(self) -> None:
        while True:
            wheres = {self.signals.where(v.index) for v in self.variants if v.alive}
            if wheres <= {Where.AT_SYSCALL}:
                return
            if not wheres & {Where.RUNNING, Where.PARKED}:
                raise Alarm(Verdict.ERROR, "internal error: every variant is stopped, none at a syscall")
            found = self._wait()
            assert found is not None
            pid, status = found
            variant = self.by_pid.get(pid)
            if variant is None:
                continue
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                variant.record_exit(status)
                self._carry_out(self.signals.on_exit(variant.index, time.monotonic()))
                continue
            self._on_stop(variant, status)

    def _on_stop(self, variant: Variant, status: int) -> None:
        stop_signal = os.WSTOPSIG(status)
        event = status >> 16
        if stop_signal == SYSCALL_TRAP:
            info = ptrace_api.syscall_info(variant.pid)
            if info.op == ptrace_api.SYSCALL_INFO_ENTRY:
                self._on_entry(variant, info)
            else:  # the exit of a LOCAL call or of an execve: nothing to synchronise
                ptrace_api.resume_to_syscall(variant.pid)
        elif event == ptrace_api.PTRACE_EVENT_EXEC:
            self._after_exec(variant)
            ptrace_api.resume_to_syscall(variant.pid)
        elif event:
            raise Alarm(Verdict.UNSUPPORTED, f"variant {variant.index} created a process or thread",
                        variant=variant.index)
        else:
            self._on_signal(variant, stop_signal)

    def _on_entry(self, variant: Variant, info: SyscallStop) -> None:
        variant.abi_name = variant.abi_name or info.abi.name
        self.executor.entered(variant)
        if self.executor.at_loop_trap(variant, info.instruction_pointer, after=True):
            self._carry_out(self.signals.on_loop_timeout(variant.index))
        if self.executor.needs_loop(variant):
            self.executor.inject_loop(variant, info)
            return  # the original call comes back as a fresh entry stop
        call = engine.decode(info.abi, info.nr, info.args, variant.memory)
        local = call.spec is not None and call.spec.policy_for(call.args) is Policy.LOCAL
        if local:
            self._check_loop_page(variant, call)
        variant.call = call
        decisions = self.signals.on_syscall_entry(variant.index, time.monotonic(), synchronised=not local)
        self._carry_out(decisions)
        if any(type(d) is Proceed and d.variant == variant.index for d in decisions):
            if local:
                self.local_syscalls += 1
                self._resume(variant)

    def _on_signal(self, variant: Variant, signum: int) -> None:
        try:
            info = ptrace_api.get_siginfo(variant.pid)
        except ptrace_api.PtraceError:  # a group-stop, not a signal-delivery-stop
            ptrace_api.resume_to_syscall(variant.pid)
            return
        regs = ptrace_api.get_regs(variant.pid)  # the one register read of this stop
        si_code = int.from_bytes(info[8:12], "little", signed=True)
        fault = signum in FAULT_SIGNALS and si_code > 0
        if signum == signal.SIGSEGV and fault and self.executor.at_loop_trap(
                variant, HOST.register(regs, "ip"), after=False):
            # int 0x80 without IA-32 emulation faults: the trap all the same.
            self._carry_out(self.signals.on_loop_timeout(variant.index))
        regs, interrupted = self.executor.on_signal_stop(variant, regs)
        decisions = self.signals.on_signal(variant.index, signum, info, time.monotonic(), fault)
        if interrupted and Suppress(variant.index) in decisions:
            self.executor.set_aside_at(variant, BY_NAME[variant.abi_name], interrupted, regs)
        self._carry_out(decisions)

    def _after_exec(self, variant: Variant) -> None:
        variant.memory.close()
        variant.memory = Memory(variant.pid)
        self.executor.forget_loop(variant)
        self.signals.exec_happened()

    def _wait_for_exit(self, variant: Variant, deadline: float | None = None,
                       decode: bool = True) -> SyscallStop | None:
        """Wait for `variant`, resumed from a syscall entry, to reach that syscall's exit.
        Without `decode`, the exit stop is not read (a skipped call's is known)."""
        while True:
            found = self._wait(variant.pid, deadline)
            if found is None:
                raise Alarm(Verdict.NON_COMPLIANT, f"variant {variant.index} stayed in a blocking syscall "
                            "after the others were interrupted by a signal", variant=variant.index)
            _, status = found
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                variant.record_exit(status)
                self._carry_out(self.signals.on_exit(variant.index, time.monotonic()))
                return None
            if os.WSTOPSIG(status) == SYSCALL_TRAP:
                if not decode:
                    return _SKIPPED_EXIT
                info = ptrace_api.syscall_info(variant.pid)
                if info.op == ptrace_api.SYSCALL_INFO_EXIT:
                    return info
                raise Alarm(Verdict.ERROR, f"variant {variant.index}: syscall entry while one was running")
            if status >> 16 == ptrace_api.PTRACE_EVENT_EXEC:
                self._after_exec(variant)
                ptrace_api.resume_to_syscall(variant.pid)
            else:
                ptrace_api.resume_to_syscall(variant.pid, 0 if status >> 16 else os.WSTOPSIG(status))

    # --- carrying out signal decisions ---

    def _carry_out(self, decisions: list[Decision]) -> None:
        for decision in decisions:
            variant = self.variants[decision.variant]
            if isinstance(decision, Deliver):
                self.executor.delivered(variant)
                self._resume(variant, decision.signum)
            elif isinstance(decision, Hold):
                pass  # it stays at its signal stop
            elif isinstance(decision, Suppress):
                self._resume(variant)
            elif isinstance(decision, Park):
                variant.call = None
                self.executor.park(variant)
            elif isinstance(decision, Resend):
                os.kill(variant.pid, decision.signum)
            elif isinstance(decision, Release):
                self.executor.release(variant, decision.signum, decision.info)
            elif isinstance(decision, Unpark):
                self.signals.on_resumed(variant.index)
                self.executor.unpark(variant)
            elif isinstance(decision, NonCompliant):
                name = signal.Signals(decision.signum).name if decision.signum else "its signal"
                limit = (f"{self.options.wait_loop_ms:g} ms" if self.options.wait_loop_ms
                         else f"{self.options.wait_loop_iterations} iterations")
                raise Alarm(Verdict.NON_COMPLIANT, f"variant {decision.variant} did not receive {name} "
                            f"within the wait loop's {limit}", variant=decision.variant)

    def _resume(self, variant: Variant, signum: int = 0) -> None:
        variant.call = None
        self.executor.resumed(variant)
        self.signals.on_resumed(variant.index)
        ptrace_api.resume_to_syscall(variant.pid, signum)

    def _forward_external_signal(self, signum: int) -> None:
        """A signal sent to the monitor goes to every variant, and is synchronised there."""
        if signum in _ENDING_SIGNALS:
            self.ending_signals_seen += 1
            if self.ending_signals_seen > 1:
                raise Alarm(Verdict.ERROR, f"interrupted by a second {signal.Signals(signum).name}")
        for variant in self.variants:
            if variant.alive:
                os.kill(variant.pid, signum)

    def _check_loop_page(self, variant: Variant, call: Call) -> None:
        """The wait-loop page is the monitor's: a variant that remaps it is stopped."""
        loop_address = self.executor.loop_address(variant)
        if loop_address is None or call.name not in ("munmap", "mprotect", "mremap", "mmap",
                                                             "mmap2", "madvise"):
            return
        start, length = call.args[0], call.args[1]
        if start <= loop_address < start + length:
            raise Alarm(Verdict.DIVERGENCE, f"variant {variant.index} {call.name} over the monitor's "
                        "wait-loop page", [call], variant=variant.index)

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
                self._finish_skipped(follower, calls[0], result)
                engine.replicate_outputs(calls[0], self.leader.memory, follower.call, follower.memory,
                                         result)
                if result == -errno.EPIPE and spec.sigpipe_on_epipe:
                    os.kill(follower.pid, signal.SIGPIPE)  # the leader's kernel raised one
        elif policy is Policy.LEADER_FIRST:
            result = self._run_leader(calls[0])
            for follower in followers:
                if engine.is_error(result):
                    self._skip(follower)
                    self._finish_skipped(follower, calls[0], result)
                else:
                    self._run_follower_open(follower, result)
        else:
            results = self._run_each(calls)
            if policy is Policy.EACH_LEADER_RESULT and results[0] is not None:
                for follower in followers:
                    if follower.alive:
                        ptrace_api.poke_user(follower.pid, "ax", results[0])
            if spec.name == "rt_sigaction":
                self._note_disposition(calls[0], results[0])
        for variant in self.variants:
            if variant.alive:
                self._resume(variant)

    def _note_disposition(self, call: Call, result: int | None) -> None:
        act = call.values[1]
        if result != 0 or not isinstance(act, tuple) or not isinstance(call.kinds[1], SigAction):
            return
        handler, flags, _ = act
        disposition = {0: Disposition.DEFAULT, 1: Disposition.IGNORE}.get(handler, Disposition.HANDLER)
        self.signals.set_disposition(call.args[0], disposition, flags)

    def _run_leader(self, call: Call) -> int:
        ptrace_api.resume_to_syscall(self.leader.pid)
        exit_stop = self._wait_for_exit(self.leader)
        if exit_stop is None:
            raise Alarm(Verdict.DIVERGENCE, f"variant 0 {self.leader.termination()} in {call.name} "
                        "while the others wait at it", variant=0)
        return exit_stop.return_value

    def _skip(self, variant: Variant) -> None:
        """Replace the call at this entry by one the kernel rejects (nr -1) and run to its exit."""
        ptrace_api.poke_user(variant.pid, "orig_ax", -1)
        ptrace_api.resume_to_syscall(variant.pid)

    def _finish_skipped(self, variant: Variant, call: Call, result: int) -> None:
        if self._wait_for_exit(variant, decode=False) is None:
            raise Alarm(Verdict.DIVERGENCE, f"variant {variant.index} {variant.termination()} at a syscall",
                        variant=variant.index)
        if interrupted_by_signal(result):
            self.executor.mirror_interrupted(variant, call.nr, call.abi, result)
        else:
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
                raise Alarm(Verdict.DIVERGENCE, f"variant {follower.index} {follower.termination()} in "
                            f"{call.name}", variant=follower.index)
        if exit_stop.return_value != leader_fd:
            raise Alarm(Verdict.ERROR, f"{call.name} gave fd {exit_stop.return_value} in variant "
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
        deadline = None
        for variant in self.variants:
            exit_stop = self._wait_for_exit(variant, deadline)
            results.append(exit_stop.return_value if exit_stop else None)
            if exit_stop and interrupted_by_signal(exit_stop.return_value) and deadline is None:
                # Interrupted here: a variant still blocked must get its signal in time too.
                deadline = time.monotonic() + self._wait_loop_seconds()
        for override in overrides:
            override.restore()
        return results

    def _wait_loop_seconds(self) -> float:
        return (self.options.wait_loop_ms or 1000) / 1000

    def _names_foreign_process(self, call: Call) -> bool:
        return any(call.args[i] not in (0, self.leader.pid) for i in engine.pid_arguments(call))

    # --- endings ---

    def _dying_alike(self, live: list[Variant]) -> bool:
        """A variant died of a signal sent to all (a forwarded SIGTERM, a terminal's ^C)
        that the others, waiting at a syscall, have pending: they skip the call (it never
        runs) and die of it on their way back to user space, as natively."""
        killers = {v.term_signal for v in self.variants if not v.alive}
        if len(killers) != 1 or None in killers:
            return False
        signum = killers.pop()
        assert signum is not None
        if not all(ptrace_api.signal_pending(v.pid, signum) for v in live):
            return False
        for variant in live:
            self._skip(variant)
            self.signals.on_resumed(variant.index)
        return True

    def _final_outcome(self) -> Outcome:
        return final_outcome(self.variants, self.syscalls, {"signals": self.signal_statistics(),
                                                            "local_syscalls": self.local_syscalls})


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
