"""The lockstep loop: rendezvous at every syscall entry, compare, then execute by policy.

Variants run freely between syscalls. When every live variant stopped at a
syscall entry, the engine compares their calls; a difference stops everything
before the call executes in any of them. An agreed call executes according to
its policy (mvee.execution), then all variants are released together. Stops come
as events (mvee.events); signal stops go to mvee.signals, whose decisions
mvee.signal_executor carries out.
"""

from __future__ import annotations

import errno
import time

from mvee import engine, ptrace_api
from mvee.engine import Call
from mvee.events import (
    CloneEvent,
    ExecEvent,
    Exited,
    GroupStop,
    Interrupted,
    SignalStop,
    SyscallEntry,
    SyscallExit,
    Waiter,
)
from mvee.execution import PolicyExecutor
from mvee.signal_executor import InjectionError, SignalExecutor, SignalOptions
from mvee.signals import Proceed, Where
from mvee.syscall_spec import Policy
from mvee.temp_names import TempNames
from mvee.variant import Variant, kill_all
from mvee.verdict import Alarm, Outcome, Verdict, early_exit_alarm, final_outcome


class Monitor:
    def __init__(self, variants: list[Variant], options: SignalOptions | None = None) -> None:
        self.variants = variants
        self.syscalls = 0  # synchronised calls
        self.local_syscalls = 0  # calls each variant ran at its own pace
        self.waiter = Waiter(variants)
        self.executor = SignalExecutor(variants, self.waiter, options or SignalOptions())
        self.signals = self.executor.signals
        self.policy = PolicyExecutor(variants, self.executor)
        self.temp_names = TempNames(variants)

    def run(self) -> Outcome:
        with self.waiter:
            try:
                try:
                    return self._lockstep()
                except ptrace_api.PtraceError as error:
                    raise self._vanished(error) from None
            except Interrupted as interruption:
                kill_all(self.variants)
                return Outcome(Verdict.INTERRUPTED, str(interruption), 128 + interruption.signum, None,
                               self.syscalls, {"signals": self.executor.statistics()})
            except Alarm as alarm:
                kill_all(self.variants)
                return Outcome(alarm.verdict, alarm.message, None, alarm, self.syscalls,
                               {"signals": self.executor.statistics()})
            except InjectionError as error:
                kill_all(self.variants)
                return Outcome(Verdict.ERROR, str(error), None, None, self.syscalls)

    def _lockstep(self) -> Outcome:
        for variant in self.variants:  # released together from their exec stops
            variant.run_on()
        while True:
            self._wait_for_rendezvous()
            live = [v for v in self.variants if v.alive]
            if not live:
                return final_outcome(self.variants, self.syscalls, {
                    "signals": self.executor.statistics(), "local_syscalls": self.local_syscalls})
            if len(live) < len(self.variants):
                if self._dying_alike(live):
                    continue
                raise early_exit_alarm(self.variants)
            blocked = (ptrace_api.blocked_signals(self.variants[0].pid) if self.signals.has_pending()
                       else frozenset())
            decisions = self.signals.on_rendezvous(time.monotonic(), blocked)
            if decisions:
                self.executor.carry_out(decisions)
                continue
            calls = [v.call for v in self.variants if v.call is not None]
            assert len(calls) == len(self.variants)  # each decoded at its entry
            detours = self.temp_names.detours(calls)  # mkstemp's extra draw (mvee.temp_names)
            if detours:
                for variant in detours:
                    self.executor.resume(variant)
                continue
            self.temp_names.reconcile(calls)  # names made from the layout
            reason = engine.compare(calls) or self.executor.tsc.disagreement()
            if reason:
                raise Alarm(Verdict.DIVERGENCE, reason, calls)
            unsupported = calls[0].unsupported_reason
            if unsupported:
                raise Alarm(Verdict.UNSUPPORTED, unsupported, calls)
            self.policy.execute(calls)
            self.syscalls += 1

    def _wait_for_rendezvous(self) -> None:
        while True:
            wheres = {self.signals.where(v.index) for v in self.variants if v.alive}
            if wheres <= {Where.AT_SYSCALL}:
                return
            if not wheres & {Where.RUNNING, Where.PARKED}:
                raise Alarm(Verdict.ERROR, "internal error: every variant is stopped, none at a syscall")
            event = self.waiter.next(deadline=self.signals.next_deadline())
            if event is None:
                self.executor.on_deadline(time.monotonic())
                continue
            if isinstance(event, SyscallEntry):
                self._on_entry(event)
            elif isinstance(event, SignalStop):
                self.executor.on_signal_stop(event)
            elif isinstance(event, SyscallExit | GroupStop):
                # the exit of a LOCAL call or of an execve: nothing to synchronise
                event.variant.run_on()
            elif isinstance(event, Exited):
                self.executor.on_exit(event.variant)
            elif isinstance(event, ExecEvent):
                self.executor.after_exec(event.variant)
                event.variant.run_on()
            elif isinstance(event, CloneEvent):
                raise Alarm(Verdict.UNSUPPORTED, f"variant {event.variant.index} created a process "
                            "or thread", variant=event.variant.index)

    def _on_entry(self, entry: SyscallEntry) -> None:
        variant, stop = entry.variant, entry.stop
        variant.abi_name = variant.abi_name or stop.abi.name
        if not self.executor.on_entry(variant, stop):
            return
        call = engine.decode(stop.abi, stop.nr, stop.args, variant.memory)
        local = call.spec is not None and (call.spec.policy_for(call.args) is Policy.LOCAL
                                           or self.policy.own_files.is_local(variant, call))
        if local:
            self._check_loop_page(variant, call)
        variant.call = call
        decisions = self.signals.on_syscall_entry(variant.index, time.monotonic(), synchronised=not local)
        self.executor.carry_out(decisions)
        if local and Proceed(variant.index) in decisions:
            self.local_syscalls += 1
            self.executor.resume(variant)

    def _check_loop_page(self, variant: Variant, call: Call) -> None:
        """The wait-loop page is the monitor's: a variant that remaps it is stopped."""
        loop_address = self.executor.loop_address(variant)
        if loop_address is None or call.spec is None or call.spec.changes_mappings_at is None:
            return
        replaces = call.spec.replaces_when_at
        if replaces and not call.args[replaces[0]] & replaces[1]:
            return  # maps free space only: never over the page (the filter lets it run unseen)
        start, length = (call.args[i] for i in call.spec.changes_mappings_at)
        if start <= loop_address < start + length:
            raise Alarm(Verdict.DIVERGENCE, f"variant {variant.index} {call.name} over the monitor's "
                        "wait-loop page", [call], variant=variant.index)

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
            ptrace_api.skip_syscall(variant.pid)
            self.signals.on_resumed(variant.index)
        return True

    def _vanished(self, error: ptrace_api.PtraceError) -> Alarm | ptrace_api.PtraceError:
        """A ptrace call found a variant gone: killed from outside (SIGKILL) between its
        stop and the call. Its death is collected and reported like any early death;
        any other ptrace failure stays the monitor's error."""
        variant = next((v for v in self.variants if v.pid == error.pid), None) \
            if error.errno == errno.ESRCH else None
        if variant is None:
            return error
        if not self.waiter.reap(variant, time.monotonic() + 5):
            return error  # not dead after all: a monitor bug
        if not any(v.alive for v in self.variants):
            return Alarm(Verdict.DIVERGENCE, f"variant {variant.index} {variant.termination()} while "
                         "the monitor handled it", variant=variant.index)
        return early_exit_alarm(self.variants)
