"""Fragmentation: free units, the largest request that still fits and the stranded share of
free capacity, for whole GPUs, MIG devices (counters) and shares (consumable capacity)."""

from __future__ import annotations

from typing import Any

from api.resource_v1 import DeviceTaint, ResourceClaim, ResourceSlice
from dra_driver.allocator import Snapshot
from dra_driver.discovery.mock import MockBackend
from dra_driver.fragmentation import measure
from dra_driver.slices import build_slices

DRIVER = "gpu.dra-driver.io"
GIB = 1 << 30


def _claim(name: str, pool: str, device: str, **extra: Any) -> ResourceClaim:
    result: dict[str, Any] = {
        "request": "gpu",
        "driver": DRIVER,
        "pool": pool,
        "device": device,
        **extra,
    }
    return ResourceClaim.model_validate(
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": name, "namespace": "team-a"},
            "spec": {"devices": {"requests": []}},
            "status": {"allocation": {"devices": {"results": [result]}}},
        }
    )


def _slices(node: str, profile: str, **options: Any) -> list[ResourceSlice]:
    return build_slices(MockBackend(node, profile).discover(), driver_name=DRIVER, **options)


def test_whole_gpus_on_a_partly_used_node_are_stranded() -> None:
    slices = _slices("node-a", "2xH100-80GB") + _slices("node-b", "2xH100-80GB")
    found = measure(
        Snapshot.build(slices=slices, classes=(), claims=[_claim("c", "node-a", "gpu-0")]), DRIVER
    )

    by_node = {n.node: n for n in found.nodes}
    assert by_node["node-a"].free_gpus == 1
    assert by_node["node-a"].ratio("gpu") == 1.0
    assert by_node["node-b"].free_gpus == 2
    assert by_node["node-b"].ratio("gpu") == 0.0
    # 3 free GPUs, the one on node-a cannot serve a whole-node request.
    assert found.free("gpu") == 3
    assert found.ratio("gpu") == 1 / 3
    assert found.largest_gpu_request == 2


def test_a_tainted_gpu_is_not_free_and_strands_its_node() -> None:
    slices = _slices("node-a", "2xH100-80GB")
    gpu = next(d for s in slices for d in s.spec.devices or [] if d.name == "gpu-1")
    gpu.taints = [DeviceTaint(key=f"{DRIVER}/xid", value="79", effect="NoSchedule")]
    found = measure(Snapshot.build(slices=slices, classes=()), DRIVER)

    (node,) = found.nodes
    assert node.free_gpus == 1
    assert node.ratio("gpu") == 1.0


def test_mig_profiles_fit_by_counters_and_partly_used_gpus_strand_their_slices() -> None:
    slices = _slices("node-a", "2xH100-80GB") + _slices("node-b", "2xH100-80GB")
    claims = [
        _claim("small", "node-a", "gpu-1-mig-1g10gb-19-0"),
        _claim("whole", "node-b", "gpu-0"),
        _claim("big", "node-b", "gpu-1-mig-4g40gb-5-0"),
    ]
    found = measure(Snapshot.build(slices=slices, classes=(), claims=claims), DRIVER)
    by_node = {n.node: n for n in found.nodes}

    # node-a: gpu-0 empty (two 3g.40gb), gpu-1 lost slice 0 (placement 9-0): one more there.
    assert by_node["node-a"].mig["3g.40gb"] == 3
    assert by_node["node-a"].mig["7g.80gb"] == 1
    assert by_node["node-a"].mig["1g.10gb"] == 7 + 6
    # node-b: gpu-0 whole in use, gpu-1 has slices 4-7 left: one 3g.40gb, no 7g.80gb.
    assert by_node["node-b"].mig["3g.40gb"] == 1
    assert by_node["node-b"].mig["7g.80gb"] == 0
    assert found.mig_nodes()["7g.80gb"] == 1
    assert found.mig_nodes()["3g.40gb"] == 2
    # Memory slices: node-a 8 free on an empty GPU + 7 stranded; node-b 4 stranded.
    assert by_node["node-a"].free["mig"] == 15
    assert by_node["node-a"].ratio("mig") == 7 / 15
    assert by_node["node-b"].ratio("mig") == 1.0
    assert found.ratio("mig") == 11 / 19
    # A GPU with a MIG device in use is not a free whole GPU.
    assert by_node["node-a"].free_gpus == 1


def test_shares_count_unconsumed_memory_and_the_largest_share_left() -> None:
    slices = _slices("node-s", "2xL4", shared_gpus=True)
    memory = next(d for s in slices for d in s.spec.devices or []).capacity["memory"]  # type: ignore[index]
    total = int(memory.value.value)
    claims = [
        _claim(
            "share",
            "node-s",
            "gpu-0",
            shareID="0a1b2c3d-0000-4000-8000-000000000001",
            consumedCapacity={"memory": "10Gi", "compute": "50"},
        )
    ]
    found = measure(Snapshot.build(slices=slices, classes=(), claims=claims), DRIVER)

    (node,) = found.nodes
    assert node.free["share"] == 2 * total - 10 * GIB
    assert node.largest_share == total
    assert node.ratio("share") == (total - 10 * GIB) / (2 * total - 10 * GIB)
    # The shared GPU is no longer free whole; the other one is.
    assert node.free_gpus == 1
    assert found.to_json()["total"]["largestShareBytes"] == total  # type: ignore[index]


def test_nothing_free_is_no_fragmentation() -> None:
    slices = _slices("node-a", "2xL4")
    claims = [_claim("a", "node-a", "gpu-0"), _claim("b", "node-a", "gpu-1")]
    found = measure(Snapshot.build(slices=slices, classes=(), claims=claims), DRIVER)

    assert found.free("gpu") == 0
    assert found.ratio("gpu") == 0.0
    assert found.largest_gpu_request == 0
    assert "gpu 0.00 (largest request 0 of 0 free)" in found.summary()


def test_other_drivers_devices_are_not_counted() -> None:
    slices = build_slices(MockBackend("node-a", "2xL4").discover(), driver_name="other.example.com")
    assert measure(Snapshot.build(slices=slices, classes=()), DRIVER).nodes == []
