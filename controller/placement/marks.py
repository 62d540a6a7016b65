"""The marks the placement reads and writes on pods and claims: its scheduling gate, the
policy annotation, and the ``placed-for`` annotation naming the pod a claim was placed for."""

from __future__ import annotations

from dataclasses import dataclass

from api.resource_v1 import ResourceClaim

__all__ = ["Marks", "is_allocated", "is_reserved", "reserved_by_others"]


def is_allocated(claim: ResourceClaim) -> bool:
    return claim.status is not None and claim.status.allocation is not None


def is_reserved(claim: ResourceClaim) -> bool:
    """Whether a pod has reserved the claim, the pod it was placed for included."""
    return bool(claim.status is not None and claim.status.reserved_for)


def reserved_by_others(claim: ResourceClaim, marks: Marks) -> bool:
    """Whether a pod other than the one this controller placed the claim for has reserved it
    (it is in use then: never released by us). The controller writes its own pod's
    reservation with the allocation; while that pod is gated nothing can use the claim,
    so that reservation alone does not stop a release."""
    owner = marks.owner(claim)
    reserved = claim.status.reserved_for if claim.status is not None else None
    return any(ref.uid != owner for ref in reserved or [])


@dataclass(frozen=True, slots=True)
class Marks:
    """The driver's names for the placement's marks."""

    #: The scheduling gate that hands a pod to this controller.
    gate: str
    #: The pod or claim annotation that picks a policy.
    policy: str
    #: The claim annotation this controller writes with the UID of the pod it placed for.
    placed_for: str

    @classmethod
    def of(cls, driver_name: str) -> Marks:
        return cls(
            gate=f"{driver_name}/placement",
            policy=f"{driver_name}/policy",
            placed_for=f"{driver_name}/placed-for",
        )

    def owner(self, claim: ResourceClaim) -> str | None:
        """The UID of the pod this controller placed ``claim`` for (None: not ours)."""
        return (claim.metadata.annotations or {}).get(self.placed_for)

    def is_ours(self, claim: ResourceClaim) -> bool:
        """Whether this controller placed ``claim`` (for any pod)."""
        return self.placed_for in (claim.metadata.annotations or {})
