"""DeviceTaintRule: one taint an admin puts on every device a selector picks, as if the
driver had published it in the ResourceSlice (``resource.k8s.io/v1``, Kubernetes 1.37).

Since 1.35 the selector names a driver, a pool and a device only (``deviceClassName`` and
CEL ``selectors`` are gone; strict reading reports them as unknown fields).
"""

from __future__ import annotations

from api import limits
from api.resource_v1.base import K8sModel
from api.resource_v1.meta import Condition, K8sObject
from api.resource_v1.resource_slice import DeviceTaint


class DeviceTaintSelector(K8sModel):
    """Which devices: every field set must match; an empty selector matches every device."""

    driver: str | None = None
    pool: str | None = None
    device: str | None = None


class DeviceTaintRuleSpec(K8sModel):
    #: None matches no device at all (unlike an empty selector).
    device_selector: DeviceTaintSelector | None = None
    taint: DeviceTaint


class DeviceTaintRuleStatus(K8sModel):
    conditions: list[Condition] | None = None


class DeviceTaintRule(K8sObject):
    kind: str = limits.KIND_DEVICE_TAINT_RULE
    spec: DeviceTaintRuleSpec
    status: DeviceTaintRuleStatus | None = None
