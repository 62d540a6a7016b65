"""Placement throughput against a real API server: the controller next to the scheduler alone.

Usage::

    python bench/placement_bench.py                         # starts a LocalCluster
    python bench/placement_bench.py --kubeconfig FILE       # an existing cluster
    python bench/placement_bench.py --nodes 5000 --gpus 8 --pods 1000 --burst 200

Workload: a fleet of ``--nodes`` hollow GPU nodes (Node objects created with their
allocatable cpu/memory/pods, no kubelet), each with one ResourceSlice of ``--gpus``
devices of a driver named after the run, as the plugin publishes them, and one
DeviceClass; made once, shared by the phases, removed at the end. Per phase, in a
namespace of its own: ``--pods`` ResourceClaims for one GPU each (created beforehand,
so the claim controller's pace is not measured), then the pods, in bursts of
``--burst`` every ``--burst-interval`` seconds (default: all at once). Pods tolerate
every taint and never start. A phase ends when every pod is bound; its pods and
claims are deleted (and gone) before the next one.

Phases:

1. ``scheduler``: the pods without the gate. The kube-scheduler allocates
   (first fit) and binds.
2. ``controller``: the pods with the gate ``gpu.dra-driver.io/placement``;
   ``dra-driver controller`` (a subprocess, one replica, no leader election, ready
   before the first pod) places the claims under ``--policy``, lets each pod's
   allocations settle for its ``--settle-delay`` (default 2 s), confirms them and
   removes the gates; the scheduler then binds.

Times come from one watch on the pods, on this side: when a pod was first seen,
first seen without the gate, first seen bound. Per phase: ``pods_per_s`` (pods over
the time from the first pod created to the last one done) and ``p50_ms``/``p99_ms``
per pod, for "placed" (gate seen to gate removed) and "bound" (created to bound);
the controller's CPU per pod and resident memory (now and peak); the API server's
requests per second over the phase (``apiserver_request_total``, watches left out).
``--profile PREFIX`` samples the controller with py-spy. The last line gives the
ratios to the scheduler-alone rate.

Benchmarks print figures; they never pass or fail on time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
import urllib.request
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
from bench.placement_measures import (  # noqa: E402
    api_requests,
    cpu_seconds,
    measure,
    memory_mib,
    profiler,
    ratios,
    request_rates,
    summary,
)

GATE = "gpu.dra-driver.io/placement"
#: Threads publishing the fleet and creating the pods (the API server is the limit).
PUBLISHERS = 16


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
        self.names = [f"bench-{run}-{i:04d}" for i in range(nodes)]
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
        # A Node keeps the status it is created with (the API server drops it for
        # other kinds): one request per node, as many as a big fleet can afford.
        node_status = {"capacity": resources, "allocatable": resources}

        def one(name: str) -> None:
            self.kube.create("nodes", {"metadata": {"name": name}, "status": node_status})
            self.kube.create("resourceslices", self._slice(name))

        with ThreadPoolExecutor(PUBLISHERS) as pool:
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

        with ThreadPoolExecutor(PUBLISHERS) as pool:
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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def controller_process(
    kubeconfig: str, policy: str, extra: list[str]
) -> Iterator[subprocess.Popen[bytes]]:
    """``dra-driver controller`` in a subprocess, returned once its watches are synced."""
    health = f"127.0.0.1:{_free_port()}"
    command = [
        str(Path(sys.executable).parent / "dra-driver"),
        "controller",
        f"--kubeconfig={kubeconfig}",
        "--no-leader-elect",
        "--no-manage-device-classes",
        f"--policy={policy}",
        "--log-level=warning",
        f"--health-address={health}",
        *extra,
    ]
    process = subprocess.Popen(command, cwd=REPO)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://{health}/readyz", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.2)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            print("the controller did not stop in 60 s of SIGTERM; killed", file=sys.stderr)
            process.kill()
            process.wait()


def _create_pods(
    kube: KubernetesClient, namespace: str, pods: int, *, gated: bool, burst: int, interval: float
) -> None:
    """The pods in bursts of ``burst``, one burst every ``interval`` seconds (or as soon
    as the previous one is created, when that takes longer)."""
    started = time.monotonic()
    with ThreadPoolExecutor(PUBLISHERS) as pool:
        for number, first in enumerate(range(0, pods, burst)):
            wait = started + number * interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            list(
                pool.map(
                    lambda i: kube.create(
                        "pods", _pod(f"p{i:04d}", namespace, f"c{i:04d}", gated=gated)
                    ),
                    range(first, min(first + burst, pods)),
                )
            )


def run_phase(
    kube: KubernetesClient,
    fleet: Fleet,
    args: argparse.Namespace,
    *,
    name: str,
    gated: bool,
    kubeconfig: str,
) -> dict[str, Any]:
    pods = args.pods
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    _create_namespace(kube, namespace)
    with ThreadPoolExecutor(PUBLISHERS) as pool:
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
    context = (
        controller_process(kubeconfig, args.policy, args.controller_arg) if gated else _nothing()
    )
    cpu: float | None = None
    memory: dict[str, float] = {}
    try:
        with context as process:
            pid = process.pid if process is not None else None
            profile = f"{args.profile}.{name}.txt" if args.profile else None
            with profiler(pid, profile):
                if pid is not None:
                    cpu = cpu_seconds(pid)
                requests_before = api_requests(kube)
                started = time.monotonic()
                _create_pods(
                    kube,
                    namespace,
                    pods,
                    gated=gated,
                    burst=args.burst,
                    interval=args.burst_interval,
                )
                done = times.wait(pods, timeout_s=args.timeout)
                finished = time.monotonic()
                requests_after = api_requests(kube)
                if pid is not None and cpu is not None:
                    cpu = cpu_seconds(pid) - cpu
                    memory = memory_mib(pid)
    finally:
        times.stop.set()
        _cleanup(kube, namespace)
    result: dict[str, Any] = {"phase": name, "complete": done, "pods": pods}
    if cpu is not None:
        result["controller_cpu_ms_per_pod"] = round(cpu / pods * 1000, 1)
        result["controller_memory"] = memory
    result["api_requests"] = request_rates(
        requests_before, requests_after, finished - started, pods
    )
    result["bound"] = measure(times.created, times.bound, started)
    if gated:
        result["placed"] = measure(times.created, times.ungated, started)
    return result


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def _core(kube: KubernetesClient) -> Any:
    """The official client's CoreV1Api on the same connection (namespaces)."""
    from kubernetes import client

    return client.CoreV1Api(kube._api_client)


def _create_namespace(kube: KubernetesClient, name: str) -> None:
    _core(kube).create_namespace({"metadata": {"name": name}})


def _cleanup(kube: KubernetesClient, namespace: str) -> None:
    """Delete the phase's pods and claims and wait until they are gone, so the next
    phase starts with every device free and no pods of this one in the watches."""
    core = _core(kube)
    began = time.monotonic()
    core.delete_collection_namespaced_pod(namespace, grace_period_seconds=0)
    core.delete_namespace(namespace)
    while time.monotonic() < began + 180:
        try:
            core.read_namespace(namespace)
        except Exception:  # 404: gone
            break
        time.sleep(1)
    print(f"namespace {namespace} cleaned up in {time.monotonic() - began:.0f} s", file=sys.stderr)


def _time_command(command: str, kubeconfig: str, fleet: Fleet) -> dict[str, Any]:
    """Run ``command`` once against the published fleet; its wall time and exit status."""
    env = {**os.environ, "BENCH_KUBECONFIG": kubeconfig, "BENCH_DRIVER": fleet.driver}
    began = time.monotonic()
    done = subprocess.run(
        command, shell=True, env=env, cwd=REPO, stdout=subprocess.PIPE, check=False
    )
    return {
        "command": command,
        "devices": len(fleet.names) * fleet.gpus,
        "wall_s": round(time.monotonic() - began, 2),
        "exit": done.returncode,
        "output_lines": done.stdout.count(b"\n"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", help="an existing cluster (default: start a LocalCluster)")
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--pods", type=int, default=500)
    parser.add_argument("--policy", default="binpack")
    parser.add_argument("--burst", type=int, default=0, help="pods per burst (0: all at once)")
    parser.add_argument(
        "--burst-interval", type=float, default=1.0, help="seconds from one burst to the next"
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds a phase may take")
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
    parser.add_argument(
        "--fleet-command",
        metavar="CMD",
        help="a shell command to time once the fleet is published, before the phases "
        "(env BENCH_KUBECONFIG, BENCH_DRIVER), e.g. dra-driver gpus",
    )
    parser.add_argument(
        "--profile",
        metavar="PREFIX",
        help="sample the controller with py-spy (on PATH) into PREFIX.controller.txt",
    )
    parser.add_argument(
        "--scheduler-qps",
        type=int,
        help="the started LocalCluster's kube-scheduler API client rate limit "
        "(clientConnection.qps, burst twice that; default the scheduler's own, 50)",
    )
    args = parser.parse_args()
    args.burst = args.burst or args.pods
    local = None
    kubeconfig = args.kubeconfig
    if kubeconfig is None:
        from e2e.cluster import LocalCluster

        local = LocalCluster(scheduler_qps=args.scheduler_qps)
        local.up()
        kubeconfig = str(local.kubeconfig)
    try:
        kube = KubernetesClient(load_api_client(kubeconfig))
        fleet = Fleet(kube, uuid.uuid4().hex[:6], args.nodes, args.gpus)
        began = time.monotonic()
        fleet.create()
        print(
            json.dumps({"fleet": len(fleet.names), "published_s": round(time.monotonic() - began)}),
            flush=True,
        )
        runs: dict[str, list[dict[str, Any]]] = {}
        try:
            if args.fleet_command:
                print(json.dumps(_time_command(args.fleet_command, kubeconfig, fleet)), flush=True)
            for _ in range(args.repeat):
                for phase in filter(None, args.phases.split(",")):
                    result = run_phase(
                        kube,
                        fleet,
                        args,
                        name=phase,
                        gated=phase == "controller",
                        kubeconfig=kubeconfig,
                    )
                    result.update(
                        nodes=args.nodes,
                        gpus_per_node=args.gpus,
                        burst=args.burst,
                        burst_interval_s=args.burst_interval,
                        policy=args.policy if phase == "controller" else "first-fit (scheduler)",
                        cpus=os.cpu_count(),
                        python=platform.python_version(),
                        load_average=Path("/proc/loadavg").read_text().split()[:3],
                    )
                    runs.setdefault(phase, []).append(result)
                    print(json.dumps(result), flush=True)
        finally:
            fleet.remove()
        if args.repeat > 1:
            print(json.dumps({"summary": summary(runs)}), flush=True)
        print(json.dumps({"ratios": ratios(runs)}), flush=True)
    finally:
        if local is not None:
            local.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
