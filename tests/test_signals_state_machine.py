"""The signal algorithm without ptrace: events in, decisions out."""

from __future__ import annotations

import signal

import pytest

from mvee.signals import (
    DEFERRAL,
    SI_KERNEL,
    SI_TIMER,
    SI_USER,
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
    Way,
    has_own_instances_dropped,
    raised_by_leader_only,
)

ALRM, USR1, USR2 = signal.SIGALRM, signal.SIGUSR1, signal.SIGUSR2
RT = 40  # a real-time signal


def coordinator(variants: int, policy: str = "sync", handled: tuple[int, ...] = (ALRM, USR1, USR2, RT),
                converge_after: float = 0.1, started: float = 0.0) -> SignalCoordinator:
    machine = SignalCoordinator(variants, policy, converge_after=converge_after, started=started)
    for signum in handled:
        machine.set_disposition(signum, Disposition.HANDLER)
    return machine


def info(tag: int) -> bytes:
    return bytes([tag]) * 128


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL, signal.SIGCHLD])
def test_signals_without_a_handler_are_delivered_at_once(signum: int) -> None:
    machine = coordinator(3, handled=())
    assert machine.on_signal(1, signum, info(1), 0.0) == [Deliver(1, signum)]
    assert machine.current is None


def test_ignored_signals_are_delivered_at_once() -> None:
    machine = coordinator(2)
    machine.set_disposition(USR1, Disposition.IGNORE)
    assert machine.on_signal(0, USR1, info(0), 0.0) == [Deliver(0, USR1)]


def test_faults_are_delivered_at_once_even_with_a_handler() -> None:
    machine = coordinator(2, handled=(signal.SIGSEGV,))
    assert machine.on_signal(0, signal.SIGSEGV, info(0), 0.0, fault=True) == [Deliver(0, signal.SIGSEGV)]
    # The same signal sent by kill() is asynchronous: held.
    assert machine.on_signal(0, signal.SIGSEGV, info(0), 0.0) != [Deliver(0, signal.SIGSEGV)]


def test_two_variants_first_holder_parks_the_other_at_its_syscall() -> None:
    machine = coordinator(2)
    # One of two is half: the other is parked as soon as it reaches a syscall.
    assert machine.on_signal(0, ALRM, info(0), 1.0) == [Hold(0)]
    assert machine.on_syscall_entry(1, 1.1) == [Park(1)]
    assert machine.on_signal(1, ALRM, info(1), 1.3) == [Release(0, ALRM, info(0), False),
                                                       Release(1, ALRM, info(1), True)]
    assert machine.delays == [pytest.approx(0.3)]
    assert machine.current is None


def test_a_variant_already_waiting_at_a_syscall_is_parked_when_the_signal_comes() -> None:
    machine = coordinator(2)
    assert machine.on_syscall_entry(1, 0.0) == [Proceed(1)]
    assert machine.on_signal(0, ALRM, info(0), 0.5) == [Park(1)]


def test_both_receive_while_running_release_without_a_loop() -> None:
    machine = coordinator(2)
    machine.on_signal(1, ALRM, info(1), 0.0)
    decisions = machine.on_signal(0, ALRM, info(0), 0.001)
    assert decisions == [Release(0, ALRM, info(0), False), Release(1, ALRM, info(1), False)]


@pytest.mark.parametrize("variants,needed", [(2, 1), (3, 2), (4, 2), (5, 3)])
def test_majority_rule(variants: int, needed: int) -> None:
    machine = coordinator(variants)
    for index in range(needed - 1):
        assert machine.on_signal(index, ALRM, info(index), 0.0) == [Hold(index)]
    # Below half: a variant at a syscall is not parked, it proceeds.
    if needed > 1:
        assert machine.on_syscall_entry(variants - 1, 0.0) == [Proceed(variants - 1)]
    decisions = machine.on_signal(needed - 1, ALRM, info(needed - 1), 0.0)
    if needed > 1:
        assert Park(variants - 1) in decisions  # reached half: the waiting one is parked
    for index in range(needed, variants - 1):
        assert machine.on_syscall_entry(index, 0.0) == [Park(index)]


def test_rule_6_minority_is_set_aside_then_resent_once_half_have_it() -> None:
    machine = coordinator(3)
    assert machine.on_signal(0, ALRM, info(0), 0.0) == [Hold(0)]
    assert machine.on_syscall_entry(1, 0.1) == [Proceed(1)]
    # The last one reaches a syscall with only 1 of 3 holding: variant 0 resumes without it.
    assert machine.on_syscall_entry(2, 0.2) == [Suppress(0), Proceed(2)]
    assert machine.current is None
    assert machine.variants[0].has_pending(ALRM)
    # The syscall executes; everyone runs on.
    for index in range(3):
        machine.on_resumed(index)
    # Variant 1 gets its own: 2 of 3 now (one pending, one held): variant 0 gets it again.
    assert machine.on_signal(1, ALRM, info(1), 0.5) == [Resend(0, ALRM)]
    assert machine.on_signal(0, ALRM, info(99), 0.6) == [Hold(0)]
    assert machine.on_syscall_entry(2, 0.7) == [Park(2)]
    decisions = machine.on_signal(2, ALRM, info(2), 0.8)
    # Variant 0 is released with the siginfo of its first instance, not the re-sent one.
    assert decisions == [Release(0, ALRM, info(0), False), Release(1, ALRM, info(1), False),
                         Release(2, ALRM, info(2), True)]
    assert machine.delays == [pytest.approx(0.8)]  # from the first stop, 0.0
    assert not any(v.pending for v in machine.variants)


def test_a_signal_set_aside_is_raised_again_at_the_next_syscall() -> None:
    machine = coordinator(3)
    machine.on_signal(0, ALRM, info(0), 0.0)  # just out of an interrupted call: not movable
    machine.on_syscall_entry(1, 0.0)
    assert machine.on_syscall_entry(2, 0.0) == [Suppress(0), Proceed(2)]  # rule 6: set aside
    # Pending in its kernel again: were the call to block, the signal would end it.
    assert machine.on_syscall_entry(0, 0.0) == [Resend(0, ALRM), Proceed(0)]
    assert machine.on_rendezvous(0.0) == []  # one of three is not half: the call runs
    for index in range(3):
        machine.on_resumed(index)
    assert machine.on_signal(0, ALRM, info(0), 0.1) == [Hold(0)]  # the instance raised again
    assert machine.on_syscall_entry(1, 0.2) == [Proceed(1)]
    assert machine.on_signal(2, ALRM, info(2), 0.3) == [Park(1)]  # now two of three have it


def test_standard_signals_coalesce_real_time_signals_queue() -> None:
    machine = coordinator(2)
    machine.on_signal(0, ALRM, info(0), 0.0)  # in flight: what comes next is set aside
    for signum in (USR1, USR1, RT, RT):
        assert machine.on_signal(1, signum, info(1), 0.0) == [Suppress(1)]
    pending = [p.signum for p in machine.variants[1].pending]
    assert pending.count(USR1) == 1 and pending.count(RT) == 2


def test_a_second_signal_is_set_aside_while_one_is_in_flight_and_goes_at_the_next_rendezvous() -> None:
    machine = coordinator(2)
    assert machine.on_signal(0, ALRM, info(0), 0.0) == [Hold(0)]
    assert machine.on_signal(1, USR1, info(1), 0.1) == [Suppress(1)]
    assert machine.on_syscall_entry(1, 0.2) == [Park(1)]
    # ALRM goes to both, and nothing else yet: its handler may block USR1.
    assert machine.on_signal(1, ALRM, info(2), 0.3) == [Release(0, ALRM, info(0), False),
                                                       Release(1, ALRM, info(2), True)]
    assert machine.current is None
    # The handler's syscall: USR1, pending in variant 1 (half of two), raised again there.
    assert machine.on_syscall_entry(1, 0.35) == [Resend(1, USR1), Proceed(1)]
    assert machine.on_syscall_entry(0, 0.35) == [Proceed(0)]
    # Blocked there (the handler's mask): it stays pending, the call runs.
    assert machine.on_rendezvous(0.35, blocked=frozenset({USR1})) == []
    machine.on_resumed(0)
    machine.on_resumed(1)
    machine.on_syscall_entry(0, 0.4)
    machine.on_syscall_entry(1, 0.4)
    assert machine.on_rendezvous(0.4) == [Park(0), Park(1)]  # unblocked: delivered here
    assert machine.on_signal(1, USR1, info(7), 0.45) == [Hold(1)]
    assert machine.on_signal(0, USR1, info(8), 0.5) == [Release(0, USR1, info(8), True),
                                                       Release(1, USR1, info(1), True)]


def test_real_time_instances_are_delivered_one_by_one() -> None:
    machine = coordinator(2)
    machine.on_signal(0, RT, info(1), 0.0)
    assert machine.on_signal(1, RT, info(2), 0.0) == [Release(0, RT, info(1), False),
                                                     Release(1, RT, info(2), False)]
    # The kernel queued a second instance in variant 0: a new round.
    assert machine.on_signal(0, RT, info(3), 0.1) == [Hold(0)]
    assert machine.current == RT


def test_loop_timeout_is_non_compliance_naming_the_signal() -> None:
    machine = coordinator(2)
    machine.on_signal(0, USR1, info(0), 0.0)
    assert machine.on_syscall_entry(1, 0.0) == [Park(1)]
    assert machine.on_loop_timeout(1) == [NonCompliant(1, USR1)]


def test_an_exiting_variant_sets_the_signal_aside_in_the_others() -> None:
    machine = coordinator(4)
    machine.on_signal(0, ALRM, info(0), 0.0)
    machine.on_signal(1, ALRM, info(1), 0.0)
    assert machine.on_syscall_entry(2, 0.0) == [Park(2)]
    assert machine.on_exit(3, 0.1) == [Suppress(0), Suppress(1), Unpark(2)]
    assert machine.current is None and machine.variants[0].has_pending(ALRM)


def test_after_a_death_the_survivors_run_no_handler() -> None:
    machine = coordinator(3)
    assert machine.on_exit(2, 0.0) == []  # crashed: the others should crash alike
    assert machine.on_signal(0, ALRM, info(0), 0.1) == [Suppress(0)]
    assert machine.on_signal(1, ALRM, info(1), 0.1) == [Suppress(1)]
    assert machine.on_syscall_entry(0, 0.2) == [Proceed(0)]  # the monitor calls this a divergence
    assert machine.on_signal(1, signal.SIGSEGV, info(1), 0.3, fault=True) == [Deliver(1, signal.SIGSEGV)]


def test_sa_resethand_makes_the_next_instance_immediate() -> None:
    machine = coordinator(2, handled=())
    machine.set_disposition(USR1, Disposition.HANDLER, flags=0x80000000)
    machine.on_signal(0, USR1, info(0), 0.0)
    machine.on_signal(1, USR1, info(1), 0.0)
    assert machine.on_signal(0, USR1, info(0), 0.1) == [Deliver(0, USR1)]


def test_exec_resets_handlers() -> None:
    machine = coordinator(2)
    machine.exec_happened()
    assert machine.on_signal(0, ALRM, info(0), 0.0) == [Deliver(0, ALRM)]


def test_at_syscall_policy_sets_everything_aside_until_a_rendezvous() -> None:
    machine = coordinator(2, policy="at-syscall")
    assert machine.on_signal(0, ALRM, info(0), 0.0) == [Suppress(0)]
    assert machine.on_syscall_entry(0, 0.1) == [Proceed(0)]
    assert machine.on_syscall_entry(1, 0.2) == [Proceed(1)]
    assert machine.on_rendezvous(0.2) == []  # only variant 0 has it
    for index in range(2):
        machine.on_resumed(index)
    assert machine.on_signal(1, ALRM, info(1), 0.3) == [Suppress(1)]
    machine.on_syscall_entry(0, 0.5)
    machine.on_syscall_entry(1, 0.5)
    assert machine.on_rendezvous(0.5) == [Park(0), Resend(0, ALRM), Park(1), Resend(1, ALRM)]
    assert machine.on_signal(0, ALRM, info(5), 0.6) == [Hold(0)]
    assert machine.on_signal(1, ALRM, info(6), 0.7) == [Release(0, ALRM, info(0), True),
                                                       Release(1, ALRM, info(1), True)]
    assert machine.delays == [pytest.approx(0.7)]


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError):
        SignalCoordinator(2, "sometimes")


# --- the converge policy ---


def test_converge_holders_run_on_to_the_syscall_where_all_get_the_signal() -> None:
    machine = coordinator(2, policy="converge")
    assert machine.on_syscall_entry(1, 0.0) == [Proceed(1)]
    # Variant 0 has the signal in its own code: it runs on without it, to the syscall
    # variant 1 waits at (as long as a parked variant would wait: 1 s).
    assert machine.on_signal(0, ALRM, info(0), 0.1) == [Suppress(0)]
    assert machine.current is None and machine.converging == {ALRM}
    assert machine.next_deadline() == pytest.approx(1.1)
    # It reaches the same syscall: raised again there, and at the rendezvous both are
    # parked (the call skipped) to get it before the call runs.
    assert machine.on_syscall_entry(0, 0.12) == [Resend(0, ALRM), Proceed(0)]
    assert machine.on_rendezvous(0.12) == [Park(0), Park(1)]
    assert machine.on_signal(0, ALRM, info(5), 0.13) == [Hold(0)]
    assert machine.on_signal(1, ALRM, info(1), 0.14) == [Release(0, ALRM, info(0), True),
                                                        Release(1, ALRM, info(1), True)]
    assert machine.ways[Way.AT_SYSCALL] == [pytest.approx(0.04)]  # from the first instance, 0.1
    assert machine.next_deadline() is None and not machine.converging


def test_converge_every_instance_in_code_is_set_aside_until_a_syscall_comes() -> None:
    machine = coordinator(2, policy="converge", converge_after=0.002)
    assert machine.on_signal(0, ALRM, info(0), 0.0) == [Suppress(0)]
    assert machine.next_deadline() == pytest.approx(0.002)  # nobody at a syscall: soon, or not here
    assert machine.on_signal(1, ALRM, info(1), 0.001) == [Suppress(1)]
    assert machine.on_signal(0, ALRM, info(7), 0.0015) == [Suppress(0)]  # coalesced
    assert [p.signum for p in machine.variants[0].pending] == [ALRM]
    # A variant reaches a syscall: the others get as long as a parked variant would.
    assert machine.on_syscall_entry(1, 0.0018) == [Resend(1, ALRM), Proceed(1)]
    assert machine.next_deadline() == pytest.approx(1.0018)


def test_converge_falls_back_to_the_wait_loop_when_the_others_do_not_come() -> None:
    machine = coordinator(2, policy="converge")
    machine.on_syscall_entry(1, 0.0)
    assert machine.on_signal(0, ALRM, info(0), 0.0) == [Suppress(0)]
    machine.on_resumed(0)
    assert machine.on_deadline(0.5) == []
    assert machine.on_deadline(1.0) == [Resend(0, ALRM)]
    # From here, rule 4: the holder keeps it where it is, the other is parked.
    assert machine.on_signal(0, ALRM, info(9), 1.01) == [Park(1)]
    assert machine.on_signal(1, ALRM, info(1), 1.02) == [Release(0, ALRM, info(0), False),
                                                        Release(1, ALRM, info(1), True)]
    assert machine.ways[Way.WAIT_LOOP] == [pytest.approx(1.02)]
    # Its next instances follow `sync` too until the program makes a syscall again.
    assert machine.fallback == {ALRM}
    assert machine.on_signal(0, ALRM, info(0), 1.05) == [Hold(0)]
    machine.on_signal(1, ALRM, info(1), 1.06)
    while machine.handlers_running:  # both deliveries' handlers return
        machine.on_handler_return()
    machine.on_rendezvous(1.1)
    assert machine.fallback == set()


def test_converge_without_a_syscall_soon_is_delivered_where_they_are() -> None:
    machine = coordinator(2, policy="converge", converge_after=0.002)
    machine.on_signal(0, ALRM, info(0), 0.0)
    machine.on_signal(1, ALRM, info(1), 0.0005)
    assert machine.on_deadline(0.002) == [Resend(0, ALRM), Resend(1, ALRM)]
    assert machine.on_signal(0, ALRM, info(8), 0.0021) == [Hold(0)]
    assert machine.on_signal(1, ALRM, info(9), 0.0022) == [Release(0, ALRM, info(0), False),
                                                          Release(1, ALRM, info(1), False)]
    assert machine.ways[Way.IN_CODE] == [pytest.approx(0.0022)]


def test_a_signal_at_a_handlers_return_waits_for_the_next_tick_or_deadline() -> None:
    """A timer faster than a delivery must not starve the program (the 10 kHz livelock):
    an instance that stops a variant right at a handler's return is set aside until the
    variant's next stop, or for DEFERRAL at most, whatever the other variants do."""
    machine = coordinator(2, converge_after=0.05)
    assert machine.on_signal(0, ALRM, info(0), 0.0, after_handler=True) == [Suppress(0)]
    assert machine.current is None and machine.next_deadline() == pytest.approx(DEFERRAL)
    # Variant 1's tick (not at its return) waits for 0's next stop: 0's instance is not
    # raised again now, which would stop it where it was (once, every tick did so).
    assert machine.on_signal(1, ALRM, info(1), 0.0005) == [Hold(1)]
    assert machine.on_signal(0, ALRM, info(2), 0.001) == [Release(0, ALRM, info(0), False),
                                                         Release(1, ALRM, info(1), False)]
    assert machine.next_deadline() is None
    # Alone, a deferred instance is raised again at the deadline.
    machine.on_signal(1, ALRM, info(3), 0.1, after_handler=True)
    assert machine.on_deadline(0.1 + DEFERRAL) == [Resend(1, ALRM)]


def test_a_signal_set_aside_at_a_handlers_return_goes_with_the_variant_to_a_syscall() -> None:
    """At a syscall, the program went on from the handler: its instance set aside at the
    return counts, and is raised again as the variant is parked for the others' signal."""
    machine = coordinator(2, converge_after=0.05)
    assert machine.on_signal(0, ALRM, info(0), 0.0, after_handler=True) == [Suppress(0)]
    assert machine.on_signal(1, ALRM, info(1), 0.0005) == [Hold(1)]
    assert machine.on_syscall_entry(0, 0.001) == [Park(0), Resend(0, ALRM)]


def test_at_syscall_policy_gives_up_when_no_syscall_comes() -> None:
    machine = coordinator(2, policy="at-syscall")
    machine.give_up_after = 1.0
    assert machine.on_signal(0, USR1, info(0), 0.0) == [Suppress(0)]
    assert machine.on_signal(1, USR1, info(1), 0.5) == [Suppress(1)]
    assert machine.next_deadline() == pytest.approx(1.0)
    assert machine.on_deadline(0.9) == []
    assert machine.on_deadline(1.0) == [NonCompliant(0, USR1, no_syscall=True)]


def test_statistics_count_each_way() -> None:
    machine = coordinator(2)
    machine.on_signal(0, ALRM, info(0), 0.0)
    machine.on_signal(1, ALRM, info(1), 0.002)
    statistics = machine.statistics()
    assert statistics["delivered"] == 1
    assert statistics["ways"]["in-code"]["delivered"] == 1
    assert statistics["ways"]["at-syscall"]["delivered"] == 0
    assert statistics["ways"]["in-code"]["delay_ms"]["max"] == pytest.approx(2.0)


def test_converge_a_self_sent_signal_is_delivered_at_the_call_that_sent_it() -> None:
    machine = coordinator(2, policy="converge")
    assert machine.on_signal(0, USR1, info(0), 0.0, at_call_exit=True) == [Hold(0)]
    assert machine.on_signal(1, USR1, info(1), 0.0, at_call_exit=True) == [Release(0, USR1, info(0), False),
                                                                       Release(1, USR1, info(1), False)]


def test_converge_a_signal_that_interrupted_a_call_is_held_at_its_exit() -> None:
    """GNU timeout waits in rt_sigsuspend with SIGCHLD blocked outside it: the child's SIGCHLD
    interrupts the call in every variant. Their stops at its exit are one point: held there
    and released together. (Set aside, it was raised again at the call's next entry, where
    it is blocked: the call ran, was interrupted, and so on, until a variant parked there
    with it blocked never got it: a non-compliance alarm.)"""
    chld = signal.SIGCHLD
    machine = coordinator(2, policy="converge", handled=(chld,))
    machine.on_rendezvous(0.0)  # a syscall just now: not computing
    assert machine.on_signal(0, chld, info(0), 0.001) == [Suppress(0)]  # in its code: it converges
    machine = coordinator(2, policy="converge", handled=(chld,))
    machine.on_rendezvous(0.0)
    assert machine.on_signal(0, chld, info(0), 0.001, at_call_exit=True) == [Hold(0)]
    assert machine.on_signal(1, chld, info(1), 0.002, at_call_exit=True) == [
        Release(0, chld, info(0), False), Release(1, chld, info(1), False)]
    assert not machine.has_pending() and machine.current is None


def test_a_kill_from_another_set_is_the_leaders_mirrored() -> None:
    """Each variant's own process of another set sends it, in lockstep with the others, but
    its receivers take each instance at a point of their own: the instances each kernel
    coalesces differ, so the leader's are every variant's (as a timer's or SIGCHLD's)."""
    usr1, chld = signal.SIGUSR1, signal.SIGCHLD
    assert raised_by_leader_only(usr1, SI_USER, from_another_process=True)  # or the monitor's
    assert not raised_by_leader_only(usr1, SI_USER)  # a foreign process's, its own
    assert raised_by_leader_only(usr1, SI_TIMER) and raised_by_leader_only(signal.SIGALRM, SI_KERNEL)
    assert raised_by_leader_only(chld, 1) and not raised_by_leader_only(chld, SI_USER)
    # A follower's own instance, blocked, would merge with the leader's copy: not held back.
    assert has_own_instances_dropped(usr1, SI_USER) and has_own_instances_dropped(chld, 1)
    assert not has_own_instances_dropped(signal.SIGALRM, SI_TIMER)


def test_converge_while_computing_follows_rules_4_to_7_until_a_variant_waits_at_a_syscall() -> None:
    machine = coordinator(3, policy="converge", converge_after=0.05)
    # No rendezvous for 1 s: computing. Held where they are, as under `sync`.
    assert machine.on_signal(0, ALRM, info(0), 1.0) == [Hold(0)]
    assert machine.on_signal(1, ALRM, info(1), 1.0) == [Hold(1)]
    # The third reaches a syscall first: the holders run on to it instead of parking it.
    assert machine.on_syscall_entry(2, 1.01) == [Suppress(0), Suppress(1), Proceed(2)]
    assert machine.converging == {ALRM} and machine.next_deadline() == pytest.approx(2.01)


def test_a_signal_right_after_a_sets_birth_converges() -> None:
    """A process set born at a fork: its first signal, before any syscall of its own,
    converges (the fork was a syscall a moment ago); held where each variant stands, a
    flag tested between two syscalls would be seen on different sides (tests/programs/
    kill_child.c: the parent signals the child it just forked)."""
    born = coordinator(2, policy="converge", started=5.0)
    assert born.on_signal(0, USR1, info(0), 5.01) == [Suppress(0)]
    assert born.converging == {USR1}
    long_running = coordinator(2, policy="converge")  # no syscall for 5 s: computing
    assert long_running.on_signal(0, USR1, info(0), 5.01) == [Hold(0)]


def test_an_instance_raised_again_is_awaited_until_its_stop() -> None:
    """What the executor asks at a follower's own instance of a mirrored signal (dropped)
    when the one the monitor raised again coalesced into it in the follower's kernel."""
    machine = coordinator(2, policy="converge")
    machine.on_syscall_entry(0, 0.0)
    assert machine.on_signal(1, USR1, info(0), 0.01) == [Suppress(1)]
    assert not machine.awaits_raised(1, USR1)  # set aside, not raised again yet
    assert machine.on_syscall_entry(1, 0.02) == [Resend(1, USR1), Proceed(1)]
    assert machine.awaits_raised(1, USR1)
    assert not machine.awaits_raised(0, USR1) and not machine.awaits_raised(1, USR2)
    machine.on_signal(1, USR1, info(1), 0.03)  # its stop
    assert not machine.awaits_raised(1, USR1)


def test_a_stop_with_a_signal_set_aside_adds_nothing_to_it() -> None:
    """The leader's timer signals are mirrored into the others at each of its stops, but
    not one that merges with what it has set aside: the instance the monitor raised
    again (the kernel may merge a new expiry into it), or a new expiry of a standard
    signal it has pending. The others already have their copy (a second one made them
    handle one more, and the leader, its timer disarmed, waited for one in vain)."""
    machine = coordinator(2, policy="converge")
    machine.on_syscall_entry(1, 0.0)
    assert not machine.merges_with_pending(0, ALRM)  # nothing set aside: a new signal
    machine.on_signal(0, ALRM, info(0), 0.0)
    assert machine.merges_with_pending(0, ALRM)  # set aside: a new expiry coalesces
    assert machine.on_syscall_entry(0, 0.01) == [Resend(0, ALRM), Proceed(0)]
    assert machine.merges_with_pending(0, ALRM)
    assert not machine.merges_with_pending(1, ALRM) and not machine.merges_with_pending(0, USR1)
    rt = signal.SIGRTMIN + 1  # real-time instances queue: each is one more
    machine.on_signal(0, rt, info(0), 0.02)
    assert not machine.merges_with_pending(0, rt)


def test_a_starved_holder_gets_its_converge_time_within_a_limit() -> None:
    """Holders running on that did not get the CPU (a loaded machine, TCG) have their
    deadline postponed by the executor, up to the wait loop's time after it was armed;
    a deadline counting from a variant waiting at a syscall does not move."""
    machine = coordinator(2, policy="converge", converge_after=0.05)
    assert machine.on_signal(0, ALRM, info(0), 0.0) == [Suppress(0)]
    assert machine.next_deadline() == pytest.approx(0.05)
    assert machine.postpone(0.1) and machine.next_deadline() == pytest.approx(0.1)
    assert not machine.postpone(0.08)  # never earlier
    assert machine.postpone(99.0) and machine.next_deadline() == pytest.approx(0.2)  # 4 x 50 ms
    assert machine.on_deadline(0.15) == []  # not due yet
    assert machine.on_deadline(0.2) == [Resend(0, ALRM)]  # then the fallback, as before
    waiting = coordinator(2, policy="converge", converge_after=0.05)
    waiting.on_syscall_entry(1, 0.0)
    assert waiting.on_signal(0, ALRM, info(0), 0.0) == [Suppress(0)]
    deadline = waiting.next_deadline()
    assert deadline is not None and not waiting.postpone(5.0) and waiting.next_deadline() == deadline
