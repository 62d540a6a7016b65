"""Pod validation, for the parts the offline tools read: container names and resources,
the pod's ResourceClaims and its node name; and the resource-name classes the scheduler
uses for extended resources.

The rules are the API server's (``pkg/apis/core/validation``: ``validateResourceRequirements``,
``ValidateContainerResourceName``, ``ValidateResourceQuantityValue``, at Kubernetes 1.37.2),
except one addition: a resource that DRA may serve (:func:`is_dra_extended_resource_name`)
must be a whole number, also under the implicit ``deviceclass.resource.kubernetes.io/``
names that the API server does not check; the scheduler asks for whole devices
(``AsInt64`` in ``extendeddynamicresources.go``) and leaves a fraction unserved.
"""

from __future__ import annotations

from typing import Final

from api import limits
from api.quantity import Quantity
from api.resource_v1 import Container, Pod, PodResourceClaim
from api.validation._common import Errors, Path, _duplicates, _error, _not_supported, _required
from api.validation.metadata import _check_metadata
from api.validation.names import _check_label, _check_subdomain, _k8s_qualified_name_problem

#: Resource names without a domain that a container may ask for (plus ``hugepages-<size>``).
_STANDARD_CONTAINER_RESOURCES: Final = frozenset({"cpu", "memory", "ephemeral-storage"})
_HUGE_PAGES_PREFIX: Final = "hugepages-"
#: A name containing this is native (``kubernetes.io/...``, ``*.kubernetes.io/...``).
_DEFAULT_NAMESPACE_PREFIX: Final = "kubernetes.io/"
#: The API server's container ``restartPolicy`` values (``Always`` on an init container: a
#: sidecar).
_CONTAINER_RESTART_POLICIES: Final = ("Always", "OnFailure", "Never")


def is_native_resource_name(name: str) -> bool:
    """No domain, or a ``kubernetes.io`` one (``IsNativeResource``)."""
    return "/" not in name or _DEFAULT_NAMESPACE_PREFIX in name


def is_extended_resource_name(name: str) -> bool:
    """A vendor's resource (``nvidia.com/gpu``): not native, and a qualified name once
    prefixed with ``requests.`` (``IsExtendedResourceName``)."""
    if is_native_resource_name(name) or name.startswith("requests."):
        return False
    return _k8s_qualified_name_problem("requests." + name) is None


def is_dra_extended_resource_name(name: str) -> bool:
    """A name DRA may serve: an extended resource, or an implicit
    ``deviceclass.resource.kubernetes.io/<class>`` (the scheduler's
    ``IsDRAExtendedResourceName``)."""
    return is_extended_resource_name(name) or name.startswith(
        limits.IMPLICIT_EXTENDED_RESOURCE_PREFIX
    )


def is_sidecar(container: Container) -> bool:
    """An init container that keeps running: ``restartPolicy: Always``."""
    return container.restart_policy == "Always"


def validate_pod(pod: Pod) -> Errors:
    """Errors the API server would report for the parts of this Pod the tools read."""
    errors: Errors = []
    _check_metadata(errors, pod.metadata, namespaced=True)
    spec = pod.spec
    if not spec.containers:
        _required(errors, ("spec", "containers"), "at least one container")
    groups = (("containers", spec.containers), ("initContainers", spec.init_containers or []))
    for group, containers in groups:
        for i, container in enumerate(containers):
            _check_container(errors, ("spec", group, i), container, init=group != "containers")
    names = [c.name for _, containers in groups for c in containers]
    for name in _duplicates(names):
        _error(errors, ("spec",), f'container name "{name}" is used twice: names must be unique')
    if spec.node_name is not None:
        _check_subdomain(errors, ("spec", "nodeName"), spec.node_name, "node name")
    claims = spec.resource_claims or []
    for i, claim in enumerate(claims):
        _check_pod_claim(errors, ("spec", "resourceClaims", i), claim)
    for name in _duplicates(c.name for c in claims):
        _error(errors, ("spec", "resourceClaims"), f'claim name "{name}" is used twice')
    return errors


def _check_container(errors: Errors, path: Path, container: Container, *, init: bool) -> None:
    _check_label(errors, (*path, "name"), container.name, "container name")
    policy = container.restart_policy
    if policy is not None and policy not in _CONTAINER_RESTART_POLICIES:
        _not_supported(errors, (*path, "restartPolicy"), policy, _CONTAINER_RESTART_POLICIES)
    resources = container.resources
    if resources is None:
        return
    given_limits = resources.limits or {}
    for kind, quantities in (("limits", given_limits), ("requests", resources.requests or {})):
        for name, quantity in quantities.items():
            _check_resource(errors, (*path, "resources", kind, name), name, quantity)
    for name, request in (resources.requests or {}).items():
        _check_request_against_limit(errors, (*path, "resources"), name, request, given_limits)


def _check_resource(errors: Errors, path: Path, name: str, quantity: Quantity) -> None:
    if "/" not in name:
        if name not in _STANDARD_CONTAINER_RESOURCES and not name.startswith(_HUGE_PAGES_PREFIX):
            _error(errors, path, f'"{name}" is not a standard resource for containers')
            return
    elif (problem := _k8s_qualified_name_problem(name)) is not None:
        _error(errors, path, f'invalid resource name "{name}": {problem}')
        return
    elif not is_native_resource_name(name) and not is_extended_resource_name(name):
        _error(errors, path, f'"{name}" does not follow the extended resource name standard')
        return
    if quantity.sign() < 0:
        _error(errors, path, f"{quantity} must be greater than or equal to 0")
    elif is_dra_extended_resource_name(name) and quantity.value.denominator != 1:
        _error(errors, path, f"{quantity} must be a whole number of devices")


def _check_request_against_limit(
    errors: Errors, path: Path, name: str, request: Quantity, given_limits: dict[str, Quantity]
) -> None:
    """Requests of an extended resource (or huge pages) equal its limit, which must be set;
    other requests are at most their limit."""
    limit = given_limits.get(name)
    overcommit = is_native_resource_name(name) and not name.startswith(_HUGE_PAGES_PREFIX)
    if limit is None:
        if not overcommit:
            _required(
                errors,
                (*path, "limits", name),
                f"a limit for {name}: set limits (requests default to them)",
            )
    elif not overcommit and request != limit:
        _error(
            errors,
            (*path, "requests", name),
            f"{request} must be equal to the {name} limit of {limit}",
        )
    elif request.compare(limit) > 0:
        _error(
            errors,
            (*path, "requests", name),
            f"{request} must be less than or equal to the {name} limit of {limit}",
        )


def _check_pod_claim(errors: Errors, path: Path, claim: PodResourceClaim) -> None:
    _check_label(errors, (*path, "name"), claim.name, "claim name")
    sources = [
        s
        for s, value in (
            ("resourceClaimName", claim.resource_claim_name),
            ("resourceClaimTemplateName", claim.resource_claim_template_name),
        )
        if value is not None
    ]
    if len(sources) != 1:
        found = f"; found {', '.join(sources)}" if sources else ""
        _error(
            errors,
            path,
            f"exactly one of `resourceClaimName`, `resourceClaimTemplateName` is required{found}",
        )
    if claim.resource_claim_name is not None:
        _check_subdomain(
            errors, (*path, "resourceClaimName"), claim.resource_claim_name, "claim name"
        )
    if claim.resource_claim_template_name is not None:
        _check_subdomain(
            errors,
            (*path, "resourceClaimTemplateName"),
            claim.resource_claim_template_name,
            "template name",
        )
