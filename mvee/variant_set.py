"""One set of variants: a process of variant 0 and its counterparts, in lockstep.

The variants' first processes form set 0. A fork, vfork or non-thread clone/clone3
that every process of a set makes creates one child in each variant; those
children, the k-th child of each process in creation order, form a new set, with
the creating set as its parent. Each set runs in lockstep on its own: its
rendezvous, comparison, execution by policy and signal delivery are its own
(mvee.signals per set), and a set waiting in a call (a parent in wait4) never
keeps another from running (mvee.monitor serves them all from one event loop).
A thread (CLONE_THREAD) forms a thread set the same way, which shares its process's
signal dispositions and files with the process's other sets.
"""

from __future__ import annotations

import errno
import signal
import time
from dataclasses import dataclass, field, replace

from mvee import engine, events, ptrace_api
from mvee.engine import Call
from mvee.events import Event, Waiter, WaitFor, Waiting
from mvee.execution import ENDING_GRACE, PolicyExecutor
from mvee.pids import PidMap
from mvee.signal_executor import SignalExecutor, SignalOptions
from mvee.signals import Proceed, Where
from mvee.syscall_spec import Policy, signed
from mvee.temp_names import TempNames
from mvee.variant import Variant
from mvee.verdict import Alarm, Verdict, early_exit_alarm

# How long variants sleeping in a LOCAL call may keep the others of their set waiting at
# a rendezvous before the set is taken to have diverged (mvee.variant_set._check_stall).
STALL_SECONDS = 3.0
# How long a thread set waits at a partial rendezvous before the monitor looks whether its
# process's threads stalled crosswise (mvee.thread_pairing), and again after each look
# that found none (doubled each time).
PAIRING_FIRST_LOOK = 0.001
# How often a thread set's call that every variant executes (an open, a close), waiting
# for another thread set's of its process to end, looks whether that one blocks
# (Process.waits_for_every_call). A leader-first open runs in the leader, then in the
# others: two threads' opens in between would give their fds in the leader's order in
# one variant and in another order in the next.
FD_ORDER_POLL = 0.002
# How long a thread set whose variants wait at different calls waits for their threads to
# change partners (mvee.thread_pairing) before the divergence alarm, at most: the alarm
# comes at once when the team has settled (no thread would move without the monitor)
# and no change mends it. No call runs meanwhile. (1 s was too short under load: a
# partner still computing arrived after it.)
MISMATCH_WAIT = STALL_SECONDS


@dataclass
class Process:
    """What the sets of one process's threads share."""

    threaded: bool = False  # it has had threads: its monotonic clock reads are LOCAL
    # Going down in every variant: it ran exit_group, or a signal sent to the monitor that
    # kills was delivered in it (mvee.signal_executor). Its threads then die one by one,
    # each wherever the end finds it: a set half dead is the process's end, not a divergence.
    ending: bool = False
    # The thread sets whose calls every variant executes (an open, a close) are in
    # progress: another thread set's such call waits for them, so that each variant's fd
    # table changes in the leader's order.
    every_calls: list[VariantSet] = field(default_factory=list)

    def waits_for_every_call(self, variant_set: VariantSet) -> bool:
        """Whether `variant_set`'s call that every variant executes waits for another
        thread set's: not for one that blocks (a FIFO's open, an accept), while this one
        runs whole, in every variant."""
        self.every_calls = [s for s in self.every_calls if s.call is not None]
        return any(other is not variant_set and not any(
            v.alive and ptrace_api.blocked_in(v.pid) is not None for v in other.variants)
            for other in self.every_calls)


class VariantSet:
    def __init__(self, number: int, variants: list[Variant], parent: VariantSet | None, waiter: Waiter,
                 options: SignalOptions, pids: PidMap, thread: bool = False,
                 change_partners: bool = False) -> None:
        """`change_partners`: its threads may change partners (mvee.thread_pairing)."""
        self.number = number
        self.change_partners = change_partners
        self.naming = _SetNaming(self)  # the context of its work: its alarms name it
        self.thread = thread  # threads (CLONE_THREAD) of the parent set's processes
        self.variants = variants
        self.parent = parent
        self.pids = pids
        pids.add([v.pid for v in variants])
        self.syscalls = 0  # synchronised calls
        self.local_syscalls = 0  # calls each variant ran at its own pace
        # Shared by the sets of one process's threads.
        self.process = parent.process if thread and parent else Process()
        self.process.threaded |= thread
        self.executor = SignalExecutor(variants, waiter, options, pids, self.process)
        self.signals = self.executor.signals
        self.policy = PolicyExecutor(variants, self.executor, pids)
        self.temp_names = TempNames(variants)
        self.call: Waiting[None] | None = None  # the agreed call in progress, while it waits
        self.waiting_for: WaitFor | None = None  # what it waits for
        self.ended_early: float | None = None  # when a thread of the set ended before the others
        self.partial_since: float | None = None  # since when some variants wait at a rendezvous
        self.pairing_wait = PAIRING_FIRST_LOOK  # from partial_since to the next look at the pairing
        # Since when the variants wait at different calls, in a process with threads: a
        # follower's thread may be waiting for the leader's at the call that another of
        # its threads makes (mvee.thread_pairing). An alarm after MISMATCH_WAIT.
        self.mismatched_since: float | None = None
        self.no_partner_coming = False  # its team settled with no change that mends it
        self.fd_order_poll: float | None = None  # when it looks again (Process.every_calls)

    @property
    def ended(self) -> bool:
        return all(v.ended for v in self.variants)

    def inherit(self, parent: VariantSet) -> None:
        """A new set starts with its parents' signal dispositions, own files, epoll cookies
        and wait-loop page: copies for a process (its memory, fds and handlers are copies,
        the page too, or the same page with CLONE_VM), the same objects for a thread,
        which shares them with every thread of its process."""
        if self.thread:
            self.signals.dispositions = parent.signals.dispositions
            self.signals.reset_on_delivery = parent.signals.reset_on_delivery
            self.policy.own_files.fds = parent.policy.own_files.fds
            self.policy.cookies = parent.policy.cookies
        else:
            self.signals.dispositions = dict(parent.signals.dispositions)
            self.signals.reset_on_delivery = set(parent.signals.reset_on_delivery)
            self.policy.own_files.fds = [set(fds) for fds in parent.policy.own_files.fds]
            self.policy.cookies = {index: dict(cookies) for index, cookies in parent.policy.cookies.items()}
        for seam, parents in zip(self.executor.seams, parent.executor.seams, strict=True):
            seam.loop, seam.loop_address = parents.loop, parents.loop_address

    def exchange(self, other: VariantSet, index: int) -> None:
        """Variant `index`'s members of this set and the other change places, with their
        records (mvee.thread_pairing): where each stands and its side of the signal seam,
        its own /proc files, epoll cookies and temporary names (one object for the
        threads of a process: a place changed with itself)."""
        self.variants[index], other.variants[index] = other.variants[index], self.variants[index]
        self.executor.exchange(other.executor, index)
        for mine, theirs in ((self.policy.own_files.fds, other.policy.own_files.fds),
                             (self.policy.cookies, other.policy.cookies),
                             (self.temp_names.names, other.temp_names.names)):
            mine[index], theirs[index] = theirs[index], mine[index]
        for variant_set in (self, other):
            variant_set.partial_since = variant_set.mismatched_since = None

    def next_deadline(self) -> float | None:
        """When `on_deadline` is due if nothing else happens first."""
        deadlines = [d for d in (self.signals.next_deadline(), self.fd_order_poll,
                                 self.ended_early and self.ended_early + ENDING_GRACE,
                                 self.partial_since and self.partial_since + STALL_SECONDS,
                                 self.mismatched_since and self.mismatched_since + MISMATCH_WAIT,
                                 self.change_partners and self._incomplete_since()
                                 and self.team() is not None
                                 and self._incomplete_since() + self.pairing_wait) if d]
        return min(deadlines) if deadlines else None

    def _incomplete_since(self) -> float | None:
        """Since when its variants wait at a rendezvous that cannot go on as it is: some
        of them not there yet, or at different calls."""
        return self.partial_since or self.mismatched_since

    def team(self) -> tuple[str, int] | None:
        """Which sets' members may change partners with its own (mvee.thread_pairing): the
        threads of its process; for a process of one thread, the other such processes its
        parent set forked (a Pool's workers, which take tasks from one queue)."""
        if self.process.threaded:
            return ("threads", id(self.process))
        if self.parent is not None and not self.thread:
            return ("siblings", id(self.parent))
        return None

    def pairing_due(self, now: float) -> bool:
        """Whether its team's pairing is to be looked at (mvee.thread_pairing)."""
        since = self._incomplete_since()
        return (self.change_partners and since is not None and now >= since + self.pairing_wait
                and self.team() is not None)

    def looked_at_pairing(self, now: float) -> None:
        since = self._incomplete_since()
        if since is not None:
            self.pairing_wait = max(2 * self.pairing_wait, now - since + PAIRING_FIRST_LOOK)

    def describe(self) -> dict[str, object]:
        """The set in the report."""
        return {"set": self.number, "parent": self.parent.number if self.parent else None,
                "thread": self.thread, "program": self.variants[0].executable,
                "pids": [v.pid for v in self.variants], "syscalls": self.syscalls,
                "traced_by": [v.traced_by for v in self.variants], "stops": [v.stops for v in self.variants]}

    # --- the call in progress ---

    def start_call(self, call: Waiting[None]) -> None:
        self.call = call
        self._advance(None, first=True)

    def take(self, event: Event | None) -> None:
        """What the call in progress waited for: an event of one of its variants, or None
        at its deadline."""
        self._advance(event)

    def _advance(self, event: Event | None, first: bool = False) -> None:
        assert self.call is not None
        with self.naming:
            try:
                self.waiting_for = next(self.call) if first else self.call.send(event)
            except StopIteration:
                self.call = self.waiting_for = None

    # --- the lockstep ---

    def step(self) -> bool:
        """At a rendezvous of the whole set: compare and start the agreed call. Whether
        anything was done."""
        with self.naming:
            return self._step()

    def _step(self) -> bool:
        if self.call is not None:
            return False
        self.fd_order_poll = None
        live = [v for v in self.variants if v.alive]
        if not live:
            return False
        wheres = [self.signals.where(v.index) for v in live]  # a list: an enum's hash is slow
        if any(where is not Where.AT_SYSCALL for where in wheres):
            if Where.RUNNING not in wheres and Where.PARKED not in wheres:
                raise Alarm(Verdict.ERROR, f"internal error: every variant of set {self.number} is "
                            "stopped, none at a syscall")
            self.mismatched_since = None
            if Where.AT_SYSCALL not in wheres:
                self.partial_since = None
            elif self.partial_since is None:
                self.partial_since = time.monotonic()
                self.pairing_wait = PAIRING_FIRST_LOOK
            return False
        self.partial_since = None
        ending = self.process.ending  # no call runs then: every thread of it dies where it is
        if ending or len(live) < len(self.variants):
            if self._dying_alike(live):
                return True
            if (self.thread or ending or self._killed()) and self._process_exiting():
                return False
            if len(live) < len(self.variants):
                raise early_exit_alarm(self.variants)
        blocked = (ptrace_api.blocked_signals(self.variants[0].pid) if self.signals.has_pending()
                   else frozenset())
        decisions = self.signals.on_rendezvous(time.monotonic(), blocked)
        if decisions:
            self.executor.carry_out(decisions)
            return True
        calls = [v.call for v in self.variants if v.call is not None]
        assert len(calls) == len(self.variants)  # each decoded at its entry
        detours = self.temp_names.detours(calls)  # mkstemp's extra draw (mvee.temp_names)
        if detours:
            for variant in detours:
                self.executor.resume(variant)
            return True
        self.temp_names.reconcile(calls)  # names made from the layout
        compared = [self.as_leader_sees(index, call) for index, call in enumerate(calls)]
        reason = engine.compare(compared) or self.executor.tsc.disagreement()
        if reason and self.change_partners and self.process.threaded:
            now = time.monotonic()
            if self.mismatched_since is None:  # looked at at once: the partner may be waiting
                self.mismatched_since, self.pairing_wait, self.no_partner_coming = now, 0.0, False
            if now < self.mismatched_since + MISMATCH_WAIT and not self.no_partner_coming:
                return False  # another thread of a follower may make the leader's call
        self.mismatched_since = None
        if reason:
            raise Alarm(Verdict.DIVERGENCE, reason, compared)
        unsupported = calls[0].unsupported_reason
        if unsupported:
            raise Alarm(Verdict.UNSUPPORTED, unsupported, calls)
        if self.process.threaded and calls[0].spec is not None and calls[0].spec.policy_for(
                calls[0].args, True) is not Policy.LEADER:
            if self.process.waits_for_every_call(self):
                self.fd_order_poll = time.monotonic() + FD_ORDER_POLL
                return False
            self.process.every_calls.append(self)
        self.syscalls += 1
        self.process.ending |= bool(calls[0].spec and calls[0].spec.ends_process)
        self.start_call(self.policy.execute(calls))
        return True

    def as_leader_sees(self, index: int, call: Call) -> Call:
        """The call with its PID arguments as virtual PIDs (mvee.pids), for the comparison."""
        positions = engine.pid_arguments(call)
        if not positions:
            return call
        values = list(call.values)
        for position in positions:
            values[position] = (self.pids.to_virtual(index, call.args[position]) if index
                                else signed(call.args[position], 32))
        return replace(call, values=tuple(values))

    def on_event(self, event: Event) -> None:
        """A stop of one of the set's variants while no call of the set is in progress."""
        with self.naming:
            self._on_event(event)

    def _on_event(self, event: Event) -> None:
        variant = event.variant
        if isinstance(event, events.SyscallEntry):
            self._on_entry(event)
        elif isinstance(event, events.SignalStop):
            self.executor.on_signal_stop(event)
        elif isinstance(event, events.SyscallExit | events.GroupStop | events.CloneEvent):
            # the exit of a LOCAL call or of an execve: nothing to synchronise
            variant.run_on()
        elif isinstance(event, events.Exited):
            self.executor.on_exit(variant)
        elif isinstance(event, events.ExecEvent):
            self.executor.after_exec(variant)
            variant.run_on()

    def on_deadline(self, now: float) -> None:
        if self.call is None:
            with self.naming:
                self.executor.on_deadline(now)
                if self.partial_since is not None and now >= self.partial_since + STALL_SECONDS:
                    self._check_stall()

    def _check_stall(self) -> None:
        """Some variants wait at a rendezvous while the others sleep in a LOCAL call (a
        futex): in a program with threads (or processes sharing a lock), the interleaving
        took them down different paths, and waiting would wait for good. Variants that
        compute are left to arrive."""
        waiting = [v for v in self.variants if v.alive and self.signals.where(v.index) is Where.AT_SYSCALL]
        blocked = {v.index: ptrace_api.blocked_in(v.pid) for v in self.variants
                   if v.alive and v not in waiting}
        if not waiting or None in blocked.values():
            self.partial_since = time.monotonic()  # still computing: look again later
            return
        abi = waiting[0].call.abi if waiting[0].call else None
        views = "; ".join(f"variant {v.index} waits at {v.call.render() if v.call else 'a syscall'}"
                          for v in waiting)
        others = "; ".join(f"variant {index} sleeps in {abi.name_of(nr) if abi else nr}"
                           for index, nr in blocked.items())
        kind = "thread set" if self.thread else "set"
        raise Alarm(Verdict.DIVERGENCE, f"{kind} {self.number}: the variants took different paths "
                    f"({views}; {others} for {STALL_SECONDS:g} s): the interleaving of threads or "
                    "processes sharing memory decided their calls",
                    [v.call for v in waiting if v.call is not None])

    def _on_entry(self, entry: events.SyscallEntry) -> None:
        variant, stop = entry.variant, entry.stop
        variant.abi_name = variant.abi_name or stop.abi.name
        if not self.executor.on_entry(variant, stop):
            return
        call = engine.decode(stop.abi, stop.nr, stop.args, variant.memory)
        local = call.spec is not None and (call.spec.policy_for(call.args, self.process.threaded)
                                           is Policy.LOCAL
                                           or self.policy.own_files.is_local(variant, call)
                                           or (call.spec.restarts_interrupted
                                               and self.executor.restarts_local_call(variant, stop.abi)))
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

    def _killed(self) -> bool:
        """A variant was killed (SIGKILL) while the others wait at a syscall: by a process
        of another set, whose counterparts kill the others a moment later (a timeout's
        kill of its child)."""
        return any(not v.alive and v.term_signal == signal.SIGKILL for v in self.variants)

    def _process_exiting(self) -> bool:
        """A thread ended in some variants while its counterparts wait at a syscall: the
        process's end (exit_group, run by another thread set, or a signal sent to all)
        ends them too in a moment. They are given `ENDING_GRACE` to do so before it
        counts as an early exit."""
        now = time.monotonic()
        self.ended_early = self.ended_early or now
        return now < self.ended_early + ENDING_GRACE

    def _dying_alike(self, live: list[Variant]) -> bool:
        """A variant died of a signal sent to all (a forwarded SIGTERM, a terminal's ^C)
        that others, waiting at a syscall, have pending: they skip the call (it never
        runs) and die of it on their way back to user space, as natively. (Those without
        it pending die with their process, when another of its threads takes it.)"""
        killers = {v.term_signal for v in self.variants if not v.alive}
        if len(killers) != 1 or None in killers:
            return False
        signum = killers.pop()
        assert signum is not None
        if self.signals.runs_handler(signum):
            return False
        dying = [v for v in live if ptrace_api.signal_pending(v.pid, signum)]
        for variant in dying:
            try:
                ptrace_api.skip_syscall(variant.pid)
            except ptrace_api.PtraceError as error:
                if error.errno != errno.ESRCH:
                    raise  # else already on its way out: killed with its process
            self.signals.on_resumed(variant.index)
        return bool(dying)


class _SetNaming:
    """The context of a set's work (a class, not @contextmanager: it is entered several
    times per syscall): an alarm of a set other than the first names it. A set whose
    process is going down raises none, for an alarm or for a ptrace call that found one
    of its variants gone (killed with the process, its end to come): what was in
    progress ends with the process (a call in progress too: variants it left at their
    entry wait there for their end), and the monitor serves on."""

    __slots__ = ("owner",)

    def __init__(self, owner: VariantSet) -> None:
        self.owner = owner

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: object) -> bool:
        owner = self.owner
        if owner.process.ending and (isinstance(error, Alarm) or (
                isinstance(error, ptrace_api.PtraceError) and error.errno == errno.ESRCH
                and any(v.pid == error.pid for v in owner.variants))):
            owner.call = owner.waiting_for = None
            return True
        if isinstance(error, Alarm) and owner.number and not error.message.startswith("set "):
            error.message = f"set {owner.number}: {error.message}"
        return False
