"""Which outcome a health event has, and what NVML's recovery action asks for.

Four outcomes (:data:`Outcome`), each a taint effect and a way out:

============== =========== ===================================================
outcome        effect      lifted when
============== =========== ===================================================
informational  ``None``    the quiet window passed (it blocks nothing)
no-schedule    policy's    the recovery action reads NONE and the GPU
no-execute     NoExecute   validates; without the field, the quiet window
needs-reset    NoExecute   as no-execute: a reset makes the action read NONE
needs-reboot   NoExecute   the boot ID changed (or NVML confirms: NONE, valid)
============== =========== ===================================================

The XIDs classified here are only those whose meaning NVIDIA documents plainly
(:data:`XID_OUTCOMES`, with the reason each); every other XID takes the health
policy's ``xid`` effect (default NoSchedule). The table is in docs/operations.md.
The XIDs of ``--ignored-xids`` (application errors) are informational: the taint
is published with effect ``None``, as NVIDIA's DRA driver does, so people see
them, and nothing is blocked.

A recovery action other than NONE, read at any poll, makes the taint wait for it
(:func:`action_outcome`): a reset, or a reboot.
"""

from __future__ import annotations

from typing import Final, Literal

from api import limits
from dra_driver.discovery.model import RecoveryAction

__all__ = [
    "REBOOT_ACTIONS",
    "XID_OUTCOMES",
    "Outcome",
    "action_outcome",
    "effect_of",
    "xid_outcome",
]

Outcome = Literal["informational", "no-schedule", "no-execute", "needs-reset", "needs-reboot"]

#: XIDs whose outcome NVIDIA's documentation states plainly, and why (docs/operations.md).
XID_OUTCOMES: Final[dict[int, tuple[Outcome, str]]] = {
    48: ("needs-reset", "double-bit ECC error: memory contents lost, pages retire at reset"),
    63: ("needs-reset", "page retired / row remapping pending: takes effect at a reset"),
    64: ("needs-reset", "page retirement or row remapping failed"),
    79: ("needs-reboot", "GPU has fallen off the bus"),
}

#: Recovery actions only a reboot completes: the taint stays until the boot ID changes.
REBOOT_ACTIONS: Final = frozenset({RecoveryAction.NODE_REBOOT, RecoveryAction.SYSTEM_REBOOT})

_EFFECTS: Final[dict[Outcome, str]] = {
    "informational": limits.TAINT_EFFECT_NONE,
    "no-schedule": limits.TAINT_EFFECT_NO_SCHEDULE,
    "no-execute": limits.TAINT_EFFECT_NO_EXECUTE,
    "needs-reset": limits.TAINT_EFFECT_NO_EXECUTE,
    "needs-reboot": limits.TAINT_EFFECT_NO_EXECUTE,
}


def xid_outcome(xid: int, *, ignored: frozenset[int], policy_effect: str) -> Outcome:
    """The outcome of XID ``xid``: an ignored one is informational, a listed one its
    table entry, any other the policy's effect."""
    if xid in ignored:
        return "informational"
    listed = XID_OUTCOMES.get(xid)
    if listed is not None:
        return listed[0]
    if policy_effect == limits.TAINT_EFFECT_NO_EXECUTE:
        return "no-execute"
    if policy_effect == limits.TAINT_EFFECT_NONE:
        return "informational"
    return "no-schedule"


def effect_of(outcome: Outcome, policy_effect: str) -> str:
    """The taint effect of ``outcome``; no-schedule keeps the policy's own effect."""
    return policy_effect if outcome == "no-schedule" else _EFFECTS[outcome]


def action_outcome(action: RecoveryAction) -> Outcome | None:
    """What a recovery action read from NVML demands; None for NONE.

    Resets and drains want the GPU idle, so pods must leave (NoExecute);
    RECOVER_IMEX_DOMAIN is about the IMEX domain, not the GPU's memory, so the GPU
    is only kept from new pods (our reading; NVIDIA documents no effect for it).
    """
    if action == RecoveryAction.NONE:
        return None
    if action in REBOOT_ACTIONS:
        return "needs-reboot"
    if action == RecoveryAction.RECOVER_IMEX_DOMAIN:
        return "no-schedule"
    return "needs-reset"
