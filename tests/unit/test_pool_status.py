"""``gpus --check-pool-status``: the figures ``gpus`` computes per pool follow upstream's rules
for ResourcePoolStatusRequest (generations, incomplete pools, admin access, taints and
DeviceTaintRules, shareable devices), and the check creates, reads and deletes the request."""

from __future__ import annotations

from typing import Any

from agent_kit.kube import NotFoundError
from api.quantity import Quantity
from api.resource_v1 import ResourceClaim, ResourceSlice
from api.resource_v1.device_taint_rule import DeviceTaintRule
from dra_cli.pool_status import NOT_SERVED, check_pool_status, compare_pools, expected_pools
from tests.fakes.cluster import FakeCluster

DRIVER = "gpu.dra-driver.io"


def _slice(name: str, pool: str, generation: int, count: int, devices: list[Any]) -> Any:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": name},
        "spec": {
            "driver": DRIVER,
            "nodeName": pool,
            "pool": {"name": pool, "generation": generation, "resourceSliceCount": count},
            "devices": devices,
        },
    }


def _claim(name: str, *results: dict[str, Any]) -> Any:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"devices": {"requests": []}},
        "status": {
            "allocation": {
                "devices": {
                    "results": [
                        {"request": "r", "driver": DRIVER, "pool": "node-a", **r} for r in results
                    ]
                }
            }
        },
    }


SLICES = [
    _slice("old", "node-a", 1, 1, [{"name": f"gpu-{i}"} for i in range(5)]),
    _slice(
        "new",
        "node-a",
        2,
        1,
        [
            {"name": "gpu-0"},
            {"name": "gpu-1", "taints": [{"key": "xid", "effect": "NoSchedule"}]},
            {
                "name": "gpu-2",
                "allowMultipleAllocations": True,
                "capacity": {"memory": {"value": "80Gi"}},
            },
        ],
    ),
    _slice("half", "node-b", 1, 2, [{"name": "gpu-0"}]),
]
CLAIMS = [
    _claim("whole", {"device": "gpu-0"}),
    _claim("share-1", {"device": "gpu-2", "shareID": "a", "consumedCapacity": {"memory": "10Gi"}}),
    _claim("share-2", {"device": "gpu-2", "shareID": "b", "consumedCapacity": {"memory": "10Gi"}}),
    _claim("watcher", {"device": "gpu-1", "adminAccess": True}),
]
RULES = [
    {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceTaintRule",
        "metadata": {"name": "drain"},
        "spec": {
            "deviceSelector": {"driver": DRIVER, "pool": "node-a", "device": "gpu-0"},
            "taint": {"key": "drain", "effect": "NoExecute"},
        },
    },
    {  # no selector: picks no device
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceTaintRule",
        "metadata": {"name": "nothing"},
        "spec": {"taint": {"key": "x", "effect": "NoSchedule"}},
    },
]
# What upstream's controller answers for these objects, as the API server returns it.
UPSTREAM = {
    "poolCount": 2,
    "pools": [
        {
            "driver": DRIVER,
            "poolName": "node-a",
            "generation": 2,
            "resourceSliceCount": 1,
            "totalDevices": 3,
            "allocatedDevices": 2,
            "availableDevices": 0,
            "unavailableDevices": 2,
            "nodeName": "node-a",
            "shareableSummary": {
                "fullyAvailableDevices": 0,
                "partiallyAvailableDevices": 1,
                "capacity": [
                    {"name": "memory", "total": "80Gi", "consumed": "20Gi", "available": "60Gi"}
                ],
            },
        },
        {
            "driver": DRIVER,
            "poolName": "node-b",
            "generation": 1,
            "nodeName": "node-b",
            "validationError": "PoolIncomplete: pool is incomplete: observed 1/2 slices",
        },
    ],
    "conditions": [{"type": "Complete", "status": "True"}],
}


def _objects() -> tuple[list[ResourceSlice], list[ResourceClaim]]:
    return (
        [ResourceSlice.model_validate(s) for s in SLICES],
        [ResourceClaim.model_validate(c) for c in CLAIMS],
    )


def test_figures_follow_upstreams_rules() -> None:
    slices, claims = _objects()
    rules = [DeviceTaintRule.model_validate(r) for r in RULES]
    pools = expected_pools(slices, claims, rules, DRIVER)
    assert pools["node-b"] == {"generation": 1, "nodeName": "node-b", "validationError": True}
    a = pools["node-a"]
    assert (a["generation"], a["resourceSliceCount"], a["totalDevices"]) == (2, 1, 3)
    # gpu-0 is allocated and drained by the rule; gpu-1's only holder has admin access.
    assert (a["allocatedDevices"], a["unavailableDevices"], a["availableDevices"]) == (2, 2, 0)
    assert a["shareableSummary"]["capacity"]["memory"] == {
        "total": Quantity.parse("80Gi"),
        "consumed": Quantity.parse("20Gi"),
        "available": Quantity.parse("60Gi"),
    }
    assert compare_pools(pools, UPSTREAM) == (2, [])


def test_every_differing_field_is_named() -> None:
    slices, claims = _objects()
    pools = expected_pools(slices, claims, [], DRIVER)  # without the drain rule
    count, problems = compare_pools(pools, UPSTREAM)
    assert count == 2
    # available stays 0 either way: 3 - 2 allocated - 1 tainted.
    assert problems == ["pool node-a: unavailableDevices gpus 1, upstream 2"]
    missing = {**UPSTREAM, "pools": UPSTREAM["pools"][:1], "poolCount": 1}
    assert compare_pools(pools, missing)[1][-1] == (
        "pool node-b: seen by gpus, not reported upstream"
    )


class _Upstream(FakeCluster):
    """The in-memory API server, with upstream's controller answering every request."""

    def __init__(self, answer: dict[str, Any] | None) -> None:
        super().__init__()
        self.answer = answer
        self.specs: list[Any] = []

    def get(self, resource: Any, name: str, *, namespace: str | None = None) -> dict[str, Any]:
        found = super().get(resource, name, namespace=namespace)
        if resource == "resourcepoolstatusrequests":
            self.specs.append(found["spec"])
            if self.answer is not None:
                return {**found, "status": self.answer}
        return found


def test_the_check_creates_reads_and_deletes_the_request() -> None:
    slices, claims = _objects()
    cluster = _Upstream(UPSTREAM)
    for rule in RULES:
        cluster.create("devicetaintrules", rule)
    result = check_pool_status(cluster, DRIVER, slices, claims)
    assert result.agrees and result.pools == 2
    assert result.lines() == ["pool status: agrees with resource.k8s.io/v1alpha3 on 2 pools"]
    assert cluster.specs == [{"driver": DRIVER, "limit": 1000}]
    assert cluster.list("resourcepoolstatusrequests").items == []

    silent = _Upstream(None)
    naps: list[float] = []
    result = check_pool_status(silent, DRIVER, slices, claims, timeout_s=0.0, sleep=naps.append)
    assert not result.agrees and "got no status" in (result.error or "")
    assert silent.list("resourcepoolstatusrequests").items == []


def test_a_cluster_without_the_api_is_told_plainly() -> None:
    class Old(FakeCluster):
        def create(self, resource: Any, obj: Any) -> dict[str, Any]:
            if resource == "resourcepoolstatusrequests":
                raise NotFoundError("the server could not find the requested resource")
            return super().create(resource, obj)

    slices, claims = _objects()
    result = check_pool_status(Old(), DRIVER, slices, claims)
    assert not result.served and not result.agrees
    assert result.lines("prod") == [f"pool status prod: {NOT_SERVED}"]


def test_gpus_prints_the_check_and_fails_on_a_disagreement() -> None:
    import argparse
    import io
    import json

    from dra_cli.gpus import add_gpus_arguments, run_gpus

    parser = argparse.ArgumentParser()
    add_gpus_arguments(parser)

    def run(answer: dict[str, Any], *argv: str) -> tuple[int, str]:
        cluster = _Upstream(answer)
        for kind, objects in (
            ("resourceslices", SLICES),
            ("resourceclaims", CLAIMS),
            ("devicetaintrules", RULES),
        ):
            for obj in objects:
                cluster.create(kind, obj)
        out = io.StringIO()
        args = parser.parse_args(["--check-pool-status", *argv])
        return run_gpus(args, out=out, clients={None: cluster}), out.getvalue()

    code, text = run(UPSTREAM)
    assert code == 0
    assert "pool status: agrees with resource.k8s.io/v1alpha3 on 2 pools" in text.splitlines()
    wrong = {**UPSTREAM, "pools": [{**UPSTREAM["pools"][0], "allocatedDevices": 1}]}
    code, text = run(wrong, "-o", "json")
    assert code == 1
    (found,) = json.loads(text)["poolStatus"]
    assert found["problems"] == [
        "upstream listed 1 of 2 pools (its limit)",
        "pool node-a: allocatedDevices gpus 2, upstream 1",
    ]
