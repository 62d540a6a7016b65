"""Pod groups placed whole: decisions per second and how many land on one NVLink island.

Usage::

    python bench/group_bench.py                      # 64 dgx-h100 nodes, 300 groups a scenario
    python bench/group_bench.py --groups 100 --gpus-per-pod 8

Offline: the controller's decision core (:func:`dra_driver.allocator.groups.allocate_group`,
what ``controller/placement/grouping.py`` calls under the cache's lock) on an allocator
snapshot of ``--nodes`` mock ``dra-driver`` nodes of the ``dgx-h100`` machine (8 H100s on
one NVSwitch island each; their slices as the kubelet plugin publishes them, MIG
partitions included). No API server: writes, watches and the scheduler are not in it.

Each scenario places a seeded stream of groups of 2-8 pods, each pod one claim of
``--gpus-per-pod`` whole GPUs, with churn: once more than ``--occupancy`` of the GPUs
are held, the oldest groups finish (their claims released) before the next decision, so
later groups meet a fragmented cluster. Each decision is timed; a group that does not
fit is counted and dropped (it would wait). Scenarios:

- ``island-search``: ``allocate_group`` as the controller runs it;
- ``pod-by-pod``: the same with the island step off (``islands_tried=0``): each pod
  placed in turn by the policy, the earlier pods' nodes first; what a gang placed pod by
  pod would get.

Per scenario, one JSON line: ``groups_per_s`` and ``pods_per_s`` (decisions only),
``p50_ms``/``p99_ms`` per group, ``single_island`` (the fraction of placed groups whose
GPUs are all on one island), ``unplaced`` (groups that did not fit when they came).
Pods of 8 GPUs fill a dgx-h100 each, and its island ends at the node, so a group of 2 or
more such pods is never on one island: ``single_island`` is 0 there by the machine's
shape. Benchmarks print figures; they never pass or fail on time.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import time
from collections import deque
from typing import Any

from api.resource_v1 import DeviceClass, ResourceClaim, ResourceClaimStatus
from dra_driver.allocator import Snapshot
from dra_driver.allocator.groups import GroupMember, GroupPlacement, allocate_group
from dra_driver.discovery.mock import MockBackend
from dra_driver.slices import build_slices

DRIVER = "gpu.dra-driver.io"
SELECTOR = f'device.driver == "{DRIVER}" && device.attributes["{DRIVER}"].type == "gpu"'
GPUS_PER_NODE = 8


def _snapshot(nodes: list[str], machine: str, partitionable: bool) -> Snapshot:
    slices = []
    for name in nodes:
        inventory = MockBackend(name, machine).discover()
        slices += build_slices(inventory, driver_name=DRIVER, partitionable=partitionable)
    gpu_class = DeviceClass.model_validate(
        {"metadata": {"name": "gpu"}, "spec": {"selectors": [{"cel": {"expression": SELECTOR}}]}}
    )
    return Snapshot.build(slices=slices, classes=[gpu_class], claims=[], nodes=[])


def _claim(name: str, count: int) -> ResourceClaim:
    return ResourceClaim.model_validate(
        {
            "metadata": {"name": name, "namespace": "bench"},
            "spec": {
                "devices": {
                    "requests": [
                        {"name": "gpu", "exactly": {"deviceClassName": "gpu", "count": count}}
                    ]
                }
            },
        }
    )


def _held(placement: GroupPlacement, members: list[GroupMember]) -> list[ResourceClaim]:
    held = []
    for member in members:
        allocation = placement.allocations[member.key]
        for claim, result in zip(member.claims, allocation.results, strict=True):
            copy = claim.model_copy()
            copy.status = ResourceClaimStatus(allocation=result)
            held.append(copy)
    return held


def run(args: argparse.Namespace, *, islands_tried: int) -> dict[str, Any]:
    nodes = [f"node-{i:03d}" for i in range(args.nodes)]
    snapshot = _snapshot(nodes, args.machine, args.partitionable)
    gc.collect()
    gc.freeze()
    rng = random.Random(args.seed)
    capacity = args.nodes * GPUS_PER_NODE
    running: deque[tuple[int, list[ResourceClaim]]] = deque()
    in_use = 0
    times: list[float] = []
    pods = single = unplaced = 0
    for index in range(args.groups):
        size = rng.randint(2, 8)
        need = size * args.gpus_per_pod
        while running and in_use + need > args.occupancy * capacity:
            gpus, claims = running.popleft()
            for claim in claims:
                snapshot.remove_allocated(claim)
            in_use -= gpus
        members = [
            GroupMember(
                f"bench/g{index}-p{i}", [_claim(f"g{index}-p{i}", args.gpus_per_pod)], nodes
            )
            for i in range(size)
        ]
        started = time.perf_counter()
        outcome = allocate_group(snapshot, members, policy=args.policy, islands_tried=islands_tried)
        times.append(time.perf_counter() - started)
        if not isinstance(outcome, GroupPlacement):
            unplaced += 1
            continue
        claims = _held(outcome, members)
        for claim in claims:
            snapshot.add_allocated(claim)
        running.append((need, claims))
        in_use += need
        pods += size
        single += outcome.single_island
    placed = args.groups - unplaced
    total = sum(times)
    ordered = sorted(times)
    return {
        "scenario": "island-search" if islands_tried else "pod-by-pod",
        "machine": args.machine,
        "partitionable": args.partitionable,
        "nodes": args.nodes,
        "gpus_per_pod": args.gpus_per_pod,
        "policy": args.policy,
        "groups": args.groups,
        "placed": placed,
        "unplaced": unplaced,
        "groups_per_s": round(args.groups / total, 1),
        "pods_per_s": round(pods / total, 1),
        "p50_ms": round(statistics.median(times) * 1000, 2),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 2),
        "single_island": round(single / placed, 3) if placed else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=64)
    parser.add_argument("--machine", default="dgx-h100")
    parser.add_argument("--groups", type=int, default=300)
    parser.add_argument("--gpus-per-pod", type=int, default=None, help="default: 8, then 1")
    parser.add_argument("--occupancy", type=float, default=0.75)
    parser.add_argument("--policy", default="binpack")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument(
        "--partitionable",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="publish the GPUs as the plugin does by default (MIG partitions on counters)",
    )
    args = parser.parse_args()
    for gpus in [args.gpus_per_pod] if args.gpus_per_pod else [8, 1]:
        args.gpus_per_pod = gpus
        for islands_tried in (8, 0):
            print(json.dumps(run(args, islands_tried=islands_tried)), flush=True)


if __name__ == "__main__":
    main()
