"""deploy/examples on a real cluster: every feature folder applied as is, its promise checked.

One module on purpose (about 500 lines): one module-scoped set-up applies every folder
together; a second module would build the fleet and place everything again.

Each folder's YAML is applied server-side, as ``kubectl apply --server-side -n NS -f
FOLDER`` would, into a namespace of its own; the only rewrite is a toleration
added to every Pod. The GPUs are those of fake nodes: Node objects without a
kubelet, whose pools ``SlicePublisher`` publishes from the mock backend (so the
attributes, MIG placements and shared capacities are the ones a kubelet plugin
publishes), because one real node cannot have A100s, H100s and shared L4s at
once. The node lifecycle controller taints nodes without a kubelet, hence the
toleration. Pods bind there and never run: the outcome checked is what the
scheduler or `dra-driver controller` allocated and where they put the pod,
which is what each folder's README promises (the running containers are the
demo's business, e2e/demo.py).

One module-scoped set-up applies everything: the folders the scheduler places
first, and once their claims are allocated a spare node untouched by them, a
running controller, and the folders it places (gated pods). Sequencing them
keeps the scheduler and the controller from choosing devices at the same time,
and gives ``binpack`` a fresh node to avoid.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster_access import ClusterUnderTest, core_api, pod_report, read_json, resource_api, wait_for

from agent_kit.kube import KubernetesClient, load_api_client
from api.quantity import Quantity
from controller.app import Controller
from controller.settings import parse_settings
from dra_driver.discovery.mock import MockBackend
from kubelet_plugin.publisher import SlicePublisher
from kubelet_plugin.slice_client import SliceClient

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "deploy" / "examples"
DRIVER = "gpu.dra-driver.io"
GATE = f"{DRIVER}/placement"
#: The console script of this environment.
DRA_DRIVER = str(Path(sys.executable).parent / "dra-driver")
#: Folders whose pods the kube-scheduler places, then those `dra-driver controller` places.
SCHEDULER_FOLDERS = (
    "selectors",
    "admin-access",
    "constraints",
    "first-available",
    "sharing",
    "shared-capacity",
    "mig",
    "extended-resources",
)
CONTROLLER_FOLDERS = ("placement", "explain")
#: Folders that are not a feature: the offline inventory and the `make demo` set.
NOT_FEATURES = ("inventory", "demo", "demo-topology")


@dataclass(frozen=True)
class FakeNode:
    """A fake GPU node of the fleet: its mock GPUs and how its plugin would publish them."""

    suffix: str
    profile: str
    shared: bool = False
    partitionable: bool = True


#: The fleet; name order matters to first fit. The A100s are whole GPUs only, so that
#: admin access to all of them does not meet counters drawn by other claims' MIG slices.
FLEET = (
    FakeNode("a100", "8xA100-40GB", partitionable=False),
    FakeNode("h100", "8xH100-80GB"),
    FakeNode("l4", "2xL4", shared=True),
)
#: Published once the scheduler's folders are placed; first by name, so first fit would take it.
SPARE = FakeNode("0-spare", "8xA100-40GB", partitionable=False)
#: Namespaces where claims may ask for admin access carry this label.
ADMIN_ACCESS_LABEL = {"resource.kubernetes.io/admin-access": "true"}
#: Nodes without a kubelet are tainted; pods bound for them tolerate it.
TOLERATE_ALL = [{"operator": "Exists"}]
FIELD_MANAGER = "dra-driver-examples-test"


def feature_folders() -> list[str]:
    return sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir() and p.name not in NOT_FEATURES)


def folder_documents(folder: str) -> list[dict[str, Any]]:
    """Every object of the folder's YAML files, in file-name order."""
    docs: list[dict[str, Any]] = []
    for path in sorted((EXAMPLES / folder).glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    return docs


@dataclass
class Examples:
    """What the set-up applied and saw: a namespace per folder, the fleet, what was in use."""

    cluster: ClusterUnderTest
    run: str
    namespaces: dict[str, str] = field(default_factory=dict)
    nodes: list[str] = field(default_factory=list)
    publishers: list[SlicePublisher] = field(default_factory=list)
    used_before_placement: set[str] = field(default_factory=set)
    spare: str = ""

    @property
    def api(self) -> Any:
        return self.cluster.api_client

    def claim(self, folder: str, name: str) -> dict[str, Any]:
        return read_json(
            resource_api(self.api).read_namespaced_resource_claim, name, self.namespaces[folder]
        )

    def pod(self, folder: str, name: str) -> dict[str, Any]:
        return read_json(core_api(self.api).read_namespaced_pod, name, self.namespaces[folder])

    def device(self, result: dict[str, Any]) -> dict[str, Any]:
        """The published device of an allocation result, from the live ResourceSlices."""
        slices = read_json(
            resource_api(self.api).list_resource_slice,
            field_selector=f"spec.driver={result['driver']}",
        )["items"]
        for slice_ in slices:
            if slice_["spec"]["pool"]["name"] != result["pool"]:
                continue
            for device in slice_["spec"].get("devices") or []:
                if device["name"] == result["device"]:
                    found: dict[str, Any] = device
                    return found
        raise AssertionError(f"device {result['pool']}/{result['device']} is not published")

    def events(self, folder: str, name: str) -> list[Any]:
        listed = core_api(self.api).list_namespaced_event(
            self.namespaces[folder], field_selector=f"involvedObject.name={name}"
        )
        return list(listed.items)


def attribute(device: dict[str, Any], name: str) -> Any:
    """The value of a device attribute, whatever its type (``string``, ``int``, ``version``)."""
    (value,) = device["attributes"][name].values()
    return value


def results(claim: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = claim["status"]["allocation"]["devices"]["results"]
    return found


# --- set-up -----------------------------------------------------------------------------------


def _apply(api_client: Any, folder: str, namespace: str) -> None:
    """Server-side apply of the folder's objects into ``namespace``, Pods tolerating taints."""
    from kubernetes.dynamic import DynamicClient

    dynamic = DynamicClient(api_client)  # type: ignore[no-untyped-call]
    for doc in folder_documents(folder):
        assert "namespace" not in doc["metadata"], f"{folder}: {doc['metadata']['name']}"
        body = dict(doc, metadata={**doc["metadata"], "namespace": namespace})
        if doc["kind"] == "Pod":
            body["spec"] = {**doc["spec"], "tolerations": TOLERATE_ALL}
        resource = dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        resource.server_side_apply(body=body, namespace=namespace, field_manager=FIELD_MANAGER)


def _add_node(examples: Examples, fake: FakeNode) -> str:
    """A Node without a kubelet and its pool, as the kubelet plugin would publish it."""
    core = core_api(examples.api)
    name = f"ex-{examples.run}-{fake.suffix}"
    core.create_node({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}})
    examples.nodes.append(name)
    resources = {"cpu": "64", "memory": "256Gi", "pods": "110"}
    core.patch_node_status(name, {"status": {"capacity": resources, "allocatable": resources}})
    uid = core.read_node(name).metadata.uid
    publisher = SlicePublisher(
        SliceClient(KubernetesClient(examples.api)),
        node_name=name,
        node_uid=uid,
        shared_gpus=fake.shared,
        partitionable=fake.partitionable,
    )
    publisher.publish(MockBackend(name, fake.profile).discover())
    examples.publishers.append(publisher)
    return name


def _foreign_pools(examples: Examples) -> list[str]:
    """Pools of the driver that are not the fleet's (another module's, or a running plugin's)."""
    slices = read_json(
        resource_api(examples.api).list_resource_slice, field_selector=f"spec.driver={DRIVER}"
    )["items"]
    return sorted(
        {s["spec"]["pool"]["name"] for s in slices} - set(examples.nodes),
    )


def _claims_of(examples: Examples, folder: str) -> list[dict[str, Any]]:
    listed = read_json(
        resource_api(examples.api).list_namespaced_resource_claim, examples.namespaces[folder]
    )["items"]
    return list(listed)


def _wait_placed(examples: Examples, folder: str, *, timeout_s: float = 90) -> None:
    """Until every claim of the folder is allocated and every pod bound to a node."""
    namespace = examples.namespaces[folder]
    pods = [d["metadata"]["name"] for d in folder_documents(folder) if d["kind"] == "Pod"]

    def placed() -> bool:
        claims = _claims_of(examples, folder)
        allocated = all(c.get("status", {}).get("allocation") for c in claims)
        bound = all(examples.pod(folder, p)["spec"].get("nodeName") for p in pods)
        return bool(claims) and allocated and bound

    wait_for(
        f"the claims and pods of {folder} placed",
        placed,
        cluster=examples.cluster,
        timeout_s=timeout_s,
        context=lambda: "\n".join(pod_report(examples.api, namespace, p) for p in pods),
    )


def _used_nodes(examples: Examples) -> set[str]:
    """Fleet nodes with a device allocated to any claim of the cluster."""
    claims = read_json(resource_api(examples.api).list_resource_claim_for_all_namespaces)["items"]
    return {
        r["pool"]
        for c in claims
        for r in (c.get("status", {}).get("allocation") or {}).get("devices", {}).get("results", [])
        if r["pool"] in examples.nodes
    }


def _start_controller(examples: Examples, namespace: str) -> Controller:
    kubeconfig = str(examples.cluster.kubeconfig)
    settings = parse_settings(
        [
            "--kubeconfig",
            kubeconfig,
            "--namespace",
            namespace,
            "--lease-name",
            f"ex-{examples.run}",
            "--identity",
            "examples",
            "--no-manage-device-classes",
            "--watch-timeout-seconds",
            "20",
        ],
        environ={},
    )
    controller = Controller(settings, KubernetesClient(load_api_client(kubeconfig)))
    controller.start()
    assert controller.wait_synced(30), controller.readiness()
    return controller


def _teardown(examples: Examples) -> None:
    core = core_api(examples.api)
    for namespace in examples.namespaces.values():
        # No kubelet confirms the deletion of a pod on a fake node: force it.
        core.delete_collection_namespaced_pod(namespace, grace_period_seconds=0)
        core.delete_namespace(namespace)
    slices = SliceClient(KubernetesClient(examples.api))
    for publisher in examples.publishers:
        listing = slices.list_slices(node_name=publisher.node_name, driver_name=DRIVER)
        for slice_ in listing.items:
            slices.delete_slice(slice_.metadata.name or "")
    for node in examples.nodes:
        core.delete_node(node)


@pytest.fixture(scope="module")
def examples(local_cluster: ClusterUnderTest, device_classes: list[str]) -> Iterator[Examples]:
    """Every feature folder applied and placed (module docstring)."""
    if local_cluster.local is None:
        pytest.skip(
            "adds fake GPU nodes next to the cluster's own and runs a controller of its own; "
            "not done to an external cluster, whose driver would place the pods too"
        )
    assert {"gpu.dra-driver.io", "mig.gpu.dra-driver.io"} <= set(device_classes)
    found = Examples(local_cluster, uuid.uuid4().hex[:6])
    core = core_api(local_cluster.api_client)
    controller: Controller | None = None
    try:
        for fake in FLEET:
            _add_node(found, fake)
        others = _foreign_pools(found)
        assert not others, (
            f"pools of {DRIVER} outside the fake fleet ({', '.join(others)}): the examples "
            "would land there too; this module expects the cluster's own nodes to publish none"
        )
        for folder in (*SCHEDULER_FOLDERS, *CONTROLLER_FOLDERS):
            namespace = f"ex-{found.run}-{folder}"
            labels = ADMIN_ACCESS_LABEL if folder == "admin-access" else {}
            core.create_namespace({"metadata": {"name": namespace, "labels": labels}})
            found.namespaces[folder] = namespace
        for folder in SCHEDULER_FOLDERS:
            _apply(found.api, folder, found.namespaces[folder])
        for folder in SCHEDULER_FOLDERS:
            _wait_placed(found, folder)
        found.used_before_placement = _used_nodes(found)
        found.spare = _add_node(found, SPARE)
        controller = _start_controller(found, found.namespaces["placement"])
        for folder in CONTROLLER_FOLDERS:
            _apply(found.api, folder, found.namespaces[folder])
        _wait_placed(found, "placement")
        yield found
    finally:
        if controller is not None:
            controller.shutdown(timeout_s=10)
        _teardown(found)


# --- the folders ------------------------------------------------------------------------------


def test_every_feature_folder_is_applied_here() -> None:
    # A new folder needs its promise checked here (and a README: tests/unit/test_cli.py).
    assert feature_folders() == sorted((*SCHEDULER_FOLDERS, *CONTROLLER_FOLDERS))


def test_selectors_pick_an_a100_with_at_least_40gi(examples: Examples) -> None:
    claim = examples.claim("selectors", "a100-40gi")
    (result,) = results(claim)
    device = examples.device(result)
    assert attribute(device, "productName").startswith("NVIDIA A100")
    assert Quantity.parse(device["capacity"]["memory"]["value"]) >= Quantity.parse("40Gi")
    assert result["pool"] == f"ex-{examples.run}-a100"
    assert examples.pod("selectors", "a100-40gi")["spec"]["nodeName"] == result["pool"]


def test_constraints_put_both_gpus_on_one_numa_node(examples: Examples) -> None:
    claim = examples.claim("constraints", "numa-pair")
    found = results(claim)
    assert len(found) == 2
    assert len({r["device"] for r in found}) == 2
    assert len({r["pool"] for r in found}) == 1
    numa = {attribute(examples.device(r), "resource.kubernetes.io/numaNode") for r in found}
    assert len(numa) == 1


def test_first_available_takes_the_h100_where_one_is_free(examples: Examples) -> None:
    claim = examples.claim("first-available", "h100-or-two-a100")
    (result,) = results(claim)
    assert result["request"] == "gpu/h100"
    assert attribute(examples.device(result), "productName").startswith("NVIDIA H100")


def test_one_claim_is_shared_by_two_pods(examples: Examples) -> None:
    claim = examples.claim("sharing", "shared-gpu")
    (result,) = results(claim)
    device = examples.device(result)
    assert Quantity.parse(device["capacity"]["memory"]["value"]) >= Quantity.parse("80Gi")
    pods = {p: examples.pod("sharing", p) for p in ("shared-a", "shared-b")}
    reserved = {(r["resource"], r["name"], r["uid"]) for r in claim["status"]["reservedFor"]}
    assert reserved == {("pods", name, pod["metadata"]["uid"]) for name, pod in pods.items()}
    assert {pod["spec"]["nodeName"] for pod in pods.values()} == {result["pool"]}


def test_time_slicing_config_travels_with_the_allocation(examples: Examples) -> None:
    claim = examples.claim("sharing", "time-sliced-gpu")
    (config,) = claim["status"]["allocation"]["devices"]["config"]
    assert config["source"] == "FromClaim"
    # It names the claim's only request (["gpu"]): the scheduler stores it without its
    # requests, "empty means all", as `dra-driver allocate` does.
    assert "requests" not in config
    sharing = config["opaque"]["parameters"]["sharing"]
    assert sharing == {"strategy": "TimeSlicing", "timeSlicingConfig": {"interval": "Long"}}


def test_shared_capacity_puts_two_halves_on_one_shared_gpu(examples: Examples) -> None:
    (a,) = results(examples.claim("shared-capacity", "half-a"))
    (b,) = results(examples.claim("shared-capacity", "half-b"))
    assert (a["pool"], a["device"]) == (b["pool"], b["device"])
    assert a["pool"] == f"ex-{examples.run}-l4"
    assert examples.device(a)["allowMultipleAllocations"] is True
    assert a["shareID"] != b["shareID"]
    for result in (a, b):
        consumed = {k: Quantity.parse(v) for k, v in result["consumedCapacity"].items()}
        assert consumed == {"compute": Quantity.parse("50"), "memory": Quantity.parse("10Gi")}


def test_a_device_plugin_pod_gets_two_gpus_through_the_class_mapping_its_name(
    examples: Examples,
) -> None:
    pod = examples.pod("extended-resources", "two-gpus")
    status = pod["status"]["extendedResourceClaimStatus"]
    claim = examples.claim("extended-resources", status["resourceClaimName"])
    meta = claim["metadata"]
    assert meta["generateName"] == "two-gpus-extended-resources-"
    assert meta["annotations"]["resource.kubernetes.io/extended-resource-claim"] == "true"
    (owner,) = meta["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == (
        "Pod",
        pod["metadata"]["uid"],
        True,
    )
    (request,) = claim["spec"]["devices"]["requests"]
    assert request["name"] == "container-0-request-0"
    assert request["exactly"]["deviceClassName"] == DRIVER  # maps nvidia.com/gpu
    assert (request["exactly"]["allocationMode"], request["exactly"]["count"]) == ("ExactCount", 2)
    assert status["requestMappings"] == [
        {"containerName": "main", "resourceName": "nvidia.com/gpu", "requestName": request["name"]}
    ]
    found = results(claim)
    assert len({r["device"] for r in found}) == 2
    assert {r["pool"] for r in found} == {pod["spec"]["nodeName"]}
    assert {attribute(examples.device(r), "type") for r in found} == {"gpu"}


def test_mig_claim_gets_a_mig_device(examples: Examples) -> None:
    (result,) = results(examples.claim("mig", "mig-1g10gb"))
    device = examples.device(result)
    assert attribute(device, "type") == "mig"
    assert attribute(device, "profile") == "1g.10gb"
    # A MIG placement draws on its GPU's counter set, which is how it excludes the others.
    assert device["consumesCounters"]


def test_admin_access_gets_every_a100_of_the_node_also_those_in_use(examples: Examples) -> None:
    found = results(examples.claim("admin-access", "all-a100s"))
    a100 = f"ex-{examples.run}-a100"
    assert {r["pool"] for r in found} == {a100}
    assert sorted(r["device"] for r in found) == [f"gpu-{i}" for i in range(8)]
    assert all(r.get("adminAccess") is True for r in found)
    # The selectors example holds one of these A100s too: in use by a workload did not keep
    # it from the admin claim, nor the admin claim from the workload, whichever came first.
    (held,) = results(examples.claim("selectors", "a100-40gi"))
    assert held["pool"] == a100
    assert "adminAccess" not in held
    pod = examples.pod("admin-access", "gpu-monitor")
    assert pod["spec"]["nodeName"] == a100


def test_most_capable_is_placed_by_the_controller_on_an_h100(examples: Examples) -> None:
    pod = examples.pod("placement", "most-capable")
    assert not pod["spec"].get("schedulingGates")
    (result,) = results(examples.claim("placement", "capable-gpu"))
    assert attribute(examples.device(result), "cudaComputeCapability") == "9.0.0"
    assert pod["spec"]["nodeName"] == result["pool"] == f"ex-{examples.run}-h100"
    events = examples.events("placement", "most-capable")
    assert any(e.reason == "Placed" and result["pool"] in e.message for e in events)


def test_binpack_fills_a_used_node_and_leaves_the_spare_whole(examples: Examples) -> None:
    pod = examples.pod("placement", "binpack")
    (result,) = results(examples.claim("placement", "packed-gpu"))
    assert pod["spec"]["nodeName"] == result["pool"]
    # First fit would take the spare, first by name; binpack keeps it whole.
    assert result["pool"] != examples.spare
    assert result["pool"] in examples.used_before_placement


def test_explain_leaves_the_claim_pending_with_an_event_and_the_reason(
    examples: Examples,
) -> None:
    namespace = examples.namespaces["explain"]

    def warning() -> Any:
        return next(
            (e for e in examples.events("explain", "nine-gpus") if e.reason == "Unplaceable"),
            None,
        )

    event = wait_for(
        "an Unplaceable event for pod nine-gpus",
        warning,
        cluster=examples.cluster,
        context=lambda: pod_report(examples.api, namespace, "nine-gpus"),
    )
    assert event.type == "Warning"
    # The spare node has eight free A100s, the most of any node: one short.
    assert "needs 9, 8 eligible" in event.message, event.message
    pod = examples.pod("explain", "nine-gpus")
    assert pod["spec"]["schedulingGates"] == [{"name": GATE}]
    assert not examples.claim("explain", "nine-gpus").get("status", {}).get("allocation")
    answer = subprocess.run(
        [DRA_DRIVER, "explain", "claim", f"{namespace}/nine-gpus", "-o", "json"],
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECONFIG": str(examples.cluster.kubeconfig)},
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert answer.returncode == 0, answer.stderr
    report = json.loads(answer.stdout)
    rows = {n["node"]: n for n in report["nodes"]}
    for node in examples.nodes:
        (request,) = rows[node]["claims"][0]["requests"]
        assert request["eligible"] < 9, rows[node]
