"""DeviceClass models, with the CEL selector and opaque configuration types that
claims reuse.
"""

from __future__ import annotations

from typing import Any

from api import limits
from api.resource_v1.base import K8sModel
from api.resource_v1.meta import K8sObject


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


class DeviceClass(K8sObject):
    kind: str = limits.KIND_DEVICE_CLASS
    spec: DeviceClassSpec
