"""The controller's own cost per gated pod at scale, without an API server's latency.

Usage::

    python bench/decision_bench.py                         # 5,000 nodes x 8 GPUs, 300 pods
    python bench/decision_bench.py --nodes 500 --gpus 10 --pods 1000

One :class:`~controller.cache.ClusterCache` holds ``--nodes`` Nodes, each with one
ResourceSlice of ``--gpus`` GPUs, and one DeviceClass, listed in as the watches deliver
them; a :class:`~controller.placement.Placer` (binpack, no settle delay) places
``--pods`` gated pods, one one-GPU claim each, one after the other, over the in-memory
API server of the tests (``tests.fakes.cluster.FakeCluster``: REST semantics, no
network). Per pod: decide, write the claim (finalizer, then ``status.allocation``),
confirm, remove the gate, report.

Prints one JSON object: the seconds to list the fleet into the cache and build the
snapshot, milliseconds per pod (mean, p50, p99; the first decision, which ranks every
node once, is counted), the process's peak resident memory. Benchmarks print figures;
they never pass or fail on time.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from agent_kit.events import EventRecorder  # noqa: E402
from controller.cache import ClusterCache  # noqa: E402
from controller.metrics import ControllerMetrics  # noqa: E402
from controller.placement import Placer  # noqa: E402
from tests.fakes.cluster import FakeCluster  # noqa: E402

DRIVER = "gpu.dra-driver.io"
GATE = f"{DRIVER}/placement"
NS = "bench"


def _node(name: str) -> dict[str, Any]:
    resources = {"cpu": "64", "memory": "256Gi", "pods": "110"}
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"capacity": resources, "allocatable": resources},
    }


def _slice(node: str, gpus: int) -> dict[str, Any]:
    devices = [
        {
            "name": f"gpu-{i}",
            "attributes": {"type": {"string": "gpu"}},
            "capacity": {"memory": {"value": "80Gi"}},
        }
        for i in range(gpus)
    ]
    return {
        "metadata": {"name": f"{node}-gpus"},
        "spec": {
            "driver": DRIVER,
            "nodeName": node,
            "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
            "devices": devices,
        },
    }


def _claim(name: str) -> dict[str, Any]:
    request = {"name": "gpu", "exactly": {"deviceClassName": "gpu"}}
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": {"devices": {"requests": [request]}},
    }


def _pod(name: str, claim: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "schedulingGates": [{"name": GATE}],
            "tolerations": [{"operator": "Exists"}],
            "resourceClaims": [{"name": "gpu", "resourceClaimName": claim}],
            "containers": [{"name": "main", "image": "busybox"}],
        },
        "status": {"phase": "Pending"},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--pods", type=int, default=300)
    args = parser.parse_args()
    cluster = FakeCluster()
    cache = ClusterCache(gate=GATE)
    events = EventRecorder(cluster, component="bench", instance="bench", interval_s=60.0)
    placer = Placer(cluster, cache, events, ControllerMetrics(), driver_name=DRIVER)
    names = [f"node-{i:05d}" for i in range(args.nodes)]
    began = time.perf_counter()
    selector = f'device.driver == "{DRIVER}"'
    cache.replace(
        "deviceclasses",
        [{"metadata": {"name": "gpu"}, "spec": {"selectors": [{"cel": {"expression": selector}}]}}],
    )
    cache.replace("nodes", [_node(n) for n in names])
    cache.replace("resourceslices", [_slice(n, args.gpus) for n in names])
    for other in ("devicetaintrules", "resourceclaims", "pods"):
        cache.replace(other, [])
    cache.snapshot()
    listed = time.perf_counter() - began
    for i in range(args.pods):
        cache.apply("resourceclaims", "ADDED", cluster.create("resourceclaims", _claim(f"c{i}")))
        cache.apply("pods", "ADDED", cluster.create("pods", _pod(f"p{i}", f"c{i}")))
    per_pod = []
    for i in range(args.pods):
        start = time.perf_counter()
        placer.reconcile(f"{NS}/p{i}")
        per_pod.append((time.perf_counter() - start) * 1000)
    ungated = sum(
        1
        for i in range(args.pods)
        if not cluster.get("pods", f"p{i}", namespace=NS)["spec"].get("schedulingGates")
    )
    ordered = sorted(per_pod)
    print(
        json.dumps(
            {
                "nodes": args.nodes,
                "gpus_per_node": args.gpus,
                "pods": args.pods,
                "placed": ungated,
                "list_and_build_s": round(listed, 2),
                "ms_per_pod": {
                    "mean": round(statistics.fmean(per_pod), 2),
                    "p50": round(ordered[len(ordered) // 2], 2),
                    "p99": round(ordered[min(len(ordered) - 1, round(0.99 * len(ordered)))], 2),
                },
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
