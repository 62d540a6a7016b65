"""PodGroups (``scheduling.k8s.io/v1beta1``) and which pods belong to each.

A pod belongs to the group its ``spec.schedulingGroup.podGroupName`` names, in its own
namespace. Whether the cluster serves PodGroups at all is learnt from the watch: until
their first list arrives (or where the API is off) :attr:`GroupIndex.served` is False and
pods of a group are placed one by one, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass

from api.pod_group import PodGroup
from api.resource_v1 import ResourceClaim, object_key
from controller.scheduling import NodeFacts, NodeUsage, PodInfo
from dra_driver.allocator import Snapshot

__all__ = ["GroupIndex", "GroupView"]


class GroupIndex:
    """PodGroups by key and their member pods' keys. Not locked: the cache's lock covers it."""

    def __init__(self) -> None:
        self._groups: dict[str, PodGroup] = {}
        self._members: dict[str, set[str]] = {}
        self._group_of: dict[str, str] = {}
        #: Whether PodGroups are listed (the cluster serves them).
        self.served = False

    def get(self, key: str) -> PodGroup | None:
        return self._groups.get(key)

    def keys(self) -> list[str]:
        return list(self._groups)

    def __len__(self) -> int:
        return len(self._groups)

    def members(self, key: str) -> Set[str]:
        """Keys of the pods of group ``key`` (a live view: read it at once)."""
        return self._members.get(key, frozenset())

    def group_key(self, pod: PodInfo) -> str | None:
        return object_key(pod.namespace, pod.pod_group) if pod.pod_group else None

    def upsert(self, group: PodGroup) -> list[str]:
        """A PodGroup added or changed; the keys of its pods (to look at again)."""
        key = object_key(group.metadata.namespace, group.metadata.name)
        self._groups[key] = group
        return sorted(self.members(key))

    def delete(self, key: str) -> list[str]:
        self._groups.pop(key, None)
        return sorted(self.members(key))

    def track(self, pod: PodInfo) -> None:
        """A pod added or changed: keep its membership current."""
        group = self.group_key(pod)
        old = self._group_of.get(pod.key)
        if old == group:
            return
        if old is not None:
            self._forget(pod.key, old)
        if group is not None:
            self._group_of[pod.key] = group
            self._members.setdefault(group, set()).add(pod.key)

    def untrack(self, pod_key: str) -> None:
        old = self._group_of.get(pod_key)
        if old is not None:
            self._forget(pod_key, old)

    def _forget(self, pod_key: str, group: str) -> None:
        self._group_of.pop(pod_key, None)
        members = self._members.get(group)
        if members is not None:
            members.discard(pod_key)
            if not members:
                del self._members[group]


@dataclass(frozen=True)
class GroupView:
    """What a decision for one pod group reads (valid while the cache's lock is held)."""

    key: str
    #: None: not known (not created yet, or the cluster does not serve PodGroups).
    group: PodGroup | None
    served: bool
    #: The group's pods by key (sorted), each with its claims in the pod's order as
    #: decisions see them (None: not created yet); pods whose template claims are not
    #: created yet are in ``incomplete``.
    pods: Sequence[PodInfo]
    claims: Mapping[str, Sequence[ResourceClaim | None]]
    incomplete: Set[str]
    nodes: Mapping[str, NodeFacts]
    usage: Mapping[str, NodeUsage]
    nominated: Mapping[str, str | None]
    snapshot: Callable[[], Snapshot]
