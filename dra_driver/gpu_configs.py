"""This driver's opaque configs in a class or claim, judged as prepare would judge them.

One check for every door a ``GpuConfig`` passes: the offline tools (``dra-driver allocate``
and ``explain``), the controller's validating admission webhook, and at last the kubelet
plugin's prepare. Each error names the field by its path in the object
(``spec.devices.config[1].opaque.parameters.sharing.strategy``) and ends with why it matters.
"""

from __future__ import annotations

from collections.abc import Iterable

from api.errors import FieldError, InvalidInputError
from api.gpu_config import decode_gpu_config
from api.resource_v1 import (
    DeviceClass,
    K8sModel,
    OpaqueDeviceConfiguration,
    ResourceClaim,
    ResourceClaimTemplate,
)
from dra_driver.slices import DEFAULT_DRIVER_NAME

__all__ = ["PREPARE_WOULD_REFUSE", "gpu_config_errors", "opaque_configs"]

#: Appended to every message: the failure the check saves the user from.
PREPARE_WOULD_REFUSE = "the driver would refuse it at prepare"


def opaque_configs(obj: K8sModel) -> list[tuple[str, OpaqueDeviceConfiguration]]:
    """Every opaque config of a class or claim (spec and allocation), with its path."""
    found: list[tuple[str, OpaqueDeviceConfiguration | None]] = []
    if isinstance(obj, DeviceClass):
        found += [
            (f"spec.config[{i}].opaque", c.opaque) for i, c in enumerate(obj.spec.config or [])
        ]
    elif isinstance(obj, ResourceClaim | ResourceClaimTemplate):
        devices = obj.spec.devices if isinstance(obj, ResourceClaim) else obj.spec.spec.devices
        prefix = "spec.devices" if isinstance(obj, ResourceClaim) else "spec.spec.devices"
        configs = (devices.config if devices else None) or []
        found += [(f"{prefix}.config[{i}].opaque", c.opaque) for i, c in enumerate(configs)]
        allocation = (
            obj.status.allocation if isinstance(obj, ResourceClaim) and obj.status else None
        )
        if allocation is not None and allocation.devices is not None:
            found += [
                (f"status.allocation.devices.config[{i}].opaque", c.opaque)
                for i, c in enumerate(allocation.devices.config or [])
            ]
    return [(path, opaque) for path, opaque in found if opaque is not None]


def gpu_config_errors(
    obj: K8sModel,
    *,
    driver_name: str = DEFAULT_DRIVER_NAME,
    configs: Iterable[tuple[str, OpaqueDeviceConfiguration]] | None = None,
) -> list[FieldError]:
    """``driver_name``'s opaque configs of ``obj`` decoded as GpuConfig, as prepare decodes
    them; ``configs`` narrows the check to some of them (default: every one)."""
    errors: list[FieldError] = []
    for path, opaque in opaque_configs(obj) if configs is None else configs:
        if opaque.driver != driver_name:
            continue
        try:
            decode_gpu_config(opaque.parameters)
        except InvalidInputError as exc:
            where = f"{path}.parameters"
            if not exc.errors:
                errors.append(FieldError(where, f"{exc.detail} ({PREPARE_WOULD_REFUSE})"))
            errors.extend(
                FieldError(f"{where}.{e.path}", f"{e.message} ({PREPARE_WOULD_REFUSE})")
                for e in exc.errors
            )
    return errors
