"""Spreading lab tests over xdist workers: every test of one boot target goes to one
worker (which leases that target's machine once and keeps it for them).

xdist's own ``--dist loadgroup`` does not do this with pytest 9.2: the worker tags a
grouped test by appending ``@group`` to ``item._nodeid``, which pytest 9.2 no longer
reads (node ids are structured), so every test is its own group (pytest-xdist issue
1386); and a worker decides whether to tag from its own command line, so ``loadgroup``
chosen by the controller (the plugin implies it) never reached the workers at all. Two
workers then ran one target's tests on the same SSH host at once.

Here the controller alone decides, from the node id: a lab test's parameter id names
its target (``lab_targets()`` gives each case the target as its id), and that target is
the test's scope; any other test is a scope of its own (as under ``--dist load``).
"""

from __future__ import annotations

from typing import Any

from vm.machines.lease import all_targets


def target_of(nodeid: str, targets: list[str] | None = None) -> str | None:
    """The boot target named in nodeid's parameter id (whole dash-separated words; the
    longest name wins: trixie-amd64-noia32 over trixie-amd64), or None."""
    name = nodeid.rsplit("::", 1)[-1]
    if not name.endswith("]") or "[" not in name:
        return None
    words = name[name.index("[") + 1:-1].split("-")
    for target in sorted(targets or all_targets(), key=len, reverse=True):
        wanted = target.split("-")
        if any(words[i:i + len(wanted)] == wanted for i in range(len(words) - len(wanted) + 1)):
            return target
    return None


def target_scheduler(config: Any, log: Any) -> Any:
    """An xdist scheduler whose work units are the targets' lab tests (one unit each)."""
    from xdist.scheduler import LoadScopeScheduling

    targets = all_targets()

    class TargetScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return target_of(nodeid, targets) or nodeid

    return TargetScheduling(config, log)
