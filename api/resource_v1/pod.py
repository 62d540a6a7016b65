"""The core/v1 Pod, as far as the offline tools read it: containers' resources (extended
resources served through DRA), the pod's ResourceClaims, its node and the extended-resource
claim status the scheduler records.

Modelled loosely on purpose: a real Pod has many fields (volumes, probes, security
contexts...) that play no part in allocation. Those are known by name
(:data:`api.resource_v1.codec` lists them as unmodelled) and kept without being read or
checked; a name the Pod API does not have is still an unknown field, as for every kind.
"""

from __future__ import annotations

from typing import Final

from api import limits
from api.resource_v1.base import K8sModel, QuantityField
from api.resource_v1.meta import K8sObject


class ResourceRequirements(K8sModel):
    """A container's ``resources``: quantities by resource name."""

    limits: dict[str, QuantityField] | None = None
    requests: dict[str, QuantityField] | None = None


class Container(K8sModel):
    """A container or init container; ``restartPolicy: Always`` on an init container
    makes it a sidecar (it keeps running next to the regular containers)."""

    name: str
    resources: ResourceRequirements | None = None
    restart_policy: str | None = None


class PodResourceClaim(K8sModel):
    """An entry of ``spec.resourceClaims``: a claim by name, or one made from a template."""

    name: str
    resource_claim_name: str | None = None
    resource_claim_template_name: str | None = None


class PodSpec(K8sModel):
    containers: list[Container]
    init_containers: list[Container] | None = None
    node_name: str | None = None
    resource_claims: list[PodResourceClaim] | None = None


class ContainerExtendedResourceRequest(K8sModel):
    """Which request of the extended-resource claim serves a container's resource."""

    container_name: str
    resource_name: str
    request_name: str


class PodExtendedResourceClaimStatus(K8sModel):
    """``status.extendedResourceClaimStatus``, written by the scheduler when it binds the pod."""

    request_mappings: list[ContainerExtendedResourceRequest]
    resource_claim_name: str


class PodStatus(K8sModel):
    extended_resource_claim_status: PodExtendedResourceClaimStatus | None = None


class Pod(K8sObject):
    api_version: str = limits.CORE_API_VERSION
    kind: str = limits.KIND_POD
    spec: PodSpec
    status: PodStatus | None = None


#: The real Pod API fields these models do not carry (core/v1 ``types.go`` at v0.37.2), per
#: model: kept as given, neither read nor walked, and not "unknown" to strict decoding.
POD_UNMODELLED_FIELDS: Final[dict[type[K8sModel], frozenset[str]]] = {
    PodSpec: frozenset(
        [
            "volumes",
            "ephemeralContainers",
            "restartPolicy",
            "terminationGracePeriodSeconds",
            "activeDeadlineSeconds",
            "dnsPolicy",
            "nodeSelector",
            "serviceAccountName",
            "serviceAccount",
            "automountServiceAccountToken",
            "hostNetwork",
            "hostPID",
            "hostIPC",
            "shareProcessNamespace",
            "securityContext",
            "imagePullSecrets",
            "hostname",
            "subdomain",
            "affinity",
            "schedulerName",
            "tolerations",
            "hostAliases",
            "priorityClassName",
            "priority",
            "dnsConfig",
            "readinessGates",
            "runtimeClassName",
            "enableServiceLinks",
            "preemptionPolicy",
            "overhead",
            "topologySpreadConstraints",
            "setHostnameAsFQDN",
            "os",
            "hostUsers",
            "schedulingGates",
            "resources",
            "hostnameOverride",
            "workloadRef",
            "schedulingGroup",
            "evictionResponders",
        ]
    ),
    Container: frozenset(
        [
            "image",
            "command",
            "args",
            "workingDir",
            "ports",
            "envFrom",
            "env",
            "resizePolicy",
            "restartPolicyRules",
            "volumeMounts",
            "volumeDevices",
            "livenessProbe",
            "readinessProbe",
            "startupProbe",
            "lifecycle",
            "terminationMessagePath",
            "terminationMessagePolicy",
            "imagePullPolicy",
            "securityContext",
            "stdin",
            "stdinOnce",
            "tty",
        ]
    ),
    ResourceRequirements: frozenset({"claims"}),
    PodStatus: frozenset(
        [
            "observedGeneration",
            "phase",
            "conditions",
            "message",
            "reason",
            "nominatedNodeName",
            "hostIP",
            "hostIPs",
            "podIP",
            "podIPs",
            "startTime",
            "initContainerStatuses",
            "containerStatuses",
            "qosClass",
            "ephemeralContainerStatuses",
            "resize",
            "resourceClaimStatuses",
            "allocatedResources",
            "resources",
            "nodeAllocatableResourceClaimStatuses",
            "volumeHealth",
        ]
    ),
}
