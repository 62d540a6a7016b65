"""How a prepared GPU is shared: from the claim's opaque GpuConfig and a share's consumed capacity.

Opaque configuration (spec/nvml.md §5, spec/resource-api.md §6.1): of the
entries in ``status.allocation.devices.config`` whose ``opaque.driver`` is this
driver, class entries come first, then claim entries; an entry applies to the
devices of the requests it names (a ``req`` entry covers ``req/sub`` too), or
to all devices when it names none; for each device the last entry that applies
wins as a whole, and built-in defaults fill what it leaves unset. No entry means
exclusive use. Every entry of this driver is decoded and checked, even one that
a later entry overrides, so a typo never goes unnoticed; entries of other
drivers are skipped.

Shared GPUs (consumable capacity): a result with a ``shareID`` is one share of a
GPU that several claims may hold; its ``consumedCapacity`` becomes MPS limits
(``memory`` -> the pinned device memory limit, ``compute`` -> the active thread
percentage); a GpuConfig may set stricter ones, never looser (a prepare error).

Problems are :class:`api.errors.PrepareError` naming the claim and the config entry.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from api import gpu_config
from api.errors import InvalidInputError, PrepareError
from api.gpu_config import GpuConfig, decode_gpu_config
from api.quantity import Quantity
from api.resource_v1 import DeviceAllocationConfiguration, DeviceRequestAllocationResult
from dra_driver.cdi import SharingSettings
from dra_driver.slices import SHARED_COMPUTE_CAPACITY, SHARED_MEMORY_CAPACITY

#: Where the claim's configuration entries are, for error messages.
CONFIG_FIELD: Final = "status.allocation.devices.config"


def _config_order(entry: DeviceAllocationConfiguration) -> int:
    # The API server stores class entries first; sort anyway so precedence never
    # depends on that.
    return 0 if entry.source == "FromClass" else 1


def _applies(entry: DeviceAllocationConfiguration, request: str) -> bool:
    if not entry.requests:
        return True
    parent = request.split("/", 1)[0]
    return request in entry.requests or parent in entry.requests


def precedence_order(
    entries: Sequence[DeviceAllocationConfiguration], decoded: Mapping[int, GpuConfig]
) -> list[int]:
    """The indices of the decoded entries, lowest precedence first: class, then claim entries."""
    return sorted(decoded, key=lambda i: _config_order(entries[i]))


def winning_config(
    entries: Sequence[DeviceAllocationConfiguration],
    ordered: Sequence[int],
    requests: Iterable[str],
) -> int | None:
    """The index of the entry that applies to a device allocated for ``requests``: the last one
    in ``ordered`` (:func:`precedence_order`) naming any of them; None when none applies."""
    names = list(requests)
    winner: int | None = None
    for index in ordered:
        if any(_applies(entries[index], request) for request in names):
            winner = index
    return winner


def decode_configs(
    entries: Sequence[DeviceAllocationConfiguration], driver_name: str, label: str
) -> dict[int, GpuConfig]:
    """This driver's entries, by their index in ``config``, decoded and checked."""
    decoded: dict[int, GpuConfig] = {}
    problems: list[str] = []
    for index, entry in enumerate(entries):
        if entry.opaque is None or entry.opaque.driver != driver_name:
            continue
        prefix = f"{CONFIG_FIELD}[{index}].opaque.parameters"
        try:
            decoded[index] = decode_gpu_config(entry.opaque.parameters).normalized()
        except InvalidInputError as err:
            if err.errors:
                problems.extend(f"{prefix}.{e.path}: {e.message}" for e in err.errors)
            else:
                problems.append(f"{prefix}: {err.detail}")
    if problems:
        raise PrepareError(
            "; ".join(problems)
            + f" (fix the GpuConfig of driver {driver_name}; apiVersion {gpu_config.API_VERSION})",
            claim=label,
        )
    return decoded


def _quantity_bytes(size: Quantity) -> int:
    return math.ceil(size.value)


def config_sharing(
    config: GpuConfig,
    config_index: int,
    uuids: Sequence[str],
    ordinal: int,
    label: str,
) -> SharingSettings | None:
    """The settings of the device at ``ordinal`` among ``uuids``, the devices ``config`` won."""
    sharing = config.sharing
    if sharing is None:
        return None
    interval = None
    if sharing.time_slicing_config is not None:
        interval = sharing.time_slicing_config.interval
    percentage = None
    limit = None
    mps = sharing.mps_config
    if mps is not None:
        percentage = mps.default_active_thread_percentage
        if mps.default_pinned_device_memory_limit is not None:
            limit = _quantity_bytes(mps.default_pinned_device_memory_limit)
        per_device = mps.default_per_device_pinned_memory_limit or {}
        for key, device_limit in per_device.items():
            if key.isdigit():
                target = int(key)
                if target >= len(uuids):
                    raise PrepareError(
                        f"{CONFIG_FIELD}[{config_index}].opaque.parameters.sharing.mpsConfig."
                        f"defaultPerDevicePinnedMemoryLimit[{key}]: no device with index {key}: "
                        f"the entry applies to {len(uuids)} device(s), indices 0 to "
                        f"{len(uuids) - 1}; use an index in that range or a GPU UUID",
                        claim=label,
                    )
            elif key in uuids:
                target = uuids.index(key)
            else:
                raise PrepareError(
                    f"{CONFIG_FIELD}[{config_index}].opaque.parameters.sharing.mpsConfig."
                    f"defaultPerDevicePinnedMemoryLimit[{key}]: no device with UUID {key} among "
                    f"the devices the entry applies to ({', '.join(uuids)})",
                    claim=label,
                )
            if target == ordinal:
                limit = _quantity_bytes(device_limit)
    return SharingSettings(
        strategy=sharing.strategy,
        time_slice_interval=interval,
        mps_active_thread_percentage=percentage,
        mps_pinned_memory_limit_bytes=limit,
    )


def _size(size: int) -> str:
    for unit, factor in (("Gi", 2**30), ("Mi", 2**20)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size} bytes"


def capacity_sharing(
    base: SharingSettings | None,
    group: Sequence[DeviceRequestAllocationResult],
    *,
    config_index: int | None = None,
    label: str = "",
) -> SharingSettings | None:
    """A share's MPS limits from its consumed capacity and ``base``, what the GpuConfig
    entry ``config_index`` says: the config wins where it is stricter, consumed capacity
    fills what it leaves unset.

    ``base`` unchanged when the results consumed neither memory nor compute, or when the
    config asks for ``TimeSlicing``: the user chose time slicing over MPS (the chart's
    ``timeslicing`` class does), so no MPS daemon serves the share and its capacity is
    the scheduler's bookkeeping only. Raises
    PrepareError naming the config field when the config asks for more than the share
    holds: the scheduler counted the share's capacity, not the config's.
    """
    memory: int | None = None
    compute: int | None = None
    for result in group:
        consumed = result.consumed_capacity or {}
        if SHARED_MEMORY_CAPACITY in consumed:
            memory = (memory or 0) + _quantity_bytes(consumed[SHARED_MEMORY_CAPACITY])
        if SHARED_COMPUTE_CAPACITY in consumed:
            compute = (compute or 0) + math.ceil(consumed[SHARED_COMPUTE_CAPACITY].value)
    if memory is None and compute is None:
        return base
    if base is not None and base.strategy == gpu_config.STRATEGY_TIME_SLICING:
        return base
    if base is not None:
        share = f"device {group[0].device} share {group[0].share_id}"
        field = f"{CONFIG_FIELD}[{config_index}].opaque.parameters.sharing.mpsConfig"
        asked_memory = base.mps_pinned_memory_limit_bytes
        if memory is not None and asked_memory is not None and asked_memory > memory:
            raise PrepareError(
                f"{field}: a pinned device memory limit of {_size(asked_memory)} is more than "
                f"the {_size(memory)} of memory {share} consumed (consumedCapacity); ask for "
                "at most that, or request more memory capacity",
                claim=label,
            )
        asked_compute = base.mps_active_thread_percentage
        if compute is not None and asked_compute is not None and asked_compute > compute:
            raise PrepareError(
                f"{field}.defaultActiveThreadPercentage: {asked_compute} is more than the "
                f"{compute} compute {share} consumed (consumedCapacity); ask for at most "
                "that, or request more compute capacity",
                claim=label,
            )
        memory = asked_memory if asked_memory is not None else memory
        compute = asked_compute if asked_compute is not None else compute
    return SharingSettings(
        strategy="MPS",
        time_slice_interval=None if base is None else base.time_slice_interval,
        mps_active_thread_percentage=compute,
        mps_pinned_memory_limit_bytes=memory,
    )
