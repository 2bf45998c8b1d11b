"""Names made from the layout: temporary files created with O_CREAT|O_EXCL, and
temporary directories (mkdtemp: mkdir, which never takes an existing name).

mkstemp draws its first name from a stack address (ASLR) and the clock, so the
variants of `mktemp`, `sed -i`, `sort -T`, `patch` create different names. At an
exclusive create whose paths differ only in the name's random characters (the rule
in `layout_name`), the followers take the leader's name: the monitor writes it over
theirs, in place (it has the same length), before the comparison, so they then
open the file the leader created, and the program's own copy of the name (the
template buffer mkstemp filled) is the leader's from then on: a name it prints or
renames is compared as equal. A follower that kept another copy of its own name is
translated too: per follower, "name F means name L", applied before the comparison
to a later path argument that is exactly F where the leader's is exactly L (names
are drawn again and again: F may later be a name the leader itself draws, and then
means itself).

The same layout-made random value also decides whether mkstemp asks the kernel for
entropy first (its value is "unfair" for base 62 in about one draw of 20): at a
rendezvous where some variants are at such an exclusive create and the others at an
8-byte non-blocking getrandom, those run their getrandom alone (`detours`), a call
with no effect outside the variant, and the rendezvous is held again at their open.

The rule and what an attacker could hide behind it: docs/architecture.md.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from mvee.syscall_spec import CString

if TYPE_CHECKING:
    from mvee.engine import Call
    from mvee.variant import Variant

EXCLUSIVE_CREATE = os.O_CREAT | os.O_EXCL
MIN_RANDOM = 6  # mkstemp's XXXXXX
GRND_NONBLOCK = 1
_RANDOM_VALUE = 8  # gen_tempname's random_value, on both ABIs
MAX_DETOURS = 16  # getrandom calls let through in a row: more is not mkstemp
_RANDOM = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


def layout_name(leader: bytes, follower: bytes) -> bool:
    """Whether two paths differ only as mkstemp's names do: same directory, same length,
    and the differences inside one run of letters and digits, at least MIN_RANDOM long,
    of the last component (the template's X's), all else (its prefix and suffix) equal."""
    if len(leader) != len(follower) or leader == follower:
        return False
    directory = leader.rfind(b"/") + 1
    if follower[:directory] != leader[:directory] or b"/" in follower[directory:]:
        return False
    differing = [i for i in range(directory, len(leader)) if leader[i] != follower[i]]
    first, last = differing[0], differing[-1]
    start, end = first, last + 1  # grow to the whole run of random-looking characters
    while start > directory and leader[start - 1] in _RANDOM and follower[start - 1] in _RANDOM:
        start -= 1
    while end < len(leader) and leader[end] in _RANDOM and follower[end] in _RANDOM:
        end += 1
    return (end - start >= MIN_RANDOM
            and all(leader[i] in _RANDOM and follower[i] in _RANDOM for i in range(first, last + 1)))


class TempNames:
    def __init__(self, variants: list[Variant]) -> None:
        self.variants = variants
        self.names: list[dict[bytes, bytes]] = [{} for _ in variants]  # per follower: F -> L
        self.detoured = 0  # getrandom calls let through since the last agreed call

    def detours(self, calls: list[Call]) -> list[Variant]:
        """The variants to let run their getrandom alone at this rendezvous (see above)."""
        creating = [self._creates_exclusively(call) for call in calls]
        drawing = [self._draws_a_random_value(call) for call in calls]
        if (not any(creating) or not any(drawing) or self.detoured >= MAX_DETOURS
                or not all(c or d for c, d in zip(creating, drawing, strict=True))):
            self.detoured = 0
            return []
        self.detoured += 1
        return [variant for variant, d in zip(self.variants, drawing, strict=True) if d]

    @staticmethod
    def _draws_a_random_value(call: Call) -> bool:
        spec = call.spec
        return (spec is not None and spec.draws_random_at is not None
                and call.args[spec.draws_random_at[0]] == _RANDOM_VALUE
                and bool(call.args[spec.draws_random_at[1]] & GRND_NONBLOCK))

    def reconcile(self, calls: list[Call]) -> None:
        """Before the comparison of an agreed rendezvous: followers' paths that are names
        they made (earlier exclusive creates) are the leader's; at a new exclusive create
        of a layout-made name, the follower takes the leader's name."""
        leader = calls[0]
        for variant, call in zip(self.variants[1:], calls[1:], strict=True):
            if call.spec is None or call.name != leader.name:
                continue
            names = self.names[variant.index]
            for position, kind in enumerate(call.kinds):
                if not isinstance(kind, CString):
                    continue
                value = call.values[position]
                if not isinstance(value, bytes):
                    continue
                wanted = leader.values[position]
                if value == wanted or not isinstance(wanted, bytes):
                    continue
                if names.get(value) == wanted:  # a copy of a name it made, kept from before
                    self._rename(variant, call, position, wanted)
                elif (self._creates_exclusively(call) and self._creates_exclusively(leader)
                      and layout_name(wanted, value)):
                    names[value] = wanted
                    self._rename(variant, call, position, wanted)

    @staticmethod
    def _creates_exclusively(call: Call) -> bool:
        """An O_CREAT|O_EXCL open, or a call that always creates a new name (mkdir)."""
        spec = call.spec
        if spec is None:
            return False
        return spec.creates_new_at is not None or (
            spec.opens_at is not None and call.args[spec.opens_at[2]] & EXCLUSIVE_CREATE == EXCLUSIVE_CREATE)

    @staticmethod
    def _rename(variant: Variant, call: Call, position: int, name: bytes) -> None:
        """The follower's path argument becomes `name` (same length), in its memory too."""
        variant.memory.write(call.args[position], name)
        values = list(call.values)
        values[position] = name
        call.values = tuple(values)
