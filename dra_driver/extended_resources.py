"""Extended resources served by DRA: the claim the kube-scheduler makes for a Pod that asks
for ``nvidia.com/gpu: 2`` (or ``deviceclass.resource.kubernetes.io/<class>: 2``) in its
containers' resources, offline.

The rules are the scheduler's at Kubernetes 1.37.2 (``pkg/scheduler/framework/plugins/
dynamicresources/extendeddynamicresources.go``, with the helpers it calls):

- **Which names.** An extended resource (``nvidia.com/gpu``: not native, a qualified name)
  or an implicit ``deviceclass.resource.kubernetes.io/<class>`` (``IsDRAExtendedResourceName``);
  cpu, memory, huge pages and other ``kubernetes.io`` names are not DRA's.
- **Which class.** The class whose ``spec.extendedResourceName`` is the name, or the class
  named by the implicit name. When several classes give the same ``extendedResourceName``,
  the newest ``metadata.creationTimestamp`` wins, the lower name on a tie (the extended
  resource cache of ``k8s.io/dynamic-resource-allocation``, ``updateResourceName2class``);
  a class without a timestamp counts as the oldest. A name no class maps is left to a device
  plugin (``NodeResourcesFit``): a warning here, no claim.
- **How much.** A container asks for its ``requests`` (which default to its ``limits``).
  The pod needs a name at all when its effective request is non-zero: the sum over the
  regular containers and sidecars, or the largest init container's need if larger (an init
  container running next to the sidecars declared before it), as ``resourcehelper.PodRequests``.
- **Which nodes.** A node whose ``status.allocatable`` has the name non-zero is served by
  the device plugin there, not DRA (``filterExtendedResources``): the tools do not place the
  pod's claims on it.
- **The claim.** One per pod: ``generateName: <pod>-extended-resources-`` (the name is
  that base, cut to 58 characters, plus a five-character suffix; here a hash of the pod's
  namespace and name instead of a random one, so runs agree), annotation
  ``resource.kubernetes.io/extended-resource-claim: "true"``, the pod as controlling owner.
  One ``ExactCount`` request per long-lived container (regular or sidecar) and resource,
  named ``container-<i>-request-<j>``: ``i`` the container's index in init containers then
  containers, ``j`` the resource's index among the container's sorted request names. The
  init containers (not sidecars) reuse the requests of the sidecars after them and of the
  regular containers, and ask for the rest; only the largest of those rests becomes a
  request, which every init container's mapping then names (``createRequestsAndMappings``).
  Requests are sorted by name.
- **An existing claim.** A claim of the input with the annotation, controlled by the pod,
  is the pod's (``findExtendedResourceClaim``): none is made.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from api import limits
from api.quantity import Quantity
from api.resource_v1 import (
    Container,
    ContainerExtendedResourceRequest,
    DeviceClaim,
    DeviceClass,
    DeviceRequest,
    ExactDeviceRequest,
    Node,
    ObjectMeta,
    OwnerReference,
    Pod,
    ResourceClaim,
    ResourceClaimSpec,
    describe,
    parse_quantity,
)
from api.validation import is_dra_extended_resource_name, is_sidecar

#: What the API server's name generator appends to ``generateName``, and from what.
_SUFFIX_LENGTH: Final = 5
_SUFFIX_ALPHABET: Final = "bcdfghjklmnpqrstvwxz2456789"
#: Longest ``generateName`` base kept: 63 characters less the suffix.
_MAX_BASE_LENGTH: Final = 63 - _SUFFIX_LENGTH


@dataclass
class ExtendedResourceClaims:
    """What the pods of an input add: the claims the scheduler would make, the nodes a
    device plugin serves instead (node to why), and warnings (per pod, for a person)."""

    claims: list[ResourceClaim] = field(default_factory=list)
    #: Per claim (``claim ns/name``), which request serves which container's resource
    #: (what the scheduler writes to the pod's ``status.extendedResourceClaimStatus``).
    mappings: dict[str, list[ContainerExtendedResourceRequest]] = field(default_factory=dict)
    #: Per claim, the pod it was made for (``pod ns/name``).
    owners: dict[str, str] = field(default_factory=dict)
    excluded_nodes: dict[str, str] = field(default_factory=dict)
    warnings: list[tuple[str, str]] = field(default_factory=list)


def _created(device_class: DeviceClass) -> float:
    """Seconds since the epoch; a class without a readable timestamp counts as the oldest."""
    try:
        return datetime.fromisoformat(device_class.metadata.creation_timestamp or "").timestamp()
    except ValueError:
        return float("-inf")


def resolve_classes(
    classes: Sequence[DeviceClass],
) -> tuple[dict[str, DeviceClass], dict[str, str]]:
    """Extended resource name to the class serving it, and a note per name that several
    classes give (which one wins and why)."""
    mapping: dict[str, DeviceClass] = {}
    claimants: dict[str, list[DeviceClass]] = {}
    for device_class in classes:
        name = device_class.metadata.name or ""
        mapping[limits.IMPLICIT_EXTENDED_RESOURCE_PREFIX + name] = device_class
        if device_class.spec.extended_resource_name:
            claimants.setdefault(device_class.spec.extended_resource_name, []).append(device_class)
    notes: dict[str, str] = {}
    for resource, candidates in claimants.items():
        chosen = min(candidates, key=lambda c: (-_created(c), c.metadata.name or ""))
        mapping[resource] = chosen
        if len(candidates) > 1:
            names = ", ".join(sorted(c.metadata.name or "" for c in candidates))
            notes[resource] = (
                f"classes {names} all map {resource}: the scheduler uses the newest "
                f"(metadata.creationTimestamp; the lower name on a tie), {chosen.metadata.name}"
            )
    return mapping, notes


def container_requests(container: Container) -> dict[str, Quantity]:
    """The container's requests as the API server stores them: limits fill in the
    requests that are not set."""
    resources = container.resources
    if resources is None:
        return {}
    requests = dict(resources.limits or {})
    requests.update(resources.requests or {})
    return requests


def _count(container: Container, resource: str) -> int:
    quantity = container_requests(container).get(resource)
    return int(quantity.value) if quantity is not None else 0


def pod_request(pod: Pod, resource: str) -> int:
    """The pod's effective request of ``resource`` (``resourcehelper.PodRequests``)."""
    total = sum(_count(c, resource) for c in pod.spec.containers)
    sidecars = 0
    init_peak = 0
    for container in pod.spec.init_containers or []:
        if is_sidecar(container):
            sidecars += _count(container, resource)
            total += _count(container, resource)
            init_peak = max(init_peak, sidecars)
        else:
            init_peak = max(init_peak, _count(container, resource) + sidecars)
    return max(total, init_peak)


def _devices(request: DeviceRequest) -> int:
    return (request.exactly.count or 0) if request.exactly is not None else 0


def _mapping(container: Container, resource: str, request: str) -> ContainerExtendedResourceRequest:
    return ContainerExtendedResourceRequest(
        container_name=container.name, resource_name=resource, request_name=request
    )


def _request_for(
    index: int,
    container: Container,
    resource: str,
    class_name: str,
    reusable: Sequence[DeviceRequest | None],
) -> tuple[DeviceRequest | None, list[ContainerExtendedResourceRequest]]:
    """One container's request for ``resource`` (None when it needs none of its own) and
    its mappings (``createResourceRequestAndMappings``)."""
    requests = container_requests(container)
    wanted = _count(container, resource)
    if wanted == 0:
        return None, []
    mappings: list[ContainerExtendedResourceRequest] = []
    covered = 0
    for other in reusable:
        if other is None:
            continue
        covered += _devices(other)
        mappings.append(_mapping(container, resource, other.name))
        if covered >= wanted:
            return None, mappings
    name = f"container-{index}-request-{sorted(requests).index(resource)}"
    request = DeviceRequest(
        name=name,
        exactly=ExactDeviceRequest(
            device_class_name=class_name,
            allocation_mode=limits.ALLOCATION_MODE_EXACT_COUNT,
            count=wanted - covered,
        ),
    )
    mappings.append(_mapping(container, resource, name))
    return request, mappings


def device_requests(
    pod: Pod, resources: dict[str, DeviceClass]
) -> tuple[list[DeviceRequest], list[ContainerExtendedResourceRequest]]:
    """The claim's requests for ``resources`` (name to class) and the container mappings
    (``createRequestsAndMappings``)."""
    init = pod.spec.init_containers or []
    containers = [*init, *pod.spec.containers]
    long_lived = [i for i, c in enumerate(containers) if i >= len(init) or is_sidecar(c)]
    short_lived = [i for i in range(len(init)) if i not in long_lived]
    requests: list[DeviceRequest] = []
    mappings: list[ContainerExtendedResourceRequest] = []
    for resource in sorted(resources):
        class_name = resources[resource].metadata.name or ""
        own: list[DeviceRequest | None] = [None] * len(containers)
        long_mappings: list[ContainerExtendedResourceRequest] = []
        for i in long_lived:
            own[i], found = _request_for(i, containers[i], resource, class_name, [])
            long_mappings += found
        peak: DeviceRequest | None = None
        short_names: set[str] = set()
        short_mappings: list[ContainerExtendedResourceRequest] = []
        for i in short_lived:
            request, found = _request_for(i, containers[i], resource, class_name, own[i:])
            short_mappings += found
            if request is not None:
                short_names.add(request.name)
                if peak is None or _devices(peak) < _devices(request):
                    peak = request
        if peak is not None:
            requests.append(peak)
            short_mappings = [
                m.model_copy(update={"request_name": peak.name})
                if m.request_name in short_names
                else m
                for m in short_mappings
            ]
        requests += [r for r in own if r is not None]
        mappings += long_mappings + short_mappings
    requests.sort(key=lambda r: r.name)
    return requests, mappings


def claim_name(pod: Pod) -> str:
    """``<pod>-extended-resources-`` (cut as the name generator cuts it) and a suffix of
    the generator's alphabet, derived from the pod's namespace and name."""
    base = f"{pod.metadata.name}-extended-resources-"[:_MAX_BASE_LENGTH]
    digest = int.from_bytes(
        hashlib.sha256(f"{pod.metadata.namespace or ''}/{pod.metadata.name}".encode()).digest()
    )
    suffix = ""
    for _ in range(_SUFFIX_LENGTH):
        digest, index = divmod(digest, len(_SUFFIX_ALPHABET))
        suffix += _SUFFIX_ALPHABET[index]
    return base + suffix


def build_claim(pod: Pod, requests: list[DeviceRequest]) -> ResourceClaim:
    """The pod's pending extended-resource claim, as the scheduler creates it."""
    return ResourceClaim(
        metadata=ObjectMeta(
            name=claim_name(pod),
            generate_name=f"{pod.metadata.name}-extended-resources-",
            namespace=pod.metadata.namespace,
            annotations={limits.EXTENDED_RESOURCE_CLAIM_ANNOTATION: "true"},
            owner_references=[
                OwnerReference(
                    api_version=limits.CORE_API_VERSION,
                    kind=limits.KIND_POD,
                    name=pod.metadata.name,
                    uid=pod.metadata.uid,
                    controller=True,
                )
            ],
        ),
        spec=ResourceClaimSpec(devices=DeviceClaim(requests=requests)),
    )


def is_pods_claim(claim: ResourceClaim, pod: Pod) -> bool:
    """The claim is the pod's extended-resource claim: annotated, the pod its controller."""
    annotations = claim.metadata.annotations or {}
    if annotations.get(limits.EXTENDED_RESOURCE_CLAIM_ANNOTATION) != "true":
        return False
    if claim.metadata.namespace != pod.metadata.namespace:
        return False
    return any(
        ref.controller
        and ref.name == pod.metadata.name
        and (ref.uid is None or pod.metadata.uid is None or ref.uid == pod.metadata.uid)
        for ref in claim.metadata.owner_references or []
    )


def device_plugin_nodes(resources: Sequence[str], nodes: Sequence[Node]) -> dict[str, str]:
    """Nodes whose ``status.allocatable`` has one of ``resources`` non-zero, with why."""
    excluded: dict[str, str] = {}
    for node in nodes:
        allocatable = (node.status.allocatable if node.status else None) or {}
        for resource in resources:
            text = allocatable.get(resource)
            if text is not None and parse_quantity(text).sign() > 0:
                excluded[node.metadata.name or ""] = (
                    f"a device plugin serves {resource} on this node (status.allocatable "
                    f"{resource}: {text}), so the scheduler does not use DRA for it here"
                )
                break
    return excluded


def extended_resource_claims(
    pods: Sequence[Pod],
    classes: Sequence[DeviceClass],
    claims: Sequence[ResourceClaim],
    nodes: Sequence[Node],
) -> ExtendedResourceClaims:
    """The claims the scheduler would make for ``pods`` (given the input's classes, claims
    and nodes), the nodes it would leave to a device plugin, and what a person should know:
    names no class maps, pods the scheduler does not see, claims a pod names that are not
    in the input."""
    resolved, notes = resolve_classes(classes)
    found = ExtendedResourceClaims()
    names = {(c.metadata.namespace, c.metadata.name) for c in claims}
    for pod in pods:
        label = describe(pod)
        for entry in pod.spec.resource_claims or []:
            if entry.resource_claim_template_name is not None:
                found.warnings.append(
                    (
                        label,
                        f"claim {entry.name!r} comes from template "
                        f"{entry.resource_claim_template_name}, which the tools do not "
                        "instantiate: add the claim it makes to allocate it with the pod",
                    )
                )
            elif (pod.metadata.namespace, entry.resource_claim_name) not in names:
                found.warnings.append(
                    (
                        label,
                        f"claim {entry.resource_claim_name} (spec.resourceClaims "
                        f"{entry.name!r}) is not in the input: allocated without it",
                    )
                )
        wanted = _dra_resources(pod, resolved, found)
        if not wanted:
            continue
        if pod.spec.node_name is not None:
            found.warnings.append(
                (
                    label,
                    f"spec.nodeName is set, so the pod bypasses the scheduler, which alone "
                    f"makes the claim for {', '.join(sorted(wanted))}: no claim made",
                )
            )
            continue
        found.excluded_nodes.update(device_plugin_nodes(sorted(wanted), nodes))
        if any(is_pods_claim(claim, pod) for claim in claims):
            continue
        requests, mappings = device_requests(pod, wanted)
        claim = build_claim(pod, requests)
        found.claims.append(claim)
        found.mappings[describe(claim)] = mappings
        found.owners[describe(claim)] = label
        found.warnings.extend((label, notes[name]) for name in sorted(wanted) if name in notes)
    return found


def _dra_resources(
    pod: Pod, resolved: dict[str, DeviceClass], found: ExtendedResourceClaims
) -> dict[str, DeviceClass]:
    """The pod's non-zero DRA resource names that a class maps, to that class; a warning
    for each one no class maps."""
    containers = [*(pod.spec.init_containers or []), *pod.spec.containers]
    names = sorted({n for c in containers for n in container_requests(c)})
    wanted: dict[str, DeviceClass] = {}
    for name in names:
        if not is_dra_extended_resource_name(name) or pod_request(pod, name) == 0:
            continue
        if name in resolved:
            wanted[name] = resolved[name]
        else:
            found.warnings.append(
                (
                    describe(pod),
                    f"no DeviceClass maps {name} (spec.extendedResourceName, or the implicit "
                    f"{limits.IMPLICIT_EXTENDED_RESOURCE_PREFIX}<class>): the scheduler leaves "
                    "it to a device plugin; the tools do not allocate it",
                )
            )
    return wanted
