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
The `at-syscall` policy is the earlier approach kept for comparison: every
signal is set aside until all variants meet at a syscall, and delivered there.
"""

from __future__ import annotations

import enum
import random
import signal as _signal
from array import array
from dataclasses import dataclass, field

SIGRTMIN = _signal.SIGRTMIN  # standard signals below coalesce, real-time ones queue
SA_RESETHAND = 0x80000000
FAULT_SIGNALS = frozenset({_signal.SIGSEGV, _signal.SIGBUS, _signal.SIGILL, _signal.SIGFPE,
                           _signal.SIGTRAP, _signal.SIGSYS})


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
    variant: int
    signum: int


Decision = Deliver | Hold | Suppress | Proceed | Park | Resend | Release | Unpark | NonCompliant


@dataclass
class _Pending:
    signum: int
    info: bytes
    since: float


@dataclass
class _Variant:
    where: Where = Where.RUNNING
    parked: bool = False  # in the wait loop (also while HELD there)
    held_info: bytes = b""
    pending: list[_Pending] = field(default_factory=list)

    def has_pending(self, signum: int) -> bool:
        return any(p.signum == signum for p in self.pending)

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
    def __init__(self, variants: int, policy: str = "sync") -> None:
        if policy not in ("sync", "at-syscall"):
            raise ValueError(f"unknown signal policy {policy!r}")
        self.policy = policy
        self.variants = [_Variant() for _ in range(variants)]
        self.dispositions: dict[int, Disposition] = {}
        self.reset_on_delivery: set[int] = set()
        self.current: int | None = None  # the signal being synchronised
        self.someone_died = False  # the survivors must end the same way, handlers no more
        self.current_since = 0.0
        self.resent: set[int] = set()
        self.delays = DelaySample()  # seconds, first stop to last release, per delivery

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

    def where(self, index: int) -> Where:
        """Where a variant stands: the monitor's one record of it."""
        return self.variants[index].where

    # --- events ---

    def on_signal(self, index: int, signum: int, info: bytes, now: float, fault: bool = False
                  ) -> list[Decision]:
        variant = self.variants[index]
        if self.delivered_at_once(signum, fault):
            return [Deliver(index, signum)]
        arriving = self.current == signum
        if not arriving and (self.policy == "at-syscall" or self.current is not None or self.someone_died):
            if variant.has_pending(signum):
                self.resent.discard(index)  # a re-sent instance set aside again: send it again later
            variant.add_pending(_Pending(signum, info, now))
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
        decisions = self._progress(now) if self.current is not None else []
        if self.variants[index].where is Where.AT_SYSCALL:
            decisions += self._raise_again(index) if synchronised and self.policy == "sync" else []
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
        self.resent.add(index)
        return [Resend(index, signum) for signum in dict.fromkeys(p.signum for p in variant.pending)]

    def on_rendezvous(self, now: float) -> list[Decision]:
        """All live variants wait at one synchronised syscall. `sync`: a signal that half
        of them have pending is delivered here; `at-syscall`: one that all have."""
        if self.current is not None:
            return []
        if self.policy == "sync":
            return self._start_next(now)
        live = self._live()
        for candidate in self.variants[live[0]].pending:
            if all(self.variants[i].has_pending(candidate.signum) for i in live):
                return self._start(candidate.signum, live, now)
        return []

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
        pending = [i for i in live if i not in holders and self.variants[i].has_pending(signum)]
        if 2 * (len(holders) + len(pending)) >= len(live):
            return self._gather(live, holders, pending, signum)
        others = [i for i in live if i not in holders and i not in pending]
        if all(self.variants[i].where is Where.AT_SYSCALL for i in others):
            return self._set_aside(holders, signum, now)  # rule 6
        return []

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
        for index in holders:
            variant = self.variants[index]
            decisions.append(Release(index, signum, variant.held_info, variant.parked))
            variant.where, variant.parked = Where.RUNNING, False
        self.delays.append(now - self.current_since)
        self.current = None
        self.resent.clear()
        if signum in self.reset_on_delivery:
            self.dispositions[signum] = Disposition.DEFAULT
            self.reset_on_delivery.discard(signum)
        return decisions + self._start_next(now)

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

    def _start_next(self, now: float) -> list[Decision]:
        """After a delivery, a signal set aside that half of the variants have goes next."""
        if self.policy != "sync":
            return []
        live = self._live()
        for index in live:
            for entry in self.variants[index].pending:
                having = [i for i in live if self.variants[i].has_pending(entry.signum)]
                if 2 * len(having) >= len(live):
                    return self._start(entry.signum, having, now)
        return []

    def _start(self, signum: int, having: list[int], now: float) -> list[Decision]:
        self.current = signum
        self.current_since = min(p.since for i in having for p in self.variants[i].pending
                                 if p.signum == signum)
        return self._progress(now)
