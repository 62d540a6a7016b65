"""Placement throughput against a real API server: the controller next to the scheduler alone.

Usage::

    python bench/placement_bench.py                         # starts a LocalCluster
    python bench/placement_bench.py --kubeconfig FILE       # an existing cluster
    python bench/placement_bench.py --nodes 100 --gpus 8 --pods 500 --policy binpack

Workload (per phase, on a fleet made for it and removed after it): ``--nodes``
fake GPU nodes (Node objects with allocatable cpu/memory/pods, no kubelet)
with one ResourceSlice of ``--gpus`` devices each, of a driver named after the
run, one DeviceClass for it, and ``--pods`` pods, each with its own
ResourceClaim (created beforehand, so the claim controller's pace is not
measured) for one GPU. Pods tolerate every taint and never start.

Phases:

1. ``scheduler``: the pods without the gate. The kube-scheduler allocates
   (first fit) and binds.
2. ``controller``: the pods with the gate ``gpu.dra-driver.io/placement``;
   ``dra-driver controller`` (a subprocess, one replica, no leader election)
   places the claims under ``--policy``, lets each pod's allocations settle
   for its ``--settle-delay`` (default 2 s; other pods are placed meanwhile),
   confirms them and removes the gates; the scheduler then binds. Pass
   ``--controller-arg=--settle-delay=0`` to measure without the wait.

Times come from one watch on the pods, on this side: when a pod was first
seen, first seen without the gate, first seen bound. Per phase the program
prints ``pods_per_s`` (pods over the time from the first pod created to the
last one done) and ``p50_ms``/``p99_ms`` per pod, for "placed" (controller:
gate seen to gate removed, settle delay included) and "bound" (created to
bound, both phases).

Benchmarks print figures; they never pass or fail on time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from agent_kit.kube import ApiError, KubernetesClient, load_api_client  # noqa: E402

GATE = "gpu.dra-driver.io/placement"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


class PodTimes:
    """First-seen times of each pod's states, from one watch."""

    def __init__(self, kube: KubernetesClient, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.created: dict[str, float] = {}
        self.ungated: dict[str, float] = {}
        self.bound: dict[str, float] = {}
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._version = kube.list("pods", namespace=namespace).resource_version

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        version = self._version
        while not self.stop.is_set():
            try:
                for event in self.kube.watch(
                    "pods",
                    resource_version=version,
                    timeout_s=5,
                    field_selector=f"metadata.namespace={self.namespace}",
                ):
                    now = time.monotonic()
                    if event.resource_version:
                        version = event.resource_version
                    if event.type == "BOOKMARK":
                        continue
                    name = event.object["metadata"]["name"]
                    spec = event.object.get("spec") or {}
                    self.created.setdefault(name, now)
                    if not spec.get("schedulingGates"):
                        self.ungated.setdefault(name, now)
                    if spec.get("nodeName"):
                        self.bound.setdefault(name, now)
            except ApiError as err:
                print(f"watch: {err}", file=sys.stderr)
                time.sleep(0.2)

    def wait(self, pods: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while len(self.bound) < pods:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True


class Fleet:
    """Fake GPU nodes, their slices and class; removed by :meth:`remove`."""

    def __init__(self, kube: KubernetesClient, run: str, nodes: int, gpus: int) -> None:
        self.kube = kube
        self.driver = f"bench-{run}.test"
        self.device_class = f"gpu.{self.driver}"
        self.names = [f"bench-{run}-{i:03d}" for i in range(nodes)]
        self.gpus = gpus

    def create(self) -> None:
        self.kube.create(
            "deviceclasses",
            {
                "metadata": {"name": self.device_class},
                "spec": {
                    "selectors": [{"cel": {"expression": f'device.driver == "{self.driver}"'}}]
                },
            },
        )
        resources = {"cpu": "64", "memory": "256Gi", "pods": "110"}

        core = _core(self.kube)

        def one(name: str) -> None:
            self.kube.create("nodes", {"metadata": {"name": name}})
            core.patch_node_status(
                name, {"status": {"capacity": resources, "allocatable": resources}}
            )
            self.kube.create("resourceslices", self._slice(name))

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, self.names))

    def _slice(self, name: str) -> dict[str, Any]:
        devices = [
            {
                "name": f"gpu-{i}",
                "attributes": {
                    "type": {"string": "gpu"},
                    "cudaComputeCapability": {"version": "9.0.0"},
                },
                "capacity": {"memory": {"value": "80Gi"}},
            }
            for i in range(self.gpus)
        ]
        return {
            "metadata": {"name": f"{name}-gpus"},
            "spec": {
                "driver": self.driver,
                "nodeName": name,
                "pool": {"name": name, "generation": 1, "resourceSliceCount": 1},
                "devices": devices,
            },
        }

    def remove(self) -> None:
        def one(name: str) -> None:
            self.kube.delete("resourceslices", f"{name}-gpus")
            self.kube.delete("nodes", name)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, self.names))
        self.kube.delete("deviceclasses", self.device_class)


def _claim(name: str, namespace: str, device_class: str) -> dict[str, Any]:
    request = {"name": "gpu", "exactly": {"deviceClassName": device_class}}
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"devices": {"requests": [request]}},
    }


def _pod(name: str, namespace: str, claim: str, *, gated: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "tolerations": [{"operator": "Exists"}],
        "resourceClaims": [{"name": "gpu", "resourceClaimName": claim}],
        "containers": [
            {"name": "main", "image": "busybox", "resources": {"claims": [{"name": "gpu"}]}}
        ],
    }
    if gated:
        spec["schedulingGates"] = [{"name": GATE}]
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def controller_process(
    kubeconfig: str, policy: str, extra: list[str]
) -> Iterator[subprocess.Popen[bytes]]:
    command = [
        str(Path(sys.executable).parent / "dra-driver"),
        "controller",
        f"--kubeconfig={kubeconfig}",
        "--no-leader-elect",
        "--no-manage-device-classes",
        f"--policy={policy}",
        "--log-level=warning",
        *extra,
    ]
    process = subprocess.Popen(command, cwd=REPO)
    try:
        yield process
    finally:
        process.terminate()
        process.wait(30)


def run_phase(
    kube: KubernetesClient,
    *,
    name: str,
    gated: bool,
    nodes: int,
    gpus: int,
    pods: int,
    kubeconfig: str,
    policy: str,
    extra: list[str],
) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    namespace = f"bench-{run}"
    _create_namespace(kube, namespace)
    fleet = Fleet(kube, run, nodes, gpus)
    fleet.create()
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda i: kube.create(
                    "resourceclaims", _claim(f"c{i:04d}", namespace, fleet.device_class)
                ),
                range(pods),
            )
        )
    times = PodTimes(kube, namespace)
    times.start()
    context = controller_process(kubeconfig, policy, extra) if gated else _nothing()
    cpu: float | None = None
    try:
        with context as process:
            if process is not None:
                time.sleep(3)  # the controller's first lists
                cpu = cpu_seconds(process.pid)
            started = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                list(
                    pool.map(
                        lambda i: kube.create(
                            "pods", _pod(f"p{i:04d}", namespace, f"c{i:04d}", gated=gated)
                        ),
                        range(pods),
                    )
                )
            done = times.wait(pods, timeout_s=600)
            if process is not None and cpu is not None:
                cpu = cpu_seconds(process.pid) - cpu
    finally:
        times.stop.set()
        _cleanup(kube, namespace)
        fleet.remove()
    result: dict[str, Any] = {"phase": name, "complete": done, "pods": pods}
    if cpu is not None:
        result["controller_cpu_ms_per_pod"] = round(cpu / pods * 1000, 1)
    bound = [times.bound[p] - times.created[p] for p in times.bound if p in times.created]
    last_bound = max(times.bound.values(), default=started)
    result["bound"] = {
        "pods_per_s": round(len(times.bound) / (last_bound - started), 1),
        "p50_ms": round(percentile(bound, 0.5) * 1000, 1),
        "p99_ms": round(percentile(bound, 0.99) * 1000, 1),
    }
    if gated:
        placed = [times.ungated[p] - times.created[p] for p in times.ungated if p in times.created]
        last_placed = max(times.ungated.values(), default=started)
        result["placed"] = {
            "pods_per_s": round(len(times.ungated) / (last_placed - started), 1),
            "p50_ms": round(percentile(placed, 0.5) * 1000, 1),
            "p99_ms": round(percentile(placed, 0.99) * 1000, 1),
            "mean_ms": round(statistics.fmean(placed) * 1000, 1) if placed else None,
        }
    return result


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def _core(kube: KubernetesClient) -> Any:
    """The official client's CoreV1Api on the same connection (namespaces, node status)."""
    from kubernetes import client

    return client.CoreV1Api(kube._api_client)


def _create_namespace(kube: KubernetesClient, name: str) -> None:
    _core(kube).create_namespace({"metadata": {"name": name}})


def _cleanup(kube: KubernetesClient, namespace: str) -> None:
    core = _core(kube)
    core.delete_collection_namespaced_pod(namespace, grace_period_seconds=0)
    core.delete_namespace(namespace)


def _summary(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per phase and measure, the median of each figure over the runs."""
    summary: dict[str, Any] = {}
    for phase, results in runs.items():
        summary[phase] = {
            measure: {
                key: statistics.median(r[measure][key] for r in results)
                for key in ("pods_per_s", "p50_ms", "p99_ms")
            }
            for measure in ("placed", "bound")
            if all(measure in r for r in results)
        }
        summary[phase]["runs"] = len(results)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", help="an existing cluster (default: start a LocalCluster)")
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--pods", type=int, default=500)
    parser.add_argument("--policy", default="binpack")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the phases this many times, alternating, and add a summary of medians",
    )
    parser.add_argument(
        "--phases", default="scheduler,controller", help="comma-separated: scheduler,controller"
    )
    parser.add_argument(
        "--controller-arg",
        action="append",
        default=[],
        help="extra flag for dra-driver controller (repeatable), e.g. "
        "--controller-arg=--workers=16",
    )
    args = parser.parse_args()
    local = None
    kubeconfig = args.kubeconfig
    if kubeconfig is None:
        from e2e.cluster import LocalCluster

        local = LocalCluster()
        local.up()
        kubeconfig = str(local.kubeconfig)
    try:
        kube = KubernetesClient(load_api_client(kubeconfig))
        runs: dict[str, list[dict[str, Any]]] = {}
        for _ in range(args.repeat):
            for phase in args.phases.split(","):
                result = run_phase(
                    kube,
                    name=phase,
                    gated=phase == "controller",
                    nodes=args.nodes,
                    gpus=args.gpus,
                    pods=args.pods,
                    kubeconfig=kubeconfig,
                    policy=args.policy,
                    extra=args.controller_arg,
                )
                result.update(
                    nodes=args.nodes,
                    gpus_per_node=args.gpus,
                    policy=args.policy if phase == "controller" else "first-fit (scheduler)",
                    cpus=os.cpu_count(),
                    python=platform.python_version(),
                    load_average=round(os.getloadavg()[0], 1),
                )
                runs.setdefault(phase, []).append(result)
                print(json.dumps(result), flush=True)
        if args.repeat > 1:
            print(json.dumps({"summary": _summary(runs)}), flush=True)
    finally:
        if local is not None:
            local.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
