"""How a run ends: its verdict, the alarm that stops it, its outcome, and the one
mapping from verdicts to the command's exit statuses (also in README)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mvee.engine import Call
    from mvee.variant import Variant


class Verdict(enum.StrEnum):
    OK = "ok"
    DIVERGENCE = "divergence"  # different calls or arguments, a crash, an early exit
    NON_COMPLIANT = "non-compliant"  # a variant did not receive a signal in time
    UNSUPPORTED = "unsupported"  # a syscall outside the table, fork/threads for now
    ERROR = "error"  # the monitor's own failure
    INTERRUPTED = "interrupted"  # told twice to stop while the program did not take the first


# An "ok" run exits with the program's own status (128+N when the variants died of signal N).
EXIT_STATUS: dict[Verdict, int] = {Verdict.DIVERGENCE: 120, Verdict.NON_COMPLIANT: 121,
                                   Verdict.UNSUPPORTED: 122, Verdict.ERROR: 125}


class Alarm(Exception):
    """Stops the run: all variants are killed before the offending call executes."""

    def __init__(self, verdict: Verdict, message: str, calls: list[Call] | None = None,
                 variant: int | None = None) -> None:
        super().__init__(message)
        self.verdict = verdict
        self.message = message
        self.calls = calls or []
        self.variant = variant


@dataclass
class Outcome:
    verdict: Verdict
    message: str
    exit_code: int | None  # the program's own status when "ok"; 128+N when interrupted by N
    alarm: Alarm | None = None
    syscalls: int = 0
    details: dict[str, object] = field(default_factory=dict)

    @property
    def exit_status(self) -> int:
        """The command's exit status."""
        if self.verdict in (Verdict.OK, Verdict.INTERRUPTED) and self.exit_code is not None:
            return self.exit_code
        return EXIT_STATUS.get(self.verdict, EXIT_STATUS[Verdict.ERROR])


# --- endings ---

def early_exit_alarm(variants: list[Variant]) -> Alarm:
    """Some variants ended while the others live on: a divergence."""
    gone = next(v for v in variants if not v.alive)
    live = [v for v in variants if v.alive]
    waiting = live[0]
    calls = [v.call for v in live if v.call is not None]
    doing = f"calls {waiting.call.name}" if waiting.call else "runs"
    return Alarm(Verdict.DIVERGENCE, f"variant {gone.index} {gone.termination()} while variant "
                 f"{waiting.index} {doing}", calls, variant=gone.index)


def final_outcome(variants: list[Variant], syscalls: int, details: dict[str, object]) -> Outcome:
    """Every variant ended: alike (the program's own status), or differently (a divergence)."""
    endings = {v.termination() for v in variants}
    if len(endings) > 1:
        detail = "; ".join(f"variant {v.index} {v.termination()}" for v in variants)
        alarm = Alarm(Verdict.DIVERGENCE, f"variants ended differently: {detail}")
        return Outcome(Verdict.DIVERGENCE, alarm.message, None, alarm, syscalls, details)
    leader = variants[0]
    code = leader.exit_status if leader.term_signal is None else 128 + leader.term_signal
    return Outcome(Verdict.OK, f"all variants {leader.termination()}", code, None, syscalls, details)
