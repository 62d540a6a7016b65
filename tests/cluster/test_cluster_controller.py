"""`dra-driver controller` against the real API server, scheduler and controller-manager.

Each test gets its own fleet of fake GPU nodes: Node objects with allocatable
cpu/memory (no kubelet behind them) and one ResourceSlice each, of a driver
named after the test run, selected by a DeviceClass of the same name, so no
other module's slices or classes take part. Pods tolerate every taint (the
node lifecycle controller taints nodes without a kubelet) and never start:
"placed" means the gate is gone, the claims are allocated, and the real
scheduler has bound the pod to the node the controller chose.

The controller runs with the ServiceAccount and RBAC of deploy/controller/
(a token-based kubeconfig), so every test also checks that the role grants
what the controller uses: writing ``status.allocation`` needs
``resourceclaims/binding`` next to ``resourceclaims/status``.

The fleet, the namespace, the controller and the helpers are in cluster_controller_fixtures.
"""

# The shared fixtures are imported by name, and pytest hands them to the tests as
# parameters of the same name: that is what F811 (redefinition) would flag.
# ruff: noqa: F811

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster_access import ClusterUnderTest, pod_report, read_json, wait_for
from cluster_controller_fixtures import (  # noqa: F401  (fixtures are found by name)
    DRA_DRIVER,
    GATE,
    RBAC_DIR,
    REPO,
    SA_NAMESPACE,
    Fleet,
    _claim_of,
    _coordination,
    _core,
    _devices,
    _pod,
    _rbac,
    _resources,
    _template,
    _wait_bound,
    controller_kubeconfig,
    fleet,
    ns,
    start_controller,
)
from kubernetes import client

from agent_kit.kube import (
    ApiError,
    ForbiddenError,
    InvalidError,
    KubernetesClient,
    load_api_client,
)
from controller.app import Controller

# --- tests ------------------------------------------------------------------------------------


def test_most_capable_places_on_the_h100_node_although_the_a100_node_comes_first(
    local_cluster: ClusterUnderTest,
    fleet: Fleet,
    ns: str,
    start_controller: Callable[..., Controller],
) -> None:
    a100 = fleet.add_node("a-a100", 2, capability="8.0.0")
    h100 = fleet.add_node("b-h100", 2, capability="9.0.0")
    api = local_cluster.api_client
    _resources(api).create_namespaced_resource_claim_template(ns, _template(fleet, "one"))
    start_controller("--policy", "most-capable")
    core: Any = _core(api)
    core.create_namespaced_pod(ns, _pod("strong", "one"))
    core.create_namespaced_pod(ns, _pod("upstream", "one", policy="first-fit"))
    bound = _wait_bound(local_cluster, ns, ["strong", "upstream"])
    assert bound == {"strong": h100, "upstream": a100}
    claim = _claim_of(api, ns, "strong")
    assert _devices(claim) == [(h100, "gpu-0")]
    pod = read_json(core.read_namespaced_pod, "strong", ns)
    assert claim["status"]["reservedFor"] == [
        {"resource": "pods", "name": "strong", "uid": pod["metadata"]["uid"]}
    ]
    assert "resource.kubernetes.io/delete-protection" in claim["metadata"]["finalizers"]
    events = core.list_namespaced_event(ns, field_selector="involvedObject.name=strong").items
    assert any(e.reason == "Placed" and h100 in e.message for e in events)


def test_binpack_fills_one_nodes_gpus_before_touching_another(
    local_cluster: ClusterUnderTest,
    fleet: Fleet,
    ns: str,
    start_controller: Callable[..., Controller],
) -> None:
    for suffix in ("a", "b", "c"):
        fleet.add_node(suffix, 2)
    api = local_cluster.api_client
    _resources(api).create_namespaced_resource_claim_template(ns, _template(fleet, "one"))
    start_controller("--policy", "binpack")
    core: Any = _core(api)
    order: list[str] = []
    for i in range(4):
        core.create_namespaced_pod(ns, _pod(f"p{i}", "one"))
        # One at a time, so each decision sees the previous one.
        order.append(_wait_bound(local_cluster, ns, [f"p{i}"])[f"p{i}"])
    assert order[0] == order[1] and order[2] == order[3] and order[0] != order[2]
    devices = [d for i in range(4) for d in _devices(_claim_of(api, ns, f"p{i}"))]
    assert len(set(devices)) == 4


def test_ungated_pods_are_left_to_the_scheduler(
    local_cluster: ClusterUnderTest,
    fleet: Fleet,
    ns: str,
    start_controller: Callable[..., Controller],
) -> None:
    fleet.add_node("a", 2)
    api = local_cluster.api_client
    _resources(api).create_namespaced_resource_claim_template(ns, _template(fleet, "one"))
    controller = start_controller()
    _core(api).create_namespaced_pod(ns, _pod("plain", "one", gated=False))
    _wait_bound(local_cluster, ns, ["plain"])
    claim = _claim_of(api, ns, "plain")
    assert "gpu.dra-driver.io/placed-for" not in (claim["metadata"].get("annotations") or {})
    assert controller.metrics.placements.labels("binpack")._value.get() == 0


def test_an_unsatisfiable_claim_gets_an_event_naming_the_reason(
    local_cluster: ClusterUnderTest,
    fleet: Fleet,
    ns: str,
    start_controller: Callable[..., Controller],
) -> None:
    node = fleet.add_node("a", 2)
    api = local_cluster.api_client
    _resources(api).create_namespaced_resource_claim_template(
        ns, _template(fleet, "three", count=3)
    )
    start_controller()
    core: Any = _core(api)
    core.create_namespaced_pod(ns, _pod("greedy", "three"))

    def warning() -> Any:
        events = core.list_namespaced_event(ns, field_selector="involvedObject.kind=Pod").items
        return next((e for e in events if e.reason == "Unplaceable"), None)

    event = wait_for(
        "an Unplaceable event",
        warning,
        cluster=local_cluster,
        context=lambda: pod_report(api, ns, "greedy"),
    )
    assert event.type == "Warning"
    assert f"closest is node {node}" in event.message or f"no fit on node {node}" in event.message
    assert "needs 3, 2 eligible" in event.message
    pod = read_json(core.read_namespaced_pod, "greedy", ns)
    assert pod["spec"]["schedulingGates"] == [{"name": GATE}]
    claim = _claim_of(api, ns, "greedy")
    claim_events = core.list_namespaced_event(
        ns, field_selector=f"involvedObject.name={claim['metadata']['name']}"
    ).items
    assert any("needs 3, 2 eligible" in e.message for e in claim_events)
    # The explanation also reads on the command line, against the live cluster.
    answer = subprocess.run(
        [
            DRA_DRIVER,
            "explain",
            "claim",
            f"{ns}/{claim['metadata']['name']}",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECONFIG": str(local_cluster.kubeconfig)},
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert answer.returncode == 0, answer.stderr
    report = json.loads(answer.stdout)
    (row,) = [n for n in report["nodes"] if n["node"] == node]
    assert row["claims"][0]["requests"][0]["eligible"] == 2


class _Interfering:
    """The controller's client, with another writer changing each claim just before the
    controller's first write to it: the API server then answers that write 409."""

    def __init__(self, inner: KubernetesClient, admin: Any) -> None:
        self.inner = inner
        self.admin = admin
        self.touched: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def patch(self, resource: Any, name: str, patch: Any, *, namespace: str | None = None) -> Any:
        if resource == "resourceclaims" and name not in self.touched:
            self.touched.add(name)
            _resources(self.admin).patch_namespaced_resource_claim(
                name, namespace, {"metadata": {"labels": {"touched": "yes"}}}
            )
        return self.inner.patch(resource, name, patch, namespace=namespace)


def test_conflicts_from_the_api_server_do_not_wedge_the_controller(
    local_cluster: ClusterUnderTest,
    fleet: Fleet,
    ns: str,
    start_controller: Callable[..., Controller],
) -> None:
    for suffix in ("a", "b"):
        fleet.add_node(suffix, 8)
    api = local_cluster.api_client
    _resources(api).create_namespaced_resource_claim_template(ns, _template(fleet, "one"))
    interfering: list[_Interfering] = []

    def wrap(inner: KubernetesClient) -> _Interfering:
        interfering.append(_Interfering(inner, api))
        return interfering[-1]

    controller = start_controller(wrap=wrap)
    core: Any = _core(api)
    pods = [f"p{i}" for i in range(12)]
    for name in pods:
        core.create_namespaced_pod(ns, _pod(name, "one"))
    bound = _wait_bound(local_cluster, ns, pods, timeout_s=120)
    devices = [d for p in pods for d in _devices(_claim_of(api, ns, p))]
    assert len(set(devices)) == len(pods)
    for p in pods:
        assert _devices(_claim_of(api, ns, p))[0][0] == bound[p]
    conflicts = controller.metrics.conflicts.labels("resourceclaims")._value.get()
    assert conflicts >= len(pods)  # every claim met one, and the controller went on


def test_killing_the_leader_mid_stream_loses_no_placement_and_shares_no_device(
    local_cluster: ClusterUnderTest, fleet: Fleet, ns: str, controller_kubeconfig: Path
) -> None:
    for suffix in ("a", "b", "c", "d"):
        fleet.add_node(suffix, 8)
    api = local_cluster.api_client
    _resources(api).create_namespaced_resource_claim_template(ns, _template(fleet, "one"))
    lease = f"ctl-{fleet.run}"

    def replica(identity: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                DRA_DRIVER,
                "controller",
                f"--kubeconfig={controller_kubeconfig}",
                f"--namespace={SA_NAMESPACE}",
                f"--lease-name={lease}",
                f"--identity={identity}",
                "--lease-duration-seconds=4",
                "--renew-deadline-seconds=3",
                "--retry-period-seconds=0.5",
                "--no-manage-device-classes",
                "--log-format=json",
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    coordination: Any = _coordination(api)

    def holder() -> str | None:
        try:
            spec = read_json(coordination.read_namespaced_lease, lease, SA_NAMESPACE)["spec"]
        except client.ApiException:
            return None
        found: str | None = spec.get("holderIdentity")
        return found

    first = replica("first")
    second: subprocess.Popen[bytes] | None = None
    try:
        wait_for("the first replica to lead", lambda: holder() == "first", cluster=local_cluster)
        second = replica("second")
        core: Any = _core(api)
        pods = [f"p{i:02d}" for i in range(24)]
        for name in pods:
            core.create_namespaced_pod(ns, _pod(name, "one"))

        def ungated() -> int:
            listed = read_json(core.list_namespaced_pod, ns)["items"]
            return sum(1 for p in listed if not p["spec"].get("schedulingGates"))

        wait_for(
            "some placements by the first leader", lambda: ungated() >= 6, cluster=local_cluster
        )
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        wait_for(
            "the second replica to take over",
            lambda: holder() == "second",
            cluster=local_cluster,
            timeout_s=30,
        )
        bound = _wait_bound(local_cluster, ns, pods, timeout_s=120)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(20)
    devices: list[tuple[str, str]] = []
    for name in pods:
        claim = _claim_of(api, ns, name)
        found = _devices(claim)
        assert len(found) == 1
        assert found[0][0] == bound[name]
        devices.extend(found)
    assert len(set(devices)) == len(pods), "a device was allocated twice"


def test_writing_an_allocation_needs_the_binding_subresource(
    local_cluster: ClusterUnderTest, fleet: Fleet, ns: str, controller_kubeconfig: Path
) -> None:
    """The role's ``resourceclaims/binding`` line is needed: without it the status write
    that sets ``status.allocation`` is forbidden (and with it, allowed)."""
    node = fleet.add_node("a", 1)
    api = local_cluster.api_client
    rbac: Any = _rbac(api)
    core: Any = _core(api)
    name = f"ctl-{fleet.run}-no-binding"
    rules = [
        rule
        for doc in yaml.safe_load_all((RBAC_DIR / "rbac.yaml").read_text())
        if doc["kind"] == "ClusterRole"
        for rule in doc["rules"]
    ]
    without = [
        {**rule, "resources": [r for r in rule["resources"] if r != "resourceclaims/binding"]}
        for rule in rules
    ]
    core.create_namespaced_service_account(ns, {"metadata": {"name": "probe"}})
    rbac.create_cluster_role({"metadata": {"name": name}, "rules": without})
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [{"kind": "ServiceAccount", "name": "probe", "namespace": ns}],
        }
    )
    try:
        token = core.create_namespaced_service_account_token(
            "probe", ns, {"spec": {"expirationSeconds": 600}}
        ).status.token
        config_text = yaml.safe_load(controller_kubeconfig.read_text())
        config_text["users"][0]["user"]["token"] = token
        probe_config = controller_kubeconfig.with_name("probe-kubeconfig")
        probe_config.write_text(yaml.safe_dump(config_text))
        probe = KubernetesClient(load_api_client(str(probe_config)))
        resources: Any = _resources(api)
        resources.create_namespaced_resource_claim(
            ns,
            {
                "metadata": {"name": "c"},
                "spec": {
                    "devices": {
                        "requests": [
                            {"name": "gpu", "exactly": {"deviceClassName": fleet.device_class}}
                        ]
                    }
                },
            },
        )
        stored = probe.get("resourceclaims", "c", namespace=ns)
        stored["status"] = {
            "allocation": {
                "devices": {
                    "results": [
                        {"request": "gpu", "driver": fleet.driver, "pool": node, "device": "gpu-0"}
                    ]
                },
                "allocationTimestamp": "2026-01-01T00:00:00Z",
            }
        }

        def write() -> None:
            wait_for(
                "the role to take effect",
                lambda: probe.get("resourceclaims", "c", namespace=ns),
                cluster=local_cluster,
            )
            probe.replace_status("resourceclaims", stored)

        with pytest.raises(ApiError) as info:
            write()
        # Checked in validation: 422 naming the synthetic subresource, not a 403.
        assert isinstance(info.value, ForbiddenError | InvalidError)
        assert 'cannot update resource "resourceclaims/binding"' in str(info.value)
        rbac.patch_cluster_role(name, {"rules": rules})

        def allowed() -> bool:
            try:
                probe.replace_status("resourceclaims", stored)
            except ApiError as err:
                if "resourceclaims/binding" in str(err):
                    return False
                raise
            return True

        wait_for("the write to be allowed with the binding rule", allowed, cluster=local_cluster)
    finally:
        rbac.delete_cluster_role_binding(name)
        rbac.delete_cluster_role(name)


def test_an_api_server_that_stops_answering_does_not_wedge_the_controller(
    local_cluster: ClusterUnderTest,
    fleet: Fleet,
    ns: str,
    start_controller: Callable[..., Controller],
) -> None:
    """The API server is frozen (SIGSTOP) for longer than the renew deadline: requests
    and watches time out, the leadership lapses; once it answers again the controller
    leads again and places what arrived."""
    if local_cluster.local is None:
        pytest.skip("freezes the local cluster's kube-apiserver; not done to an external cluster")
    state = json.loads(local_cluster.local.state_file.read_text())
    (apiserver,) = [d["pid"] for d in state["daemons"] if d["name"] == "kube-apiserver"]
    fleet.add_node("a", 4)
    api = local_cluster.api_client
    _resources(api).create_namespaced_resource_claim_template(ns, _template(fleet, "one"))
    controller = start_controller(
        "--api-timeout-seconds",
        "2",
        "--renew-deadline-seconds",
        "4",
        "--lease-duration-seconds",
        "6",
        "--retry-period-seconds",
        "1",
    )
    core: Any = _core(api)
    core.create_namespaced_pod(ns, _pod("before", "one"))
    _wait_bound(local_cluster, ns, ["before"])
    os.kill(apiserver, signal.SIGSTOP)
    try:
        time.sleep(8)
    finally:
        os.kill(apiserver, signal.SIGCONT)
    assert controller.elector is not None
    wait_for("the leadership back", controller.elector.can_write, cluster=local_cluster)
    core.create_namespaced_pod(ns, _pod("after", "one"))
    bound = _wait_bound(local_cluster, ns, ["before", "after"], timeout_s=90)
    assert _devices(_claim_of(api, ns, "after")) != _devices(_claim_of(api, ns, "before"))
    assert bound["after"] in fleet.nodes
    assert controller.liveness() is None
