"""The driver's opaque configuration API: ``gpu.dra-driver.io/v1alpha1``, kind ``GpuConfig``.

Users put it in ``DeviceClass.spec.config[].opaque.parameters`` or
``ResourceClaim.spec.devices.config[].opaque.parameters``::

    apiVersion: gpu.dra-driver.io/v1alpha1
    kind: GpuConfig
    sharing:
      strategy: TimeSlicing            # or MPS
      timeSlicingConfig:
        interval: Default              # Default | Short | Medium | Long
      # mpsConfig:
      #   defaultActiveThreadPercentage: 50
      #   defaultPinnedDeviceMemoryLimit: 10Gi
      #   defaultPerDevicePinnedMemoryLimit: {"0": 5Gi}

No ``sharing`` means exclusive use of the GPU. Decoding is strict: an unknown
field is an error, not ignored, because a typo there would silently give a
different sharing setup than the user asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from pydantic import ConfigDict, ValidationError

from api.errors import FieldError, InvalidInputError
from api.resource_v1 import K8sModel, QuantityField, field_errors
from api.validation import unsupported_value

__all__ = [
    "API_VERSION",
    "KIND",
    "SHARING_STRATEGIES",
    "TIME_SLICE_INTERVALS",
    "GpuConfig",
    "GpuSharing",
    "MpsConfig",
    "TimeSlicingConfig",
    "decode_gpu_config",
]

API_VERSION: Final = "gpu.dra-driver.io/v1alpha1"
KIND: Final = "GpuConfig"

STRATEGY_TIME_SLICING: Final = "TimeSlicing"
STRATEGY_MPS: Final = "MPS"
SHARING_STRATEGIES: Final = (STRATEGY_TIME_SLICING, STRATEGY_MPS)

INTERVAL_DEFAULT: Final = "Default"
#: Time-slice interval names and the value ``nvidia-smi compute-policy --set-timeslice`` takes.
TIME_SLICE_INTERVALS: Final[Mapping[str, int]] = {
    INTERVAL_DEFAULT: 0,
    "Short": 1,
    "Medium": 2,
    "Long": 3,
}


class _ConfigModel(K8sModel):
    # Unlike the Kubernetes objects, our own API refuses fields it does not know.
    model_config = ConfigDict(extra="forbid")


class TimeSlicingConfig(_ConfigModel):
    interval: str | None = None


class MpsConfig(_ConfigModel):
    default_active_thread_percentage: int | None = None
    default_pinned_device_memory_limit: QuantityField | None = None
    #: Per-device overrides, keyed by device index or UUID as the MPS daemon takes them.
    default_per_device_pinned_memory_limit: dict[str, QuantityField] | None = None


class GpuSharing(_ConfigModel):
    strategy: str
    time_slicing_config: TimeSlicingConfig | None = None
    mps_config: MpsConfig | None = None


class GpuConfig(_ConfigModel):
    """A decoded GpuConfig; build it with :func:`decode_gpu_config` to get it checked."""

    api_version: str = API_VERSION
    kind: str = KIND
    sharing: GpuSharing | None = None

    @property
    def exclusive(self) -> bool:
        """True when the GPU is not shared between containers."""
        return self.sharing is None

    def normalized(self) -> GpuConfig:
        """A copy with the defaults filled in.

        TimeSlicing without ``timeSlicingConfig`` (or without ``interval``) gets
        interval ``Default``; MPS without ``mpsConfig`` gets an empty one (the
        daemon's own defaults). No ``sharing`` stays None: exclusive use.
        """
        sharing = self.sharing
        if sharing is None:
            return self.model_copy(deep=True)
        if sharing.strategy == STRATEGY_TIME_SLICING:
            interval = (sharing.time_slicing_config or TimeSlicingConfig()).interval
            sharing = sharing.model_copy(
                update={
                    "time_slicing_config": TimeSlicingConfig(interval=interval or INTERVAL_DEFAULT)
                },
                deep=True,
            )
        elif sharing.strategy == STRATEGY_MPS and sharing.mps_config is None:
            sharing = sharing.model_copy(update={"mps_config": MpsConfig()}, deep=True)
        return self.model_copy(update={"sharing": sharing}, deep=True)


def _unsupported(path: str, value: object, supported: Iterable[str]) -> FieldError:
    return FieldError(path, unsupported_value(value, supported))


def _check(config: GpuConfig) -> list[FieldError]:
    errors: list[FieldError] = []
    sharing = config.sharing
    if sharing is None:
        return errors
    if sharing.strategy not in SHARING_STRATEGIES:
        errors.append(_unsupported("sharing.strategy", sharing.strategy, SHARING_STRATEGIES))
    if sharing.time_slicing_config is not None:
        if sharing.strategy != STRATEGY_TIME_SLICING:
            errors.append(
                FieldError(
                    "sharing.timeSlicingConfig",
                    f'only allowed with strategy "{STRATEGY_TIME_SLICING}", '
                    f'not "{sharing.strategy}"',
                )
            )
        interval = sharing.time_slicing_config.interval
        if interval is not None and interval not in TIME_SLICE_INTERVALS:
            errors.append(
                _unsupported(
                    "sharing.timeSlicingConfig.interval", interval, list(TIME_SLICE_INTERVALS)
                )
            )
    mps = sharing.mps_config
    if mps is not None:
        if sharing.strategy != STRATEGY_MPS:
            errors.append(
                FieldError(
                    "sharing.mpsConfig",
                    f'only allowed with strategy "{STRATEGY_MPS}", not "{sharing.strategy}"',
                )
            )
        percentage = mps.default_active_thread_percentage
        if percentage is not None and not 1 <= percentage <= 100:
            errors.append(
                FieldError(
                    "sharing.mpsConfig.defaultActiveThreadPercentage",
                    f"must be between 1 and 100, not {percentage}",
                )
            )
        limit = mps.default_pinned_device_memory_limit
        if limit is not None and limit.sign() <= 0:
            errors.append(
                FieldError(
                    "sharing.mpsConfig.defaultPinnedDeviceMemoryLimit",
                    f"must be a positive quantity such as 10Gi, not {limit}",
                )
            )
        for device, device_limit in (mps.default_per_device_pinned_memory_limit or {}).items():
            path = f"sharing.mpsConfig.defaultPerDevicePinnedMemoryLimit[{device}]"
            if not device:
                errors.append(FieldError(path, "the device key must not be empty"))
            if device_limit.sign() <= 0:
                errors.append(
                    FieldError(path, f"must be a positive quantity such as 5Gi, not {device_limit}")
                )
    return errors


def decode_gpu_config(parameters: Mapping[str, Any]) -> GpuConfig:
    """Decode and check opaque ``parameters`` as a GpuConfig (defaults not applied).

    Raises InvalidInputError listing each offending field by its JSON path
    (``sharing.timeSlicingConfig.interval``), and for an apiVersion/kind that is
    not ``gpu.dra-driver.io/v1alpha1`` GpuConfig, one naming both.
    """
    if not isinstance(parameters, Mapping):
        raise InvalidInputError(
            f"GpuConfig parameters must be a JSON object, not {type(parameters).__name__}"
        )
    api_version, kind = parameters.get("apiVersion"), parameters.get("kind")
    if api_version != API_VERSION or kind != KIND:
        raise InvalidInputError(
            f"not a GpuConfig (apiVersion {API_VERSION}, kind {KIND})",
            errors=[
                FieldError(path, f'unsupported value "{value}": supported value "{expected}"')
                for path, value, expected in (
                    ("apiVersion", api_version, API_VERSION),
                    ("kind", kind, KIND),
                )
                if value != expected
            ],
        )
    try:
        config = GpuConfig.model_validate(parameters)
    except ValidationError as err:
        raise InvalidInputError("invalid GpuConfig", errors=field_errors(err)) from None
    errors = _check(config)
    if errors:
        raise InvalidInputError("invalid GpuConfig", errors=errors)
    return config
