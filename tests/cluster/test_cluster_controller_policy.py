"""The chart's admission policies hold the placement controller to its own writes.

The controller's ClusterRole lets it patch any pod and claim. The ValidatingAdmissionPolicies
of deploy/manifests/dra-driver.yaml (the chart's default rendering) are installed as they
are: they match the ServiceAccount dra-driver/dra-driver-controller, the identity
cluster_controller_fixtures runs the controller as (a token of that ServiceAccount, with the
RBAC of deploy/controller/). Then:

- a pod and a claim are written as that identity with the very patches and status updates
  controller/placement/writing.py makes (allowed) and with others (refused, each with the
  policy's message);
- ResourceSlices: those of its cluster-level pools (controller/pools.py's marks) are
  written, a node's or an admin's slice is refused;
- the real controller, in-process, places a gated pod under the policies: the scheduler
  binds it only if the gate removal and the allocation went through.
"""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_access import ClusterUnderTest, admission_policies, read_json, wait_for
from cluster_controller_fixtures import (  # noqa: F401  (fixtures are found by name)
    GATE,
    SA_NAME,
    SA_NAMESPACE,
    Fleet,
    _claim_of,
    _core,
    _pod,
    _resources,
    _template,
    _wait_bound,
    controller_kubeconfig,
    fleet,
    ns,
    start_controller,
)
from kubernetes import client

from agent_kit.kube import ApiError, KubernetesClient, load_api_client
from api import limits
from controller import pools
from controller.app import Controller
from controller.placement.marks import Marks

CONTROLLER = "dra-driver-controller"
DRIVER = "gpu.dra-driver.io"
MARKS = Marks.of(DRIVER)
OTHER_GATE = "example.com/other"
POLICIES = admission_policies(lambda name: name.startswith(CONTROLLER))


def test_the_policies_match_the_identity_the_controller_runs_as() -> None:
    assert MARKS.gate == GATE
    kinds = sorted(p["kind"] for p in POLICIES)
    assert kinds == ["ValidatingAdmissionPolicy"] * 3 + ["ValidatingAdmissionPolicyBinding"] * 3
    user = f"system:serviceaccount:{SA_NAMESPACE}:{SA_NAME}"
    for policy in POLICIES:
        if policy["kind"] == "ValidatingAdmissionPolicy":
            (condition,) = policy["spec"]["matchConditions"]
            assert f'"{user}"' in condition["expression"]


@pytest.fixture(scope="module")
def controller_policies(local_cluster: ClusterUnderTest) -> Iterator[None]:
    """The chart's controller policies and bindings, installed until the module ends."""
    admission: Any = client.AdmissionregistrationV1Api(local_cluster.api_client)
    created: list[Callable[[], Any]] = []
    try:
        for doc in POLICIES:
            name = doc["metadata"]["name"]
            if doc["kind"] == "ValidatingAdmissionPolicy":
                admission.create_validating_admission_policy(doc)
                created.append(lambda n=name: admission.delete_validating_admission_policy(n))
            else:
                admission.create_validating_admission_policy_binding(doc)
                created.append(
                    lambda n=name: admission.delete_validating_admission_policy_binding(n)
                )
        yield
    finally:
        for undo in reversed(created):
            with contextlib.suppress(client.ApiException):
                undo()


@pytest.fixture
def as_controller(
    controller_kubeconfig: Path,  # noqa: F811
    controller_policies: None,
) -> KubernetesClient:
    """The production client, as the controller's ServiceAccount."""
    return KubernetesClient(load_api_client(str(controller_kubeconfig)))


def _refusal(call: Callable[[], Any]) -> str | None:
    """The API server's refusal, or None when the call went through."""
    try:
        call()
    except ApiError as err:
        return str(err)
    return None


def _gated_pod(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "schedulingGates": [{"name": GATE}, {"name": OTHER_GATE}],
            "containers": [{"name": "main", "image": "busybox"}],
        },
    }


def _claim(name: str) -> dict[str, Any]:
    request = {"name": "gpu", "exactly": {"deviceClassName": DRIVER}}
    return {"metadata": {"name": name}, "spec": {"devices": {"requests": [request]}}}


def _allocation() -> dict[str, Any]:
    result = {"request": "gpu", "driver": DRIVER, "pool": "node-a", "device": "gpu-0"}
    return {"devices": {"results": [result]}}


def _wait_enforced(
    cluster: ClusterUnderTest, api: KubernetesClient, resource: str, name: str, namespace: str
) -> str:
    """The API server enforces a new policy within a second or so: until then, adding a
    label (a fresh one each try) goes through. Returns the refusal."""
    tries = itertools.count()

    def refused() -> str | None:
        patch = {"metadata": {"labels": {"try": str(next(tries))}}}
        return _refusal(lambda: api.patch(resource, name, patch, namespace=namespace))

    refusal: str = wait_for(
        f"the controller policy on {resource} to be enforced",
        refused,
        cluster=cluster,
        timeout_s=30,
    )
    return refusal


def test_the_controller_may_only_remove_its_own_gate_from_a_pod(
    local_cluster: ClusterUnderTest,
    as_controller: KubernetesClient,
    ns: str,  # noqa: F811
) -> None:
    api = as_controller
    _core(local_cluster.api_client).create_namespaced_pod(ns, _gated_pod("gated"))
    refusal = _wait_enforced(local_cluster, api, "pods", "gated", ns)
    assert "may not change a pod's labels" in refusal, refusal
    # A merge patch replaces a list whole: the containers as stored, another image.
    containers = api.get("pods", "gated", namespace=ns)["spec"]["containers"]
    containers[0]["image"] = "evil:latest"
    refused = {
        "an annotation": {"metadata": {"annotations": {"example.com/note": "x"}}},
        "another image": {"spec": {"containers": containers}},
        "another gate removed": {"spec": {"schedulingGates": [{"name": GATE}]}},
        "a toleration": {"spec": {"tolerations": [{"operator": "Exists"}]}},
    }
    messages = {
        what: _refusal(lambda p=patch: api.patch("pods", "gated", p, namespace=ns))
        for what, patch in refused.items()
    }
    assert all(messages.values()), {w: m for w, m in messages.items() if m is None}
    assert "may not change a pod's labels, annotations" in (messages["an annotation"] or "")
    assert "may not change a pod's images" in (messages["another image"] or "")
    assert f"only by removing {GATE}" in (messages["another gate removed"] or "")
    # Deleting or evicting it is no update of the pod (RBAC refuses first, the policy too).
    assert _refusal(lambda: api.delete("pods", "gated", namespace=ns)) is not None
    # The controller's own patch (controller/placement/writing.py, Writer.ungate): allowed.
    stored = api.get("pods", "gated", namespace=ns)
    api.patch(
        "pods",
        "gated",
        {
            "metadata": {"resourceVersion": stored["metadata"]["resourceVersion"]},
            "spec": {"schedulingGates": [{"name": OTHER_GATE}]},
        },
        namespace=ns,
    )
    after = read_json(_core(local_cluster.api_client).read_namespaced_pod, "gated", ns)
    assert after["spec"]["schedulingGates"] == [{"name": OTHER_GATE}]
    assert after["spec"]["containers"][0]["image"] == "busybox"


def test_the_controller_may_only_mark_a_claim_and_write_its_allocation(
    local_cluster: ClusterUnderTest,
    as_controller: KubernetesClient,
    ns: str,  # noqa: F811
) -> None:
    api = as_controller
    admin = local_cluster.api_client
    _core(admin).create_namespaced_pod(ns, _gated_pod("probe"))
    _resources(admin).create_namespaced_resource_claim(ns, _claim("gpu"))
    refusal = _wait_enforced(local_cluster, api, "resourceclaims", "gpu", ns)
    assert "may change a claim's metadata only by setting" in refusal, refusal

    def write_status(change: Callable[[dict[str, Any]], None]) -> str | None:
        claim = api.get("resourceclaims", "gpu", namespace=ns)
        change(claim.setdefault("status", {}))
        return _refusal(lambda: api.replace_status("resourceclaims", claim))

    def allocate(status: dict[str, Any]) -> None:
        status["allocation"] = _allocation()

    # Not marked placed-for yet: the controller may not allocate it.
    refusal = write_status(allocate)
    assert refusal is not None and f"only a claim it marked {MARKS.placed_for}" in refusal
    # Other metadata than the mark and the finalizer: refused.
    for patch in (
        {"metadata": {"labels": {"example.com/x": "y"}}},
        {"metadata": {"annotations": {"example.com/x": "y"}}},
        {"metadata": {"finalizers": ["example.com/keep"]}},
    ):
        refusal = _refusal(lambda p=patch: api.patch("resourceclaims", "gpu", p, namespace=ns))
        assert refusal is not None and "placement controller may" in refusal, (patch, refusal)
    # The controller's own write (Writer._write_claim): the finalizer and the mark, then
    # status.allocation with the reservation of the pod it placed the claim for.
    pod = _core(admin).read_namespaced_pod("probe", ns)
    claim = api.get("resourceclaims", "gpu", namespace=ns)
    api.patch(
        "resourceclaims",
        "gpu",
        {
            "metadata": {
                "resourceVersion": claim["metadata"]["resourceVersion"],
                "finalizers": [limits.DELETE_PROTECTION_FINALIZER],
                "annotations": {MARKS.placed_for: pod.metadata.uid},
            }
        },
        namespace=ns,
    )

    def reserve_for(name: str, uid: str) -> Callable[[dict[str, Any]], None]:
        def change(status: dict[str, Any]) -> None:
            status["reservedFor"] = [{"resource": "pods", "name": name, "uid": uid}]

        return change

    def allocate_and_reserve(status: dict[str, Any]) -> None:
        allocate(status)
        reserve_for("probe", pod.metadata.uid)(status)

    def allocate_for_another(status: dict[str, Any]) -> None:
        allocate(status)
        reserve_for("x", "other-uid")(status)

    def report_devices(status: dict[str, Any]) -> None:
        status["devices"] = [{"driver": DRIVER, "pool": "node-a", "device": "gpu-0"}]

    def release(status: dict[str, Any]) -> None:
        status.pop("allocation")
        status.pop("reservedFor")

    # Another pod's reservation is not the controller's to write.
    refusal = write_status(allocate_for_another)
    assert refusal is not None and "may write only status.allocation" in refusal, refusal
    assert write_status(allocate_and_reserve) is None
    # Status fields besides the allocation and that reservation are not the controller's
    # (status.devices: its role lacks resourceclaims/driver, and the policy refuses it too).
    assert write_status(report_devices) is not None
    # Taking its pod's reservation out (Releaser.unreserve), then releasing
    # (Releaser.release): the allocation cleared.
    assert write_status(lambda status: status.pop("reservedFor")) is None
    assert write_status(allocate_and_reserve) is None
    assert write_status(release) is None
    stored = api.get("resourceclaims", "gpu", namespace=ns)
    assert "allocation" not in stored.get("status", {})
    assert "reservedFor" not in stored.get("status", {})
    # Deleting a claim is not the controller's either.
    assert _refusal(lambda: api.delete("resourceclaims", "gpu", namespace=ns)) is not None
    # The finalizer goes, so that the namespace can.
    _resources(admin).patch_namespaced_resource_claim("gpu", ns, {"metadata": {"finalizers": None}})


def test_the_controller_places_a_gated_pod_under_the_policies(
    local_cluster: ClusterUnderTest,
    controller_policies: None,
    fleet: Fleet,  # noqa: F811
    ns: str,  # noqa: F811
    start_controller: Callable[..., Controller],  # noqa: F811
) -> None:
    node = fleet.add_node("a", 2)
    api = local_cluster.api_client
    _resources(api).create_namespaced_resource_claim_template(ns, _template(fleet, "one"))
    start_controller()
    _core(api).create_namespaced_pod(ns, _pod("placed", "one"))
    assert _wait_bound(local_cluster, ns, ["placed"]) == {"placed": node}
    claim = _claim_of(api, ns, "placed")
    pod = read_json(_core(api).read_namespaced_pod, "placed", ns)
    assert claim["metadata"]["annotations"][MARKS.placed_for] == pod["metadata"]["uid"]
    assert claim["status"]["allocation"]["devices"]["results"][0]["pool"] == node


def _slice(name: str, *, node: str | None = None, labelled: bool = True) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "driver": DRIVER,
        "pool": {"name": name, "generation": 1, "resourceSliceCount": 1},
        "devices": [],
    }
    if node is None:
        spec["allNodes"] = True
    else:
        spec["nodeName"] = node
    labels = {pools.MANAGED_BY_LABEL: pools.MANAGED_BY} if labelled else {}
    return {"metadata": {"name": name, "labels": labels}, "spec": spec}


def test_the_controller_writes_only_the_slices_of_its_cluster_pools(
    local_cluster: ClusterUnderTest,
    as_controller: KubernetesClient,
) -> None:
    api = as_controller
    admin = _resources(local_cluster.api_client)
    prefix = f"policy-{uuid.uuid4().hex[:6]}"
    # A node's slice (the kubelet plugin's): refused, once the policy is enforced.
    tries = itertools.count()

    def refused() -> str | None:
        name = f"{prefix}-node-{next(tries)}"
        refusal = _refusal(
            lambda: api.create("resourceslices", _slice(name, node=local_cluster.node_name))
        )
        if refusal is None:
            admin.delete_resource_slice(name)
        return refusal

    refusal: str = wait_for(
        "the controller policy on resourceslices to be enforced",
        refused,
        cluster=local_cluster,
        timeout_s=30,
    )
    assert "may write only the ResourceSlices of its cluster-level pools" in refusal, refusal
    # A nodeless slice without the controller's label (an admin's): neither created nor
    # deleted, nor taken over by an update.
    ours_only = "may write only the ResourceSlices of its cluster-level pools"
    refusal = _refusal(lambda: api.create("resourceslices", _slice(f"{prefix}-x", labelled=False)))
    assert refusal is not None and ours_only in refusal, refusal
    admin.create_resource_slice(_slice(f"{prefix}-admin", labelled=False))
    try:
        refusal = _refusal(lambda: api.delete("resourceslices", f"{prefix}-admin"))
        assert refusal is not None and ours_only in refusal, refusal
        # (The controller's role has no get on slices: read as the admin.)
        taken = read_json(admin.read_resource_slice, f"{prefix}-admin")
        taken["metadata"]["labels"] = {pools.MANAGED_BY_LABEL: pools.MANAGED_BY}
        refusal = _refusal(lambda: api.replace("resourceslices", taken))
        assert refusal is not None and ours_only in refusal, refusal
    finally:
        admin.delete_resource_slice(f"{prefix}-admin")
    # Its own pool's slice (controller/pools.py's marks): created, updated, deleted.
    created = api.create("resourceslices", _slice(f"{prefix}-pool"))
    created["spec"]["pool"]["generation"] = 2
    api.replace("resourceslices", created)
    # And not turned into a node's (by the API server or the policy: nodeName is immutable).
    moved = read_json(admin.read_resource_slice, f"{prefix}-pool")
    del moved["spec"]["allNodes"]
    moved["spec"]["nodeName"] = local_cluster.node_name
    assert _refusal(lambda: api.replace("resourceslices", moved))
    api.delete("resourceslices", f"{prefix}-pool")
