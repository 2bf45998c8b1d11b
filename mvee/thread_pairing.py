"""Which thread (or worker process) of a follower is the counterpart of which of the leader.

Threads pair up at their creation (the k-th thread each process creates, mvee.monitor)
and each pair runs in lockstep as a thread set (mvee.variant_set). Threads that take
turns at one job (a queue of work, sort's merge tree) may take the turns in another
order in each variant: the call the leader's thread A makes is made, in a follower, by
its thread B, while the follower's A sleeps in a futex waiting for work (or for a
lock B holds). Then neither pair can go on: A waits at the rendezvous for a
counterpart asleep in its own process, and so does the follower's B, whose
counterpart, the leader's B, sleeps until A's call is done. A stall, not a divergence:
natively either thread could have made the call.

When every thread of the leader's process and of the follower's is stopped at a
rendezvous or asleep in a call (nothing would change without the monitor), and a
follower's thread waits at a call equal to the one a leader's thread waits at with its
own counterpart asleep, the follower's two threads change partners: the waiting one
joins the leader's waiting thread, the sleeping one the leader's sleeping thread.
Threads that both took a turn (git grep's workers, each opening the file it took) wait
at different calls, crosswise: the leader's A and the follower's B open one file, the
leader's B and the follower's A another. Such a set waits (MISMATCH_WAIT at most,
mvee.variant_set; its alarm comes at once when the team has `settled` with no change
that mends it) for a follower thread that makes its leader's call, and they change
partners at once: nothing else needs to stand still. The
pairs' records move with them (where each stands, its side of the signal seam, its
virtual TID); only sets with no signal in flight change partners. The calls are still
compared one by one: what a process does is the same in every variant, call for call,
whichever of its threads does it. A leader's thread whose call no follower thread makes
still stalls (mvee.variant_set._check_stall).

Processes of one thread that their parent forked (a multiprocessing.Pool's workers)
take turns the same way, at a semaphore in memory they share: a stalled pair of them
changes partners too (VariantSet.team), as long as neither has children of its own.
Their memory is not one, so a pair's histories may differ from then on (a worker that
counts its tasks); what they do next is compared as ever.
"""

from __future__ import annotations

from mvee import engine, ptrace_api
from mvee.signals import Where
from mvee.variant_set import VariantSet


def repair(team: list[VariantSet], set_of: dict[int, VariantSet]) -> int:
    """Change partners where the members of a team (VariantSet.team: a process's threads,
    or a parent's worker processes) took turns in another order (see above); how many
    pairs did. `set_of`: the monitor's set of each PID, kept up to date."""
    sets = [s for s in team if s.call is None and all(v.alive for v in s.variants)]
    if len(sets) < 2:
        return 0
    changes = 0
    for index in range(1, len(sets[0].variants)):
        still: bool | None = None  # looked up once, when needed
        for waiting in sets:
            if not _at_call(waiting, 0):
                continue
            if _at_call(waiting, index):
                if _same_call(waiting, 0, waiting, index):
                    continue
            else:
                if still is None:
                    still = _still(team, 0) and _still(team, index)
                if not still:
                    continue
            partner = _partner(waiting, index, sets)
            if partner is not None:
                _exchange(waiting, partner, index, set_of)
                changes += 1
    return changes


def settled(team: list[VariantSet]) -> bool:
    """Whether no member of the team, in any variant, would move without the monitor:
    each stopped at a rendezvous or asleep in a call, and no call of the team in progress
    (its end lets its threads go on)."""
    return (all(s.call is None for s in team)
            and all(_still(team, index) for index in range(len(team[0].variants))))


def _at_call(variant_set: VariantSet, index: int) -> bool:
    return (variant_set.signals.where(index) is Where.AT_SYSCALL
            and variant_set.variants[index].call is not None)


def _same_call(first: VariantSet, first_index: int, second: VariantSet, second_index: int) -> bool:
    calls = [s.as_leader_sees(i, s.variants[i].call)  # type: ignore[arg-type]
             for s, i in ((first, first_index), (second, second_index))]
    return engine.compare(calls) is None


def _still(team: list[VariantSet], index: int) -> bool:
    """Whether every live member of variant `index` in the team is stopped at a rendezvous
    or asleep in a call: none would move without the monitor."""
    members = [s for s in team if s.variants[index].alive]
    return all(_at_call(s, index) or ptrace_api.blocked_in(s.variants[index].pid) is not None
               for s in members)


def _partner(waiting: VariantSet, index: int, sets: list[VariantSet]) -> VariantSet | None:
    """Another set whose variant `index` waits at the call `waiting`'s leader waits at,
    while its own leader does not; both sets with no signal in flight."""
    for other in sets:
        if (other is waiting or not _at_call(other, index)
                or (_at_call(other, 0) and _same_call(other, 0, other, index))):
            continue
        if _same_call(waiting, 0, other, index) and _quiet(waiting, other):
            return other
    return None


def _quiet(first: VariantSet, second: VariantSet) -> bool:
    """No signal in flight in either set, and no time-stamp counter read that some of a
    set's variants made and others not yet (mvee.tsc)."""
    return all(s.executor.quiet() and s.executor.tsc.quiet() and not s.process.ending
               for s in (first, second))


def _exchange(waiting: VariantSet, partner: VariantSet, index: int, set_of: dict[int, VariantSet]) -> None:
    """Variant `index`'s members of the two sets change places."""
    arriving, leaving = partner.variants[index], waiting.variants[index]
    waiting.exchange(partner, index)
    set_of[arriving.pid], set_of[leaving.pid] = waiting, partner
    waiting.pids.pair(waiting.variants[0].pid, index, arriving.pid)
    partner.pids.pair(partner.variants[0].pid, index, leaving.pid)
