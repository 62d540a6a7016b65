"""Who holds a claim, cached (kubelet_plugin.usage.pods.KubernetesPodDirectory): read once,
read again for a pod or container it does not know once the cached copy is old enough,
forgotten with the claim."""

from __future__ import annotations

from typing import Any

from kubelet_plugin.usage import KubernetesPodDirectory
from tests.fakes.cluster import FakeCluster

NS = "team-a"


def claim(*pods: tuple[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": "c", "namespace": NS, "uid": "claim-uid"},
        "spec": {"devices": {"requests": []}},
        "status": {
            "reservedFor": [{"resource": "pods", "name": n, "uid": u} for n, u in pods]
            + [{"apiGroup": "scheduling.k8s.io", "resource": "podgroups", "name": "g", "uid": "g"}]
        },
    }


def pod(name: str, uid: str, **containers: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "uid": uid},
        "status": {
            "initContainerStatuses": [{"name": "init", "containerID": "containerd://" + "0" * 64}],
            "containerStatuses": [
                {"name": n, "containerID": f"containerd://{cid}"} for n, cid in containers.items()
            ],
        },
    }


def gets(api: FakeCluster) -> list[str]:
    return [call.resource for call in api.calls if call.verb == "get"]


def test_a_new_pod_is_read_again_only_once_the_copy_is_old_enough() -> None:
    api = FakeCluster()
    api.put("resourceclaims", claim(("a", "uid-a")))
    now = [0.0]
    pods = KubernetesPodDirectory(api, min_refresh_s=10, clock=lambda: now[0])
    assert pods.pods(NS, "c", wanted="uid-a") == {"uid-a": "a"}  # pod groups are left out
    api.put("resourceclaims", claim(("a", "uid-a"), ("b", "uid-b")))
    assert pods.pods(NS, "c", wanted="uid-b") == {"uid-a": "a"}  # too soon to ask again
    now[0] = 10.0
    assert pods.pods(NS, "c", wanted="uid-b") == {"uid-a": "a", "uid-b": "b"}
    assert pods.pods(NS, "c", wanted="uid-a") == {"uid-a": "a", "uid-b": "b"}
    assert gets(api) == ["resourceclaims", "resourceclaims"]


def test_container_names_come_from_the_pods_status_and_a_new_id_reads_it_again() -> None:
    api = FakeCluster()
    api.put("pods", pod("a", "uid-a", trainer="1" * 64))
    now = [0.0]
    pods = KubernetesPodDirectory(api, min_refresh_s=10, clock=lambda: now[0])
    assert pods.container(NS, "a", "uid-a", "1" * 64) == "trainer"
    assert pods.container(NS, "a", "uid-a", "0" * 64) == "init"
    # The container restarted with a new ID: named by its short ID until a read may show it.
    api.put("pods", pod("a", "uid-a", trainer="2" * 64))
    assert pods.container(NS, "a", "uid-a", "2" * 64) == "2" * 12
    now[0] = 10.0
    assert pods.container(NS, "a", "uid-a", "2" * 64) == "trainer"
    # A pod of the same name but another UID is not the one the process belongs to.
    api.put("pods", pod("a", "uid-other", trainer="3" * 64))
    assert pods.container(NS, "a", "uid-x", "3" * 64) == "3" * 12


def test_an_unreadable_claim_is_unknown_and_a_forgotten_one_is_read_again() -> None:
    api = FakeCluster()
    pods = KubernetesPodDirectory(api)
    assert pods.pods(NS, "c", wanted="uid-a") is None  # 404: unknown, not "no pods"
    api.put("resourceclaims", claim(("a", "uid-a")))
    assert pods.pods(NS, "c", wanted="uid-a") == {"uid-a": "a"}
    pods.retain([])
    api.fail("get", "resourceclaims", status=503)
    assert pods.pods(NS, "c", wanted="uid-a") is None
