"""What a placement reads from the cache in one call: the inputs of a decision for one pod,
and the claims (with their pods) behind each device held twice."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from api.resource_v1 import ResourceClaim
from controller.cache.ledger import ClaimLedger
from controller.cache.pods import PodIndex
from controller.scheduling import NodeFacts, NodeFilter, NodeUsage, PodInfo
from dra_driver.allocator import Snapshot
from dra_driver.allocator.conflicts import DeviceConflict, device_conflicts

__all__ = ["ClaimUse", "HeldTwice", "PlacementView", "held_twice"]


@dataclass(frozen=True)
class PlacementView:
    """What a decision for one pod reads. Valid only while the cache's lock is held
    (:meth:`~controller.cache.ClusterCache.placement_view`): the mappings and the
    snapshot are live."""

    #: The pod's claims in the pod's order, as decisions see them (None: not created yet).
    claims: Sequence[ResourceClaim | None]
    nodes: Mapping[str, NodeFacts]
    #: Per node: requests of the bound and the nominated pods.
    usage: Mapping[str, NodeUsage]
    #: The node the pod itself is nominated for (its requests count there already).
    nominated: str | None
    #: The allocator's snapshot, built on first use (a build may raise InvalidInputError).
    snapshot: Callable[[], Snapshot]
    #: ``filter_nodes(pod, nodes, usage)`` from verdicts kept per pod shape
    #: (:class:`~controller.cache.node_filters.NodeFilters`); None: compute it whole.
    node_filter: Callable[[PodInfo], NodeFilter] | None = None


@dataclass(frozen=True)
class ClaimUse:
    """One claim and the pods that use it, as the cache held them together."""

    key: str
    #: As decisions see it; None when it is gone.
    claim: ResourceClaim | None
    pods: tuple[PodInfo, ...]


@dataclass(frozen=True)
class HeldTwice:
    """A device of one claim that other claims hold too, with every claim involved."""

    conflict: DeviceConflict
    #: ``conflict.claim`` and each of ``conflict.others``, by key.
    claims: Mapping[str, ClaimUse]

    @property
    def keys(self) -> tuple[str, ...]:
        """The keys of every claim involved, sorted."""
        return tuple(sorted((self.conflict.claim, *self.conflict.others)))


def held_twice(
    snapshot: Snapshot, claims: Iterable[ResourceClaim], ledger: ClaimLedger, pods: PodIndex
) -> list[HeldTwice]:
    """Devices of ``claims`` that another claim holds too (by the allocator's in-use
    state), each with every claim involved and its pods (hold the cache's lock)."""
    found = []
    for claim in claims:
        for conflict in device_conflicts(snapshot, claim):
            uses = {}
            for key in (conflict.claim, *conflict.others):
                users = (pods.get(k) for k in pods.users(key))
                uses[key] = ClaimUse(
                    key, ledger.effective(key), tuple(p for p in users if p is not None)
                )
            found.append(HeldTwice(conflict, uses))
    return found
