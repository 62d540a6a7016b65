"""The claims as the watch delivered them, and the allocations this controller is writing.

A claim we decided for is *assumed* until the watch delivers a version at
least as new as the one our write returned (the scheduler's assume cache).
"""

from __future__ import annotations

from dataclasses import dataclass

from api.resource_v1 import ResourceClaim, claim_key
from controller.cache.decoding import is_older, resource_version

__all__ = ["ClaimLedger", "has_allocation"]


@dataclass
class _Assumed:
    claim: ResourceClaim
    #: The resourceVersion our write returned; None while the write is in flight.
    written: int | None = None


def has_allocation(claim: ResourceClaim) -> bool:
    return claim.status is not None and claim.status.allocation is not None


class ClaimLedger:
    """Observed claims and assumed writes by claim key. Not locked: the cache's lock covers it."""

    def __init__(self) -> None:
        self._observed: dict[str, ResourceClaim] = {}
        self._assumed: dict[str, _Assumed] = {}

    # -- reads -----------------------------------------------------------------------------

    def effective(self, key: str) -> ResourceClaim | None:
        """The claim as decisions see it: the assumed version while one is pending."""
        assumed = self._assumed.get(key)
        return assumed.claim if assumed is not None else self._observed.get(key)

    def observed(self, key: str) -> ResourceClaim | None:
        """The claim as the watch last delivered it."""
        return self._observed.get(key)

    def keys(self) -> list[str]:
        """The keys of the observed claims."""
        return list(self._observed)

    def allocated(self) -> list[ResourceClaim]:
        """Every claim whose effective version carries an allocation."""
        found = []
        for key in self._observed.keys() | self._assumed.keys():
            claim = self.effective(key)
            if claim is not None and has_allocation(claim):
                found.append(claim)
        return found

    def counts(self) -> tuple[int, int]:
        """(observed claims, assumed writes)."""
        return len(self._observed), len(self._assumed)

    # -- our writes ------------------------------------------------------------------------

    def assume(self, claim: ResourceClaim) -> str:
        """Count ``claim`` as it is now; its write is in flight. Returns its key."""
        key = claim_key(claim)
        self._assumed[key] = _Assumed(claim)
        return key

    def confirm(self, claim: ResourceClaim) -> str:
        """Our write returned ``claim``: keep it until the watch has caught up. Returns its key."""
        key = claim_key(claim)
        written = resource_version(claim)
        observed = self._observed.get(key)
        seen = resource_version(observed) if observed is not None else None
        if written is not None and seen is not None and seen >= written:
            self._assumed.pop(key, None)
        else:
            self._assumed[key] = _Assumed(claim, written)
        return key

    def forget(self, key: str) -> bool:
        """Our write did not happen; True when something was assumed."""
        return self._assumed.pop(key, None) is not None

    # -- the watch -------------------------------------------------------------------------

    def is_stale(self, claim: ResourceClaim) -> bool:
        """Whether a newer version is held already (a re-read after a conflict brought it)."""
        old = self._observed.get(claim_key(claim))
        return old is not None and is_older(claim, old)

    def observe(self, claim: ResourceClaim) -> ResourceClaim | None:
        """Store what the watch delivered and drop an assumption it settles; returns the
        version held before."""
        key = claim_key(claim)
        old = self._observed.get(key)
        self._observed[key] = claim
        assumed = self._assumed.get(key)
        if assumed is not None:
            seen = resource_version(claim)
            if assumed.written is not None and (seen is None or seen >= assumed.written):
                del self._assumed[key]
            elif assumed.written is None and has_allocation(claim):
                # Someone else allocated it while our write is in flight: that write
                # will fail with a conflict; the server's version is the truth now.
                del self._assumed[key]
        return old

    def remove(self, key: str) -> ResourceClaim | None:
        """The claim is gone: drop it and any assumption. Returns what was observed."""
        self._assumed.pop(key, None)
        return self._observed.pop(key, None)
