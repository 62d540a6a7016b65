"""One allocation under each placement policy, on partitionable and on whole GPUs.

Usage::

    python bench/policy_bench.py                      # 64 dgx-h100 nodes, one claim of 8 GPUs
    python bench/policy_bench.py --nodes 16 --gpus 1 --repeat 5

The cluster is ``bench/group_bench.py``'s: ``--nodes`` mock ``dgx-h100`` nodes, their
ResourceSlices as the kubelet plugin publishes them, with MIG partitions on shared counters
(the plugin's default) or whole GPUs only (``--partitionable=false``). Per policy and slice
kind, ``--repeat`` times: a fresh snapshot, then one ``allocate`` of one claim for
``--gpus`` whole GPUs, timed (the snapshot's build is not; the garbage collector is
frozen first, as in ``bench/allocator_bench.py``). The first decision on a
snapshot is the dear one: it ranks every node and builds the views it searches.

Prints one JSON line per (slices, policy): the median and the slowest time in ms, and the
node chosen. Benchmarks print figures; they never pass or fail on time.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time

from group_bench import _claim, _snapshot

from dra_driver.allocator import allocate
from dra_driver.policy_names import POLICIES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=64)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    names = [f"node-{i:03d}" for i in range(args.nodes)]
    for partitionable in (True, False):
        for policy in POLICIES:
            times: list[float] = []
            node = None
            for _ in range(args.repeat):
                snapshot = _snapshot(names, "dgx-h100", partitionable)
                # As a long-running controller does after its sync (allocator_bench.py too):
                # no full collection re-scans the input models during the decision.
                gc.collect()
                gc.freeze()
                start = time.perf_counter()
                allocation = allocate(snapshot, [_claim("bench", args.gpus)], policy=policy)
                times.append((time.perf_counter() - start) * 1000)
                node = allocation.node
                gc.unfreeze()
            print(
                json.dumps(
                    {
                        "slices": "partitionable" if partitionable else "whole GPUs",
                        "policy": policy,
                        "nodes": args.nodes,
                        "gpus": args.gpus,
                        "p50_ms": round(statistics.median(times), 1),
                        "max_ms": round(max(times), 1),
                        "node": node,
                    }
                )
            )


if __name__ == "__main__":
    main()
