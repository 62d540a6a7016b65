"""PodGroup (``scheduling.k8s.io/v1beta1``, Kubernetes 1.37, behind the ``GenericWorkload``
feature gate): the runtime instance of a group of pods that the scheduler treats as one.

Only what placement reads is modelled; other fields (``workloadRef``, ``disruptionMode``,
``priority``, ``resourceClaims``...) are kept as they come. Pods join a group through
``spec.schedulingGroup.podGroupName`` (same namespace). With the ``gang`` policy the
scheduler admits the group only when ``minCount`` of its pods can be scheduled together;
with ``basic`` each pod is scheduled on its own.
"""

from __future__ import annotations

from typing import Any, Final

from api.resource_v1.base import K8sModel
from api.resource_v1.meta import Condition, K8sObject

__all__ = [
    "POD_GROUP_API_VERSION",
    "GangSchedulingPolicy",
    "PodGroup",
    "PodGroupSchedulingPolicy",
    "PodGroupSpec",
    "PodGroupStatus",
]

POD_GROUP_API_VERSION: Final = "scheduling.k8s.io/v1beta1"


class GangSchedulingPolicy(K8sModel):
    #: Pods that must be schedulable together before any of them is admitted (>= 1).
    min_count: int


class PodGroupSchedulingPolicy(K8sModel):
    """Exactly one of ``basic`` and ``gang`` is set by the API server's validation."""

    basic: dict[str, Any] | None = None
    gang: GangSchedulingPolicy | None = None


class PodGroupSpec(K8sModel):
    scheduling_policy: PodGroupSchedulingPolicy


class PodGroupStatus(K8sModel):
    conditions: list[Condition] | None = None


class PodGroup(K8sObject):
    api_version: str = POD_GROUP_API_VERSION
    kind: str = "PodGroup"
    spec: PodGroupSpec
    status: PodGroupStatus | None = None

    @property
    def min_count(self) -> int | None:
        """The gang's ``minCount``; None for a group with the ``basic`` policy."""
        gang = self.spec.scheduling_policy.gang
        return gang.min_count if gang is not None else None
