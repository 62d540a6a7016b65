"""The pure preparation plan: which devices, which config, which spec, and clear errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from preparation_fixtures import (
    DRIVER,
    NODE,
    claim,
    claim_uid,
    config,
    gpu_config,
    inventory,
    result,
    validate_cdi_document,
)

from api.checkpoint import ClaimEntry
from api.errors import PrepareError
from api.resource_v1 import ResourceClaim
from dra_driver.cdi import HostFiles, SharingSettings, encode_cdi_spec
from dra_driver.preparation import PreparationPlan, plan_preparation
from dra_driver.prepared_claims import checkpoint_devices, plan_from_checkpoint

UID = claim_uid(7)
HOST = HostFiles(dev_root="/mock", control_devices=("/dev/nvidiactl",))
INVENTORY = inventory(8)

MPS = {"strategy": "MPS", "mpsConfig": {"defaultActiveThreadPercentage": 40}}
TIME_SLICING = {"strategy": "TimeSlicing"}


def plan(resource_claim: ResourceClaim, uid: str = UID) -> PreparationPlan:
    return plan_preparation(
        resource_claim,
        uid=uid,
        inventory=INVENTORY,
        driver_name=DRIVER,
        pool_name=NODE,
        host=HOST,
    )


def error(resource_claim: ResourceClaim, uid: str = UID) -> PrepareError:
    with pytest.raises(PrepareError) as caught:
        plan(resource_claim, uid)
    return caught.value


def sharing(p: PreparationPlan) -> dict[str, SharingSettings | None]:
    return {d.device: d.sharing for d in p.devices}


def test_plan_for_two_gpus() -> None:
    p = plan(claim(UID, [result("gpu-1"), result("gpu-4", "extra")]))
    assert p.label == "claim default/train-0"
    assert [(d.requests, d.pool, d.device) for d in p.devices] == [
        (("gpu",), NODE, "gpu-1"),
        (("extra",), NODE, "gpu-4"),
    ]
    assert [d.cdi_device_id for d in p.devices] == [
        f"gpu.dra-driver.io/gpu={UID}-gpu-1",
        f"gpu.dra-driver.io/gpu={UID}-gpu-4",
    ]
    assert p.devices[0].uuid == INVENTORY.gpus[1].uuid
    assert p.devices[1].device_node == "/dev/nvidia4"
    assert p.spec_file_name == f"gpu.dra-driver.io-{UID}.json"
    assert p.spec is not None
    doc = json.loads(encode_cdi_spec(p.spec))
    validate_cdi_document(doc)
    assert [d["name"] for d in doc["devices"]] == [f"{UID}-gpu-1", f"{UID}-gpu-4"]
    assert all(s is None for s in sharing(p).values())  # no config: exclusive


def test_results_and_configs_of_other_drivers_are_skipped() -> None:
    p = plan(
        claim(
            UID,
            [result("gpu-0"), result("nic-3", "net", driver="net.example.com", pool="x")],
            configs=[config({"garbage": True}, driver="net.example.com")],
        )
    )
    assert [d.device for d in p.devices] == ["gpu-0"]


def test_claim_with_no_device_of_this_driver_needs_no_spec() -> None:
    p = plan(claim(UID, [result("nic-3", driver="net.example.com", pool="x")]))
    assert p.devices == ()
    assert p.spec is None


def test_replaced_claim_is_an_error() -> None:
    err = error(claim(claim_uid(8)))
    assert "claim default/train-0" in str(err)
    assert "got replaced" in str(err)
    assert UID in str(err) and claim_uid(8) in str(err)
    assert not err.retryable


def test_unallocated_claim_is_a_retryable_error() -> None:
    err = error(claim(UID, allocated=False))
    assert "not allocated" in str(err)
    assert err.retryable


def test_device_in_another_pool_is_a_claim_for_another_node() -> None:
    err = error(claim(UID, [result("gpu-0", pool="node-b")], node_selector_node=None))
    assert str(err).startswith("claim default/train-0: status.allocation.devices.results[0].pool")
    assert "node-b" in str(err) and "another node" in str(err)
    assert not err.retryable


def test_node_selector_for_another_node_is_an_error() -> None:
    err = error(claim(UID, node_selector_node="node-b"))
    assert "status.allocation.nodeSelector" in str(err)
    assert "node-b" in str(err)


def test_node_selector_that_cannot_be_judged_keeps_the_node() -> None:
    c = claim(UID, node_selector_node=None)
    document = c.model_dump(mode="json", by_alias=True, exclude_none=True)
    document["status"]["allocation"]["nodeSelector"] = {
        "nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
        ]
    }
    assert len(plan(ResourceClaim.model_validate(document)).devices) == 1


def test_unknown_device_is_an_error_that_lists_the_node_devices() -> None:
    err = error(claim(UID, [result("gpu-0"), result("gpu-42")]))
    assert "results[1].device" in str(err)
    assert "gpu-42" in str(err) and "gpu-0, gpu-1" in str(err)


def test_garbage_config_names_the_entry_and_field() -> None:
    err = error(
        claim(
            UID,
            configs=[
                config(gpu_config(**TIME_SLICING), source="FromClass"),
                config(gpu_config(strategy="Sometimes")),
            ],
        )
    )
    message = str(err)
    assert message.startswith("claim default/train-0: ")
    assert "status.allocation.devices.config[1].opaque.parameters.sharing.strategy" in message
    assert "Sometimes" in message
    assert not err.retryable


def test_config_of_another_kind_is_an_error() -> None:
    err = error(claim(UID, configs=[config({"apiVersion": "v1", "kind": "Pod"})]))
    assert "config[0].opaque.parameters.apiVersion" in str(err)
    assert "config[0].opaque.parameters.kind" in str(err)


def test_overridden_garbage_config_is_still_an_error() -> None:
    err = error(
        claim(
            UID,
            configs=[
                config(gpu_config(sharing={"strategy": "MPS", "typo": 1}), source="FromClass"),
                config(gpu_config(**TIME_SLICING)),
            ],
        )
    )
    assert "config[0].opaque.parameters" in str(err)


def test_claim_config_overrides_class_config() -> None:
    p = plan(
        claim(
            UID,
            configs=[
                config(gpu_config(**MPS), source="FromClass"),
                config(gpu_config(**TIME_SLICING)),
            ],
        )
    )
    assert sharing(p) == {"gpu-0": SharingSettings("TimeSlicing", time_slice_interval="Default")}


def test_class_config_wins_over_nothing_and_order_in_the_list_does_not_matter() -> None:
    # A claim entry listed before a class entry still takes precedence.
    p = plan(
        claim(
            UID,
            configs=[
                config(gpu_config(**TIME_SLICING)),
                config(gpu_config(**MPS), source="FromClass"),
            ],
        )
    )
    assert sharing(p)["gpu-0"] == SharingSettings("TimeSlicing", time_slice_interval="Default")


def test_later_claim_entry_overrides_earlier_as_a_whole() -> None:
    p = plan(
        claim(
            UID,
            configs=[
                config(gpu_config(strategy="TimeSlicing", timeSlicingConfig={"interval": "Long"})),
                config(gpu_config(**MPS)),
            ],
        )
    )
    assert sharing(p)["gpu-0"] == SharingSettings("MPS", mps_active_thread_percentage=40)


def test_config_is_request_scoped_and_covers_subrequests() -> None:
    p = plan(
        claim(
            UID,
            [result("gpu-0", "small"), result("gpu-1", "big/h100"), result("gpu-2", "other")],
            configs=[
                config(gpu_config(**TIME_SLICING), requests=["small"]),
                config(gpu_config(**MPS), requests=["big"]),
            ],
        )
    )
    assert sharing(p) == {
        "gpu-0": SharingSettings("TimeSlicing", time_slice_interval="Default"),
        "gpu-1": SharingSettings("MPS", mps_active_thread_percentage=40),
        "gpu-2": None,
    }
    assert p.devices[1].requests == ("big/h100",)


def test_empty_gpu_config_means_exclusive() -> None:
    p = plan(claim(UID, configs=[config(gpu_config())]))
    assert sharing(p) == {"gpu-0": None}


def mps_limits(per_device: dict[str, str], results: list[dict[str, Any]]) -> PreparationPlan:
    mps = {
        "strategy": "MPS",
        "mpsConfig": {
            "defaultPinnedDeviceMemoryLimit": "1Gi",
            "defaultPerDevicePinnedMemoryLimit": per_device,
        },
    }
    return plan(claim(UID, results, configs=[config(gpu_config(**mps))]))


def test_mps_per_device_limits_by_index_and_uuid() -> None:
    uuid_of_gpu_5 = INVENTORY.gpus[5].uuid
    p = mps_limits(
        {"1": "2Gi", uuid_of_gpu_5: "3Gi"},
        [result("gpu-3"), result("gpu-4"), result("gpu-5")],
    )
    limits = {d.device: d.sharing.mps_pinned_memory_limit_bytes for d in p.devices if d.sharing}
    assert limits == {"gpu-3": 2**30, "gpu-4": 2 * 2**30, "gpu-5": 3 * 2**30}


def test_mps_per_device_limit_for_a_missing_device_is_an_error() -> None:
    err = error_of(lambda: mps_limits({"2": "2Gi"}, [result("gpu-3"), result("gpu-4")]))
    assert "defaultPerDevicePinnedMemoryLimit[2]" in str(err)
    assert "indices 0 to 1" in str(err)
    err = error_of(lambda: mps_limits({"GPU-nope": "2Gi"}, [result("gpu-3")]))
    assert "no device with UUID GPU-nope" in str(err)


def error_of(call: Any) -> PrepareError:
    with pytest.raises(PrepareError) as caught:
        call()
    return caught.value


def test_same_device_in_two_results_is_one_device_with_both_requests() -> None:
    p = plan(
        claim(UID, [result("gpu-0", "a", adminAccess=True), result("gpu-0", "b", adminAccess=True)])
    )
    assert [(d.device, d.requests, d.admin_access) for d in p.devices] == [
        ("gpu-0", ("a", "b"), True)
    ]


def test_shared_allocations_of_one_device_get_distinct_names() -> None:
    share_a = "0c3b1d9e-1111-4a4a-8b8b-000000000001"
    share_b = "0c3b1d9e-1111-4a4a-8b8b-000000000002"
    p = plan(
        claim(UID, [result("gpu-0", "a", shareID=share_a), result("gpu-0", "b", shareID=share_b)])
    )
    assert [d.cdi_device_id.split("=")[1] for d in p.devices] == [
        f"{UID}-gpu-0-{share_a}",
        f"{UID}-gpu-0-{share_b}",
    ]


def test_plan_is_deterministic_and_checkpoint_round_trips() -> None:
    c = claim(
        UID,
        [result("gpu-2"), result("gpu-6", "b")],
        configs=[config(gpu_config(**MPS), requests=["b"])],
    )
    first, second = plan(c), plan(c)
    assert first == second
    entry = ClaimEntry(
        namespace="default",
        name="train-0",
        state="PrepareCompleted",
        boot_id="boot",
        cdi_spec_path="/var/run/cdi/x.json",
        devices=checkpoint_devices(first),
    )
    again = plan_from_checkpoint(UID, entry, driver_name=DRIVER, host=HOST)
    assert again.devices == first.devices
    assert again.spec is not None and first.spec is not None
    assert encode_cdi_spec(again.spec) == encode_cdi_spec(first.spec)
