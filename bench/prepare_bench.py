"""Prepare latency of the kubelet plugin's GpuDriver on real files, fsync included.

Usage::

    python bench/prepare_bench.py                   # every scenario
    python bench/prepare_bench.py --dir /var/tmp    # checkpoint (and host roots) there
    python bench/prepare_bench.py --cdi-dir /tmp    # CDI root on disk instead of tmpfs
    python bench/prepare_bench.py --iterations 500 single

Each prepare reads the claim from an in-memory claim source (no API server),
plans, saves the checkpoint as PrepareStarted (temp file, fsync, rename),
writes the CDI spec (temp file, fsync, rename, directory fsync) and saves the
checkpoint as PrepareCompleted (temp file, fsync, rename, directory fsync).
The checkpoint goes to a fresh directory under ``--dir`` (the system temp dir
by default: disk here); the CDI root under ``--cdi-dir``, by default
``/dev/shm``, a tmpfs like the ``/run`` that holds ``/var/run/cdi`` on nodes.
Scenarios, each printed as one JSON object:

- ``single``: claims with 1 mock GPU, one after another (each unprepared after).
- ``eight``: claims with 8 mock GPUs, one after another.
- ``repeat``: prepare of a claim already prepared (the kubelet's retry path).
- ``concurrent``: 100 claims of 1 GPU each submitted at once from 100 threads;
  latency per claim and wall time per round.
- ``batch``: ``--claims`` claims (1,000 by default) of 1 GPU each in *one*
  prepare call, as the kubelet sends a pod's claims, then one unprepare call
  for them all; wall time per call over ``--rounds`` rounds (the kubelet's
  deadline is 45 s).

``--node-lock`` runs every call holding the node's file lock, as the plugin does
with ``--pod-uid`` (rolling updates; the chart's default).

Each prepare also writes the claim's device metadata file (KEP-5304; temp file,
fsync, rename, directory fsync) under ``<dir>/plugin/dra-device-metadata``, on the
checkpoint's file system as on nodes, and unprepare removes it, as the plugin does;
``--no-device-metadata`` leaves that out (the driver before it).

Benchmarks print figures; they never pass or fail on time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.semver import Semver
from dra_driver.discovery.model import Gpu, NodeInventory
from kubelet_plugin.cdi_writer import CdiWriter, scan_host_files
from kubelet_plugin.checkpoint_store import CheckpointStore
from kubelet_plugin.driver import GpuDriver
from kubelet_plugin.driver.gpu_driver import PREPARE_WORKERS
from kubelet_plugin.node_driver import ClaimRef
from kubelet_plugin.node_lock import NodeFileLock
from tests.fakes.claim_source import FakeClaimSource

DRIVER = "gpu.dra-driver.io"
NODE = "bench-node"
CONCURRENT_CLAIMS = 100
CONCURRENT_ROUNDS = 5


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def summary(latencies_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in latencies_s]
    return {
        "p50_ms": round(percentile(ms, 50), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "max_ms": round(max(ms), 3),
    }


def filesystem_of(path: Path) -> str:
    """The mount type holding ``path`` (from /proc/mounts), for the record."""
    best, kind = "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    resolved = str(path.resolve())
    for line in mounts:
        fields = line.split()
        if len(fields) >= 3 and resolved.startswith(fields[1]) and len(fields[1]) > len(best):
            best, kind = fields[1], fields[2]
    return kind


class Node:
    """A GpuDriver with ``gpus`` mock GPUs on fake host roots under ``root``."""

    def __init__(
        self,
        root: Path,
        cdi_root: Path,
        gpus: int,
        *,
        node_lock: bool = False,
        prepare_workers: int = PREPARE_WORKERS,
        device_metadata: bool = True,
    ) -> None:
        dev = root / "host" / "dev"
        dev.mkdir(parents=True)
        for name in [f"nvidia{i}" for i in range(gpus)] + ["nvidiactl", "nvidia-uvm"]:
            (dev / name).touch()
        libs = root / "driver" / "usr/lib/x86_64-linux-gnu"
        libs.mkdir(parents=True)
        for lib in ("libcuda.so", "libnvidia-ml.so", "libnvidia-ptxjitcompiler.so"):
            (libs / f"{lib}.550.54.15").touch()
            (libs / f"{lib}.1").symlink_to(f"{lib}.550.54.15")
        (root / "driver" / "usr/bin").mkdir(parents=True)
        (root / "driver" / "usr/bin/nvidia-smi").touch()
        self.inventory = NodeInventory(
            node_name=NODE,
            driver_version=Semver.parse("550.54.15"),
            cuda_driver_version=Semver.parse("12.4.0"),
            gpus=tuple(
                Gpu(
                    index=i,
                    minor=i,
                    uuid=f"GPU-{uuid.uuid5(uuid.NAMESPACE_DNS, f'{NODE}-{i}')}",
                    product_name="NVIDIA H100 80GB HBM3",
                    brand="Nvidia",
                    architecture="Hopper",
                    cuda_compute_capability=Semver.parse("9.0.0"),
                    memory_bytes=80 * 2**30,
                    pci_bus_id=f"0000:{i // 32 + 0x10:02x}:{i % 32:02x}.0",
                )
                for i in range(gpus)
            ),
        )
        self.claims = FakeClaimSource()
        self.driver = GpuDriver(
            driver_name=DRIVER,
            inventory=self.inventory,
            claim_source=self.claims,
            checkpoints=CheckpointStore(root / "state" / "checkpoint.json"),
            cdi=CdiWriter(cdi_root, DRIVER),
            host=dataclasses.replace(
                scan_host_files(root / "host", root / "driver", "/usr/bin/nvidia-cdi-hook"),
                metadata_root=str(root / "plugin" / "dra-device-metadata")
                if device_metadata
                else None,
            ),
            boot_id="bench-boot",
            # As the chart runs it (--pod-uid): every call holds the node's file lock.
            node_lock=NodeFileLock(root / "state" / "serialize.lock") if node_lock else None,
            prepare_workers=prepare_workers,
        )
        self.driver.start()
        self._counter = 0
        self._lock = threading.Lock()

    def new_claim(self, devices: list[str]) -> ClaimRef:
        """A claim allocated ``devices``, with a fresh UID, put into the claim source."""
        with self._lock:
            self._counter += 1
            n = self._counter
        ref = ClaimRef(namespace="bench", name=f"claim-{n}", uid=str(uuid.uuid4()))
        self.claims.put(
            {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "ResourceClaim",
                "metadata": {"namespace": ref.namespace, "name": ref.name, "uid": ref.uid},
                "spec": {
                    "devices": {
                        "requests": [{"name": "gpu", "exactly": {"deviceClassName": DRIVER}}]
                    }
                },
                "status": {
                    "allocation": {
                        "devices": {
                            "results": [
                                {"request": "gpu", "driver": DRIVER, "pool": NODE, "device": d}
                                for d in devices
                            ],
                            "config": [
                                {
                                    "source": "FromClass",
                                    "opaque": {
                                        "driver": DRIVER,
                                        "parameters": {
                                            "apiVersion": "gpu.dra-driver.io/v1alpha1",
                                            "kind": "GpuConfig",
                                            "sharing": {"strategy": "TimeSlicing"},
                                        },
                                    },
                                }
                            ],
                        }
                    }
                },
            }
        )
        return ref

    def timed_prepare(self, ref: ClaimRef) -> float:
        started = time.perf_counter()
        result = self.driver.prepare([ref])[ref.uid]
        elapsed = time.perf_counter() - started
        if result.error is not None:
            raise RuntimeError(result.error)
        return elapsed


def sequential(node: Node, iterations: int, gpus_per_claim: int) -> dict[str, Any]:
    devices = [f"gpu-{i}" for i in range(gpus_per_claim)]
    prepare, unprepare = [], []
    for i in range(iterations + 10):
        ref = node.new_claim(devices)
        took = node.timed_prepare(ref)
        started = time.perf_counter()
        node.driver.unprepare([ref])
        if i >= 10:  # warm-up
            prepare.append(took)
            unprepare.append(time.perf_counter() - started)
    return {
        "gpus_per_claim": gpus_per_claim,
        "claims": iterations,
        "prepare": summary(prepare),
        "unprepare": summary(unprepare),
    }


def repeat(node: Node, iterations: int) -> dict[str, Any]:
    ref = node.new_claim(["gpu-0"])
    node.timed_prepare(ref)
    return {
        "gpus_per_claim": 1,
        "claims": iterations,
        "prepare": summary([node.timed_prepare(ref) for _ in range(iterations)]),
    }


def concurrent(node: Node) -> dict[str, Any]:
    latencies: list[float] = []
    walls: list[float] = []
    with ThreadPoolExecutor(CONCURRENT_CLAIMS) as pool:
        for _ in range(CONCURRENT_ROUNDS):
            refs = [node.new_claim([f"gpu-{i}"]) for i in range(CONCURRENT_CLAIMS)]
            started = time.perf_counter()
            latencies.extend(pool.map(node.timed_prepare, refs))
            walls.append(time.perf_counter() - started)
            node.driver.unprepare(refs)
    return {
        "claims": CONCURRENT_CLAIMS,
        "threads": CONCURRENT_CLAIMS,
        "rounds": CONCURRENT_ROUNDS,
        "prepare": summary(latencies),
        "round_wall_ms": summary(walls),
    }


def batch(node: Node, claims: int, rounds: int) -> dict[str, Any]:
    prepare_walls: list[float] = []
    unprepare_walls: list[float] = []
    for _ in range(rounds):
        refs = [node.new_claim([f"gpu-{i}"]) for i in range(claims)]
        started = time.perf_counter()
        results = node.driver.prepare(refs)
        prepare_walls.append(time.perf_counter() - started)
        errors = [r.error for r in results.values() if r.error is not None]
        if errors:
            raise RuntimeError(f"{len(errors)} claim(s) failed, first: {errors[0]}")
        started = time.perf_counter()
        answers = node.driver.unprepare(refs)
        unprepare_walls.append(time.perf_counter() - started)
        if any(answers.values()):
            raise RuntimeError(f"unprepare failed: {answers}")
    return {
        "claims_per_call": claims,
        "rounds": rounds,
        "prepare_call_wall_ms": summary(prepare_walls),
        "unprepare_call_wall_ms": summary(unprepare_walls),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*", default=["single", "eight", "repeat", "concurrent"])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--claims", type=int, default=1000, help="claims per call (batch)")
    parser.add_argument("--rounds", type=int, default=3, help="calls of each kind (batch)")
    parser.add_argument(
        "--prepare-workers",
        type=int,
        default=PREPARE_WORKERS,
        help=f"claims of one call prepared at once (default {PREPARE_WORKERS}, the driver's)",
    )
    parser.add_argument("--dir", type=Path, default=None, help="parent of the checkpoint dir")
    parser.add_argument(
        "--cdi-dir",
        type=Path,
        default=Path("/dev/shm") if Path("/dev/shm").is_dir() else None,
        help="parent of the CDI root (default /dev/shm, a tmpfs)",
    )
    parser.add_argument(
        "--node-lock",
        action="store_true",
        help="serialise every call through the node's file lock, as a plugin run with "
        "--pod-uid (the chart's default) does",
    )
    parser.add_argument(
        "--no-device-metadata",
        action="store_true",
        help="write no device metadata files (KEP-5304), which the plugin writes at each prepare",
    )
    args = parser.parse_args()
    runs: dict[str, tuple[int, Callable[[Node], dict[str, Any]]]] = {
        "single": (8, lambda node: sequential(node, args.iterations, 1)),
        "eight": (8, lambda node: sequential(node, args.iterations, 8)),
        "repeat": (8, lambda node: repeat(node, args.iterations)),
        "concurrent": (CONCURRENT_CLAIMS, concurrent),
        "batch": (args.claims, lambda node: batch(node, args.claims, args.rounds)),
    }
    for name in args.scenarios:
        gpus, run = runs[name]
        root = Path(tempfile.mkdtemp(prefix="prepare-bench-", dir=args.dir))
        cdi_parent = Path(tempfile.mkdtemp(prefix="prepare-bench-cdi-", dir=args.cdi_dir))
        try:
            node = Node(
                root,
                cdi_parent / "cdi",
                gpus,
                node_lock=args.node_lock,
                prepare_workers=args.prepare_workers,
                device_metadata=not args.no_device_metadata,
            )
            figures = run(node)
            figures = {
                "scenario": name,
                "node_lock": args.node_lock,
                "prepare_workers": args.prepare_workers,
                "device_metadata": not args.no_device_metadata,
                **figures,
                "checkpoint_fs": filesystem_of(root),
                "cdi_root_fs": filesystem_of(cdi_parent),
                "cpus": os.cpu_count(),
            }
            print(json.dumps(figures), flush=True)
        finally:
            shutil.rmtree(root, ignore_errors=True)
            shutil.rmtree(cdi_parent, ignore_errors=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)  # the plugin's info lines are not figures
    main()
