"""Shared GPUs (consumable capacity): what the slices publish, the flag, and the MPS
limits a share is prepared with."""

from __future__ import annotations

from typing import Any

import pytest

from api.errors import PrepareError
from api.quantity import Quantity
from api.resource_v1 import Device
from dra_driver.cdi import HostFiles
from dra_driver.discovery.mock import MockBackend
from dra_driver.preparation import PreparationPlan, plan_preparation
from dra_driver.slices import build_slices
from kubelet_plugin.settings import parse_settings
from tests.unit.preparation_fixtures import (
    DRIVER,
    NODE,
    claim,
    claim_uid,
    config,
    gpu_config,
    inventory,
    result,
)

SHARE = "5f1b3c1e-0a8e-4f55-9b7e-2d7c6b0a9e11"


def _devices(profile: str, *, shared_gpus: bool = False) -> dict[str, Device]:
    slices = build_slices(MockBackend(NODE, profile).inventory, shared_gpus=shared_gpus)
    return {d.name: d for s in slices for d in s.spec.devices or []}


def test_shared_gpus_publish_memory_and_compute_as_consumable_capacity() -> None:
    device = _devices("H100-80GB", shared_gpus=True)["gpu-0"]
    assert device.allow_multiple_allocations is True
    assert device.capacity is not None
    memory, compute = device.capacity["memory"], device.capacity["compute"]
    assert str(memory.value) == "80Gi"
    assert memory.request_policy is not None and memory.request_policy.valid_range is not None
    assert str(memory.request_policy.default) == "80Gi"
    assert (
        str(memory.request_policy.valid_range.min),
        str(memory.request_policy.valid_range.step),
    ) == (
        "1Gi",
        "1Gi",
    )
    assert str(compute.value) == "100"
    assert compute.request_policy is not None and compute.request_policy.valid_range is not None
    rng = compute.request_policy.valid_range
    assert (str(compute.request_policy.default), str(rng.min), str(rng.max), str(rng.step)) == (
        "100",
        "1",
        "100",
        "1",
    )
    # A partitionable GPU keeps its counters, so its shares and MIG devices exclude each other.
    assert device.consumes_counters
    # MIG placements are not shared.
    assert _devices("H100-80GB", shared_gpus=True)["gpu-0-mig-1g10gb-19-0"].capacity is not None
    assert not _devices("H100-80GB", shared_gpus=True)[
        "gpu-0-mig-1g10gb-19-0"
    ].allow_multiple_allocations


def test_memory_default_is_rounded_down_to_the_step_grid() -> None:
    # An L4 has 23034 MiB: the default must be min plus whole steps, so 22Gi.
    device = _devices("L4", shared_gpus=True)["gpu-0"]
    assert device.capacity is not None
    memory = device.capacity["memory"]
    assert memory.value == Quantity.parse(23034 * 2**20)
    assert memory.request_policy is not None
    assert str(memory.request_policy.default) == "22Gi"


def test_without_the_flag_gpus_are_exclusive_as_before() -> None:
    device = _devices("H100-80GB")["gpu-0"]
    assert device.allow_multiple_allocations is None
    assert device.capacity is not None and set(device.capacity) == {"memory"}
    assert device.capacity["memory"].request_policy is None


def test_the_flag_and_its_twin() -> None:
    assert parse_settings([], {}).shared_gpus is False
    assert parse_settings(["--shared-gpus"], {}).shared_gpus is True
    assert parse_settings([], {"DRA_DRIVER_SHARED_GPUS": "true"}).shared_gpus is True


def _share_plan(
    consumed: dict[str, str], configs: list[dict[str, Any]] | None = None
) -> PreparationPlan:
    uid = claim_uid(1)
    return plan_preparation(
        claim(uid, [result("gpu-0", shareID=SHARE, consumedCapacity=consumed)], configs=configs),
        uid=uid,
        inventory=inventory(),
        driver_name=DRIVER,
        pool_name=NODE,
        host=HostFiles(),
    )


def test_a_share_is_prepared_with_mps_limits_from_its_consumed_capacity() -> None:
    plan = _share_plan({"memory": "20Gi", "compute": "30"})
    (device,) = plan.devices
    assert device.cdi_device_name == f"{claim_uid(1)}-gpu-0-{SHARE}"
    assert device.sharing is not None
    assert (
        device.sharing.strategy,
        device.sharing.mps_active_thread_percentage,
        device.sharing.mps_pinned_memory_limit_bytes,
    ) == ("MPS", 30, 20 * 2**30)
    assert plan.spec is not None and plan.spec.container_edits is not None
    env = plan.spec.container_edits.env or []
    assert f"CUDA_MPS_PINNED_DEVICE_MEM_LIMIT={device.uuid}=20480M" in env
    assert "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=30" in env


def test_a_stricter_gpu_config_wins_and_consumed_capacity_fills_what_it_leaves_unset() -> None:
    mps = {"defaultPinnedDeviceMemoryLimit": "8Gi"}
    plan = _share_plan(
        {"memory": "10Gi", "compute": "30"},
        configs=[config(gpu_config(strategy="MPS", mpsConfig=mps))],
    )
    sharing = plan.devices[0].sharing
    assert sharing is not None
    assert (sharing.mps_active_thread_percentage, sharing.mps_pinned_memory_limit_bytes) == (
        30,
        8 * 2**30,
    )


def test_a_gpu_config_asking_for_more_than_the_share_holds_is_a_prepare_error() -> None:
    field = "status.allocation.devices.config[0].opaque.parameters.sharing.mpsConfig"
    for mps, consumed, expected in (
        (
            {"defaultPinnedDeviceMemoryLimit": "12Gi"},
            {"memory": "10Gi"},
            f"{field}: a pinned device memory limit of 12Gi is more than the 10Gi of memory "
            f"device gpu-0 share {SHARE} consumed",
        ),
        (
            {"defaultActiveThreadPercentage": 50},
            {"compute": "30"},
            f"{field}.defaultActiveThreadPercentage: 50 is more than the 30 compute "
            f"device gpu-0 share {SHARE} consumed",
        ),
    ):
        with pytest.raises(PrepareError) as caught:
            _share_plan(consumed, configs=[config(gpu_config(strategy="MPS", mpsConfig=mps))])
        assert expected in str(caught.value)
        assert str(caught.value).startswith("claim default/")


def test_a_share_whose_config_asks_for_time_slicing_is_time_sliced_with_no_mps_limits() -> None:
    # The chart's timeslicing class: the user chose time slicing, so the share gets no MPS
    # daemon; its capacity is the scheduler's bookkeeping only (docs/sharing.md).
    plan = _share_plan(
        {"memory": "20Gi", "compute": "30"},
        configs=[
            config(gpu_config(strategy="TimeSlicing", timeSlicingConfig={"interval": "Long"}))
        ],
    )
    (device,) = plan.devices
    assert device.sharing is not None
    assert (
        device.sharing.strategy,
        device.sharing.time_slice_interval,
        device.sharing.mps_active_thread_percentage,
        device.sharing.mps_pinned_memory_limit_bytes,
    ) == ("TimeSlicing", "Long", None, None)
    assert plan.spec is not None and plan.spec.container_edits is not None
    env = plan.spec.container_edits.env or []
    assert not [e for e in env if e.startswith("CUDA_MPS_")]
