"""The resources the project's one API client reaches, and where the official client keeps
each one's generated methods and models."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["RESOURCES", "Binding", "Resource"]

Resource = Literal[
    "pods",
    "nodes",
    "events",
    "configmaps",
    "leases",
    "resourceslices",
    "deviceclasses",
    "resourceclaims",
    "devicetaintrules",
    "podgroups",
    "resourcepoolstatusrequests",
]


@dataclass(frozen=True, slots=True)
class Binding:
    """How one resource maps onto the official client's generated methods."""

    group: Literal["core", "resource", "resource_alpha", "coordination", "scheduling"]
    singular: str  # snake_case, as in ``read_namespaced_<singular>``
    namespaced: bool
    model: str  # the client's model class for request bodies


RESOURCES: Final[Mapping[Resource, Binding]] = {
    "pods": Binding("core", "pod", True, "V1Pod"),
    "nodes": Binding("core", "node", False, "V1Node"),
    "events": Binding("core", "event", True, "CoreV1Event"),
    "configmaps": Binding("core", "config_map", True, "V1ConfigMap"),
    "leases": Binding("coordination", "lease", True, "V1Lease"),
    "resourceslices": Binding("resource", "resource_slice", False, "V1ResourceSlice"),
    "deviceclasses": Binding("resource", "device_class", False, "V1DeviceClass"),
    "resourceclaims": Binding("resource", "resource_claim", True, "ResourceV1ResourceClaim"),
    "devicetaintrules": Binding("resource", "device_taint_rule", False, "V1DeviceTaintRule"),
    # scheduling.k8s.io/v1beta1: served only with the GenericWorkload gate and the version
    # turned on; a 404 then says the cluster has no pod groups.
    "podgroups": Binding("scheduling", "pod_group", True, "V1beta1PodGroup"),
    # resource.k8s.io/v1alpha3: served only with the DRAResourcePoolStatus gate and the
    # version turned on; a 404 then says the cluster has no pool status API.
    "resourcepoolstatusrequests": Binding(
        "resource_alpha", "resource_pool_status_request", False, "V1alpha3ResourcePoolStatusRequest"
    ),
}
