"""One ResourceSlice update: the whole allocator snapshot rebuilt, against only its pool replaced.

Usage::

    python bench/snapshot_bench.py                       # 100 nodes x 8 GPUs
    python bench/snapshot_bench.py --nodes 1000 --updates 50

The cluster: ``--nodes`` nodes (Node objects), each publishing one
ResourceSlice with ``--gpus`` GPUs in its own pool, one DeviceClass, and half
of the GPUs allocated (one claim per GPU, gpu-0.. of every node). Each update
republishes one node's slice with the next generation (devices alternately
tainted and not), as a kubelet plugin does when a device's health changes.

Per update, two ways to bring the snapshot up to date, each followed by the
next placement decision (``allocate`` of a one-GPU claim, binpack, so the
costs deferred to the first decision after a change count too):

- ``rebuild``: ``Snapshot.build`` from every slice, class, node and allocated
  claim (what the controller's cache did on any slice change);
- ``replace_pools``: ``Snapshot.replace_pools`` of the changed slice's pool;
- ``cache``: the controller's ``ClusterCache.apply`` of the raw slice (decoding
  included), which uses ``replace_pools``.

Prints one JSON object: median and p99 milliseconds of the update alone and of
the update plus the decision, per way, and of the decision alone on an
unchanged snapshot (``decision_without_update``). Benchmarks print figures; they never
pass or fail on time.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from api.resource_v1 import DeviceClass, Node, ResourceClaim, ResourceSlice, dump
from controller.cache import ClusterCache
from dra_driver.allocator import Snapshot, allocate

DRIVER = "gpu.dra-driver.io"
CLASS = "gpu"
SELECTOR = f'device.driver == "{DRIVER}" && device.attributes["{DRIVER}"].type == "gpu"'


def _node(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
    }


def _slice(node: str, gpus: int, generation: int) -> dict[str, Any]:
    taints = [{"key": "example.com/unhealthy", "effect": "NoSchedule"}] if generation % 2 else []
    devices = [
        {
            "name": f"gpu-{i}",
            "attributes": {"type": {"string": "gpu"}, "index": {"int": i}},
            "capacity": {"memory": {"value": "80Gi"}},
            **({"taints": taints} if taints and i == gpus - 1 else {}),
        }
        for i in range(gpus)
    ]
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": f"{node}-gpus"},
        "spec": {
            "driver": DRIVER,
            "nodeName": node,
            "pool": {"name": node, "generation": generation, "resourceSliceCount": 1},
            "devices": devices,
        },
    }


def _claim(name: str, node: str | None = None, gpu: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": "default", "uid": name, "resourceVersion": "1"},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": CLASS}}]}},
    }
    if node is not None:
        result = {"request": "gpu", "driver": DRIVER, "pool": node, "device": f"gpu-{gpu}"}
        body["status"] = {"allocation": {"devices": {"results": [result]}}}
    return body


def _class() -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": CLASS},
        "spec": {"selectors": [{"cel": {"expression": SELECTOR}}]},
    }


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"p50_ms": round(statistics.median(ordered) * 1e3, 3), "p99_ms": round(p99 * 1e3, 3)}


def _measure(
    updates: int, update: Callable[[int], Snapshot], decide: Callable[[Snapshot], None]
) -> dict[str, Any]:
    alone: list[float] = []
    with_decision: list[float] = []
    for i in range(updates):
        t0 = time.perf_counter()
        snapshot = update(i)
        t1 = time.perf_counter()
        decide(snapshot)
        t2 = time.perf_counter()
        alone.append(t1 - t0)
        with_decision.append(t2 - t0)
    return {"update": _ms(alone), "update_and_decision": _ms(with_decision)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--updates", type=int, default=100)
    args = parser.parse_args()

    names = [f"node-{n:04d}" for n in range(args.nodes)]
    raw_slices = {name: _slice(name, args.gpus, 2) for name in names}
    raw_claims = [
        _claim(f"held-{name}-{g}", name, g) for name in names for g in range(args.gpus // 2)
    ]
    slices = {name: ResourceSlice.model_validate(raw) for name, raw in raw_slices.items()}
    classes = [DeviceClass.model_validate(_class())]
    nodes = [Node.model_validate(_node(name)) for name in names]
    claims = [ResourceClaim.model_validate(raw) for raw in raw_claims]
    pending = [ResourceClaim.model_validate(_claim("pending"))]

    def decide(snapshot: Snapshot) -> None:
        allocate(snapshot, pending, policy="binpack")

    def changed(i: int) -> tuple[str, dict[str, Any]]:
        name = names[(i * 37) % len(names)]
        generation = raw_slices[name]["spec"]["pool"]["generation"] + 1
        raw_slices[name] = _slice(name, args.gpus, generation)
        return name, raw_slices[name]

    def rebuild(i: int) -> Snapshot:
        name, raw = changed(i)
        slices[name] = ResourceSlice.model_validate(raw)
        return Snapshot.build(
            slices=list(slices.values()), classes=classes, claims=claims, nodes=nodes
        )

    t0 = time.perf_counter()
    live = Snapshot.build(slices=list(slices.values()), classes=classes, claims=claims, nodes=nodes)
    decide(live)
    first_build_s = time.perf_counter() - t0

    def replace(i: int) -> Snapshot:
        name, raw = changed(i)
        slices[name] = ResourceSlice.model_validate(raw)
        live.replace_pools([(DRIVER, name)], [slices[name]])
        return live

    cache = ClusterCache()
    cache.replace("deviceclasses", [_class()])
    cache.replace("nodes", [_node(name) for name in names])
    cache.replace("resourceclaims", raw_claims)
    cache.replace("resourceslices", [dump(s) for s in slices.values()])
    decide(cache.snapshot())

    def through_cache(i: int) -> Snapshot:
        _, raw = changed(i)
        cache.apply("resourceslices", "MODIFIED", raw)
        return cache.snapshot()

    gc.collect()
    baseline = _measure(args.updates, lambda i: live, decide)["update_and_decision"]
    gc.collect()
    rebuilt = _measure(args.updates, rebuild, decide)
    gc.collect()
    replaced = _measure(args.updates, replace, decide)
    gc.collect()
    cached = _measure(args.updates, through_cache, decide)
    figures = {
        "nodes": args.nodes,
        "gpus_per_node": args.gpus,
        "allocated_claims": len(claims),
        "updates": args.updates,
        "first_build_and_decision_ms": round(first_build_s * 1e3, 1),
        "decision_without_update": baseline,
        "rebuild": rebuilt,
        "replace_pools": replaced,
        "cache": cached,
        "cache_rebuilds": cache.rebuilds,
        "cache_pool_updates": cache.pool_updates,
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
