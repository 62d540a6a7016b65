"""Decoding and encoding: :func:`parse_object` by apiVersion and kind, :func:`dump`,
pydantic errors translated to JSON-name :class:`FieldError` paths, and the short
object names used in messages.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from types import UnionType
from typing import Annotated, Any, Final, TypeAlias, Union, get_args, get_origin

from pydantic import ValidationError

from api import limits
from api.errors import FieldError, InvalidInputError
from api.names import describe_parts, describe_raw
from api.resource_v1.base import K8sModel
from api.resource_v1.device_class import DeviceClass, OpaqueDeviceConfiguration
from api.resource_v1.device_taint_rule import DeviceTaintRule
from api.resource_v1.meta import K8sObject, ObjectMeta
from api.resource_v1.node import Node, NodeSpec, NodeStatus
from api.resource_v1.pod import POD_UNMODELLED_FIELDS, Pod
from api.resource_v1.resource_claim import (
    AllocatedDeviceStatus,
    ResourceClaim,
    ResourceClaimTemplate,
)
from api.resource_v1.resource_slice import ResourceSlice

_DRA_KINDS: Final = frozenset(
    {
        limits.KIND_DEVICE_CLASS,
        limits.KIND_RESOURCE_CLAIM,
        limits.KIND_RESOURCE_CLAIM_TEMPLATE,
        limits.KIND_RESOURCE_SLICE,
        limits.KIND_DEVICE_TAINT_RULE,
    }
)
#: Kinds a Kubernetes 1.36 API server serves, by apiVersion, that these tools do not read
#: (or not in this version): skipped with a warning, as ``kubectl apply`` would take them.
#: Anything else is a typo or a custom resource whose definition the tools cannot see.
SERVED_KINDS: Final[dict[str, frozenset[str]]] = {
    "v1": frozenset(
        {
            "Binding",
            "ConfigMap",
            "Endpoints",
            "Event",
            "LimitRange",
            "List",
            "Namespace",
            "Node",
            "PersistentVolume",
            "PersistentVolumeClaim",
            "Pod",
            "PodTemplate",
            "ReplicationController",
            "ResourceQuota",
            "Secret",
            "Service",
            "ServiceAccount",
        }
    ),
    "apps/v1": frozenset(
        {"ControllerRevision", "DaemonSet", "Deployment", "ReplicaSet", "StatefulSet"}
    ),
    "batch/v1": frozenset({"CronJob", "Job"}),
    "autoscaling/v1": frozenset({"HorizontalPodAutoscaler"}),
    "autoscaling/v2": frozenset({"HorizontalPodAutoscaler"}),
    "policy/v1": frozenset({"PodDisruptionBudget"}),
    "scheduling.k8s.io/v1": frozenset({"PriorityClass"}),
    "node.k8s.io/v1": frozenset({"RuntimeClass"}),
    "coordination.k8s.io/v1": frozenset({"Lease"}),
    "discovery.k8s.io/v1": frozenset({"EndpointSlice"}),
    "events.k8s.io/v1": frozenset({"Event"}),
    "networking.k8s.io/v1": frozenset(
        {"Ingress", "IngressClass", "IPAddress", "NetworkPolicy", "ServiceCIDR"}
    ),
    "rbac.authorization.k8s.io/v1": frozenset(
        {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    ),
    "storage.k8s.io/v1": frozenset(
        {
            "CSIDriver",
            "CSINode",
            "CSIStorageCapacity",
            "StorageClass",
            "VolumeAttachment",
            "VolumeAttributesClass",
        }
    ),
    "admissionregistration.k8s.io/v1": frozenset(
        {
            "MutatingWebhookConfiguration",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
            "ValidatingWebhookConfiguration",
        }
    ),
    "apiextensions.k8s.io/v1": frozenset({"CustomResourceDefinition"}),
    "apiregistration.k8s.io/v1": frozenset({"APIService"}),
    "certificates.k8s.io/v1": frozenset({"CertificateSigningRequest"}),
    "flowcontrol.apiserver.k8s.io/v1": frozenset({"FlowSchema", "PriorityLevelConfiguration"}),
    limits.API_VERSION: _DRA_KINDS,
    f"{limits.GROUP}/v1beta1": _DRA_KINDS - {limits.KIND_DEVICE_TAINT_RULE},
    f"{limits.GROUP}/v1beta2": _DRA_KINDS,
}


class UnknownKindError(InvalidInputError):
    """A document whose apiVersion/kind is not one this project reads.

    ``served`` says whether a Kubernetes API server serves it (a ConfigMap, a Deployment, a
    v1beta2 ResourceClaim): such a document is skipped with a warning. Otherwise it is a
    typo or a custom resource, which ``kubectl apply`` refuses ("no matches for kind") on a
    cluster without its definition; ``hint`` then names the closest kind and apiVersion.
    """

    def __init__(
        self, api_version: object, kind: object, *, source: str = "", obj: str = ""
    ) -> None:
        self.api_version = api_version
        self.kind = kind
        self.served = (
            isinstance(api_version, str)
            and isinstance(kind, str)
            and kind in SERVED_KINDS.get(api_version, frozenset())
        )
        self.hint = "" if self.served else _closest_kind(api_version, kind)
        if not isinstance(api_version, str) or not api_version:
            problem = f"apiVersion {api_version!r} is missing or not a string"
        elif not isinstance(kind, str) or not kind:
            problem = f"kind {kind!r} is missing or not a string"
        elif self.served:
            problem = f"{api_version} {kind!r} is not read by the offline tools"
        else:
            problem = f"no kind {kind!r} in version {api_version!r}"
        hint = f' (did you mean "{self.hint}"?)' if self.hint else ""
        super().__init__(
            f"{problem}{hint}: the tools read {limits.API_VERSION} DeviceClass, "
            f"ResourceClaim, ResourceClaimTemplate, ResourceSlice, DeviceTaintRule and "
            f"{limits.CORE_API_VERSION} Node and Pod",
            source=source,
            obj=obj,
        )


def _closest_kind(api_version: object, kind: object) -> str:
    """``apiVersion kind`` of the served kind nearest a typo, or ""."""
    if isinstance(kind, str) and kind in _DRA_KINDS and str(api_version).startswith(limits.GROUP):
        return f"{limits.API_VERSION} {kind}"
    pairs = [f"{version} {name}" for version, kinds in SERVED_KINDS.items() for name in kinds]
    given = " ".join(part if isinstance(part, str) else "" for part in (api_version, kind))
    close = difflib.get_close_matches(given, pairs, n=1, cutoff=0.8)
    return close[0] if close else ""


#: Everything :func:`parse_object` returns.
ParsedObject: TypeAlias = (
    DeviceClass
    | ResourceClaim
    | ResourceClaimTemplate
    | ResourceSlice
    | DeviceTaintRule
    | Node
    | Pod
)
_KINDS: Final[dict[tuple[str, str], type[ParsedObject]]] = {
    (limits.API_VERSION, limits.KIND_DEVICE_CLASS): DeviceClass,
    (limits.API_VERSION, limits.KIND_RESOURCE_CLAIM): ResourceClaim,
    (limits.API_VERSION, limits.KIND_RESOURCE_CLAIM_TEMPLATE): ResourceClaimTemplate,
    (limits.API_VERSION, limits.KIND_RESOURCE_SLICE): ResourceSlice,
    (limits.API_VERSION, limits.KIND_DEVICE_TAINT_RULE): DeviceTaintRule,
    (limits.CORE_API_VERSION, limits.KIND_NODE): Node,
    (limits.CORE_API_VERSION, limits.KIND_POD): Pod,
}


def dump(obj: K8sModel) -> dict[str, Any]:
    """The object as the API server would write it in JSON.

    camelCase names, ``None`` fields left out, unknown fields kept, quantities in
    canonical form, only JSON types (str, int, float, bool, None, list, dict).
    """
    exclude: set[str] | None = None
    if (
        isinstance(obj, K8sObject)
        and "metadata" not in obj.model_fields_set
        and not obj.metadata.model_dump(exclude_none=True)
    ):
        exclude = {"metadata"}
    return obj.model_dump(mode="json", by_alias=True, exclude_none=True, exclude=exclude)


def describe(obj: K8sObject | Mapping[str, Any]) -> str:
    """Short name of an object for messages: ``slice node-a``, ``claim default/c``, ``class gpu``.

    Accepts a parsed object or a raw mapping (for errors raised before parsing).
    """
    if isinstance(obj, K8sObject):
        return describe_parts(obj.kind, obj.metadata.name, obj.metadata.namespace)
    return describe_raw(obj)


def field_path(parts: tuple[str | int, ...] | list[str | int]) -> str:
    """A field path in JSON names: ``spec.devices[3].attributes.index.int``.

    Integers become ``[i]``; map keys that are not plain identifiers (such as
    ``resource.kubernetes.io/pciBusID``) become ``[key]`` so the path stays readable.
    """
    out: list[str] = []
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif part and all(c.isalnum() or c in "_-" for c in part):
            out.append(f".{part}" if out else part)
        else:
            out.append(f"[{part}]")
    return "".join(out)


_TYPE_MESSAGES: Final[dict[str, str]] = {
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "bool_type": "must be a boolean (true or false)",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "missing": "required field is missing",
    "extra_forbidden": "unknown field",
}


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def field_errors(err: ValidationError) -> list[FieldError]:
    """Translate pydantic errors into FieldErrors with JSON-name paths."""
    errors: list[FieldError] = []
    for item in err.errors(include_url=False):
        kind = item["type"]
        message = _TYPE_MESSAGES.get(kind)
        if message is None:
            message = item["msg"]
        elif kind not in ("missing", "extra_forbidden"):
            message = f"{message}, not {_type_name(item['input'])}"
        errors.append(FieldError(field_path(tuple(item["loc"])), message))
    return errors


def parse_object(data: Mapping[str, Any], *, source: str = "") -> ParsedObject:
    """Decode one object by its apiVersion and kind.

    Raises UnknownKindError for any other apiVersion/kind, and InvalidInputError
    (naming the object and each offending field) when the document does not
    decode. No semantic validation: see :func:`api.validation.validate`.
    """
    if not isinstance(data, Mapping):
        raise InvalidInputError(
            f"a manifest must be an object, not {_type_name(data)}", source=source
        )
    api_version, kind = data.get("apiVersion"), data.get("kind")
    model = (
        _KINDS.get((api_version, kind))
        if isinstance(api_version, str) and isinstance(kind, str)
        else None
    )
    if model is None:
        raise UnknownKindError(api_version, kind, source=source, obj=describe(data) if kind else "")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise InvalidInputError(
            source=source, obj=describe(data), errors=field_errors(err)
        ) from None


#: Fields of the Kubernetes API that these models do not carry, per model: real fields, so
#: not "unknown" to the API server's strict decoding. (The Node is read only for its name,
#: labels, taints and resources; an exported ``kubectl get node -o yaml`` has all of these.
#: The Pod's are listed next to its models.)
_UNMODELLED_FIELDS: Final[dict[type[K8sModel], frozenset[str]]] = {
    ObjectMeta: frozenset({"managedFields", "selfLink", "deletionGracePeriodSeconds"}),
    NodeSpec: frozenset({"podCIDR", "podCIDRs", "providerID", "configSource", "externalID"}),
    NodeStatus: frozenset(
        {
            "conditions",
            "addresses",
            "daemonEndpoints",
            "nodeInfo",
            "images",
            "volumesInUse",
            "volumesAttached",
            "config",
            "phase",
            "runtimeHandlers",
            "features",
            "declaredFeatures",
        }
    ),
    **POD_UNMODELLED_FIELDS,
}
#: Free-form JSON, not walked: the API server takes any JSON there.
_FREE_FORM_FIELDS: Final[frozenset[tuple[type[K8sModel], str]]] = frozenset(
    {(OpaqueDeviceConfiguration, "parameters"), (AllocatedDeviceStatus, "data")}
)
_FREE_FORM_MODELS: Final[frozenset[type[K8sModel]]] = frozenset(m for m, _ in _FREE_FORM_FIELDS)


def strict_errors(obj: K8sModel) -> list[FieldError]:
    """What strict decoding adds to :func:`parse_object`, as ``kubectl apply`` (whose
    ``--validate`` is ``strict`` by default) and the API server judge it.

    - An unknown field: the models keep fields they do not know (so that an object of a
      newer API server round-trips through the agents); an input file with one has a typo
      or a field this Kubernetes does not serve.
    - An integer beyond int64: every integer of these kinds is an int64 (or smaller).

    Opaque ``parameters`` and status ``data`` are free-form JSON and are not walked. Paths
    are JSON names (``spec.devices.requests[0].exactly.count``).
    """
    if _strictly_clean(obj):
        return []
    errors: list[FieldError] = []
    stack: list[tuple[object, tuple[str | int, ...]]] = [(obj, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, K8sModel):
            model = type(value)
            allowed = _UNMODELLED_FIELDS.get(model, frozenset())
            for name in sorted(value.model_extra or {}):
                if name not in allowed:
                    errors.append(FieldError(field_path((*path, name)), "unknown field"))
            for name, info in model.model_fields.items():
                child = getattr(value, name)
                if child is None or (model, name) in _FREE_FORM_FIELDS:
                    continue
                stack.append((child, (*path, info.alias or name)))
        elif isinstance(value, list):
            stack.extend((item, (*path, i)) for i, item in enumerate(value))
        elif isinstance(value, dict):
            stack.extend((item, (*path, key)) for key, item in value.items())
        elif (
            isinstance(value, int)
            and not isinstance(value, bool)
            and not limits.INT64_MIN <= value <= limits.INT64_MAX
        ):
            errors.append(FieldError(field_path(path), f"{value} is out of range for an int64"))
    errors.reverse()
    return errors


_WALKED_FIELDS: dict[type[K8sModel], tuple[str, ...]] = {}
"""Per model: the fields :func:`_strictly_clean` walks into: all but the free-form ones and
those whose type holds only text or booleans (strict validation made sure they do)."""
_LEAF_TYPES: Final = frozenset({str, bool, type(None)})


def _text_only(annotation: Any) -> bool:
    """Whether a field of this type can hold only str, bool, None (or lists of them)."""
    if annotation in _LEAF_TYPES:
        return True
    origin = get_origin(annotation)
    if origin is Annotated:
        return _text_only(get_args(annotation)[0])
    if origin in (Union, UnionType, list):
        return all(_text_only(arg) for arg in get_args(annotation))
    return False


def _walked_fields(model: type[K8sModel]) -> tuple[str, ...]:
    names = _WALKED_FIELDS.get(model)
    if names is None:
        names = _WALKED_FIELDS[model] = tuple(
            name
            for name, info in model.model_fields.items()
            if (model, name) not in _FREE_FORM_FIELDS and not _text_only(info.annotation)
        )
    return names


def _strictly_clean(obj: K8sModel) -> bool:
    """Whether :func:`strict_errors` would find nothing: the same walk without the paths
    an error needs, so that a clean object (nearly every one) costs one quick pass."""
    stack: list[Any] = [obj]
    pop, extend = stack.pop, stack.extend
    while stack:
        value = pop()
        kind = value.__class__
        if kind is str or value is None:
            continue
        if kind is list:
            extend(value)
        elif kind is dict:
            extend(value.values())
        elif kind is int:
            if not limits.INT64_MIN <= value <= limits.INT64_MAX:
                return False
        elif isinstance(value, K8sModel):
            extra = value.__pydantic_extra__
            if extra and not _UNMODELLED_FIELDS.get(kind, frozenset()).issuperset(extra):
                return False
            names = _WALKED_FIELDS.get(kind)
            if names is None:
                names = _walked_fields(kind)
            fields = value.__dict__  # a pydantic model's fields
            extend([fields[name] for name in names])
        elif isinstance(value, list):
            extend(value)
        elif isinstance(value, dict):
            extend(value.values())
        elif (
            isinstance(value, int)
            and not isinstance(value, bool)
            and not limits.INT64_MIN <= value <= limits.INT64_MAX
        ):
            return False
    return True
