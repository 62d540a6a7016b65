"""Pydantic models of the ``resource.k8s.io/v1`` objects and the v1 Node that the driver uses.

Contracts every caller may rely on:

- Python attributes are the snake_case of the JSON names; models accept either
  form on input and :func:`dump` writes the JSON (camelCase) names. Irregular JSON
  names carry explicit aliases: ``shareID`` (``share_id``) and the attribute value
  keys ``int``/``bool`` (``int_``/``bool_``).
- Decoding is strict like the API server's JSON decoder: ``"5"`` is not an
  integer, ``1`` is not a boolean. Structural problems (wrong types, missing
  required fields, a ``version`` attribute that is not a semantic version, a
  malformed quantity) fail in :func:`parse_object`; everything the API server
  checks beyond structure is in :mod:`api.validation`.
- Optional fields default to ``None``, lists and maps too, so "unset" and "empty"
  stay apart. Unknown fields are kept (``extra="allow"``) and written back by
  :func:`dump`, so an object from a newer API server round-trips without loss.
- Quantities are :class:`api.quantity.Quantity` and are written back in the API
  server's canonical form.

Hot path: a benchmark decodes thousands of slices. The only Python code run per
field is quantity parsing (memoised per distinct string) and the semver check of
``version`` attributes (memoised too); everything else is pydantic-core.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Any, Final, TypeAlias

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    ValidationError,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError, core_schema

from api import limits
from api.errors import FieldError, InvalidInputError
from api.quantity import Quantity
from api.semver import Semver

__all__ = [
    "AllocatedDeviceStatus",
    "AllocationResult",
    "AttributeValue",
    "CELDeviceSelector",
    "CapacityRequestPolicy",
    "CapacityRequestPolicyRange",
    "CapacityRequirements",
    "Condition",
    "Counter",
    "CounterSet",
    "Device",
    "DeviceAllocationConfiguration",
    "DeviceAllocationResult",
    "DeviceAttribute",
    "DeviceCapacity",
    "DeviceClaim",
    "DeviceClaimConfiguration",
    "DeviceClass",
    "DeviceClassConfiguration",
    "DeviceClassSpec",
    "DeviceConstraint",
    "DeviceCounterConsumption",
    "DeviceRequest",
    "DeviceRequestAllocationResult",
    "DeviceSelector",
    "DeviceSubRequest",
    "DeviceTaint",
    "DeviceToleration",
    "ExactDeviceRequest",
    "K8sModel",
    "K8sObject",
    "NetworkDeviceData",
    "Node",
    "NodeSelector",
    "NodeSelectorRequirement",
    "NodeSelectorTerm",
    "NodeSpec",
    "NodeStatus",
    "ObjectMeta",
    "OpaqueDeviceConfiguration",
    "OwnerReference",
    "ParsedObject",
    "QuantityField",
    "ResourceClaim",
    "ResourceClaimConsumerReference",
    "ResourceClaimSpec",
    "ResourceClaimStatus",
    "ResourceClaimTemplate",
    "ResourceClaimTemplateSpec",
    "ResourcePool",
    "ResourceSlice",
    "ResourceSliceSpec",
    "Taint",
    "UnknownKindError",
    "describe",
    "dump",
    "field_errors",
    "field_path",
    "parse_object",
    "parse_quantity",
    "parse_version",
]


class UnknownKindError(InvalidInputError):
    """A document whose apiVersion/kind is not one this project reads."""

    def __init__(
        self, api_version: object, kind: object, *, source: str = "", obj: str = ""
    ) -> None:
        self.api_version = api_version
        self.kind = kind
        super().__init__(
            f"unsupported apiVersion {api_version!r} and kind {kind!r}: supported are "
            f"{limits.API_VERSION} DeviceClass, ResourceClaim, ResourceClaimTemplate, "
            f"ResourceSlice and {limits.CORE_API_VERSION} Node",
            source=source,
            obj=obj,
        )


# --- Scalar types with their own parsing ------------------------------------------


@lru_cache(maxsize=4096, typed=True)
def parse_quantity(text: str | int) -> Quantity:
    """:meth:`Quantity.parse`, memoised: slices repeat the same few capacity strings.

    ``typed=True`` keeps ``True`` from hitting the cache entry of ``1``.
    """
    return Quantity.parse(text)


@lru_cache(maxsize=1024)
def parse_version(text: str) -> Semver:
    """Strict :meth:`Semver.parse`, memoised: a node's devices share a few driver versions."""
    return Semver.parse(text)


def _validate_quantity(value: object) -> Quantity:
    if isinstance(value, Quantity):
        return value
    if isinstance(value, float) and math.isfinite(value):
        # The API server's decoder takes bare JSON numbers (``memory: 1.5``) too.
        value = repr(value)
    if isinstance(value, str | int) and not isinstance(value, bool):
        try:
            return parse_quantity(value)
        except ValueError as err:
            raise PydanticCustomError("quantity", "{reason}", {"reason": str(err)}) from None
    raise PydanticCustomError(
        "quantity_type",
        'must be a quantity: a string such as "80Gi" or a number, not {type}',
        {"type": type(value).__name__},
    )


class _QuantitySchema:
    """Pydantic glue: accept str/int/Quantity, serialise to the canonical string."""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            _validate_quantity,
            serialization=core_schema.plain_serializer_function_ser_schema(
                str, return_schema=core_schema.str_schema()
            ),
        )


#: A Quantity-typed model field: input ``"80Gi"``/``80``, output ``"80Gi"``.
QuantityField: TypeAlias = Annotated[Quantity, _QuantitySchema]


def _check_version(text: str) -> str:
    try:
        parse_version(text)
    except ValueError as err:
        raise PydanticCustomError("semver", "{reason}", {"reason": str(err)}) from None
    return text


#: A strict semantic version kept as its string (so it round-trips byte for byte).
_VersionString = Annotated[str, AfterValidator(_check_version)]


def _timestamp_text(value: object) -> object:
    # YAML loaders turn RFC 3339 timestamps into datetimes; the API speaks strings.
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return value


#: An RFC 3339 timestamp kept as text.
Timestamp = Annotated[str, BeforeValidator(_timestamp_text)]


# --- Base ---------------------------------------------------------------------------


class K8sModel(BaseModel):
    """Base of every model: camelCase JSON names, strict types, unknown fields kept."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="allow",
        strict=True,
    )


# --- Metadata and core/v1 pieces ------------------------------------------------------


class OwnerReference(K8sModel):
    api_version: str | None = None
    kind: str | None = None
    name: str | None = None
    uid: str | None = None
    controller: bool | None = None
    block_owner_deletion: bool | None = None


class ObjectMeta(K8sModel):
    name: str | None = None
    generate_name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: Timestamp | None = None
    deletion_timestamp: Timestamp | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    owner_references: list[OwnerReference] | None = None
    finalizers: list[str] | None = None


class NodeSelectorRequirement(K8sModel):
    key: str
    operator: str
    values: list[str] | None = None


class NodeSelectorTerm(K8sModel):
    match_expressions: list[NodeSelectorRequirement] | None = None
    match_fields: list[NodeSelectorRequirement] | None = None


class NodeSelector(K8sModel):
    node_selector_terms: list[NodeSelectorTerm]


class Taint(K8sModel):
    """core/v1 Taint of a Node."""

    key: str
    value: str | None = None
    effect: str
    time_added: Timestamp | None = None


class NodeSpec(K8sModel):
    taints: list[Taint] | None = None
    unschedulable: bool | None = None


def _quantity_text(value: object) -> object:
    # Node resources are Quantities; YAML writes ``cpu: 16`` as a number.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


#: A quantity kept as the text the Node reports (``"15500m"``, ``"129024Mi"``).
_QuantityText = Annotated[str, BeforeValidator(_quantity_text)]


class NodeStatus(K8sModel):
    """Resources of a Node, as text; :func:`parse_quantity` gives their values."""

    capacity: dict[str, _QuantityText] | None = None
    allocatable: dict[str, _QuantityText] | None = None


class Condition(K8sModel):
    """metav1.Condition."""

    type: str
    status: str
    observed_generation: int | None = None
    last_transition_time: Timestamp | None = None
    reason: str | None = None
    message: str | None = None


# --- ResourceSlice --------------------------------------------------------------------

#: What :attr:`DeviceAttribute.value` returns.
AttributeValue: TypeAlias = (
    int | bool | str | Semver | list[int] | list[bool] | list[str] | list[Semver]
)


class DeviceAttribute(K8sModel):
    """One typed attribute value; the API server requires exactly one field to be set.

    ``version`` must be a strict semantic version (checked on decoding); it is
    kept as text and :attr:`value` returns it as a :class:`Semver`. The list
    forms belong to the alpha ``DRAListTypeAttributes`` feature.
    """

    int_: int | None = Field(default=None, alias="int")
    bool_: bool | None = Field(default=None, alias="bool")
    string: str | None = None
    version: _VersionString | None = None
    ints: list[int] | None = None
    bools: list[bool] | None = None
    strings: list[str] | None = None
    versions: list[_VersionString] | None = None

    @property
    def value(self) -> AttributeValue:
        """The Python value of the one field that is set (first one set, if several).

        Raises ValueError when no field is set: :func:`api.validation.validate`
        reports such an attribute, so validated objects never raise.
        """
        if self.int_ is not None:
            return self.int_
        if self.bool_ is not None:
            return self.bool_
        if self.string is not None:
            return self.string
        if self.version is not None:
            return parse_version(self.version)
        if self.ints is not None:
            return self.ints
        if self.bools is not None:
            return self.bools
        if self.strings is not None:
            return self.strings
        if self.versions is not None:
            return [parse_version(v) for v in self.versions]
        raise ValueError("device attribute has no value: set one of int, bool, string, version")

    def set_fields(self) -> list[str]:
        """JSON names of the value fields that are set (exactly one when valid)."""
        return [
            json_name
            for json_name, present in (
                ("int", self.int_ is not None),
                ("bool", self.bool_ is not None),
                ("string", self.string is not None),
                ("version", self.version is not None),
                ("ints", self.ints is not None),
                ("bools", self.bools is not None),
                ("strings", self.strings is not None),
                ("versions", self.versions is not None),
            )
            if present
        ]


class CapacityRequestPolicyRange(K8sModel):
    min: QuantityField
    max: QuantityField | None = None
    step: QuantityField | None = None


class CapacityRequestPolicy(K8sModel):
    default: QuantityField | None = None
    valid_values: list[QuantityField] | None = None
    valid_range: CapacityRequestPolicyRange | None = None


class DeviceCapacity(K8sModel):
    value: QuantityField
    request_policy: CapacityRequestPolicy | None = None


class Counter(K8sModel):
    value: QuantityField


class CounterSet(K8sModel):
    name: str
    counters: dict[str, Counter]


class DeviceCounterConsumption(K8sModel):
    counter_set: str
    counters: dict[str, Counter]


class DeviceTaint(K8sModel):
    key: str
    value: str | None = None
    effect: str
    time_added: Timestamp | None = None


class Device(K8sModel):
    name: str
    attributes: dict[str, DeviceAttribute] | None = None
    capacity: dict[str, DeviceCapacity] | None = None
    consumes_counters: list[DeviceCounterConsumption] | None = None
    node_name: str | None = None
    node_selector: NodeSelector | None = None
    all_nodes: bool | None = None
    taints: list[DeviceTaint] | None = None
    binds_to_node: bool | None = None
    binding_conditions: list[str] | None = None
    binding_failure_conditions: list[str] | None = None
    allow_multiple_allocations: bool | None = None


class ResourcePool(K8sModel):
    name: str
    generation: int
    resource_slice_count: int


class ResourceSliceSpec(K8sModel):
    driver: str
    pool: ResourcePool
    node_name: str | None = None
    node_selector: NodeSelector | None = None
    all_nodes: bool | None = None
    per_device_node_selection: bool | None = None
    devices: list[Device] | None = None
    shared_counters: list[CounterSet] | None = None


# --- DeviceClass ----------------------------------------------------------------------


class CELDeviceSelector(K8sModel):
    expression: str


class DeviceSelector(K8sModel):
    cel: CELDeviceSelector | None = None


class OpaqueDeviceConfiguration(K8sModel):
    driver: str
    parameters: dict[str, Any]


class DeviceClassConfiguration(K8sModel):
    opaque: OpaqueDeviceConfiguration | None = None


class DeviceClassSpec(K8sModel):
    selectors: list[DeviceSelector] | None = None
    config: list[DeviceClassConfiguration] | None = None
    extended_resource_name: str | None = None


# --- ResourceClaim --------------------------------------------------------------------


class DeviceToleration(K8sModel):
    key: str | None = None
    operator: str | None = None
    value: str | None = None
    effect: str | None = None
    toleration_seconds: int | None = None


class CapacityRequirements(K8sModel):
    requests: dict[str, QuantityField] | None = None


class ExactDeviceRequest(K8sModel):
    device_class_name: str
    selectors: list[DeviceSelector] | None = None
    allocation_mode: str | None = None
    count: int | None = None
    admin_access: bool | None = None
    tolerations: list[DeviceToleration] | None = None
    capacity: CapacityRequirements | None = None


class DeviceSubRequest(K8sModel):
    """One alternative of ``firstAvailable``; like ExactDeviceRequest minus adminAccess."""

    name: str
    device_class_name: str
    selectors: list[DeviceSelector] | None = None
    allocation_mode: str | None = None
    count: int | None = None
    tolerations: list[DeviceToleration] | None = None
    capacity: CapacityRequirements | None = None


class DeviceRequest(K8sModel):
    name: str
    exactly: ExactDeviceRequest | None = None
    first_available: list[DeviceSubRequest] | None = None


class DeviceConstraint(K8sModel):
    requests: list[str] | None = None
    match_attribute: str | None = None
    distinct_attribute: str | None = None


class DeviceClaimConfiguration(K8sModel):
    requests: list[str] | None = None
    opaque: OpaqueDeviceConfiguration | None = None


class DeviceClaim(K8sModel):
    requests: list[DeviceRequest] | None = None
    constraints: list[DeviceConstraint] | None = None
    config: list[DeviceClaimConfiguration] | None = None


class ResourceClaimSpec(K8sModel):
    devices: DeviceClaim | None = None


class ResourceClaimConsumerReference(K8sModel):
    api_group: str | None = None
    resource: str
    name: str
    uid: str


class DeviceRequestAllocationResult(K8sModel):
    request: str
    driver: str
    pool: str
    device: str
    admin_access: bool | None = None
    tolerations: list[DeviceToleration] | None = None
    binding_conditions: list[str] | None = None
    binding_failure_conditions: list[str] | None = None
    share_id: str | None = Field(default=None, alias="shareID")
    consumed_capacity: dict[str, QuantityField] | None = None


class DeviceAllocationConfiguration(K8sModel):
    source: str
    requests: list[str] | None = None
    opaque: OpaqueDeviceConfiguration | None = None


class DeviceAllocationResult(K8sModel):
    results: list[DeviceRequestAllocationResult] | None = None
    config: list[DeviceAllocationConfiguration] | None = None


class AllocationResult(K8sModel):
    devices: DeviceAllocationResult | None = None
    node_selector: NodeSelector | None = None
    allocation_timestamp: Timestamp | None = None


class NetworkDeviceData(K8sModel):
    interface_name: str | None = None
    ips: list[str] | None = None
    hardware_address: str | None = None


class AllocatedDeviceStatus(K8sModel):
    driver: str
    pool: str
    device: str
    share_id: str | None = Field(default=None, alias="shareID")
    conditions: list[Condition] | None = None
    data: dict[str, Any] | None = None
    network_data: NetworkDeviceData | None = None


class ResourceClaimStatus(K8sModel):
    allocation: AllocationResult | None = None
    reserved_for: list[ResourceClaimConsumerReference] | None = None
    devices: list[AllocatedDeviceStatus] | None = None


class ResourceClaimTemplateSpec(K8sModel):
    metadata: ObjectMeta | None = None
    spec: ResourceClaimSpec


# --- Top-level objects ------------------------------------------------------------------


class K8sObject(K8sModel):
    """A top-level object: apiVersion, kind, metadata.

    ``metadata`` is never None for convenience; :func:`dump` leaves it out when
    it was neither given nor filled in.
    """

    api_version: str = limits.API_VERSION
    kind: str
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)


class ResourceSlice(K8sObject):
    kind: str = limits.KIND_RESOURCE_SLICE
    spec: ResourceSliceSpec


class DeviceClass(K8sObject):
    kind: str = limits.KIND_DEVICE_CLASS
    spec: DeviceClassSpec


class ResourceClaim(K8sObject):
    kind: str = limits.KIND_RESOURCE_CLAIM
    spec: ResourceClaimSpec
    status: ResourceClaimStatus | None = None


class ResourceClaimTemplate(K8sObject):
    kind: str = limits.KIND_RESOURCE_CLAIM_TEMPLATE
    spec: ResourceClaimTemplateSpec


class Node(K8sObject):
    api_version: str = limits.CORE_API_VERSION
    kind: str = limits.KIND_NODE
    spec: NodeSpec | None = None
    status: NodeStatus | None = None


#: Everything :func:`parse_object` returns.
ParsedObject: TypeAlias = DeviceClass | ResourceClaim | ResourceClaimTemplate | ResourceSlice | Node

_KINDS: Final[dict[tuple[str, str], type[ParsedObject]]] = {
    (limits.API_VERSION, limits.KIND_DEVICE_CLASS): DeviceClass,
    (limits.API_VERSION, limits.KIND_RESOURCE_CLAIM): ResourceClaim,
    (limits.API_VERSION, limits.KIND_RESOURCE_CLAIM_TEMPLATE): ResourceClaimTemplate,
    (limits.API_VERSION, limits.KIND_RESOURCE_SLICE): ResourceSlice,
    (limits.CORE_API_VERSION, limits.KIND_NODE): Node,
}

_SHORT_KIND: Final[dict[str, str]] = {
    limits.KIND_DEVICE_CLASS: "class",
    limits.KIND_RESOURCE_CLAIM: "claim",
    limits.KIND_RESOURCE_CLAIM_TEMPLATE: "claim template",
    limits.KIND_RESOURCE_SLICE: "slice",
    limits.KIND_NODE: "node",
}


# --- Functions ------------------------------------------------------------------------


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
    kind: object
    name: object
    namespace: object
    if isinstance(obj, K8sObject):
        kind, name, namespace = obj.kind, obj.metadata.name, obj.metadata.namespace
    else:
        raw_meta = obj.get("metadata")
        meta: Mapping[str, Any] = raw_meta if isinstance(raw_meta, Mapping) else {}
        kind, name, namespace = obj.get("kind"), meta.get("name"), meta.get("namespace")
    short = _SHORT_KIND.get(kind, kind.lower()) if isinstance(kind, str) and kind else "object"
    shown = name if isinstance(name, str) and name else "<unnamed>"
    if isinstance(namespace, str) and namespace:
        shown = f"{namespace}/{shown}"
    return f"{short} {shown}"


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
