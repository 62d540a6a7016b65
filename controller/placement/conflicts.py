"""Judging a device held twice: whether our claim gives way (before the gate goes), and
whether a conflict found after the gate is ours to report. Pure, from what the cache held."""

from __future__ import annotations

from controller.cache import ClaimUse, HeldTwice
from controller.placement.marks import Marks, is_allocated, reserved_by_others

__all__ = ["awaits_confirm", "reportable_after_gate", "yields"]


def awaits_confirm(use: ClaimUse, marks: Marks) -> bool:
    """Whether the claim is ours, reserved by no other pod, for a pod that is still gated."""
    claim = use.claim
    if claim is None or reserved_by_others(claim, marks):
        return False
    owner = marks.owner(claim)
    return any(p.uid == owner and p.has_gate(marks.gate) for p in use.pods)


def yields(held: HeldTwice, marks: Marks) -> bool:
    """Whether our claim (``held.conflict.claim``) gives way to the others.

    Ours yields to a claim a pod has reserved, to a claim someone else (the
    scheduler) allocated, and to a claim of ours whose pod is no longer gated
    (released to the scheduler). Between two claims of ours whose pods both
    wait for the confirm -- which the assume-cache rules out, but a
    deterministic answer costs nothing -- the claim whose key sorts later yields.
    """
    conflict = held.conflict
    for key in conflict.others:
        use = held.claims[key]
        if use.claim is None or not is_allocated(use.claim):
            continue  # released or gone meanwhile
        if not awaits_confirm(use, marks) or conflict.claim > key:
            return True
    return False


def reportable_after_gate(held: HeldTwice, marks: Marks) -> bool:
    """Whether a conflict found after the gate is ours to report: one of its claims is
    this controller's, and none of ours waits for its confirm (it will yield then)."""
    ours = False
    for key in held.keys:
        use = held.claims[key]
        if use.claim is None or not is_allocated(use.claim):
            return False  # released or gone meanwhile: no conflict any more
        if marks.is_ours(use.claim):
            ours = True
            if awaits_confirm(use, marks):
                return False
    return ours
