"""PID virtualisation (mvee.pids): the leader's PIDs are every variant's."""

from __future__ import annotations

from mvee.pids import PidMap


def test_a_followers_pids_translate_to_the_leaders_and_back() -> None:
    pids = PidMap(3)
    pids.add([100, 200, 300])  # the first set
    pids.add([101, 201, 301])  # a child set
    assert [pids.to_real(index, 101) for index in range(3)] == [101, 201, 301]
    assert [pids.to_virtual(index, pid) for index, pid in enumerate((101, 201, 301))] == [101, 101, 101]
    # A follower that holds a virtual PID already keeps it for the comparison.
    assert pids.to_virtual(2, 101) == 101


def test_a_process_group_is_its_leaders_pid_negated() -> None:
    pids = PidMap(2)
    pids.add([100, 200])
    assert pids.to_real(1, -100 & 0xFFFFFFFF) == -200  # kill(-pgid), a 32-bit register
    assert pids.to_real(1, -100 & 0xFFFFFFFFFFFFFFFF) == -200  # sign-extended in a 64-bit one
    assert pids.to_virtual(1, -200 & 0xFFFFFFFF) == -100


def test_the_caller_every_process_and_strangers_are_not_translated() -> None:
    pids = PidMap(2)
    pids.add([100, 200])
    assert [pids.to_real(1, value) for value in (0, 0xFFFFFFFF, 1, 555)] == [0, -1, 1, 555]
    assert pids.is_known(0) and pids.is_known(100) and pids.is_known(-100 & 0xFFFFFFFF)
    assert not pids.is_known(0xFFFFFFFF)  # -1: every process the caller may signal
    assert not pids.is_known(1) and not pids.is_known(200)  # init; a follower's own PID
