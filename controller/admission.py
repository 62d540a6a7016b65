"""The controller's validating webhook: this driver's GpuConfigs, checked at the door.

The chart's ValidatingAdmissionPolicy ``<release>-gpu-configs`` checks in CEL what CEL
can; this webhook (``webhook.enabled``) runs the full check, the very code
``dra-driver allocate`` and the kubelet plugin's prepare run
(:func:`dra_driver.gpu_configs.gpu_config_errors`), on a ResourceClaim,
ResourceClaimTemplate or DeviceClass being created or updated. A refusal reads as the
policy's does::

    invalid GpuConfig of driver gpu.dra-driver.io: spec.devices.config[1].opaque.parameters
    .sharing.strategy: unsupported value "Timeslicing": ... (the driver would refuse it at
    prepare)

An update is judged only on the configs it adds or changes (a config at the same path
with the same driver and parameters in the old object passes), so an object stored
before the webhook existed can still be labelled, lose its finalizers and be deleted.
Objects of other kinds, and configs of other drivers, are allowed untouched. An object
the API server let through but these models cannot read is allowed with a log line: the
API server's own validation is the authority on the object's shape.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

from api.errors import InvalidInputError
from api.resource_v1 import (
    DeviceClass,
    K8sModel,
    OpaqueDeviceConfiguration,
    ResourceClaim,
    ResourceClaimTemplate,
    describe,
    parse_object,
)
from dra_driver.gpu_configs import gpu_config_errors, opaque_configs

__all__ = ["GPU_CONFIG_PATH", "GpuConfigReviewer"]

log = logging.getLogger(__name__)

#: The webhook's path; the chart's ValidatingWebhookConfiguration points at it.
GPU_CONFIG_PATH: Final = "/validate-gpu-configs"
_REVIEWED: Final = (DeviceClass, ResourceClaim, ResourceClaimTemplate)


class GpuConfigReviewer:
    """The reviewer of :data:`GPU_CONFIG_PATH` for the driver ``driver_name``."""

    def __init__(self, driver_name: str) -> None:
        self.driver_name = driver_name

    def __call__(self, request: Mapping[str, Any]) -> str | None:
        """None when ``request`` (an AdmissionReview's request) may pass, else why not."""
        if request.get("operation") not in ("CREATE", "UPDATE"):
            return None
        new = self._read(request.get("object"))
        if new is None:
            return None
        configs = opaque_configs(new)
        if request.get("operation") == "UPDATE":
            old = self._read(request.get("oldObject"))
            unchanged = set(_keyed(opaque_configs(old))) if old is not None else set()
            configs = [c for c in configs if _key(c) not in unchanged]
        errors = gpu_config_errors(new, driver_name=self.driver_name, configs=configs)
        if not errors:
            return None
        return f"invalid GpuConfig of driver {self.driver_name}: " + "; ".join(
            str(e) for e in errors
        )

    @staticmethod
    def _read(raw: object) -> K8sModel | None:
        if not isinstance(raw, Mapping):
            return None
        try:
            obj = parse_object(raw)
        except InvalidInputError as exc:
            log.warning("webhook: cannot read %s (%s); allowed", describe(raw), exc)
            return None
        return obj if isinstance(obj, _REVIEWED) else None


def _key(config: tuple[str, OpaqueDeviceConfiguration]) -> tuple[str, str, str]:
    path, opaque = config
    return (path, opaque.driver, opaque.model_dump_json(by_alias=True))


def _keyed(configs: list[tuple[str, OpaqueDeviceConfiguration]]) -> list[tuple[str, str, str]]:
    return [_key(c) for c in configs]
