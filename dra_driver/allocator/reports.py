"""What ``explain`` reports, per node, claim and request: the device counts by the first
check each device fails, who holds the devices in use, and which taint (a slice's, or a
DeviceTaintRule's, named) keeps each tainted device from the request.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from dra_driver.allocator.taints import AppliedTaint

#: Counters of a request report, in table order: (JSON key, table heading).
COLUMNS = (
    ("considered", "CONSIDERED"),
    ("classSelectorsFalse", "CLASS-SEL"),
    ("requestSelectorsFalse", "REQ-SEL"),
    ("selectorErrors", "SEL-ERR"),
    ("notOnNode", "OFF-NODE"),
    ("inUse", "IN-USE"),
    ("capacityInsufficient", "CAPACITY"),
    ("countersExhausted", "COUNTERS"),
    ("tainted", "TAINTED"),
    ("constraintUnmet", "CONSTRAINT"),
    ("eligible", "ELIGIBLE"),
)


@dataclass
class RequestReport:
    """Device counts for one request (or subrequest) on one node."""

    request: str
    device_class: str
    #: Devices needed; None for ``allocationMode: All``.
    needed: int | None
    counts: dict[str, int] = field(default_factory=lambda: {key: 0 for key, _ in COLUMNS})
    in_use_by: Counter[str] = field(default_factory=Counter)
    selector_error: str | None = None
    #: Matching devices an ``All`` request would need (selectors, node, capacity).
    matching: int = 0
    #: Each tainted device (counted in ``tainted``) and the first taint not tolerated.
    tainted_by: dict[str, AppliedTaint] = field(default_factory=dict)

    def add_tainted(self, device: str, taint: AppliedTaint) -> None:
        self.counts["tainted"] += 1
        self.tainted_by[device] = taint

    @property
    def eligible(self) -> int:
        return self.counts["eligible"]

    @property
    def shortfall(self) -> int:
        """Devices missing for this request alone."""
        if self.needed is None:
            if self.matching == 0:
                return 1
            return self.matching - self.eligible
        return max(self.needed - self.eligible, 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "request": self.request,
            "deviceClassName": self.device_class,
            "needed": "All" if self.needed is None else self.needed,
            **self.counts,
            "inUseBy": dict(sorted(self.in_use_by.items())),
            "selectorError": self.selector_error,
            "taintedDevices": [
                {
                    "device": device,
                    "key": applied.taint.key,
                    "value": applied.taint.value or "",
                    "effect": applied.taint.effect,
                    "rule": applied.rule,
                }
                for device, applied in self.tainted_by.items()
            ],
        }

    def taint_notes(self) -> list[str]:
        """One line per tainted device: ``<device> tainted <taint> [(DeviceTaintRule r)]``."""
        return [
            f"{device} tainted {applied.describe()}" for device, applied in self.tainted_by.items()
        ]

    def _taints(self) -> str:
        """The distinct taints that block, with how many devices each where more than one."""
        seen = Counter(applied.describe() for applied in self.tainted_by.values())
        return ", ".join(text + (f" x{n}" if n > 1 else "") for text, n in seen.items())

    def summary(self) -> str:
        """One line: what keeps the devices of this request from being eligible."""
        counts = self.counts
        parts = []
        for key, text in (
            ("classSelectorsFalse", f"not in class {self.device_class}"),
            ("requestSelectorsFalse", "not matching the request selectors"),
            ("selectorErrors", "selector errors"),
            ("notOnNode", "not available on the node"),
            ("capacityInsufficient", "not enough capacity"),
            ("countersExhausted", "counters exhausted"),
            ("tainted", f"tainted: {self._taints()}"),
            ("constraintUnmet", "lacking a constraint attribute"),
        ):
            if counts[key]:
                parts.append(f"{counts[key]} {text}")
        if counts["inUse"]:
            holders = ", ".join(
                f"{holder}" + (f" x{n}" if n > 1 else "")
                for holder, n in sorted(self.in_use_by.items())
            )
            parts.insert(0, f"{counts['inUse']} in use by {holders}")
        needed = "all matching" if self.needed is None else str(self.needed)
        detail = f" ({'; '.join(parts)})" if parts else ""
        return (
            f"request {self.request}: needs {needed}, {self.eligible} eligible of "
            f"{counts['considered']} devices{detail}"
        )


@dataclass
class ClaimReport:
    claim: str
    #: Alternatives of one request are listed one after another (``req/sub``).
    requests: list[RequestReport]
    #: Per request name, the alternatives' reports (one for a plain request).
    groups: list[list[RequestReport]]

    @property
    def shortfall(self) -> int:
        return sum(min(r.shortfall for r in group) for group in self.groups if group)


@dataclass
class NodeReport:
    node: str | None
    allocatable: bool
    error: str | None
    incomplete_pools: list[str]
    invalid_pools: dict[str, str]
    claims: list[ClaimReport]
    #: Why the node is no candidate at all (a device plugin serves the pod there), or None.
    excluded: str | None = None
    #: Which requests cannot be met together there, when a necessary condition of the
    #: search said so (:mod:`dra_driver.allocator.necessary`), or None.
    dead_end: str | None = None

    @property
    def shortfall(self) -> int:
        return 0 if self.allocatable else max(sum(c.shortfall for c in self.claims), 1)

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "allocatable": self.allocatable,
            "shortfall": self.shortfall,
            "error": self.error,
            "excluded": self.excluded,
            "together": self.dead_end,
            "incompletePools": self.incomplete_pools,
            "invalidPools": self.invalid_pools,
            "claims": [
                {"claim": c.claim, "requests": [r.to_json() for r in c.requests]}
                for c in self.claims
            ],
        }
