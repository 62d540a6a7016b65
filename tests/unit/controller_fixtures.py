"""Builders of raw cluster objects and a synchronous harness for the controller's unit tests.

Objects are written in their JSON form, as the API server stores them, and
go through :class:`~tests.fakes.cluster.FakeCluster` (REST semantics) and
the real cache decoding. :class:`Harness` drives one :class:`Placer` without
threads: :meth:`Harness.sync` plays the part of the watches (a fresh list of
every resource into the cache), :meth:`Harness.drain` the worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from agent_kit.events import EventRecorder
from agent_kit.kube import Resource
from controller.cache import ClusterCache
from controller.metrics import ControllerMetrics
from controller.placement import Fence, Placer, Result
from controller.workqueue import WorkQueue
from tests.fakes.cluster import Call, FakeCluster

DRIVER = "gpu.dra-driver.io"
GATE = f"{DRIVER}/placement"
CLASS = "gpu.dra-driver.io"
NS = "default"
SELECTOR = f'device.driver == "{DRIVER}" && device.attributes["{DRIVER}"].type == "gpu"'


class FakeClock:
    """A monotonic clock the test moves."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def device_class(name: str = CLASS, expression: str = SELECTOR) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": name},
        "spec": {"selectors": [{"cel": {"expression": expression}}]},
    }


def gpu(
    name: str, *, capability: str = "8.0.0", memory: str = "80Gi", **attrs: Any
) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "type": {"string": "gpu"},
        "cudaComputeCapability": {"version": capability},
    }
    for key, value in attrs.items():
        attributes[key] = {"string": value} if isinstance(value, str) else {"int": value}
    return {"name": name, "attributes": attributes, "capacity": {"memory": {"value": memory}}}


def node_slice(
    node: str, gpus: int = 2, *, capability: str = "8.0.0", generation: int = 1
) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": f"{node}-{DRIVER}"},
        "spec": {
            "driver": DRIVER,
            "nodeName": node,
            "pool": {"name": node, "generation": generation, "resourceSliceCount": 1},
            "devices": [gpu(f"gpu-{i}", capability=capability) for i in range(gpus)],
        },
    }


def node(
    name: str,
    *,
    labels: Mapping[str, str] | None = None,
    cpu: str | None = "8",
    memory: str | None = "32Gi",
    pods: str | None = "110",
    taints: Iterable[Mapping[str, str]] = (),
    unschedulable: bool = False,
) -> dict[str, Any]:
    allocatable = {
        k: v for k, v in (("cpu", cpu), ("memory", memory), ("pods", pods)) if v is not None
    }
    spec: dict[str, Any] = {}
    if taints:
        spec["taints"] = [dict(t) for t in taints]
    if unschedulable:
        spec["unschedulable"] = True
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, **(labels or {})},
        },
        "spec": spec,
        "status": {"allocatable": allocatable},
    }


def claim(
    name: str,
    *,
    count: int = 1,
    device_class_name: str = CLASS,
    namespace: str = NS,
    annotations: Mapping[str, str] | None = None,
    owner: str | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        meta["annotations"] = dict(annotations)
    if owner is not None:
        meta["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Pod", "name": owner, "uid": "x", "controller": True}
        ]
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": meta,
        "spec": {
            "devices": {
                "requests": [
                    {
                        "name": "gpu",
                        "exactly": {"deviceClassName": device_class_name, "count": count},
                    }
                ]
            }
        },
    }


def allocation(node_name: str, *devices: str, request: str = "gpu") -> dict[str, Any]:
    """A status.allocation for ``devices`` of ``node_name``'s pool."""
    return {
        "devices": {
            "results": [
                {"request": request, "driver": DRIVER, "pool": node_name, "device": d}
                for d in devices
            ]
        },
        "nodeSelector": {
            "nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node_name]}]}
            ]
        },
    }


def pod(
    name: str,
    *claims: str,
    gated: bool = True,
    namespace: str = NS,
    templates: Mapping[str, str] | None = None,
    node_selector: Mapping[str, str] | None = None,
    affinity: Mapping[str, Any] | None = None,
    tolerations: Iterable[Mapping[str, str]] = (),
    cpu: str | None = None,
    memory: str | None = None,
    annotations: Mapping[str, str] | None = None,
    node_name: str | None = None,
) -> dict[str, Any]:
    """A pod using ``claims`` by name (pod claim names ``c0``, ``c1``...) and ``templates``
    (pod claim name -> template name)."""
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    container: dict[str, Any] = {"name": "main", "image": "busybox"}
    if requests:
        container["resources"] = {"requests": requests}
    spec: dict[str, Any] = {
        "containers": [container],
        "resourceClaims": [{"name": f"c{i}", "resourceClaimName": c} for i, c in enumerate(claims)]
        + [{"name": k, "resourceClaimTemplateName": v} for k, v in (templates or {}).items()],
    }
    if gated:
        spec["schedulingGates"] = [{"name": GATE}]
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if affinity:
        spec["affinity"] = {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": dict(affinity)}
        }
    if tolerations:
        spec["tolerations"] = [dict(t) for t in tolerations]
    if node_name:
        spec["nodeName"] = node_name
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        meta["annotations"] = dict(annotations)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": spec,
        "status": {"phase": "Pending"},
    }


class SwitchFence:
    """A fence the test opens and closes."""

    def __init__(self) -> None:
        self.open = True

    def can_write(self) -> bool:
        return self.open


RESOURCES: tuple[Resource, ...] = (
    "resourceslices",
    "deviceclasses",
    "devicetaintrules",
    "nodes",
    "resourceclaims",
    "pods",
)


class Harness:
    """One Placer over a FakeCluster, driven step by step (see the module docstring)."""

    def __init__(
        self,
        *,
        policy: str = "binpack",
        fence: Fence | None = None,
        max_retries: int = 3,
        grace_s: float = 30.0,
    ) -> None:
        self.cluster = FakeCluster()
        self.clock = FakeClock()
        self.queue = WorkQueue(clock=self.clock, base_s=0.0)
        self.cache = ClusterCache(gate=GATE, on_change=self.queue.add_all, clock=self.clock)
        self.metrics = ControllerMetrics()
        self.events = EventRecorder(
            self.cluster,
            component="dra-driver-controller",
            instance="test",
            interval_s=60.0,
            clock=self.clock,
        )
        self.placer = Placer(
            self.cluster,
            self.cache,
            self.events,
            self.metrics,
            driver_name=DRIVER,
            policy=policy,
            max_retries=max_retries,
            grace_s=grace_s,
            fence=fence,
            clock=self.clock,
        )
        self.results: dict[str, Result] = {}

    def add(self, resource: Resource, *objects: dict[str, Any]) -> None:
        for obj in objects:
            self.cluster.create(resource, obj)

    def sync(self) -> None:
        """The watches catching up: every resource listed into the cache."""
        for resource in RESOURCES:
            self.cache.replace(resource, self.cluster.list(resource).items)

    def reconcile(self, key: str) -> Result:
        self.sync()
        result = self.placer.reconcile(key)
        self.results[key] = result
        return result

    def drain(self, rounds: int = 20) -> None:
        """Reconcile every queued key (syncing first) until the queue holds nothing ready."""
        for _ in range(rounds):
            self.sync()
            key = self.queue.get(timeout_s=0)
            if key is None:
                return
            try:
                self.results[key] = self.placer.reconcile(key)
            finally:
                self.queue.done(key)

    def claim(self, name: str, namespace: str = NS) -> dict[str, Any]:
        return self.cluster.get("resourceclaims", name, namespace=namespace)

    def pod(self, name: str, namespace: str = NS) -> dict[str, Any]:
        return self.cluster.get("pods", name, namespace=namespace)

    def devices(self, name: str) -> list[tuple[str, str]]:
        """(pool, device) of claim ``name``'s allocation; empty when unallocated."""
        allocation_ = (self.claim(name).get("status") or {}).get("allocation") or {}
        return [
            (r["pool"], r["device"])
            for r in (allocation_.get("devices") or {}).get("results") or []
        ]

    def events_for(self, kind: str, name: str) -> list[dict[str, Any]]:
        return [
            e
            for e in self.cluster.objects("events")
            if e["involvedObject"]["kind"] == kind and e["involvedObject"]["name"] == name
        ]

    def set_status(self, name: str, status: Mapping[str, Any]) -> None:
        """Overwrite pod ``name``'s status (the scheduler or kubelet writing it)."""
        current = self.pod(name)
        current["status"] = {**current.get("status", {}), **status}
        self.cluster.put("pods", current)


def unschedulable(message: str = "0/2 nodes are available: 2 Insufficient cpu.") -> dict[str, Any]:
    return {
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
                "lastTransitionTime": "2026-11-27T12:00:00Z",
            }
        ]
    }


def add_gpu_nodes(h: Harness, nodes: Mapping[str, int]) -> None:
    """The GPU DeviceClass, and per entry a Node with a slice of that many GPUs."""
    h.add("deviceclasses", device_class())
    for name, gpus in nodes.items():
        h.add("nodes", node(name))
        h.add("resourceslices", node_slice(name, gpus))


def scheduling_gates(h: Harness, name: str) -> list[str]:
    """The names of pod ``name``'s scheduling gates."""
    return [g["name"] for g in h.pod(name)["spec"].get("schedulingGates") or []]


def object_writes(calls: list[Call]) -> list[tuple[str, str, str]]:
    """(verb, resource, name) of every write among ``calls``, Events left out."""
    return [
        (c.verb, c.resource, c.name)
        for c in calls
        if c.verb in ("create", "replace", "replace_status", "patch", "delete")
        and c.resource != "events"
    ]
