"""Whether a GPU recovered, as NVML says: the recovery-action field and a validation.

:class:`NvmlRecoveryProbe` is the NVML
:class:`~dra_driver.discovery.model.RecoveryProbe`: ``nvmlDeviceGetFieldValues`` with
``NVML_FI_DEV_GET_GPU_RECOVERY_ACTION`` (230) for the action; for validation, the GPU's
handle by UUID, its memory info, and its volatile uncorrected ECC count (zero, or ECC
not supported). Driver calls take no lock: NVML is thread-safe.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from dra_driver.discovery.model import RecoveryAction
from kubelet_plugin.nvml.library import ABSENT, NvmlCalls

__all__ = ["FIELD_GPU_RECOVERY_ACTION", "NvmlRecoveryProbe"]

log = logging.getLogger(__name__)

FIELD_GPU_RECOVERY_ACTION: Final = 230  # NVML_FI_DEV_GET_GPU_RECOVERY_ACTION
_SUCCESS: Final = 0
_ECC_UNCORRECTED: Final = 1  # NVML_MEMORY_ERROR_TYPE_UNCORRECTED
_ECC_VOLATILE: Final = 0  # NVML_VOLATILE_ECC


class NvmlRecoveryProbe:
    """Reads a GPU's recovery action and validates it through NVML (module docstring)."""

    def __init__(self, calls: NvmlCalls) -> None:
        self._nvml: Any = calls.nvml

    def recovery_action(self, gpu_uuid: str) -> RecoveryAction | None:
        nvml = self._nvml
        try:
            handle = nvml.nvmlDeviceGetHandleByUUID(gpu_uuid)
            (value,) = nvml.nvmlDeviceGetFieldValues(handle, [FIELD_GPU_RECOVERY_ACTION])
        except nvml.NVMLError as err:
            log.debug("GPU %s: recovery action unreadable: %s", gpu_uuid, err)
            return None
        if int(value.nvmlReturn) != _SUCCESS:
            return None  # NOT_SUPPORTED on an older driver, or another failure
        number = int(value.value.uiVal)
        try:
            return RecoveryAction(number)
        except ValueError:
            log.warning("GPU %s: unknown recovery action %d: read as GPU_RESET", gpu_uuid, number)
            return RecoveryAction.GPU_RESET

    def validate(self, gpu_uuid: str) -> str | None:
        nvml = self._nvml
        try:
            handle = nvml.nvmlDeviceGetHandleByUUID(gpu_uuid)
            nvml.nvmlDeviceGetMemoryInfo(handle)
        except nvml.NVMLError as err:
            return f"NVML does not answer for it: {err}"
        try:
            errors = int(nvml.nvmlDeviceGetTotalEccErrors(handle, _ECC_UNCORRECTED, _ECC_VOLATILE))
        except nvml.NVMLError as err:
            if getattr(err, "value", None) in ABSENT:
                return None  # no ECC on this GPU: nothing to check
            return f"its ECC state is unreadable: {err}"
        if errors:
            return f"{errors} uncorrected ECC error(s) since the last reset"
        return None
