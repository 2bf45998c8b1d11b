"""PID virtualisation: every variant sees the leader's PIDs.

A process of variant 0 (the leader) and its counterparts in the other variants form
a set (mvee.variant_set); the leader's PID is the set's virtual PID. Calls that
return PIDs give every variant the leader's (the table's policies do that:
getpid is LEADER, fork EACH_LEADER_RESULT), so a follower only ever holds
virtual PIDs, except where its own kernel wrote one into its memory (a TID at
CLONE_CHILD_SETTID). `Pid` arguments are therefore compared as virtual PIDs and
run in each follower as its own counterpart. A negative PID names a process group,
whose number is its leader process's PID: translated the same way.
"""

from __future__ import annotations

from mvee.syscall_spec import signed

_WIDTH = 32  # pid_t


class PidMap:
    """Per follower: its PIDs against the leader's, for every set."""

    def __init__(self, variants: int) -> None:
        self.real: list[dict[int, int]] = [{} for _ in range(variants)]  # virtual -> follower's
        self.virtual: list[dict[int, int]] = [{} for _ in range(variants)]  # follower's -> virtual

    def add(self, pids: list[int]) -> None:
        """A new set: variant i's process `pids[i]`."""
        for index, pid in enumerate(pids):
            self.pair(pids[0], index, pid)

    def pair(self, leader: int, index: int, pid: int) -> None:
        """Variant `index`'s counterpart of the leader's thread `leader` is now `pid`
        (mvee.thread_pairing)."""
        self.real[index][leader] = pid
        self.virtual[index][pid] = leader

    def is_known(self, value: int) -> bool:
        """Whether a PID argument names the caller (0) or a process of the variants (a set's
        leader, or a group one leads); not -1 (every process the caller may signal)."""
        number = signed(value, _WIDTH)
        return number == 0 or abs(number) in self.real[0]

    def to_virtual(self, index: int, value: int) -> int:
        """A PID argument of variant `index` as the leader's, for the comparison."""
        return self._translate(self.virtual[index], value)

    def to_real(self, index: int, value: int) -> int:
        """A virtual PID argument as variant `index`'s own, to run its call."""
        return self._translate(self.real[index], value)

    @staticmethod
    def _translate(table: dict[int, int], value: int) -> int:
        """As a signed pid_t: the register's width differs between ABIs."""
        number = signed(value, _WIDTH)
        pid = table.get(abs(number), abs(number))
        return -pid if number < 0 else pid
