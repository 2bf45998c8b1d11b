"""The event loop: every set of variants (mvee.variant_set) served from one wait.

Variants run freely between syscalls. When every live variant of a set stopped at a
syscall entry, the set compares their calls; a difference stops everything, every
process of every set, before the call executes in any of them. An agreed call
executes according to its policy (mvee.execution), then the set's variants are
released together. A call that may block (a parent in wait4, a read on a pipe)
waits as a generator: the loop serves the other sets meanwhile and hands it the
events it waits for. Stops come as events (mvee.events), dispatched by PID; a
creation that every process of a set made forms a new set of the children.
"""

from __future__ import annotations

import errno
import signal
import time

from mvee import ptrace_api, thread_pairing
from mvee.events import CloneEvent, Event, Exited, GroupStop, Interrupted, SignalStop, Waiter
from mvee.pids import PidMap
from mvee.ptrace_api import Memory
from mvee.signal_executor import InjectionError, SignalOptions
from mvee.variant import Variant, kill_all
from mvee.variant_set import VariantSet
from mvee.verdict import Alarm, Outcome, Verdict, early_exit_alarm, final_outcome


class Monitor:
    def __init__(self, variants: list[Variant], options: SignalOptions | None = None,
                 change_partners: bool = True) -> None:
        """`change_partners`: threads (and worker processes) that took turns in another
        order in each variant change partners (mvee.thread_pairing); not under the lock
        agent, which keys each thread's turns by the TID it saw at its start."""
        self.variants = variants  # the first set's
        self.options = options or SignalOptions()
        self.waiter = Waiter(variants)
        self.pids = PidMap(len(variants))
        self.sets = [VariantSet(0, variants, None, self.waiter, self.options, self.pids,
                                change_partners=change_partners)]
        self.set_of = {v.pid: self.sets[0] for v in variants}
        # Per parent process: the children it created that no set has yet, in order.
        self.unpaired: dict[int, list[tuple[int, bool]]] = {}  # (PID or TID, a thread)
        self.partner_changes = 0  # a follower's threads or workers that changed partners

    @property
    def syscalls(self) -> int:
        return sum(s.syscalls for s in self.sets)

    def all_variants(self) -> list[Variant]:
        return [v for s in self.sets for v in s.variants]

    def run(self) -> Outcome:
        with self.waiter:
            try:
                try:
                    try:
                        return self._serve()
                    except ptrace_api.PtraceError as error:
                        vanished = self._vanished(error)
                        if isinstance(vanished, Outcome):
                            return vanished
                        raise vanished from None
                except Interrupted as interruption:
                    self._kill_everything()
                    return Outcome(Verdict.INTERRUPTED, str(interruption), 128 + interruption.signum, None,
                                   self.syscalls, self._details())
                except Alarm as alarm:
                    self._kill_everything()
                    return Outcome(alarm.verdict, alarm.message, None, alarm, self.syscalls, self._details())
                except InjectionError as error:
                    self._kill_everything()
                    return Outcome(Verdict.ERROR, str(error), None, None, self.syscalls)
            except BaseException:
                self._kill_everything()  # a monitor bug: no process of any set stays
                raise

    def _kill_everything(self) -> None:
        """Every process of every set, and children not yet in a set."""
        unpaired = [pid for children in self.unpaired.values() for pid, _ in children]
        kill_all(self.all_variants(), [*unpaired, *self.waiter.strays])

    def _details(self) -> dict[str, object]:
        root = self.sets[0]
        details: dict[str, object] = {"signals": root.executor.statistics(),
                                      "local_syscalls": sum(s.local_syscalls for s in self.sets)}
        if len(self.sets) > 1:
            details["sets"] = [s.describe() for s in self.sets]
            details["partner_changes"] = self.partner_changes
        return details

    def _serve(self) -> Outcome:
        for variant in self.variants:  # released together from their exec stops
            variant.run_on()
        while True:
            self._settle()
            if self._change_partners(time.monotonic()):
                continue
            running = [s for s in self.sets if not s.ended]
            if not running:
                return self._final_outcome()
            deadlines = [s.waiting_for.deadline if s.call is not None and s.waiting_for else
                         s.next_deadline() for s in running]
            due = [d for d in deadlines if d is not None]
            event = self.waiter.next(deadline=min(due) if due else None)
            if event is None:
                now = time.monotonic()
                for variant_set in self.sets:
                    waiting = variant_set.waiting_for
                    if variant_set.call is not None and waiting and waiting.deadline \
                            and waiting.deadline <= now:
                        variant_set.take(None)
                    else:
                        variant_set.on_deadline(now)
                continue
            self._dispatch(event)

    def _settle(self) -> None:
        """Until nothing moves: new sets formed, events held for a set handed to it, every
        set at a rendezvous run to its next call."""
        moved = True
        while moved:
            moved = self._form_sets()
            for variant_set in list(self.sets):
                if variant_set.call is not None:
                    assert variant_set.waiting_for is not None
                    held = self.waiter.take_held(variant_set.waiting_for.pids)
                    if held is not None:
                        variant_set.take(held)
                        moved = True
                    continue
                held = self.waiter.take_held([v.pid for v in variant_set.variants])
                if held is not None:
                    variant_set.on_event(held)
                    moved = True
                elif variant_set.step():
                    moved = True

    def _change_partners(self, now: float) -> bool:
        """Threads of a process (or a parent's processes of one thread) that took turns in
        another order change partners (mvee.thread_pairing); whether any did."""
        due = [s for s in self.sets if s.pairing_due(now)]
        if not due or self.unpaired:
            return False
        changed = False
        for team in {s.team() for s in due}:
            members = [s for s in self.sets if not s.ended and s.team() == team]
            if team[0] == "siblings":  # processes with children of their own keep their partners
                members = [s for s in members if not any(c.parent is s and not c.ended for c in self.sets)]
            changes = thread_pairing.repair(members, self.set_of)
            self.partner_changes += changes
            if changes:
                changed = True
                continue
            mismatched = [s for s in members if s.mismatched_since is not None]
            if mismatched and thread_pairing.settled(members):
                for variant_set in mismatched:  # its alarm now: nothing will mend it
                    variant_set.no_partner_coming = changed = True
            for variant_set in due:
                if variant_set.team() == team:
                    variant_set.looked_at_pairing(now)
        return changed

    def _dispatch(self, event: Event) -> None:
        pid = event.variant.pid
        variant_set = self.set_of[pid]
        if self.waiter.held.get(pid):
            self.waiter.hold(event)  # after the ones before it
        elif variant_set.call is None:
            variant_set.on_event(event)
        elif variant_set.waiting_for is not None and pid in variant_set.waiting_for.pids:
            variant_set.take(event)
        else:
            self.waiter.hold(event)  # the call in progress takes it when it waits for that variant

    def _form_sets(self) -> bool:
        """The k-th child of every process of a set, together, form a new set."""
        formed = False
        births, self.waiter.births = self.waiter.births, []
        for birth in births:
            self.unpaired.setdefault(birth.variant.pid, []).append((birth.child, birth.thread))
        if not self.unpaired:
            return False
        for parent in list(self.sets):
            queues = [self.unpaired.get(v.pid) for v in parent.variants]
            while all(queues):
                children = [queue.pop(0) for queue in queues if queue]
                if len({thread for _, thread in children}) > 1:
                    raise Alarm(Verdict.DIVERGENCE, f"set {parent.number}: a thread in some variants, "
                                "a process in others")
                self._new_set(parent, [child for child, _ in children], children[0][1])
                formed = True
        if formed:  # empty queues dropped: no births waiting is an empty dict
            self.unpaired = {pid: queue for pid, queue in self.unpaired.items() if queue}
        return formed

    def _new_set(self, parent: VariantSet, children: list[int], thread: bool) -> None:
        # The seccomp filter and the ptrace options are the kernel's, inherited by the child.
        variants = [Variant(index, origin.executable, pid, Memory(pid), abi_name=origin.abi_name,
                            thread=thread, traced_by=origin.traced_by, tgid=origin.tgid if thread else pid)
                    for (index, origin), pid in zip(enumerate(parent.variants), children, strict=True)]
        variant_set = VariantSet(len(self.sets), variants, parent, self.waiter, self.options, self.pids,
                                 thread, parent.change_partners)
        variant_set.inherit(parent)
        self.sets.append(variant_set)
        for variant in variants:
            self.set_of[variant.pid] = variant_set
            first = self.waiter.add(variant)  # its stop before its first instruction
            if isinstance(first, Exited):
                variant_set.executor.on_exit(variant)
            elif isinstance(first, SignalStop | GroupStop | CloneEvent):
                origin = parent.variants[variant.index]
                if origin.children_mask is not None:  # made with its parent's signals blocked
                    ptrace_api.set_signal_mask(variant.pid, origin.children_mask)
                variant.run_on()  # without the SIGSTOP it started with
            else:
                raise Alarm(Verdict.ERROR, f"internal error: a new process's first stop was {first}")

    # --- endings ---

    def _final_outcome(self) -> Outcome:
        """Every set ended: each alike in its variants, or a divergence; the run's status
        is the first set's."""
        for variant_set in self.sets[1:]:
            if variant_set.thread and variant_set.process.ending:
                continue  # its threads ended wherever the process's end found each
            outcome = final_outcome(variant_set.variants, 0, {})
            if outcome.verdict is not Verdict.OK:
                return Outcome(outcome.verdict, f"set {variant_set.number}: {outcome.message}", None,
                               outcome.alarm, self.syscalls, self._details())
        return final_outcome(self.variants, self.syscalls, self._details())

    def _vanished(self, error: ptrace_api.PtraceError) -> Alarm | ptrace_api.PtraceError | Outcome:
        """A ptrace call found a variant gone: killed from outside (SIGKILL) between its
        stop and the call. Its death is collected and reported like any early death;
        any other ptrace failure stays the monitor's error."""
        variant = next((v for v in self.all_variants() if v.pid == error.pid), None) \
            if error.errno == errno.ESRCH else None
        if variant is None:
            return error
        if not self.waiter.reap(variant, time.monotonic() + 5):
            return error  # not dead after all: a monitor bug
        if self.waiter.ended_by_forwarded(variant):
            # By an ending signal sent to every variant (a SIGTERM the monitor got, while a
            # process's threads die one by one): the program ends by it, as natively; the
            # monitor ends the variants it still holds stopped.
            self._kill_everything()
            name = signal.Signals(variant.term_signal or 0).name
            return Outcome(Verdict.OK, f"all variants killed by {name} (sent to all)",
                           128 + (variant.term_signal or 0), None, self.syscalls, self._details())
        variants = self.set_of[variant.pid].variants
        if not any(v.alive for v in variants):
            return Alarm(Verdict.DIVERGENCE, f"variant {variant.index} {variant.termination()} while "
                         "the monitor handled it", variant=variant.index)
        return early_exit_alarm(variants)
