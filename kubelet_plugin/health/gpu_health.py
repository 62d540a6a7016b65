"""One GPU's taints as the health monitor keeps them: :class:`GpuHealth`.

Raising a taint (never weakened by a milder event), the quiet window, the wait for a
reboot, an admin's clear, and the entry saved in ``taints.json``
(:class:`~api.taint_state.GpuTaints`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from api.resource_v1 import DeviceTaint
from api.taint_state import (
    NVLINK_PEER_DRAIN,
    STATE_UNREADABLE,
    GpuTaints,
    PersistedTaint,
    TaintCause,
)
from dra_driver.discovery.model import Gpu
from kubelet_plugin.health.taints import EFFECT_STRENGTH, rfc3339

__all__ = ["KEPT_AT_LIFT", "GpuHealth"]

#: Cause kinds a GPU's own recovery does not lift: the unreadable file's stand-in (an
#: admin clears it) and a peer's drain fence (lifted with the draining GPU's taints).
KEPT_AT_LIFT = frozenset({STATE_UNREADABLE, NVLINK_PEER_DRAIN})


@dataclass
class GpuHealth:
    """The taints of one GPU and what their recovery waits for."""

    uuid: str
    taints: dict[str, DeviceTaint] = field(default_factory=dict)
    causes: dict[str, TaintCause] = field(default_factory=dict)
    last_event: datetime | None = None
    lost: bool = False
    awaiting_reboot: bool = False

    @classmethod
    def of(cls, gpu: Gpu, restored: Mapping[str, GpuTaints]) -> GpuHealth:
        """``gpu``'s entry: the one restored, or a healthy one."""
        entry = restored.get(gpu.device_name)
        if entry is None:
            return cls(gpu.uuid)
        return cls(
            uuid=entry.uuid,
            taints={
                t.key: DeviceTaint(
                    key=t.key, value=t.value, effect=t.effect, time_added=t.time_added
                )
                for t in entry.taints
            },
            causes={t.key: t.cause for t in entry.taints},
            last_event=datetime.fromisoformat(entry.last_event) if entry.last_event else None,
            lost=entry.lost,
            awaiting_reboot=bool(entry.awaiting_reboot),
        )

    def persisted(self) -> GpuTaints:
        return GpuTaints(
            uuid=self.uuid,
            last_event=rfc3339(self.last_event) if self.last_event else None,
            lost=self.lost,
            awaiting_reboot=True if self.awaiting_reboot else None,
            taints=tuple(
                PersistedTaint(
                    key=key,
                    value=taint.value,
                    effect=taint.effect,
                    time_added=str(taint.time_added),
                    cause=self.causes[key],
                )
                for key, taint in sorted(self.taints.items())
            ),
        )

    def raise_taint(self, taint: DeviceTaint, cause: TaintCause, now: datetime) -> bool:
        """Apply one event's taint; True when the taints changed (the window restarts anyway)."""
        self.last_event = now
        self.lost = self.lost or cause.kind == "gpu-lost"
        current = self.taints.get(taint.key)
        if current is not None and (
            (current.value, current.effect) == (taint.value, taint.effect)
            or EFFECT_STRENGTH[current.effect] > EFFECT_STRENGTH[taint.effect]
        ):
            return False  # same fault again, or a milder one
        self.taints[taint.key], self.causes[taint.key] = taint.model_copy(), cause
        return True

    def strengthen(self, effect: str) -> list[str]:
        """Raise each of the GPU's own taints (:meth:`own`) to at least ``effect``; the keys
        changed."""
        changed = []
        for key, taint in self.taints.items():
            if self.causes[key].kind in KEPT_AT_LIFT:
                continue
            if EFFECT_STRENGTH[taint.effect] < EFFECT_STRENGTH[effect]:
                self.taints[key] = taint.model_copy(update={"effect": effect})
                changed.append(key)
        return changed

    def quiet_since(self, moment: datetime) -> bool:
        """Whether the last event came at ``moment`` or before (no event: quiet)."""
        return self.last_event is None or self.last_event <= moment

    def own(self) -> dict[str, DeviceTaint]:
        """The taints this GPU's own events raised (not those :data:`KEPT_AT_LIFT`)."""
        return {k: t for k, t in self.taints.items() if self.causes[k].kind not in KEPT_AT_LIFT}

    def lift(self) -> list[str]:
        """Drop the taints events raised (those :data:`KEPT_AT_LIFT` stay); the keys
        dropped."""
        kept = {k for k, c in self.causes.items() if c.kind in KEPT_AT_LIFT}
        dropped = sorted(k for k in self.taints if k not in kept)
        self.taints = {k: t for k, t in self.taints.items() if k in kept}
        self.causes = {k: c for k, c in self.causes.items() if k in kept}
        self.last_event = None
        self.awaiting_reboot = False
        return dropped

    def clear(self) -> None:
        self.taints.clear()
        self.causes.clear()
        self.last_event, self.lost, self.awaiting_reboot = None, False, False
