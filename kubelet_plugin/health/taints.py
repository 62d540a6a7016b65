"""The health policy: which health event becomes which device taint, with which effect.

Parses ``--health-policy`` and ``--ignored-xids`` (light: the settings import
it at every CLI start) and builds the taint an event raises; the
:mod:`~kubelet_plugin.health.monitor` keeps the taints.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final, get_args

from api import limits
from api.resource_v1 import DeviceTaint
from dra_driver.discovery.model import HealthEvent, HealthEventKind

__all__ = [
    "DEFAULT_HEALTH_POLICY",
    "DEFAULT_IGNORED_XIDS",
    "DEFAULT_RECOVERY_SECONDS",
    "EFFECT_STRENGTH",
    "HEALTH_EVENT_KINDS",
    "UNHEALTHY_EFFECTS",
    "parse_health_policy",
    "parse_xids",
    "rfc3339",
    "taint_for",
]

HEALTH_EVENT_KINDS: Final[tuple[str, ...]] = get_args(HealthEventKind)

#: NVIDIA's defaults: XID errors cordon the GPU, an uncorrectable ECC error or a
#: lost GPU also evicts what runs on it (its memory or the whole GPU is gone).
DEFAULT_HEALTH_POLICY: Final = "xid=NoSchedule,ecc-double-bit=NoExecute,gpu-lost=NoExecute"
#: XIDs an application causes (illegal memory access, a killed context, a page
#: fault...); NVIDIA's device plugin ignores them because the GPU is fine.
DEFAULT_IGNORED_XIDS: Final = frozenset({13, 31, 43, 45, 68, 109})
DEFAULT_RECOVERY_SECONDS: Final = 300.0

#: How strong each effect is: a taint is never weakened by a milder event.
EFFECT_STRENGTH: Final = {
    limits.TAINT_EFFECT_NONE: 0,
    limits.TAINT_EFFECT_NO_SCHEDULE: 1,
    limits.TAINT_EFFECT_NO_EXECUTE: 2,
}
#: Effects that make a device Unhealthy in the kubelet's health stream.
UNHEALTHY_EFFECTS: Final = frozenset(
    {limits.TAINT_EFFECT_NO_SCHEDULE, limits.TAINT_EFFECT_NO_EXECUTE}
)


def parse_health_policy(text: str) -> dict[HealthEventKind, str]:
    """``kind=Effect,...`` to a map; kinds left out raise no taint.

    Kinds: ``xid``, ``ecc-double-bit``, ``ecc-single-bit``, ``gpu-lost``.
    Effects: ``NoSchedule``, ``NoExecute``, ``None`` (the taint is published for
    people and tools, the scheduler ignores it). Raises ValueError naming the
    offending entry and the choices.
    """
    policy: dict[HealthEventKind, str] = {}
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        kind, eq, effect = (part.strip() for part in entry.partition("="))
        if not eq:
            raise ValueError(f"entry {entry!r} is not KIND=EFFECT, e.g. xid=NoSchedule")
        if kind not in HEALTH_EVENT_KINDS:
            raise ValueError(
                f"unknown event kind {kind!r} in {entry!r}: use {', '.join(HEALTH_EVENT_KINDS)}"
            )
        if effect not in limits.TAINT_EFFECTS:
            raise ValueError(
                f"unknown taint effect {effect!r} in {entry!r}: use "
                f"{', '.join(limits.TAINT_EFFECTS)}"
            )
        if kind in policy:
            raise ValueError(f"event kind {kind!r} appears twice")
        policy[kind] = effect  # type: ignore[index]  # checked against HEALTH_EVENT_KINDS
    return policy


def parse_xids(text: str) -> frozenset[int]:
    """``13,31,43`` to a set of positive XIDs; an empty text is the empty set."""
    xids: set[int] = set()
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        try:
            xid = int(entry)
        except ValueError:
            raise ValueError(f"{entry!r} is not an XID number; use e.g. 13,31,43") from None
        if xid <= 0:
            raise ValueError(f"XID {xid} must be a positive number")
        xids.add(xid)
    return frozenset(xids)


def taint_for(event: HealthEvent, effect: str, now: datetime, *, domain: str) -> DeviceTaint:
    """The taint ``event`` raises: key under ``domain`` (the driver name), value, effect, time.

    ``<domain>/xid`` with the XID number, ``<domain>/ecc`` with ``double-bit``
    or ``single-bit``, ``<domain>/gpu-lost`` without a value.
    """
    if event.kind == "xid":
        return DeviceTaint(
            key=f"{domain}/xid", value=str(event.xid), effect=effect, time_added=rfc3339(now)
        )
    if event.kind in ("ecc-double-bit", "ecc-single-bit"):
        return DeviceTaint(
            key=f"{domain}/ecc",
            value=event.kind.removeprefix("ecc-"),
            effect=effect,
            time_added=rfc3339(now),
        )
    return DeviceTaint(key=f"{domain}/gpu-lost", effect=effect, time_added=rfc3339(now))


def rfc3339(moment: datetime) -> str:
    """``moment`` as metav1.Time writes it: whole seconds, UTC, ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
