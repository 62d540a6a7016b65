"""``kubectl dra`` through a real kubectl: the plugin found on PATH, its table against the
claims the scheduler allocated, its help, and kubectl's shell completion of it.

kubectl is the one e2e/cluster/build.sh builds from the pinned k8s.io/kubernetes module. It
runs with a PATH of this environment's console scripts (``kubectl-dra``,
``kubectl_complete-dra``) and the cluster's binaries only, so what runs is what the package
installs, found the way kubectl finds plugins.

The GPUs are those of two fake nodes (Node objects without a kubelet, their pools published
by ``SlicePublisher`` from the mock backend, as in test_cluster_examples.py): H100s published
partitionable, so that one pod holds a whole GPU and another a MIG slice, and L4s published
for sharing by consumable capacity, held by two pods at once. The kube-scheduler allocates
every claim; pods bind there and never run, which is all the table needs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster_access import ClusterUnderTest, core_api, pod_report, read_json, resource_api, wait_for

from agent_kit.kube import KubernetesClient
from dra_cli.main import _COMMANDS
from dra_driver.discovery.mock import MockBackend
from e2e.cluster import BUSYBOX_IMAGE, build_binaries
from kubelet_plugin.publisher import SlicePublisher
from kubelet_plugin.slice_client import SliceClient

DRIVER = "gpu.dra-driver.io"
#: This environment's console scripts: kubectl-dra and kubectl_complete-dra.
SCRIPTS = Path(sys.executable).parent


@pytest.fixture(scope="module")
def kubectl() -> Path:
    """The kubectl build.sh builds (or reuses from its cache); against an external cluster
    (``DRA_DRIVER_E2E_KUBECONFIG``) the one on PATH if there is one, rather than a build of
    Kubernetes for it."""
    on_path = shutil.which("kubectl")
    if os.environ.get("DRA_DRIVER_E2E_KUBECONFIG") and on_path:
        return Path(on_path)
    found = build_binaries() / "kubectl"
    assert os.access(found, os.X_OK), found
    return found


def run_kubectl(
    kubectl: Path, *args: str, kubeconfig: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``kubectl ARGS`` with only the package's scripts and kubectl's directory on PATH."""
    env = {
        "PATH": os.pathsep.join([str(SCRIPTS), str(kubectl.parent), "/usr/bin", "/bin"]),
        "HOME": os.environ.get("HOME", "/root"),
    }
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return subprocess.run(
        [str(kubectl), *args], env=env, capture_output=True, text=True, check=False, timeout=120
    )


# --- the plugin without a cluster --------------------------------------------------------------


def test_kubectl_finds_the_installed_plugin(kubectl: Path) -> None:
    listed = run_kubectl(kubectl, "plugin", "list")
    assert listed.returncode == 0, listed.stderr
    assert str(SCRIPTS / "kubectl-dra") in listed.stdout.splitlines()


def test_kubectl_dra_help_lists_every_verb(kubectl: Path) -> None:
    shown = run_kubectl(kubectl, "dra", "--help")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("usage: kubectl dra ")
    listed = {line.split()[0] for line in shown.stdout.splitlines() if line.startswith("    ")}
    assert set(_COMMANDS) <= listed


def complete(kubectl: Path, *words: str, kubeconfig: Path | None = None) -> tuple[list[str], str]:
    """What kubectl's completion (``kubectl __complete``, run by the shell's script) offers
    for ``kubectl dra WORDS``: the candidates' values and the directive line."""
    done = run_kubectl(kubectl, "__complete", "dra", *words, kubeconfig=kubeconfig)
    assert done.returncode == 0, done.stderr
    *candidates, directive = done.stdout.splitlines()
    return [c.split("\t")[0] for c in candidates], directive


def test_kubectl_completes_the_verbs_through_kubectl_complete_dra(kubectl: Path) -> None:
    assert complete(kubectl, "") == (list(_COMMANDS), ":4")
    assert complete(kubectl, "g") == (["gpus"], ":4")


def test_kubectl_completes_flags_and_their_values(kubectl: Path, tmp_path: Path) -> None:
    flags, directive = complete(kubectl, "gpus", "--a")
    assert (flags, directive) == (["--all-contexts"], ":4")
    assert complete(kubectl, "gpus", "-o", "") == (["table", "wide", "json", "yaml"], ":4")
    assert complete(kubectl, "gpus", "--output=j") == (["--output=json"], ":4")
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump({"contexts": [{"name": "prod-a"}, {"name": "prod-b"}, {"name": "lab"}]})
    )
    assert complete(kubectl, "gpus", "--context", "prod", kubeconfig=kubeconfig) == (
        ["prod-a", "prod-b"],
        ":4",
    )
    # A file name: the directive lets the shell complete it.
    assert complete(kubectl, "explain", "-f", "") == ([], ":0")


# --- the table against the claims --------------------------------------------------------------


@dataclass
class Holdings:
    """The fake nodes, the namespace, and each claim's pods (set up by :func:`holdings`)."""

    cluster: ClusterUnderTest
    run: str
    namespace: str = ""
    nodes: dict[str, str] = field(default_factory=dict)
    publishers: list[SlicePublisher] = field(default_factory=list)
    pods: dict[str, str] = field(default_factory=dict)
    """claim name -> pod name"""

    def claim(self, name: str) -> dict[str, Any]:
        return read_json(
            resource_api(self.cluster.api_client).read_namespaced_resource_claim,
            name,
            self.namespace,
        )


def _add_node(found: Holdings, suffix: str, profile: str, *, shared: bool) -> None:
    core = core_api(found.cluster.api_client)
    name = f"kp-{found.run}-{suffix}"
    core.create_node({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}})
    found.nodes[suffix] = name
    resources = {"cpu": "64", "memory": "256Gi", "pods": "110"}
    core.patch_node_status(name, {"status": {"capacity": resources, "allocatable": resources}})
    publisher = SlicePublisher(
        SliceClient(KubernetesClient(found.cluster.api_client)),
        node_name=name,
        node_uid=core.read_node(name).metadata.uid,
        shared_gpus=shared,
    )
    publisher.publish(MockBackend(name, profile).discover())
    found.publishers.append(publisher)


def _claim(name: str, device_class: str, **exactly: Any) -> dict[str, Any]:
    request = {"name": "gpu", "exactly": {"deviceClassName": device_class, **exactly}}
    return {"metadata": {"name": name}, "spec": {"devices": {"requests": [request]}}}


def _pod(name: str, claim: str, node: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            # The node lifecycle controller taints nodes without a kubelet.
            "tolerations": [{"operator": "Exists"}],
            "terminationGracePeriodSeconds": 1,
            "resourceClaims": [{"name": "gpu", "resourceClaimName": claim}],
            "containers": [
                {
                    "name": "main",
                    "image": BUSYBOX_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "3600"],
                    "resources": {"claims": [{"name": "gpu"}]},
                }
            ],
        },
    }


def _placed(found: Holdings, name: str) -> bool:
    """The claim is allocated and its pod bound to a node."""
    claim = found.claim(name)
    pod = read_json(
        core_api(found.cluster.api_client).read_namespaced_pod, found.pods[name], found.namespace
    )
    return bool(claim.get("status", {}).get("allocation")) and bool(pod["spec"].get("nodeName"))


def _teardown(found: Holdings) -> None:
    core = core_api(found.cluster.api_client)
    if found.namespace:
        # No kubelet confirms the deletion of a pod on a fake node: force it.
        core.delete_collection_namespaced_pod(found.namespace, grace_period_seconds=0)
        core.delete_namespace(found.namespace)
    slices = SliceClient(KubernetesClient(found.cluster.api_client))
    for publisher in found.publishers:
        listing = slices.list_slices(node_name=publisher.node_name, driver_name=DRIVER)
        for slice_ in listing.items:
            slices.delete_slice(slice_.metadata.name or "")
    for node in found.nodes.values():
        core.delete_node(node)


@pytest.fixture(scope="module")
def holdings(local_cluster: ClusterUnderTest, device_classes: list[str]) -> Iterator[Holdings]:
    """A whole H100, a MIG slice of another H100 and two shares of one L4, each held by a
    pod the kube-scheduler placed."""
    if local_cluster.local is None:
        pytest.skip("adds fake GPU nodes next to the cluster's own; not done to an external one")
    assert {DRIVER, f"mig.{DRIVER}"} <= set(device_classes)
    found = Holdings(local_cluster, uuid.uuid4().hex[:6])
    core = core_api(local_cluster.api_client)
    resources = resource_api(local_cluster.api_client)
    try:
        _add_node(found, "h100", "2xH100-80GB", shared=False)
        _add_node(found, "l4", "2xL4", shared=True)
        found.namespace = f"kp-{found.run}"
        core.create_namespace({"metadata": {"name": found.namespace}})
        half = {"capacity": {"requests": {"compute": "50", "memory": "10Gi"}}}
        mig = 'device.attributes["gpu.dra-driver.io"].profile == "1g.10gb"'
        wanted = {
            "whole": (_claim("whole", DRIVER), "h100"),
            "slice": (
                _claim("slice", f"mig.{DRIVER}", selectors=[{"cel": {"expression": mig}}]),
                "h100",
            ),
            "share-a": (_claim("share-a", DRIVER, **half), "l4"),
            "share-b": (_claim("share-b", DRIVER, **half), "l4"),
        }
        # One pod at a time: the whole GPU first, so that the slice goes to the other H100.
        for name, (claim, node) in wanted.items():
            resources.create_namespaced_resource_claim(found.namespace, claim)
            core.create_namespaced_pod(
                found.namespace, _pod(f"{name}-pod", name, found.nodes[node])
            )
            found.pods[name] = f"{name}-pod"
            wait_for(
                f"claim {name} allocated and its pod bound",
                partial(_placed, found, name),
                cluster=local_cluster,
                context=partial(
                    pod_report, local_cluster.api_client, found.namespace, found.pods[name]
                ),
            )
        yield found
    finally:
        _teardown(found)


def _gpus(kubectl: Path, found: Holdings, *args: str) -> subprocess.CompletedProcess[str]:
    nodes = [arg for node in found.nodes.values() for arg in ("--node", node)]
    return run_kubectl(
        kubectl, "dra", "gpus", "--kubeconfig", str(found.cluster.kubeconfig), *nodes, *args
    )


def test_kubectl_dra_gpus_shows_each_claims_allocation(kubectl: Path, holdings: Holdings) -> None:
    shown = _gpus(kubectl, holdings, "-o", "json")
    assert shown.returncode == 0, shown.stderr
    rows = json.loads(shown.stdout)["gpus"]
    assert {row["node"] for row in rows} == set(holdings.nodes.values())
    assert len(rows) == 4, "two H100s and two L4s, MIG devices folded into their GPU's row"
    held: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for row in rows:
        for holder in row["holders"]:
            held.setdefault(holder["claim"], []).append((row, holder))
    assert set(held) == {f"{holdings.namespace}/{name}" for name in holdings.pods}
    for name, pod in holdings.pods.items():
        ((row, holder),) = held[f"{holdings.namespace}/{name}"]
        (result,) = holdings.claim(name)["status"]["allocation"]["devices"]["results"]
        assert holder["pods"] == [pod]
        assert row["pool"] == result["pool"]
        assert row["free"] is False
        if name == "whole":
            assert (row["device"], holder["what"], row["sharing"]) == (
                result["device"],
                "gpu",
                "exclusive",
            )
        elif name == "slice":
            # The MIG device is shown on its parent GPU's row.
            assert holder["what"] == f"mig 1g.10gb ({result['device']})"
            assert row["sharing"] == "mig 1g.10gb x1"
            assert row["device"] != result["device"]
            assert result["device"].startswith(row["device"] + "-")
        else:
            assert (row["device"], holder["what"]) == (
                result["device"],
                f"share {result['shareID']}",
            )
    shared = {
        row["device"]
        for row, _ in held[f"{holdings.namespace}/share-a"] + held[f"{holdings.namespace}/share-b"]
    }
    for row in rows:
        if row["device"] in shared and row["node"] == holdings.nodes["l4"]:
            assert row["sharing"] == f"{len(row['holders'])} share(s)"
    h100s = [row for row in rows if row["node"] == holdings.nodes["h100"]]
    assert sorted(len(row["holders"]) for row in h100s) == [1, 1], "whole and slice apart"


def test_kubectl_dra_gpus_table_has_a_line_per_holder(kubectl: Path, holdings: Holdings) -> None:
    shown = _gpus(kubectl, holdings)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    header = lines[0]
    columns = header.split()
    assert columns == [
        "NODE",
        "DEVICE",
        "PRODUCT",
        "MEMORY",
        "SHARING",
        "HEALTH",
        "CLAIM",
        "PODS",
        "AGE",
    ]
    starts = [header.index(name) for name in columns]
    body = lines[1 : lines.index("")]

    # Columns are aligned: each cell starts where its header does (cells may hold spaces).
    table: list[dict[str, str]] = []
    for line in body:
        bounds = [*starts[1:], len(line) + 1]
        cells = {c: line[a:b].strip() for c, a, b in zip(columns, starts, bounds, strict=True)}
        if not cells["DEVICE"]:  # a further holder of the GPU above
            cells = {**table[-1], **{c: cells[c] for c in ("CLAIM", "PODS", "AGE")}}
        table.append(cells)
    held = {row["CLAIM"]: row for row in table if row["CLAIM"] != "<free>"}
    assert set(held) == {f"{holdings.namespace}/{name}" for name in holdings.pods}
    devices: set[tuple[str, str]] = set()
    for name, pod in holdings.pods.items():
        row = held[f"{holdings.namespace}/{name}"]
        (result,) = holdings.claim(name)["status"]["allocation"]["devices"]["results"]
        assert (row["NODE"], row["PODS"], row["HEALTH"]) == (result["pool"], pod, "ok")
        if name == "slice":
            assert result["device"].startswith(row["DEVICE"] + "-")
            assert row["SHARING"] == "mig 1g.10gb x1"
        else:
            assert row["DEVICE"] == result["device"]
        devices.add((row["NODE"], row["DEVICE"]))
    free = [row for row in table if row["CLAIM"] == "<free>"]
    assert len(free) == 4 - len(devices)
    l4_free = sum(1 for row in free if row["NODE"] == holdings.nodes["l4"])
    h100, l4 = holdings.nodes["h100"], holdings.nodes["l4"]
    assert f"nodes: {h100} 0/2 free; {l4} {l4_free}/2 free" in lines


def test_kubectl_dra_gpus_reads_kubeconfig_from_the_environment(
    kubectl: Path, holdings: Holdings
) -> None:
    node = holdings.nodes["l4"]
    shown = run_kubectl(
        kubectl,
        "dra",
        "gpus",
        "--node",
        node,
        "--free",
        "-o",
        "json",
        kubeconfig=holdings.cluster.kubeconfig,
    )
    assert shown.returncode == 0, shown.stderr
    rows = json.loads(shown.stdout)["gpus"]
    held = {
        r["device"]
        for name in ("share-a", "share-b")
        for r in holdings.claim(name)["status"]["allocation"]["devices"]["results"]
    }
    assert {row["device"] for row in rows} == {"gpu-0", "gpu-1"} - held
    assert all(row["free"] and not row["holders"] for row in rows)


# --- the upstream pool status API --------------------------------------------------------------


def _upstream_pools(found: Holdings) -> dict[str, dict[str, Any]]:
    """The pools of our fake nodes as upstream's resourcepoolstatusrequest-controller
    reports them (the local cluster turns DRAResourcePoolStatus on)."""
    client = KubernetesClient(found.cluster.api_client)
    name = f"kp-{found.run}-{uuid.uuid4().hex[:6]}"
    client.create(
        "resourcepoolstatusrequests",
        {"metadata": {"name": name}, "spec": {"driver": DRIVER}},
    )
    try:
        status = wait_for(
            f"ResourcePoolStatusRequest {name} answered",
            lambda: client.get("resourcepoolstatusrequests", name).get("status"),
            cluster=found.cluster,
        )
    finally:
        client.delete("resourcepoolstatusrequests", name)
    return {
        p["poolName"]: p for p in status.get("pools") or [] if p["poolName"] in found.nodes.values()
    }


def test_kubectl_dra_gpus_agrees_with_the_upstream_pool_status(
    kubectl: Path, holdings: Holdings
) -> None:
    # Upstream's own figures for the fake nodes: what the comparison below is held to.
    upstream = _upstream_pools(holdings)
    h100, l4 = upstream[holdings.nodes["h100"]], upstream[holdings.nodes["l4"]]
    assert h100["allocatedDevices"] == 2, "the whole GPU and the MIG device"
    assert l4["allocatedDevices"] == 1, "one L4 held by both shares"
    assert l4["shareableSummary"]["partiallyAvailableDevices"] == 1
    assert h100["totalDevices"] > 2 and h100.get("validationError") is None

    last: list[str] = [""]

    def checked() -> dict[str, Any] | None:
        # Every pool of the driver, the cluster's own node's included; retried only while
        # the controller-manager's caches catch up with the pods just placed.
        shown = _gpus(kubectl, holdings, "--check-pool-status", "-o", "json")
        assert shown.returncode in (0, 1), shown.stderr
        (found,) = json.loads(shown.stdout)["poolStatus"]
        last[0] = json.dumps(found)
        return found if found["agrees"] else None

    found = wait_for(
        "kubectl dra gpus --check-pool-status agrees",
        checked,
        cluster=holdings.cluster,
        context=lambda: last[0],
    )
    assert found["served"] and found["problems"] == [] and found["error"] is None
    assert found["pools"] >= len(holdings.nodes)
    shown = _gpus(kubectl, holdings, "--check-pool-status")
    assert shown.returncode == 0, shown.stderr
    assert f"pool status: agrees with resource.k8s.io/v1alpha3 on {found['pools']} pools" in (
        shown.stdout.splitlines()
    )
    # Nothing left behind: the check deletes its request.
    left = KubernetesClient(holdings.cluster.api_client).list("resourcepoolstatusrequests")
    assert not [r for r in left.items if r["metadata"]["name"].startswith("dra-gpus-")]
