"""Device taints as the allocator applies them: a device's own (published in its
ResourceSlice) plus those of the DeviceTaintRules that select it, and whether the
tolerations of a request let it have the device.

As the kube-scheduler does (``k8s.io/dynamic-resource-allocation`` v0.37.2):

- ``resourceslice/tracker`` (``applyPatches``) appends the taint of every rule that
  selects a device to that device's taints. A rule selects a device when it has a
  ``deviceSelector`` and every field set in it (``driver``, ``pool``, ``device``) equals
  the device's; an empty selector selects every device, a missing one none. The rule's
  status is not read.
- the structured allocator (``taintPreventsAllocation``) refuses a device with a
  ``NoSchedule`` or ``NoExecute`` taint that no toleration of the request tolerates
  (``resourceclaim.ToleratesTaint``). ``None`` and effects this version does not know
  never block.

A blocking taint keeps where it came from (:class:`AppliedTaint`), so that ``explain``
can name the rule that keeps a device from a claim.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from api import limits
from api.resource_v1 import DeviceTaint, DeviceTaintRule, DeviceTaintSelector, DeviceToleration

#: Taint effects that keep a device from being allocated unless tolerated.
BLOCKING_TAINT_EFFECTS: Final = frozenset(
    {limits.TAINT_EFFECT_NO_SCHEDULE, limits.TAINT_EFFECT_NO_EXECUTE}
)


@dataclass(frozen=True, slots=True)
class AppliedTaint:
    """A blocking taint of a device and where it came from."""

    taint: DeviceTaint
    #: The DeviceTaintRule that put it there; None for the slice's own taint.
    rule: str | None = None

    def describe(self) -> str:
        """``key=value:Effect``, and ``(DeviceTaintRule name)`` for a rule's taint."""
        value = f"={self.taint.value}" if self.taint.value else ""
        text = f"{self.taint.key}{value}:{self.taint.effect}"
        return f"{text} (DeviceTaintRule {self.rule})" if self.rule else text


class TaintRules:
    """The DeviceTaintRules that may block a device, in name order.

    Rules without a selector (they select nothing) and rules whose taint does not block
    are left out when built: neither changes what may be allocated.
    """

    __slots__ = ("_rules",)

    def __init__(self, rules: Iterable[DeviceTaintRule] = ()) -> None:
        kept = [
            (rule.metadata.name or "", rule.spec.device_selector, rule.spec.taint)
            for rule in rules
            if rule.spec.taint.effect in BLOCKING_TAINT_EFFECTS
        ]
        self._rules: tuple[tuple[str, DeviceTaintSelector, DeviceTaint], ...] = tuple(
            sorted(
                ((name, selector, taint) for name, selector, taint in kept if selector is not None),
                key=lambda rule: rule[0],
            )
        )

    def __bool__(self) -> bool:
        return bool(self._rules)

    def taints_of(self, driver: str, pool: str, device: str) -> list[AppliedTaint]:
        """The blocking taints the rules put on device ``driver/pool/device``."""
        return [
            AppliedTaint(taint, name)
            for name, selector, taint in self._rules
            if (selector.driver is None or selector.driver == driver)
            and (selector.pool is None or selector.pool == pool)
            and (selector.device is None or selector.device == device)
        ]


#: A snapshot without DeviceTaintRules.
NO_RULES: Final = TaintRules()


def blocking_taints(
    own: Sequence[DeviceTaint] | None, rules: TaintRules, driver: str, pool: str, device: str
) -> tuple[AppliedTaint, ...]:
    """The device's blocking taints: its own first (slice order), then the rules' (by name)."""
    found = [AppliedTaint(t) for t in own or () if t.effect in BLOCKING_TAINT_EFFECTS]
    if rules:
        found.extend(rules.taints_of(driver, pool, device))
    return tuple(found)


def tolerates(toleration: DeviceToleration, taint: DeviceTaint) -> bool:
    """Whether one toleration tolerates one taint (upstream ``ToleratesTaint``): an empty
    effect or key matches any; ``Exists`` matches any value, ``Equal`` (the default) the
    same value; any other operator nothing."""
    if toleration.effect and toleration.effect != taint.effect:
        return False
    if toleration.key and toleration.key != taint.key:
        return False
    operator = toleration.operator or limits.TOLERATION_OPERATOR_EQUAL
    if operator == limits.TOLERATION_OPERATOR_EXISTS:
        return True
    if operator == limits.TOLERATION_OPERATOR_EQUAL:
        return (toleration.value or "") == (taint.value or "")
    return False


def untolerated(
    taints: Sequence[AppliedTaint], tolerations: Sequence[DeviceToleration] | None
) -> AppliedTaint | None:
    """The first of ``taints`` that no toleration tolerates (None: the device may be had)."""
    for applied in taints:
        if not any(tolerates(t, applied.taint) for t in tolerations or ()):
            return applied
    return None
