"""The fleet and the controller of the controller's cluster tests.

Each test gets its own fleet of fake GPU nodes (:class:`Fleet`, the ``fleet`` fixture):
Node objects with allocatable cpu/memory (no kubelet behind them) and one ResourceSlice
each, of a driver named after the test run, selected by a DeviceClass of the same name, so
no other module's slices or classes take part. ``ns`` is a namespace whose pods are
force-deleted at the end. ``start_controller`` runs the controller in-process with the
ServiceAccount and RBAC of deploy/controller/ (``controller_kubeconfig``, a token-based
kubeconfig, module-scoped). The helpers build gated pods and claim templates and read back
where the real scheduler bound a pod and what its claim was allocated.

Used by test_cluster_controller.py and, through it, test_cluster_controller_restart.py.
"""

from __future__ import annotations

import contextlib
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster_access import ClusterUnderTest, pod_report, read_json, wait_for
from kubernetes import client

from agent_kit.kube import (
    ConflictError,
    KubernetesClient,
    NotFoundError,
    api_errors,
    load_api_client,
)
from controller.app import Controller
from controller.settings import parse_settings

REPO = Path(__file__).resolve().parents[2]
RBAC_DIR = REPO / "deploy" / "controller"
GATE = "gpu.dra-driver.io/placement"
POLICY_ANNOTATION = "gpu.dra-driver.io/policy"
SA_NAMESPACE = "dra-driver"
SA_NAME = "dra-driver-controller"
#: The console script of this environment.
DRA_DRIVER = str(Path(sys.executable).parent / "dra-driver")


def _core(api_client: Any) -> Any:
    return client.CoreV1Api(api_client)


def _resources(api_client: Any) -> Any:
    return client.ResourceV1Api(api_client)


def _coordination(api_client: Any) -> Any:
    return client.CoordinationV1Api(api_client)


def _rbac(api_client: Any) -> Any:
    return client.RbacAuthorizationV1Api(api_client)


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def controller_kubeconfig(local_cluster: ClusterUnderTest, tmp_path_factory: Any) -> Iterator[Path]:
    """A kubeconfig for the controller's ServiceAccount, bound by deploy/controller/rbac.yaml."""
    core: Any = _core(local_cluster.api_client)
    rbac: Any = _rbac(local_cluster.api_client)
    created: list[Callable[[], Any]] = []
    for path in ("serviceaccount.yaml", "rbac.yaml"):
        for doc in yaml.safe_load_all((RBAC_DIR / path).read_text()):
            created.extend(_apply(core, rbac, doc))
    token = core.create_namespaced_service_account_token(
        SA_NAME, SA_NAMESPACE, {"spec": {"expirationSeconds": 3600}}
    ).status.token
    admin = yaml.safe_load(Path(local_cluster.kubeconfig).read_text())
    cluster_entry = admin["clusters"][0]
    path = tmp_path_factory.mktemp("controller") / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster_entry],
                "users": [{"name": "controller", "user": {"token": token}}],
                "contexts": [
                    {
                        "name": "controller",
                        "context": {"cluster": cluster_entry["name"], "user": "controller"},
                    }
                ],
                "current-context": "controller",
            }
        )
    )
    try:
        yield path
    finally:
        for undo in reversed(created):
            with contextlib.suppress(NotFoundError), api_errors("undo"):
                undo()


def _apply(core: Any, rbac: Any, doc: dict[str, Any]) -> list[Callable[[], Any]]:
    """Create ``doc`` unless it exists; return how to delete it again (if we created it)."""
    kind, meta = doc["kind"], doc["metadata"]
    name, namespace = meta["name"], meta.get("namespace")
    operations: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
        "Namespace": (lambda: core.create_namespace(doc), lambda: _delete_namespace(core, name)),
        "ServiceAccount": (
            lambda: core.create_namespaced_service_account(namespace, doc),
            lambda: core.delete_namespaced_service_account(name, namespace),
        ),
        "ClusterRole": (
            lambda: rbac.create_cluster_role(doc),
            lambda: rbac.delete_cluster_role(name),
        ),
        "ClusterRoleBinding": (
            lambda: rbac.create_cluster_role_binding(doc),
            lambda: rbac.delete_cluster_role_binding(name),
        ),
        "Role": (
            lambda: rbac.create_namespaced_role(namespace, doc),
            lambda: rbac.delete_namespaced_role(name, namespace),
        ),
        "RoleBinding": (
            lambda: rbac.create_namespaced_role_binding(namespace, doc),
            lambda: rbac.delete_namespaced_role_binding(name, namespace),
        ),
    }
    create, delete = operations[kind]
    try:
        with api_errors(f"create {kind} {name}"):
            create()
    except ConflictError:
        return []
    return [delete]


def _delete_namespace(core: Any, name: str) -> None:
    """Delete and wait until it is gone, so that the next session can create it again."""
    core.delete_namespace(name)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with api_errors(f"get namespace {name}"):
                core.read_namespace(name)
        except NotFoundError:
            return
        time.sleep(0.5)


@dataclass
class Fleet:
    """Fake GPU nodes of one test, their slices and class."""

    api_client: Any
    run: str
    nodes: list[str] = field(default_factory=list)

    @property
    def driver(self) -> str:
        return f"ctl-{self.run}.test"

    @property
    def device_class(self) -> str:
        return f"gpu.{self.driver}"

    def add_node(self, suffix: str, gpus: int, *, capability: str = "8.0.0") -> str:
        core: Any = _core(self.api_client)
        name = f"ctl-{self.run}-{suffix}"
        core.create_node({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}})
        self.nodes.append(name)
        resources = {"cpu": "64", "memory": "256Gi", "pods": "110"}
        core.patch_node_status(name, {"status": {"capacity": resources, "allocatable": resources}})
        devices = [
            {
                "name": f"gpu-{i}",
                "attributes": {
                    "type": {"string": "gpu"},
                    "cudaComputeCapability": {"version": capability},
                },
                "capacity": {"memory": {"value": "80Gi"}},
            }
            for i in range(gpus)
        ]
        _resources(self.api_client).create_resource_slice(
            {
                "metadata": {"name": f"{name}-gpus"},
                "spec": {
                    "driver": self.driver,
                    "nodeName": name,
                    "pool": {"name": name, "generation": 1, "resourceSliceCount": 1},
                    "devices": devices,
                },
            }
        )
        return name


@pytest.fixture
def fleet(local_cluster: ClusterUnderTest) -> Iterator[Fleet]:
    api = local_cluster.api_client
    found = Fleet(api, uuid.uuid4().hex[:6])
    resources: Any = _resources(api)
    resources.create_device_class(
        {
            "metadata": {"name": found.device_class},
            "spec": {"selectors": [{"cel": {"expression": f'device.driver == "{found.driver}"'}}]},
        }
    )
    try:
        yield found
    finally:
        core: Any = _core(api)
        for name in found.nodes:
            core.delete_node(name)
            resources.delete_resource_slice(f"{name}-gpus")
        resources.delete_device_class(found.device_class)


@pytest.fixture
def ns(local_cluster: ClusterUnderTest) -> Iterator[str]:
    """A namespace whose pods are force-deleted at the end (no kubelet would confirm it)."""
    core: Any = _core(local_cluster.api_client)
    name = f"ctl-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    try:
        yield name
    finally:
        core.delete_collection_namespaced_pod(name, grace_period_seconds=0)
        core.delete_namespace(name)


@pytest.fixture
def start_controller(
    controller_kubeconfig: Path,
) -> Iterator[Callable[..., Controller]]:
    started: list[Controller] = []

    def start(*argv: str, wrap: Callable[[KubernetesClient], Any] | None = None) -> Controller:
        settings = parse_settings(
            [
                "--kubeconfig",
                str(controller_kubeconfig),
                "--namespace",
                SA_NAMESPACE,
                "--lease-name",
                f"ctl-{uuid.uuid4().hex[:8]}",
                "--identity",
                "in-process",
                "--no-manage-device-classes",
                "--watch-timeout-seconds",
                "20",
                *argv,
            ],
            environ={},
        )
        kube = KubernetesClient(load_api_client(str(controller_kubeconfig)))
        controller = Controller(settings, wrap(kube) if wrap is not None else kube)
        controller.start()
        started.append(controller)
        assert controller.wait_synced(30), controller.readiness()
        return controller

    yield start
    for controller in started:
        controller.shutdown(timeout_s=10)


# --- helpers ----------------------------------------------------------------------------------


def _template(fleet: Fleet, name: str, count: int = 1) -> dict[str, Any]:
    request = {"name": "gpu", "exactly": {"deviceClassName": fleet.device_class, "count": count}}
    return {
        "metadata": {"name": name},
        "spec": {"spec": {"devices": {"requests": [request]}}},
    }


def _pod(
    name: str, template: str, *, gated: bool = True, policy: str | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if policy is not None:
        meta["annotations"] = {POLICY_ANNOTATION: policy}
    spec: dict[str, Any] = {
        "tolerations": [{"operator": "Exists"}],
        "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": template}],
        "containers": [
            {"name": "main", "image": "busybox", "resources": {"claims": [{"name": "gpu"}]}}
        ],
    }
    if gated:
        spec["schedulingGates"] = [{"name": GATE}]
    return {"metadata": meta, "spec": spec}


def _bound_node(api_client: Any, namespace: str, name: str) -> str | None:
    pod = read_json(_core(api_client).read_namespaced_pod, name, namespace)
    node: str | None = pod["spec"].get("nodeName")
    return node


def _claim_of(api_client: Any, namespace: str, pod: str) -> dict[str, Any]:
    stored = read_json(_core(api_client).read_namespaced_pod, pod, namespace)
    (status,) = stored["status"]["resourceClaimStatuses"]
    return read_json(
        _resources(api_client).read_namespaced_resource_claim,
        status["resourceClaimName"],
        namespace,
    )


def _devices(claim: dict[str, Any]) -> list[tuple[str, str]]:
    results = claim["status"]["allocation"]["devices"]["results"]
    return [(r["pool"], r["device"]) for r in results]


def _wait_bound(
    cluster: ClusterUnderTest, namespace: str, pods: list[str], timeout_s: float = 60
) -> dict[str, str]:
    api = cluster.api_client

    def all_bound() -> dict[str, str] | None:
        nodes = {p: _bound_node(api, namespace, p) for p in pods}
        return {p: n for p, n in nodes.items() if n} if all(nodes.values()) else None

    bound: dict[str, str] = wait_for(
        f"{len(pods)} pod(s) bound in {namespace}",
        all_bound,
        cluster=cluster,
        timeout_s=timeout_s,
        context=lambda: "\n".join(pod_report(api, namespace, p) for p in pods[:3]),
    )
    return bound
