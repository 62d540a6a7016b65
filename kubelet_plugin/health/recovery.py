"""When a tainted GPU's taints may go: :class:`RecoveryGate`, asked once per GPU and poll.

With a :class:`~dra_driver.discovery.model.RecoveryProbe` whose GPU reports NVML's
recovery action (field 230), the taints go only when the quiet window
(``--health-recovery-seconds``) passed **and** the action reads NONE **and** the GPU
validates (NVML answers, memory and ECC sane): the hardware confirms. An action other
than NONE keeps them and raises their effect to what the action demands
(:func:`~kubelet_plugin.health.classification.action_outcome`); a reboot action keeps
them until the boot ID changes (``awaitingReboot`` in ``taints.json``, dropped by the
restore rules after a reboot). DRAIN_P2P also asks the monitor to fence the GPU's NVLink
peers (:attr:`Verdict.drain_p2p`, :mod:`~kubelet_plugin.health.peers`); a peer's fence is
no taint of its own recovery (:data:`~kubelet_plugin.health.gpu_health.KEPT_AT_LIFT`).

Where the field is missing (older driver: NVML_ERROR_NOT_SUPPORTED) the quiet window
alone decides, as before, said once per GPU in a log line and in the recovery metric's
``field="not-supported"`` label; a fault that needs a reboot (:data:`XID_OUTCOMES`)
then waits for the reboot. Informational taints (effect None) block nothing: the quiet
window alone lifts them. Without a probe at all, the quiet window decides.
A lost GPU's taints and the unreadable file's stand-in never lift here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from api import limits
from api.taint_state import TaintCause
from dra_driver.discovery.model import RecoveryAction, RecoveryProbe
from kubelet_plugin.health.classification import (
    REBOOT_ACTIONS,
    Outcome,
    action_outcome,
    effect_of,
    xid_outcome,
)
from kubelet_plugin.health.gpu_health import KEPT_AT_LIFT, GpuHealth
from kubelet_plugin.health.taints import UNHEALTHY_EFFECTS

__all__ = ["Lifted", "RecoveryGate", "RecoveryMethod"]

log = logging.getLogger(__name__)

RecoveryMethod = Literal["recovery-action", "quiet-window"]
FieldSupport = Literal["supported", "not-supported", "no-probe"]


@dataclass(frozen=True, slots=True)
class Lifted:
    """Taints a GPU lost, and on what grounds (the recovery metric's labels)."""

    keys: tuple[str, ...]
    method: RecoveryMethod
    field: FieldSupport
    held_s: float
    """From the oldest taint's ``timeAdded`` to the lifting."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """One poll's answer: taints lifted (or None), and whether the GPU's state changed
    otherwise (effects raised, now waiting for a reboot): then save and publish;
    ``drain_p2p``: NVML asks for DRAIN_P2P, so the GPU's NVLink peers are to be fenced."""

    lifted: Lifted | None = None
    changed: bool = False
    drain_p2p: bool = False


class RecoveryGate:
    """Polls the probe for the GPUs with taints (module docstring); one per monitor."""

    def __init__(
        self,
        probe: RecoveryProbe | None,
        window: timedelta,
        ignored_xids: frozenset[int],
        xid_effect: str | None,
    ) -> None:
        self._probe = probe
        self._window = window
        self._ignored = ignored_xids
        self._xid_effect = xid_effect
        self._said: dict[str, str] = {}  # GPU name -> the last reading logged

    def _outcome(self, cause: TaintCause) -> Outcome | None:
        if cause.kind == "xid" and cause.xid is not None and self._xid_effect is not None:
            return xid_outcome(cause.xid, ignored=self._ignored, policy_effect=self._xid_effect)
        return None

    def _say(self, name: str, reading: str, level: int, message: str, *args: object) -> None:
        """Log ``message`` once per change of ``reading`` for the GPU."""
        if self._said.get(name) != reading:
            self._said[name] = reading
            log.log(level, message, *args)

    def check(self, name: str, state: GpuHealth, now: datetime) -> Verdict:
        """Whether ``state``'s taints may go now; lifts them (``state`` changes, logged)
        when so. Never raises."""
        quiet_since = now - self._window
        verdict = self._check(name, state, quiet_since)
        lifted = verdict.lifted
        if lifted is not None:
            why = (
                "recovery action NONE and the GPU validates"
                if lifted.method == "recovery-action"
                else f"no health event for {self._window}"
            )
            if lifted.field == "not-supported":
                why += "; the driver reports no recovery action"
            log.info("%s: %s: taints %s removed", name, why, ", ".join(lifted.keys))
        return verdict

    def _check(self, name: str, state: GpuHealth, quiet_since: datetime) -> Verdict:
        causes = [c for c in state.causes.values() if c.kind not in KEPT_AT_LIFT]
        if not causes or state.lost or state.awaiting_reboot:
            return Verdict()
        if self._probe is None:
            return self._quiet(name, state, quiet_since, "no-probe")
        action = self._probe.recovery_action(state.uuid)
        if action is not None and action != RecoveryAction.NONE:
            return self._wait_for(name, state, action)
        if not any(t.effect in UNHEALTHY_EFFECTS for t in state.own().values()):
            # Informational: blocks nothing, so the quiet window alone lifts it.
            return self._quiet(name, state, quiet_since, _support(action))
        if action is None:
            return self._unsupported(name, state, quiet_since, causes)
        problem = self._probe.validate(state.uuid)
        if problem is not None:
            self._say(
                name,
                f"invalid:{problem}",
                logging.WARNING,
                "%s: recovery action NONE but the GPU does not validate (%s): taints kept",
                name,
                problem,
            )
            return Verdict()
        if not state.quiet_since(quiet_since):
            return Verdict()
        return self._lift(name, state, quiet_since, "recovery-action", "supported")

    def _quiet(
        self, name: str, state: GpuHealth, quiet_since: datetime, field: FieldSupport
    ) -> Verdict:
        if not state.quiet_since(quiet_since) or state.last_event is None:
            return Verdict()
        return self._lift(name, state, quiet_since, "quiet-window", field)

    def _lift(
        self,
        name: str,
        state: GpuHealth,
        quiet_since: datetime,
        method: RecoveryMethod,
        field: FieldSupport,
    ) -> Verdict:
        self._said.pop(name, None)
        oldest = min(str(t.time_added) for t in state.own().values())
        held = quiet_since + self._window - datetime.fromisoformat(oldest)
        return Verdict(Lifted(tuple(state.lift()), method, field, held.total_seconds()), True)

    def _unsupported(
        self, name: str, state: GpuHealth, quiet_since: datetime, causes: Iterable[TaintCause]
    ) -> Verdict:
        if any(self._outcome(c) == "needs-reboot" for c in causes):
            state.awaiting_reboot = True
            log.warning(
                "%s: the driver reports no recovery action (field not supported) and the "
                "fault needs a reboot: taints kept until the node reboots",
                name,
            )
            return Verdict(changed=True)
        self._say(
            name,
            "not-supported",
            logging.WARNING,
            "%s: the driver reports no GPU recovery action (NVML field 230 not "
            "supported): the quiet window decides recovery",
            name,
        )
        return self._quiet(name, state, quiet_since, "not-supported")

    def _wait_for(self, name: str, state: GpuHealth, action: RecoveryAction) -> Verdict:
        wanted = action_outcome(action)
        assert wanted is not None  # not NONE
        raised = state.strengthen(effect_of(wanted, limits.TAINT_EFFECT_NO_SCHEDULE))
        if action in REBOOT_ACTIONS:
            state.awaiting_reboot = True
            log.warning(
                "%s: recovery action %s: taints kept until the node reboots", name, action.name
            )
            return Verdict(changed=True)
        self._say(
            name,
            action.name,
            logging.WARNING,
            "%s: recovery action %s: taints kept until it reads NONE%s",
            name,
            action.name,
            f" (raised to {wanted})" if raised else "",
        )
        return Verdict(changed=bool(raised), drain_p2p=action == RecoveryAction.DRAIN_P2P)


def _support(action: RecoveryAction | None) -> FieldSupport:
    return "not-supported" if action is None else "supported"
