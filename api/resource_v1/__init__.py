"""Pydantic models of the ``resource.k8s.io/v1`` objects and the v1 Node and Pod the driver reads.

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
  :func:`dump`, so an object from a newer API server round-trips without loss;
  :func:`strict_errors` reports them (and integers beyond int64) for input a person
  wrote, as ``kubectl apply``'s strict validation does.
- Quantities are :class:`api.quantity.Quantity` and are written back in the API
  server's canonical form.

Hot path: a benchmark decodes thousands of slices. The only Python code run per
field is quantity parsing (memoised per distinct string) and the semver check of
``version`` attributes (memoised too); everything else is pydantic-core.

Layout: the base model and self-parsing field types in :mod:`.base`, metadata in
:mod:`.meta`, one module per kind (:mod:`.node`, :mod:`.resource_slice`,
:mod:`.device_class`, :mod:`.resource_claim`, :mod:`.device_taint_rule`, :mod:`.pod`) and
decoding/encoding in :mod:`.codec`. Import from this package: its names are the contract.
"""

from __future__ import annotations

from api.resource_v1.base import (
    K8sModel,
    QuantityField,
    parse_quantity,
    parse_version,
)
from api.resource_v1.codec import (
    SERVED_KINDS,
    ParsedObject,
    UnknownKindError,
    describe,
    dump,
    field_errors,
    field_path,
    parse_object,
    strict_errors,
)
from api.resource_v1.device_class import (
    CELDeviceSelector,
    DeviceClass,
    DeviceClassConfiguration,
    DeviceClassSpec,
    DeviceSelector,
    OpaqueDeviceConfiguration,
)
from api.resource_v1.device_taint_rule import (
    DeviceTaintRule,
    DeviceTaintRuleSpec,
    DeviceTaintRuleStatus,
    DeviceTaintSelector,
)
from api.resource_v1.meta import (
    Condition,
    K8sObject,
    ObjectMeta,
    OwnerReference,
    claim_label,
    object_key,
)
from api.resource_v1.node import (
    Node,
    NodeSelector,
    NodeSelectorRequirement,
    NodeSelectorTerm,
    NodeSpec,
    NodeStatus,
    Taint,
)
from api.resource_v1.pod import (
    Container,
    ContainerExtendedResourceRequest,
    Pod,
    PodExtendedResourceClaimStatus,
    PodResourceClaim,
    PodSpec,
    PodStatus,
    ResourceRequirements,
)
from api.resource_v1.resource_claim import (
    AllocatedDeviceStatus,
    AllocationResult,
    CapacityRequirements,
    DeviceAllocationConfiguration,
    DeviceAllocationResult,
    DeviceClaim,
    DeviceClaimConfiguration,
    DeviceConstraint,
    DeviceRequest,
    DeviceRequestAllocationResult,
    DeviceSubRequest,
    DeviceToleration,
    ExactDeviceRequest,
    NetworkDeviceData,
    ResourceClaim,
    ResourceClaimConsumerReference,
    ResourceClaimSpec,
    ResourceClaimStatus,
    ResourceClaimTemplate,
    ResourceClaimTemplateSpec,
    claim_key,
)
from api.resource_v1.resource_slice import (
    AttributeValue,
    CapacityRequestPolicy,
    CapacityRequestPolicyRange,
    Counter,
    CounterSet,
    Device,
    DeviceAttribute,
    DeviceCapacity,
    DeviceCounterConsumption,
    DeviceTaint,
    ResourcePool,
    ResourceSlice,
    ResourceSliceSpec,
)

__all__ = [
    "SERVED_KINDS",
    "AllocatedDeviceStatus",
    "AllocationResult",
    "AttributeValue",
    "CELDeviceSelector",
    "CapacityRequestPolicy",
    "CapacityRequestPolicyRange",
    "CapacityRequirements",
    "Condition",
    "Container",
    "ContainerExtendedResourceRequest",
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
    "DeviceTaintRule",
    "DeviceTaintRuleSpec",
    "DeviceTaintRuleStatus",
    "DeviceTaintSelector",
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
    "Pod",
    "PodExtendedResourceClaimStatus",
    "PodResourceClaim",
    "PodSpec",
    "PodStatus",
    "QuantityField",
    "ResourceClaim",
    "ResourceClaimConsumerReference",
    "ResourceClaimSpec",
    "ResourceClaimStatus",
    "ResourceClaimTemplate",
    "ResourceClaimTemplateSpec",
    "ResourcePool",
    "ResourceRequirements",
    "ResourceSlice",
    "ResourceSliceSpec",
    "Taint",
    "UnknownKindError",
    "claim_key",
    "claim_label",
    "describe",
    "dump",
    "field_errors",
    "field_path",
    "object_key",
    "parse_object",
    "parse_quantity",
    "parse_version",
    "strict_errors",
]
