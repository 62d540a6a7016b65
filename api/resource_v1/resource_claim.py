"""ResourceClaim and ResourceClaimTemplate models: the device requests,
constraints and configuration of the spec, and the status (allocation, reservedFor,
per-device status).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from api import limits
from api.resource_v1.base import K8sModel, QuantityField, Timestamp
from api.resource_v1.device_class import DeviceSelector, OpaqueDeviceConfiguration
from api.resource_v1.meta import Condition, K8sObject, ObjectMeta, object_key
from api.resource_v1.node import NodeSelector


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


class ResourceClaim(K8sObject):
    kind: str = limits.KIND_RESOURCE_CLAIM
    spec: ResourceClaimSpec
    status: ResourceClaimStatus | None = None


def claim_key(claim: ResourceClaim) -> str:
    """``namespace/name`` of a claim: see :func:`api.resource_v1.meta.object_key`."""
    return object_key(claim.metadata.namespace, claim.metadata.name)


class ResourceClaimTemplate(K8sObject):
    kind: str = limits.KIND_RESOURCE_CLAIM_TEMPLATE
    spec: ResourceClaimTemplateSpec
