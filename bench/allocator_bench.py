"""Allocator throughput: claims allocated one after another into a growing in-use set.

Usage::

    python bench/allocator_bench.py            # every shape, each in a fresh process
    python bench/allocator_bench.py B1 B5      # some shapes
    python bench/allocator_bench.py --claims 500 B1

Prints one JSON object per shape: claims/s, p50/p99 ms per claim (allocate plus
``Snapshot.add_allocated`` of the result), snapshot build ms, object
construction ms, and the process's peak RSS (each shape runs in its own
process so the figure is the shape's own). The allocator picks the node
(``node=None``); policy first-fit unless the shape says otherwise.

Shapes:

- B1: 500 nodes x 10 GPUs, one request, class selector only (also with binpack).
- B3: B1 plus a request selector on a version attribute and a quantity.
- B4: two requests per claim with ``matchAttribute`` on the NUMA node.
- B5: 5,000 nodes x 8 GPUs, half of them already allocated (gpu-0..3 of every
  node); B5-full-first: the first 2,500 nodes full instead (first-fit must get
  past them).
- B6: 100 nodes x 128 GPUs; and 100 nodes x 64 partitionable devices
  (8 GPUs with 7 MIG slices each, counters), 1g MIG claims.

Benchmarks print figures; they never pass or fail on time.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from api.resource_v1 import (
    DeviceClass,
    ResourceClaim,
    ResourceClaimStatus,
    ResourceSlice,
)
from dra_driver.allocator import Snapshot, allocate

DRIVER = "gpu.dra-driver.io"
CLASS_SELECTOR = f'device.driver == "{DRIVER}" && device.attributes["{DRIVER}"].type == "gpu"'
MIG_SELECTOR = (
    f'device.driver == "{DRIVER}" && device.attributes["{DRIVER}"].type == "mig" && '
    f'device.attributes["{DRIVER}"].profile == "1g.10gb"'
)
REQUEST_SELECTOR = (
    f'device.attributes["{DRIVER}"].driverVersion.compareTo(semver("550.0.0")) >= 0 && '
    f'device.capacity["{DRIVER}"].memory.compareTo(quantity("40Gi")) >= 0'
)


def gpu_device(index: int) -> dict[str, Any]:
    return {
        "name": f"gpu-{index}",
        "attributes": {
            "type": {"string": "gpu"},
            "index": {"int": index},
            "productName": {"string": "NVIDIA H100 80GB HBM3"},
            "driverVersion": {"version": "550.54.15"},
            "cudaComputeCapability": {"version": "9.0.0"},
            "resource.kubernetes.io/numaNode": {"int": index % 2},
        },
        "capacity": {"memory": {"value": "80Gi"}},
    }


def gpu_slice(node: str, count: int) -> ResourceSlice:
    return ResourceSlice.model_validate(
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceSlice",
            "metadata": {"name": f"{node}-gpus"},
            "spec": {
                "driver": DRIVER,
                "nodeName": node,
                "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
                "devices": [gpu_device(i) for i in range(count)],
            },
        }
    )


def mig_slices(node: str, gpus: int = 8, migs: int = 7) -> list[ResourceSlice]:
    """Per GPU: one counter set of ``migs`` memory slices, a full device, ``migs`` 1g devices."""
    slots = [f"memory-slice-{i}" for i in range(migs)]
    devices: list[dict[str, Any]] = []
    sets = []
    for g in range(gpus):
        counters = {s: {"value": "1"} for s in slots}
        sets.append({"name": f"gpu-{g}-counters", "counters": counters})
        devices.append(
            {
                "name": f"gpu-{g}",
                "attributes": {"type": {"string": "gpu"}},
                "consumesCounters": [{"counterSet": f"gpu-{g}-counters", "counters": counters}],
            }
        )
        for m in range(migs):
            devices.append(
                {
                    "name": f"gpu-{g}-mig-1g-{m}",
                    "attributes": {"type": {"string": "mig"}, "profile": {"string": "1g.10gb"}},
                    "consumesCounters": [
                        {"counterSet": f"gpu-{g}-counters", "counters": {slots[m]: {"value": "1"}}}
                    ],
                }
            )
    # The counters slice and the device slices (at most 64 devices each).
    out = [
        ResourceSlice.model_validate(
            {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "ResourceSlice",
                "metadata": {"name": f"{node}-0-counters"},
                "spec": {
                    "driver": DRIVER,
                    "nodeName": node,
                    "pool": {"name": node, "generation": 1, "resourceSliceCount": 2},
                    "sharedCounters": sets,
                },
            }
        ),
        ResourceSlice.model_validate(
            {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "ResourceSlice",
                "metadata": {"name": f"{node}-1-devices"},
                "spec": {
                    "driver": DRIVER,
                    "nodeName": node,
                    "pool": {"name": node, "generation": 1, "resourceSliceCount": 2},
                    "devices": devices,
                },
            }
        ),
    ]
    return out


def device_class(name: str, expression: str) -> DeviceClass:
    return DeviceClass.model_validate(
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "DeviceClass",
            "metadata": {"name": name},
            "spec": {"selectors": [{"cel": {"expression": expression}}]},
        }
    )


def pending_claim(name: str, devices: dict[str, Any]) -> ResourceClaim:
    return ResourceClaim.model_validate(
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": name, "namespace": "bench"},
            "spec": {"devices": devices},
        }
    )


def one_gpu(selectors: list[str] | None = None, device_class_name: str = "gpu") -> dict[str, Any]:
    exactly: dict[str, Any] = {"deviceClassName": device_class_name}
    if selectors:
        exactly["selectors"] = [{"cel": {"expression": s}} for s in selectors]
    return {"requests": [{"name": "gpu", "exactly": exactly}]}


def numa_pair() -> dict[str, Any]:
    return {
        "requests": [
            {"name": "a", "exactly": {"deviceClassName": "gpu"}},
            {"name": "b", "exactly": {"deviceClassName": "gpu"}},
        ],
        "constraints": [
            {"requests": ["a", "b"], "matchAttribute": "resource.kubernetes.io/numaNode"}
        ],
    }


def holding_claim(name: str, node: str, devices: list[str]) -> ResourceClaim:
    claim = pending_claim(name, one_gpu())
    claim.status = ResourceClaimStatus.model_validate(
        {
            "allocation": {
                "devices": {
                    "results": [
                        {"request": "gpu", "driver": DRIVER, "pool": node, "device": d}
                        for d in devices
                    ]
                }
            }
        }
    )
    return claim


@dataclass
class Shape:
    name: str
    description: str
    build: Callable[[], tuple[list[ResourceSlice], list[DeviceClass], list[ResourceClaim]]]
    claim: Callable[[], dict[str, Any]]
    policy: str = "first-fit"
    target: str = ""


def _plain(nodes: int, per_node: int) -> Callable[[], tuple[list[Any], list[Any], list[Any]]]:
    def build() -> tuple[list[Any], list[Any], list[Any]]:
        slices = [gpu_slice(f"node-{n:05d}", per_node) for n in range(nodes)]
        return slices, [device_class("gpu", CLASS_SELECTOR)], []

    return build


def _half_allocated() -> tuple[list[Any], list[Any], list[Any]]:
    slices, classes, _ = _plain(5000, 8)()
    held = [
        holding_claim(f"held-{n:05d}", f"node-{n:05d}", [f"gpu-{i}" for i in range(4)])
        for n in range(5000)
    ]
    return slices, classes, held


def _first_half_full() -> tuple[list[Any], list[Any], list[Any]]:
    slices, classes, _ = _plain(5000, 8)()
    held = [
        holding_claim(f"held-{n:05d}", f"node-{n:05d}", [f"gpu-{i}" for i in range(8)])
        for n in range(2500)
    ]
    return slices, classes, held


def _partitionable() -> tuple[list[Any], list[Any], list[Any]]:
    slices = [s for n in range(100) for s in mig_slices(f"node-{n:05d}")]
    return slices, [device_class("mig", MIG_SELECTOR), device_class("gpu", CLASS_SELECTOR)], []


SHAPES = {
    "B1": Shape(
        "B1",
        "500 nodes x 10 GPUs, class selector only",
        _plain(500, 10),
        one_gpu,
        target=">= 1000 claims/s",
    ),
    "B1-binpack": Shape(
        "B1-binpack", "B1 under binpack", _plain(500, 10), one_gpu, policy="binpack"
    ),
    "B3": Shape(
        "B3",
        "B1 plus a request selector (semver, quantity)",
        _plain(500, 10),
        lambda: one_gpu([REQUEST_SELECTOR]),
        target=">= 800 claims/s",
    ),
    "B4": Shape(
        "B4",
        "B1, two requests with matchAttribute numaNode",
        _plain(500, 10),
        numa_pair,
        target=">= 300 claims/s",
    ),
    "B5": Shape(
        "B5",
        "5000 nodes x 8 GPUs, half allocated",
        _half_allocated,
        one_gpu,
        target=">= 500 claims/s, build <= 2 s, RSS <= 400 MB",
    ),
    "B5-full-first": Shape(
        "B5-full-first",
        "5000 nodes x 8 GPUs, the first 2500 nodes (in name order) full",
        _first_half_full,
        one_gpu,
        target="report",
    ),
    "B6": Shape("B6", "100 nodes x 128 GPUs", _plain(100, 128), one_gpu, target="report"),
    "B6-mig": Shape(
        "B6-mig",
        "100 nodes x 64 partitionable devices (8 GPUs x 7 MIG 1g + full), 1g claims",
        _partitionable,
        lambda: one_gpu(device_class_name="mig"),
        target="report",
    ),
}


def run_shape(shape: Shape, claims: int, *, freeze: bool = True) -> dict[str, Any]:
    started = time.perf_counter()
    slices, classes, held = shape.build()
    pending = [pending_claim(f"claim-{i:06d}", shape.claim()) for i in range(claims)]
    objects_ms = (time.perf_counter() - started) * 1000
    # Start the build with no collection pending from decoding the inputs, so a
    # full collection triggered by the input objects is not billed to the build.
    gc.collect()
    started = time.perf_counter()
    snapshot = Snapshot.build(slices=slices, classes=classes, claims=held)
    build_ms = (time.perf_counter() - started) * 1000
    if freeze:
        # What a long-running controller does after its initial sync: the objects
        # loaded so far stay, so keep the collector from re-scanning them.
        gc.collect()
        gc.freeze()
    per_claim: list[float] = []
    nodes: set[str | None] = set()
    for claim in pending:
        t0 = time.perf_counter()
        allocation = allocate(snapshot, [claim], policy=shape.policy)
        claim.status = ResourceClaimStatus(allocation=allocation.results[0])
        snapshot.add_allocated(claim)
        per_claim.append(time.perf_counter() - t0)
        nodes.add(allocation.node)
    total = sum(per_claim)
    ordered = sorted(per_claim)
    return {
        "shape": shape.name,
        "description": shape.description,
        "policy": shape.policy,
        "gc": "frozen after setup" if freeze else "default",
        "target": shape.target,
        "claims": claims,
        "nodes_used": len(nodes),
        "claims_per_s": round(claims / total, 1),
        "p50_ms": round(statistics.median(per_claim) * 1000, 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3),
        "snapshot_build_ms": round(build_ms, 1),
        "objects_ms": round(objects_ms, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "shapes", nargs="*", help=f"shapes to run (default: all of {', '.join(SHAPES)})"
    )
    parser.add_argument("--claims", type=int, default=2000, help="claims to allocate per shape")
    parser.add_argument(
        "--gc-default",
        action="store_true",
        help="leave the garbage collector as it is (default: gc.freeze() after setup)",
    )
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    names = args.shapes or list(SHAPES)
    unknown = [n for n in names if n not in SHAPES]
    if unknown:
        parser.error(f"unknown shape(s): {', '.join(unknown)}")
    if args.in_process:
        for name in names:
            result = run_shape(SHAPES[name], args.claims, freeze=not args.gc_default)
            print(json.dumps(result), flush=True)
        return 0
    for name in names:
        # A fresh process per shape: peak RSS is then the shape's own.
        extra = ["--gc-default"] if args.gc_default else []
        subprocess.run(
            [sys.executable, __file__, "--in-process", "--claims", str(args.claims), *extra, name],
            check=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
