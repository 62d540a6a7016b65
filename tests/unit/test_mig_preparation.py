"""Planning the preparation of MIG devices, and their checkpoint records."""

from __future__ import annotations

import json
from typing import Any

import pytest

from api.checkpoint import Checkpoint, ClaimEntry, decode_checkpoint, encode_checkpoint
from api.errors import PrepareError
from dra_driver.cdi import HostFiles, encode_cdi_spec
from dra_driver.discovery.mock import MockBackend
from dra_driver.preparation import (
    PreparationPlan,
    plan_preparation,
    with_mig_devices,
)
from dra_driver.prepared_claims import checkpoint_devices, plan_from_checkpoint
from tests.unit.preparation_fixtures import (
    DRIVER,
    NODE,
    claim,
    claim_uid,
    config,
    gpu_config,
    result,
    validate_cdi_document,
)

HOST = HostFiles(dev_root="/mock", control_devices=("/dev/nvidiactl",))
BACKEND = MockBackend(NODE, "A100-40GB,A100-40GB:mig=3g.20gb")
DYNAMIC = "gpu-0-mig-1g5gb-19-2"
STATIC = "gpu-1-mig-3g20gb-9-0"


def _plan(*devices: str, configs: list[dict[str, Any]] | None = None) -> PreparationPlan:
    uid = claim_uid(1)
    return plan_preparation(
        claim(uid, [result(d) for d in devices], configs=configs),
        uid=uid,
        inventory=BACKEND.inventory,
        driver_name=DRIVER,
        pool_name=NODE,
        host=HOST,
    )


def test_dynamic_mig_is_planned_pending_without_spec_until_created() -> None:
    plan = _plan(DYNAMIC)
    (device,) = plan.devices
    assert plan.spec is None and plan.pending_migs == (device,)
    assert device.uuid == "" and device.device_node == "/dev/nvidia0"
    assert device.mig is not None
    assert (device.mig.profile, device.mig.placement_start, device.mig.dynamic) == (
        "1g.5gb",
        2,
        True,
    )

    gpu = BACKEND.inventory.gpus[0]
    mig = MockBackend(NODE, "A100-40GB").mig_manager.create(gpu, gpu.mig_profiles[0], (2, 1))
    done = with_mig_devices(plan, {DYNAMIC: mig}, driver_name=DRIVER, host=HOST)

    assert done.pending_migs == () and done.spec is not None
    document = json.loads(encode_cdi_spec(done.spec))
    validate_cdi_document(document)
    (spec_device,) = document["devices"]
    assert [n["path"] for n in spec_device["containerEdits"]["deviceNodes"]] == [
        "/dev/nvidia0",
        *mig.cap_device_nodes,
    ]
    # The MIG device's own UUID, as a whole GPU's, under the device's variables.
    assert any(
        line.startswith("DRA_GPU_") and line.endswith(f"_UUID={mig.uuid}")
        for line in spec_device["containerEdits"]["env"]
    )


def test_with_mig_devices_refuses_a_missing_device() -> None:
    with pytest.raises(ValueError, match=DYNAMIC):
        with_mig_devices(_plan(DYNAMIC), {}, driver_name=DRIVER, host=HOST)


def test_static_mig_is_planned_complete_and_survives_the_checkpoint() -> None:
    plan = _plan(STATIC, "gpu-0")
    static = BACKEND.inventory.gpus[1].mig_devices[0]
    assert plan.pending_migs == () and plan.spec is not None
    assert plan.devices[0].uuid == static.uuid
    assert plan.devices[0].mig is not None and not plan.devices[0].mig.dynamic

    entry = ClaimEntry(
        namespace="default",
        name="train-0",
        state="PrepareCompleted",
        boot_id="b",
        cdi_spec_path="/cdi/x.json",
        devices=checkpoint_devices(plan),
    )
    reread = decode_checkpoint(encode_checkpoint(Checkpoint(claims={plan.claim_uid: entry})))
    again = plan_from_checkpoint(
        plan.claim_uid, reread.claims[plan.claim_uid], driver_name=DRIVER, host=HOST
    )
    assert again.spec is not None
    assert encode_cdi_spec(again.spec) == encode_cdi_spec(plan.spec)


def test_gpu_config_on_a_mig_device_names_the_entry_and_the_request() -> None:
    with pytest.raises(PrepareError) as caught:
        _plan(DYNAMIC, configs=[config(gpu_config(strategy="TimeSlicing"))])
    message = str(caught.value)
    assert message.startswith("claim default/train-0: status.allocation.devices.config[0]")
    assert "request gpu" in message and DYNAMIC in message


def test_gpu_config_for_another_request_leaves_the_mig_device_alone() -> None:
    plan = _plan(DYNAMIC, configs=[config(gpu_config(strategy="TimeSlicing"), requests=["x"])])
    assert plan.devices[0].sharing is None


def test_a_version_1_checkpoint_without_mig_fields_still_reads() -> None:
    old = {
        "version": 1,
        "claims": {
            "u": {
                "namespace": "default",
                "name": "c",
                "state": "PrepareCompleted",
                "bootId": "b",
                "cdiSpecPath": "/cdi/c.json",
                "devices": [
                    {
                        "requests": ["gpu"],
                        "pool": NODE,
                        "device": "gpu-0",
                        "cdiDeviceIds": ["gpu.dra-driver.io/gpu=u-gpu-0"],
                        "uuid": "GPU-1",
                        "deviceNode": "/dev/nvidia0",
                    }
                ],
            }
        },
    }
    checkpoint = decode_checkpoint(json.dumps(old).encode())
    assert checkpoint.claims["u"].devices[0].mig is None
