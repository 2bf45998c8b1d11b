"""Where signals are decided: the semi-synchronous delivery algorithm as a pure state machine.

No ptrace here. The monitor feeds it events (a variant stopped with a signal, a
variant reached a syscall entry, a wait loop ran out, a variant exited) and
carries out the decisions it returns (mvee.signal_executor does the ptrace part).

The algorithm (Orchestra, after Salamat et al.; ../shared/MISSION.md):
1. A signal about to be delivered stops the variant (signal-delivery-stop).
2. Signals that end or stop the program, faults, and signals without a handler
   are delivered at once.
3. Others are held. Each variant keeps a pending list of signals set aside.
4. Once at least half of the variants have the signal, variants that reach a
   syscall skip it and spin in an injected wait loop.
5. When every variant has the signal, all are released with it at once; parked
   variants get their syscall restored, so it runs after the handler.
6. A minority holding the signal when all the others wait at syscalls is resumed
   without it; the signal stays pending and is sent again once half have it.
7. A wait loop that runs out means a non-compliant variant: an alarm.
The `converge` policy (the default) delivers at a common syscall when one comes soon:
a variant stopped by the signal in its own code is resumed without it and runs on to
its next synchronised syscall; when all meet there, every variant gets the signal at
that same point (handler first, then the call), so a handler's flag is seen alike by
code that tests it between two syscalls (CPython runs every Python-level handler so).
If no variant reaches a syscall within `converge_after`, or the others do not reach
the one a variant waits at within `give_up_after`, the signal is raised again and
delivered by Orchestra's rules 4-7 (the fallback): where each variant is, the ones at
a syscall parked in the wait loop. A program that made no synchronised syscall for
twice `converge_after` is computing: with no variant at a syscall, its signals follow
rules 4-7 at once (a flag tested between two syscalls is then far from any syscall).
The `at-syscall` policy is the earlier approach kept for comparison: every
signal is set aside until all variants meet at a syscall, and delivered there; one
that no rendezvous delivers within the give-up time is a non-compliance alarm.
In every policy, a signal that stops a variant right at the return from a handler of
the same signal, before the interrupted code ran an instruction, is set aside (the
executor blocks it in that variant) until the variant's next syscall or `DEFERRAL`
(converging: the converge deadline), whatever the other variants do: delivering each
instance there would let a timer faster than a delivery starve the program (the kernel
coalesces them likewise).
"""

from __future__ import annotations

import enum
import random
import signal as _signal
from array import array
from dataclasses import dataclass, field

POSTPONE_LIMIT = 4  # times --converge-ms: how far a starved holder's deadline moves
# Seconds a signal stop right at a handler's return is held back at most when no variant
# is at a syscall: one period of a 1 kHz timer (its p99 delay in syscall-free programs was
# 2.4-4.6 ms with 2 ms, 1.2-4.4 ms with 1 ms); a 10 kHz timer whose deliveries take ~1 ms
# still leaves the program half the time.
DEFERRAL = 0.001
SIGRTMIN = _signal.SIGRTMIN  # standard signals below coalesce, real-time ones queue
POLICIES = ("converge", "sync", "at-syscall")
SI_USER, SI_KERNEL, SI_TIMER, SI_TKILL = 0, 0x80, -2, -6
_ITIMER_SIGNALS = frozenset({_signal.SIGALRM, _signal.SIGVTALRM, _signal.SIGPROF})
SA_RESETHAND = 0x80000000
# Signals whose default action does not end the process (they are ignored, or stop it).
_SPARED_BY_DEFAULT = frozenset({_signal.SIGCHLD, _signal.SIGCONT, _signal.SIGURG, _signal.SIGWINCH,
                                _signal.SIGSTOP, _signal.SIGTSTP, _signal.SIGTTIN, _signal.SIGTTOU})
FAULT_SIGNALS = frozenset({_signal.SIGSEGV, _signal.SIGBUS, _signal.SIGILL, _signal.SIGFPE,
                           _signal.SIGTRAP, _signal.SIGSYS})


def has_own_instances_dropped(signum: int, si_code: int) -> bool:
    """A follower's kernel raises instances of its own that the monitor drops for the
    leader's (SIGCHLD; a kill by another process of the variants: `si_code`, the leader's
    instance's, is SI_USER): blocked in it, one would merge with the leader's copy and
    take that copy with it."""
    return signum == _signal.SIGCHLD or si_code == SI_USER


def raised_by_leader_only(signum: int, si_code: int, from_another_process: bool = False) -> bool:
    """Signals whose source runs in the leader only (its timers: POSIX timers, setitimer,
    alarm; a signal sent to the monitor, which it forwards to the leader), or whose
    instances each variant's kernel counts its own way: SIGCHLD from a child's end, and a
    kill by a process of another set (each variant's own sender, in lockstep with the
    others, but the receivers take each instance at a different point of their own): two
    close together coalesce in one variant and not in another. `from_another_process`:
    the monitor (a kill, or a tgkill to a main thread) or a process of another set sent
    it. The monitor mirrors the leader's instances into the other variants, in the
    thread the leader's kernel picked, and their own are dropped."""
    return (si_code == SI_TIMER or (si_code == SI_KERNEL and signum in _ITIMER_SIGNALS)
            or (signum == _signal.SIGCHLD and si_code > 0)
            or (si_code in (SI_USER, SI_TKILL) and from_another_process))


class Disposition(enum.Enum):
    DEFAULT = "default"
    IGNORE = "ignore"
    HANDLER = "handler"


class Where(enum.Enum):
    RUNNING = "running"
    AT_SYSCALL = "at syscall"
    HELD = "held at its signal stop"
    PARKED = "in the wait loop"
    EXITED = "exited"


class Way(enum.Enum):
    """Where a delivered signal met the variants."""

    IN_CODE = "in-code"  # every variant held in its own code: released where it was
    AT_SYSCALL = "at-syscall"  # every variant at one synchronised syscall: handler, then the call
    WAIT_LOOP = "wait-loop"  # Orchestra: some held in their code, the others parked in the loop


class DelaySample:
    """Delivery delays: exact count, mean and maximum, and a bounded uniform sample
    (reservoir) for percentiles, so a run of millions of signals keeps flat memory."""

    CAPACITY = 20_000

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.maximum = 0.0
        self.sample = array("d")  # 8 bytes a delay, not a float object's 32
        self._random = random.Random(0)

    def append(self, delay: float) -> None:
        self.count += 1
        self.total += delay
        self.maximum = max(self.maximum, delay)
        if len(self.sample) < self.CAPACITY:
            self.sample.append(delay)
        else:
            slot = self._random.randrange(self.count)
            if slot < self.CAPACITY:
                self.sample[slot] = delay

    def __len__(self) -> int:
        return self.count

    def summary_ms(self) -> dict[str, float | None]:
        """Mean, median, 99th percentile and maximum, in milliseconds (None: no delay yet)."""
        sample = sorted(d * 1000 for d in self.sample)

        def percentile(q: float) -> float | None:
            return sample[min(len(sample) - 1, int(q * len(sample)))] if sample else None

        return {"mean": self.total * 1000 / self.count if self.count else None,
                "p50": percentile(0.5), "p99": percentile(0.99),
                "max": self.maximum * 1000 if self.count else None}

    def __eq__(self, other: object) -> bool:  # compares as the list of delays seen (tests)
        return self.sample.tolist() == other if isinstance(other, list) else NotImplemented


# --- decisions ---

@dataclass(frozen=True)
class Deliver:
    """Resume the variant from its signal stop with the signal, now."""
    variant: int
    signum: int


@dataclass(frozen=True)
class Hold:
    """Keep the variant stopped at its signal-delivery-stop."""
    variant: int


@dataclass(frozen=True)
class Suppress:
    """Resume the variant without its signal; the signal stays on its pending list."""
    variant: int


@dataclass(frozen=True)
class Proceed:
    """The variant at a syscall entry goes on with normal syscall handling."""
    variant: int


@dataclass(frozen=True)
class Park:
    """Skip the syscall at this entry and send the variant into the wait loop."""
    variant: int


@dataclass(frozen=True)
class Resend:
    """Send the signal again to a variant that has it pending."""
    variant: int
    signum: int


@dataclass(frozen=True)
class Release:
    """Resume with the signal; a parked variant gets its syscall restored first."""
    variant: int
    signum: int
    info: bytes
    parked: bool


@dataclass(frozen=True)
class Unpark:
    """Take a parked variant out of the wait loop without a signal: its call runs again."""
    variant: int


@dataclass(frozen=True)
class NonCompliant:
    """A variant did not get its signal in time. `no_syscall`: no rendezvous came at which
    to deliver it (at-syscall policy), rather than a wait loop that ran out."""
    variant: int
    signum: int
    no_syscall: bool = False


Decision = Deliver | Hold | Suppress | Proceed | Park | Resend | Release | Unpark | NonCompliant


@dataclass
class _Pending:
    signum: int
    info: bytes
    since: float
    # Set aside at a handler's return: not delivered at the next rendezvous (the call
    # the handler interrupted, or the next of its code, runs first), so a signal faster
    # than its delivery cannot keep a program from making progress.
    deferred: bool = False


@dataclass
class _Variant:
    where: Where = Where.RUNNING
    parked: bool = False  # in the wait loop (also while HELD there)
    held_info: bytes = b""
    pending: list[_Pending] = field(default_factory=list)

    def has_pending(self, signum: int) -> bool:
        return any(p.signum == signum for p in self.pending)

    def has_ready(self, signum: int) -> bool:
        """Pending and not deferred past the next rendezvous."""
        return any(p.signum == signum and not p.deferred for p in self.pending)

    def take_pending(self, signum: int) -> _Pending | None:
        for index, entry in enumerate(self.pending):
            if entry.signum == signum:
                return self.pending.pop(index)
        return None

    def add_pending(self, entry: _Pending) -> None:
        # Standard signals coalesce: one instance pending at most. Real-time ones queue.
        if entry.signum >= SIGRTMIN or not self.has_pending(entry.signum):
            self.pending.append(entry)


class SignalCoordinator:
    def __init__(self, variants: int, policy: str = "sync", converge_after: float = 0.05,
                 give_up_after: float = 1.0, started: float = 0.0) -> None:
        """`started`: when the variants began running (a set's birth at a fork counts as a
        syscall: a signal its new processes take before their first one converges).
        `converge_after`: how long variants that set a signal aside may run on before
        one of them reaches a syscall (converge), and how long a signal set aside at a
        handler's return waits for its next tick or syscall; `give_up_after`: how long a
        variant waits at a syscall for the others to arrive with the signal (converge), or
        for a rendezvous to deliver it at (at-syscall), in seconds."""
        if policy not in POLICIES:
            raise ValueError(f"unknown signal policy {policy!r}")
        self.policy = policy
        self.converge_after = converge_after
        self.give_up_after = give_up_after
        self.variants = [_Variant() for _ in range(variants)]
        self.dispositions: dict[int, Disposition] = {}
        self.reset_on_delivery: set[int] = set()
        self.current: int | None = None  # the signal being synchronised
        self.someone_died = False  # the survivors must end the same way, handlers no more
        self.current_since = 0.0
        self.resent: set[int] = set()
        self.converging: set[int] = set()  # set aside to be delivered at a common syscall
        self.fallback: set[int] = set()  # convergence timed out: rules 4-7 as in `sync`
        self.deferred: set[int] = set()  # set aside at a handler's return
        self.deadline: float | None = None  # when converging and deferred signals are raised again
        self.deadline_at_syscall = False  # the deadline counts from a variant waiting at a syscall
        self.armed_at = 0.0  # when the deadline was armed
        self.last_rendezvous = started  # of the program's own code, not inside a handler
        self.handlers_running = 0  # deliveries whose handler has not returned (rt_sigreturn)
        self.delays = DelaySample()  # seconds, first stop to last release, per delivery
        self.ways = {way: DelaySample() for way in Way}  # the same, per way of delivery
        self.set_aside_at_return = 0  # signal stops right at a handler's return, set aside

    # --- what the program told the kernel ---

    def set_disposition(self, signum: int, disposition: Disposition, flags: int = 0) -> None:
        self.dispositions[signum] = disposition
        if disposition is Disposition.HANDLER and flags & SA_RESETHAND:
            self.reset_on_delivery.add(signum)
        else:
            self.reset_on_delivery.discard(signum)

    def exec_happened(self) -> None:
        """execve resets handled signals to their default action."""
        for signum, disposition in self.dispositions.items():
            if disposition is Disposition.HANDLER:
                self.dispositions[signum] = Disposition.DEFAULT

    def delivered_at_once(self, signum: int, fault: bool) -> bool:
        return fault or self.dispositions.get(signum, Disposition.DEFAULT) is not Disposition.HANDLER

    def merges_with_pending(self, index: int, signum: int) -> bool:
        """A stop with `signum` adds nothing to what this variant has set aside: it is the
        instance raised again in it, whatever siginfo the kernel merged into it, or a new
        instance of a standard signal it has pending (they coalesce, as in its kernel)."""
        return self.variants[index].has_pending(signum) and (index in self.resent or signum < SIGRTMIN)

    def awaits_raised(self, index: int, signum: int) -> bool:
        """Whether the monitor raised `signum` again in this variant (Resend) and has not
        seen that instance's stop yet."""
        return index in self.resent and self.variants[index].has_pending(signum)

    def kills(self, signum: int) -> bool:
        """Whether the signal, delivered, ends the process: its default action, which kills."""
        return (self.dispositions.get(signum, Disposition.DEFAULT) is Disposition.DEFAULT
                and signum not in _SPARED_BY_DEFAULT)

    def runs_handler(self, signum: int) -> bool:
        return self.dispositions.get(signum) is Disposition.HANDLER

    def where(self, index: int) -> Where:
        """Where a variant stands: the monitor's one record of it."""
        return self.variants[index].where

    # --- events ---

    def on_signal(self, index: int, signum: int, info: bytes, now: float, fault: bool = False,
                  after_handler: bool = False, at_call_exit: bool = False) -> list[Decision]:
        """`after_handler`: the variant stopped right at the return from a handler
        (rt_sigreturn's exit), before the code the handler interrupted ran again.
        `at_call_exit`: it stopped at the exit of a synchronised call, before an instruction
        of its own: a call that sent the signal to itself (kill, raise), or one the signal
        interrupted (a restart code). Every variant stops there: a common point already,
        where it is held. (Set aside, it would be raised again at the call's next entry,
        where a mask that only the call lifts, rt_sigsuspend's, blocks it: the call would
        run, be interrupted, and come back, for good.)"""
        variant = self.variants[index]
        if self.delivered_at_once(signum, fault):
            return [Deliver(index, signum)]
        arriving = self.current == signum
        waiting = any(v.where is Where.AT_SYSCALL for v in self.variants)
        computing = now - self.last_rendezvous > 2 * self.converge_after
        converges = self._converges(signum) and not at_call_exit and (waiting or not computing)
        if not arriving and (self.policy == "at-syscall" or self.current is not None or self.someone_died
                             or converges or after_handler):
            if variant.has_pending(signum):
                self.resent.discard(index)  # a re-sent instance set aside again: send it again later
            variant.add_pending(_Pending(signum, info, now, deferred=after_handler))
            self.set_aside_at_return += after_handler
            if converges:
                self.converging.add(signum)
                self._arm(now)
            elif after_handler and self.policy != "at-syscall" and self.current is None:
                # Held back (mvee.signal_executor) for a while: the program runs,
                # whatever the timer's rate.
                self.deferred.add(signum)
                self._arm(now, DEFERRAL)
            return [Suppress(index)]
        if self.current is None:
            earlier = [p.since for v in self.variants for p in v.pending if p.signum == signum]
            self.current, self.current_since = signum, min([now, *earlier])
        # A re-sent signal consumes its pending entry, and so does a new instance of a
        # standard signal (they coalesce); a real-time instance queues behind it.
        resent = variant.take_pending(signum) if index in self.resent or signum < SIGRTMIN else None
        self.resent.discard(index)
        variant.where = Where.HELD
        variant.held_info = resent.info if resent else info
        return self._progress(now) or [Hold(index)]

    def on_syscall_entry(self, index: int, now: float, synchronised: bool = True) -> list[Decision]:
        """`synchronised`: the variant waits here for the others (not a LOCAL call)."""
        self.variants[index].where = Where.AT_SYSCALL
        if synchronised and self.converging and not self.deadline_at_syscall:
            # The others are on their way here: they have as long as a parked variant would.
            self.deadline, self.deadline_at_syscall = now + self.give_up_after, True
        decisions = self._progress(now) if self.current is not None else []
        if self.variants[index].where is Where.AT_SYSCALL:
            decisions += self._raise_again(index) if synchronised and self.policy != "at-syscall" else []
            decisions.append(Proceed(index))
        return decisions

    def _raise_again(self, index: int) -> list[Decision]:
        """Signals set aside in a variant are raised again when it waits at a synchronised
        syscall: pending in its kernel, they are delivered here if half the variants have
        them, and otherwise interrupt the call if it blocks, as natively. (Set aside only
        on the monitor's list, a variant would block for good in a read that only its
        handler ends.)"""
        variant = self.variants[index]
        if index in self.resent or not variant.pending or self.someone_died:
            return []
        signums = dict.fromkeys(p.signum for p in variant.pending if not p.deferred)
        if signums:
            self.resent.add(index)
        return [Resend(index, signum) for signum in signums]

    def has_pending(self) -> bool:
        return any(v.pending for v in self.variants)

    def quiet(self) -> bool:
        """No signal in flight: none pending, being synchronised, parked for or in a handler."""
        return (self.current is None and not self.has_pending() and not self.handlers_running
                and not (self.resent or self.converging or self.fallback or self.deferred)
                and not any(v.parked for v in self.variants))

    def exchange(self, other: SignalCoordinator, index: int) -> None:
        """Variant `index`'s record and the other set's change places: that variant's
        threads of the two sets changed partners (mvee.thread_pairing)."""
        self.variants[index], other.variants[index] = other.variants[index], self.variants[index]

    def on_rendezvous(self, now: float, blocked: frozenset[int] = frozenset()) -> list[Decision]:
        """All live variants wait at one synchronised syscall, with the signals in `blocked`
        blocked (the same in all: masks change only at syscalls). `sync`, `converge`: a
        signal that half of them have pending is delivered here; `at-syscall`: one that
        all have. A blocked one stays pending, as in the kernel."""
        if not self.handlers_running:
            # The program made a syscall: no longer computing, its signals converge again
            # (until then a signal whose convergence timed out follows `sync`: with its
            # instances held back, a new convergence would hold each for the bound).
            self.last_rendezvous = now
            self.fallback.clear()
        if self.current is not None:
            return []
        decisions = (self._start_next(now, blocked) if self.policy != "at-syscall"
                     else self._start_common(now, blocked))
        if not decisions:  # the call runs: what was deferred past it is ready now
            for variant in self.variants:
                for entry in variant.pending:
                    entry.deferred = False
        return decisions

    def _start_common(self, now: float, blocked: frozenset[int]) -> list[Decision]:
        live = self._live()
        for candidate in self.variants[live[0]].pending:
            if candidate.signum not in blocked and all(self.variants[i].has_ready(candidate.signum)
                                                       for i in live):
                return self._start(candidate.signum, live, now)
        return []

    def next_deadline(self) -> float | None:
        """When the monitor must call `on_deadline` if nothing else happens first."""
        if self.policy == "at-syscall":
            oldest = self._oldest_pending()
            return oldest[1].since + self.give_up_after if oldest else None
        return self.deadline

    def on_deadline(self, now: float) -> list[Decision]:
        """`converge`: holders that reached no syscall in time get the signal where they
        are (rule 4 from here on); signals deferred at a handler's return are raised
        again. `at-syscall`: a signal no rendezvous delivered in time is non-compliance."""
        if self.policy == "at-syscall":
            oldest = self._oldest_pending()
            if oldest is None or now < oldest[1].since + self.give_up_after:
                return []
            index, entry = oldest
            lacking = [i for i in self._live() if not self.variants[i].has_pending(entry.signum)]
            return [NonCompliant(lacking[0] if lacking else index, entry.signum, no_syscall=True)]
        if self.deadline is None or now < self.deadline:
            return []
        due = self.converging | self.deferred
        self.fallback |= self.converging
        self.converging, self.deferred, self.deadline = set(), set(), None
        self.deadline_at_syscall = False
        decisions: list[Decision] = []
        for index in self._live():
            variant = self.variants[index]
            if variant.where is not Where.RUNNING or index in self.resent:
                continue
            signums = dict.fromkeys(p.signum for p in variant.pending if p.signum in due)
            decisions += [Resend(index, signum) for signum in signums]
            if signums:
                self.resent.add(index)
        return decisions

    def statistics(self) -> dict[str, object]:
        """Counts and delays (ms) of the deliveries, in all and per way, and how many signal
        stops came right at a handler's return (set aside, and held back)."""
        return {"delivered": self.delays.count, "delay_ms": self.delays.summary_ms(),
                "ways": {way.value: {"delivered": sample.count, "delay_ms": sample.summary_ms()}
                         for way, sample in self.ways.items()},
                "set_aside_at_handler_return": self.set_aside_at_return}

    def on_handler_return(self) -> None:
        """The variants returned from a signal handler (rt_sigreturn)."""
        self.handlers_running = max(0, self.handlers_running - 1)

    def on_resumed(self, index: int) -> None:
        """The monitor let a variant run on from a syscall."""
        self.variants[index].where = Where.RUNNING

    def on_loop_timeout(self, index: int) -> list[Decision]:
        return [NonCompliant(index, self.current or 0)]

    def on_exit(self, index: int, now: float) -> list[Decision]:
        """A variant that dies takes the synchronisation point with it: the signal in
        flight is set aside in the others, which run on; if they die the same way the run
        ends alike, if they reach a syscall the monitor reports the difference there.
        No handler runs in them any more: the dead one ran none, and a handler's syscalls
        would be told apart from a death that the survivors are about to share."""
        self.variants[index] = _Variant(where=Where.EXITED)
        self.someone_died = True
        self.resent.discard(index)
        return self._set_all_aside() if self.current is not None else []

    # --- the rules ---

    def _live(self) -> list[int]:
        return [i for i, v in enumerate(self.variants) if v.where is not Where.EXITED]

    def _progress(self, now: float) -> list[Decision]:
        signum = self.current
        assert signum is not None
        live = self._live()
        if not live:
            self.current = None
            return []
        holders = [i for i in live if self.variants[i].where is Where.HELD]
        if len(holders) == len(live):
            return self._release_all(holders, signum, now)
        # An instance set aside at a handler's return waits for the variant's next stop
        # (a tick, a syscall, the deadline), not for another variant's: resent now, it
        # would stop the variant where it was, and a fast timer would starve the program.
        pending = [i for i in live if i not in holders and self._has_it(i, signum)]
        if 2 * (len(holders) + len(pending)) >= len(live):
            in_code = holders and not any(self.variants[i].parked for i in holders)
            if in_code and self._converges(signum) and any(
                    self.variants[i].where is Where.AT_SYSCALL for i in live):
                return self._converge(holders, signum, now)
            return self._gather(live, holders, pending, signum)
        others = [i for i in live if i not in holders and i not in pending]
        if all(self.variants[i].where is Where.AT_SYSCALL for i in others):
            return self._set_aside(holders, signum, now)  # rule 6
        return []

    def _has_it(self, index: int, signum: int) -> bool:
        """The variant has the signal pending to be delivered now: not set aside at a
        handler's return while it runs on (at a syscall, it has gone on to one)."""
        variant = self.variants[index]
        return variant.has_ready(signum) or (variant.where is not Where.RUNNING
                                             and variant.has_pending(signum))

    def _converges(self, signum: int) -> bool:
        return self.policy == "converge" and signum not in self.fallback and not self.someone_died

    def _converge(self, holders: list[int], signum: int, now: float) -> list[Decision]:
        """Holders in their code while another variant waits at a syscall: they run on
        to it without the signal, and every variant gets it there (`on_rendezvous`)."""
        self.converging.add(signum)
        self._arm(now)
        return self._set_aside(holders, signum, now)

    def postpone(self, until: float) -> bool:
        """The holders running on could not run for the time they were given (a loaded
        machine, TCG): the converge deadline moves to `until`, no further than
        `POSTPONE_LIMIT` times that time after it was armed (a longer hold leaves a
        CPU-bound program's timer unhandled). False if it cannot move."""
        if self.deadline is None or self.deadline_at_syscall:
            return False
        moved = min(until, self.armed_at + POSTPONE_LIMIT * self.converge_after)
        if moved <= self.deadline:
            return False
        self.deadline = moved
        return True

    def _arm(self, now: float, bound: float | None = None) -> None:
        """`bound`: how long variants may run on with no variant at a syscall (else
        `converge_after`)."""
        if self.deadline is None:
            self.armed_at = now
            waiting = any(v.where is Where.AT_SYSCALL for v in self.variants)
            self.deadline = now + (self.give_up_after if waiting else bound or self.converge_after)
            self.deadline_at_syscall = waiting

    def _oldest_pending(self) -> tuple[int, _Pending] | None:
        entries = [(index, entry) for index in self._live() for entry in self.variants[index].pending]
        return min(entries, key=lambda item: item[1].since) if entries else None

    def _gather(self, live: list[int], holders: list[int], pending: list[int], signum: int
                ) -> list[Decision]:
        """Rule 4: a majority has the signal: bring everyone else to it."""
        decisions: list[Decision] = []
        for index in live:
            variant = self.variants[index]
            if index in holders:
                continue
            if variant.where is Where.AT_SYSCALL:
                variant.where, variant.parked = Where.PARKED, True
                decisions.append(Park(index))
            if index in pending and index not in self.resent:
                self.resent.add(index)
                decisions.append(Resend(index, signum))
        return decisions

    def _release_all(self, holders: list[int], signum: int, now: float) -> list[Decision]:
        decisions: list[Decision] = []
        parked = [self.variants[index].parked for index in holders]
        way = Way.AT_SYSCALL if all(parked) else Way.WAIT_LOOP if any(parked) else Way.IN_CODE
        for index in holders:
            variant = self.variants[index]
            decisions.append(Release(index, signum, variant.held_info, variant.parked))
            variant.where, variant.parked = Where.RUNNING, False
        self.delays.append(now - self.current_since)
        self.ways[way].append(now - self.current_since)
        self.handlers_running += 1
        self.current = None
        self.resent.clear()
        self.converging.discard(signum)
        self.deferred.discard(signum)
        if not (self.converging or self.deferred):
            self.deadline, self.deadline_at_syscall = None, False
        if signum in self.reset_on_delivery:
            self.dispositions[signum] = Disposition.DEFAULT
            self.reset_on_delivery.discard(signum)
        # A signal set aside meanwhile goes at the next rendezvous (which knows the blocked
        # mask: the handler about to run may block it, and a variant parked for a blocked
        # signal would wait for it in vain), or at its deadline, or with its next instance.
        return decisions

    def _set_all_aside(self) -> list[Decision]:
        """The signal in flight goes back to the pending lists; every variant runs on."""
        signum = self.current
        assert signum is not None
        decisions: list[Decision] = []
        for live_index in self._live():
            variant = self.variants[live_index]
            if variant.where is Where.HELD:
                variant.add_pending(_Pending(signum, variant.held_info, self.current_since))
                decisions.append(Unpark(live_index) if variant.parked else Suppress(live_index))
            elif variant.where is Where.PARKED:
                decisions.append(Unpark(live_index))
            else:
                continue
            variant.where, variant.parked = Where.RUNNING, False
        self.current = None
        self.resent.clear()
        return decisions

    def _set_aside(self, holders: list[int], signum: int, now: float) -> list[Decision]:
        decisions: list[Decision] = []
        for index in holders:
            variant = self.variants[index]
            variant.add_pending(_Pending(signum, variant.held_info, self.current_since))
            variant.where = Where.RUNNING
            decisions.append(Suppress(index))
        self.current = None
        return decisions

    def _start_next(self, now: float, blocked: frozenset[int] = frozenset()) -> list[Decision]:
        """After a delivery, a signal set aside that half of the variants have goes next."""
        if self.policy == "at-syscall":
            return []
        live = self._live()
        for index in live:
            for entry in self.variants[index].pending:
                having = [i for i in live if self.variants[i].has_ready(entry.signum)]
                if not entry.deferred and entry.signum not in blocked and 2 * len(having) >= len(live):
                    return self._start(entry.signum, having, now)
        return []

    def _start(self, signum: int, having: list[int], now: float) -> list[Decision]:
        self.current = signum
        self.current_since = min(p.since for i in having for p in self.variants[i].pending
                                 if p.signum == signum)
        return self._progress(now)

