"""The controller's fragmentation gauges: computed from its cache on demand (the timer's
step), served whole from the last result, series of a node gone dropped."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from api.resource_v1 import dump
from controller.app import Controller
from controller.settings import parse_settings
from dra_driver.discovery.mock import MockBackend
from dra_driver.slices import build_slices
from tests.fakes.cluster import FakeCluster

DRIVER = "gpu.dra-driver.io"


def _slices(node: str, profile: str, **options: Any) -> list[dict[str, Any]]:
    inventory = MockBackend(node, profile).discover()
    return [dump(s) for s in build_slices(inventory, driver_name=DRIVER, **options)]


def _claim(name: str, pool: str, device: str) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": "team-a", "resourceVersion": "1"},
        "spec": {"devices": {"requests": []}},
        "status": {
            "allocation": {
                "devices": {
                    "results": [
                        {"request": "gpu", "driver": DRIVER, "pool": pool, "device": device}
                    ]
                }
            }
        },
    }


def _samples(controller: Controller) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = controller.metrics.render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_gauges_follow_the_cache_when_measured() -> None:
    controller = Controller(parse_settings([], environ={}), FakeCluster(), workers=0)
    cache = controller.cache
    cache.replace("resourceslices", _slices("node-a", "2xH100-80GB") + _slices("node-b", "2xL4"))
    cache.replace("resourceclaims", [_claim("c", "node-a", "gpu-1-mig-3g40gb-9-0")])
    for resource in ("deviceclasses", "devicetaintrules", "nodes", "pods"):
        cache.replace(resource, [])

    assert ("dra_driver_fragmentation_ratio", (("class", "gpu"),)) in _samples(controller)
    controller.measure_fragmentation()
    samples = _samples(controller)

    product_a = "NVIDIA H100 80GB HBM3"
    assert samples[("dra_driver_free_gpus", (("node", "node-a"), ("product", product_a)))] == 1
    assert (
        samples[("dra_driver_free_mig_devices", (("node", "node-a"), ("profile", "3g.40gb")))] == 3
    )
    assert samples[("dra_driver_mig_profile_nodes", (("profile", "7g.80gb"),))] == 1
    assert samples[("dra_driver_largest_gpu_request", ())] == 2
    # 3 free whole GPUs, the one on node-a stranded beside the MIG device in use.
    assert samples[("dra_driver_fragmentation_ratio", (("class", "gpu"),))] == 1 / 3
    assert (
        samples[("dra_driver_node_fragmentation_ratio", (("class", "gpu"), ("node", "node-b")))]
        == 0
    )

    cache.replace("resourceslices", _slices("node-b", "2xL4"))
    controller.measure_fragmentation()
    samples = _samples(controller)
    assert not any(dict(labels).get("node") == "node-a" for _, labels in samples)
    assert samples[("dra_driver_fragmentation_ratio", (("class", "gpu"),))] == 0
