"""Who a claim's containers run as, and when a claim may join an MPS GPU
(kubelet_plugin.mps.users): the pods' JSON as the API server returns it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from api.errors import PrepareError
from api.resource_v1 import ResourceClaim, parse_object
from kubelet_plugin.mps.users import (
    ContainerUser,
    claim_users,
    pod_users,
    read_served_user,
    refusal,
    served_uid,
    write_served_user,
)
from tests.fakes.pods import FakePods, pod_using

GPU = "GPU-0123"


def reserved_claim(name: str, *pods: str) -> ResourceClaim:
    claim = parse_object(
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
            "spec": {"devices": {"requests": []}},
            "status": {
                "reservedFor": [{"resource": "pods", "name": p, "uid": f"pod-{p}"} for p in pods]
            },
        }
    )
    assert isinstance(claim, ResourceClaim)
    return claim


def test_a_container_s_own_run_as_user_wins_over_the_pod_s() -> None:
    pod = pod_using("a", "c", run_as=1000, pod_run_as=0)
    assert pod_users(pod, "c") == [
        ContainerUser("default/a", "main-0", "spec.containers[0].securityContext.runAsUser", 1000)
    ]
    pod = pod_using("a", "c", pod_run_as=0)
    assert pod_users(pod, "c") == [
        ContainerUser("default/a", "main-0", "spec.securityContext.runAsUser", 0)
    ]


def test_a_container_without_run_as_user_is_unknown_and_names_its_own_field() -> None:
    (user,) = pod_users(pod_using("a", "c"), "c")
    assert user.uid is None
    assert user.field == "spec.containers[0].securityContext.runAsUser"


def test_only_containers_that_use_the_claim_count_init_containers_too() -> None:
    pod: dict[str, Any] = pod_using("a", "c", pod_run_as=5)
    pod["spec"]["containers"].append({"name": "sidecar", "securityContext": {"runAsUser": 9}})
    pod["spec"]["resourceClaims"].append({"name": "other", "resourceClaimName": "d"})
    pod["spec"]["initContainers"] = [
        {
            "name": "setup",
            "resources": {"claims": [{"name": "gpu"}]},
            "securityContext": {"runAsUser": 7},
        },
        {"name": "unrelated", "resources": {"claims": [{"name": "other"}]}},
    ]
    assert [(u.container, u.field, u.uid) for u in pod_users(pod, "c")] == [
        ("setup", "spec.initContainers[0].securityContext.runAsUser", 7),
        ("main-0", "spec.securityContext.runAsUser", 5),
    ]
    assert pod_users(pod, "elsewhere") == []


def test_a_claim_from_a_template_and_an_extended_resource_claim_are_found() -> None:
    pod: dict[str, Any] = pod_using("a", "ignored", run_as=3)
    pod["spec"]["resourceClaims"] = [{"name": "gpu", "resourceClaimTemplateName": "t"}]
    pod["status"] = {"resourceClaimStatuses": [{"name": "gpu", "resourceClaimName": "a-gpu-x"}]}
    assert [u.container for u in pod_users(pod, "a-gpu-x")] == ["main-0"]

    pod = pod_using("b", "none", pod_run_as=4)
    pod["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
    pod["status"] = {
        "extendedResourceClaimStatus": {
            "resourceClaimName": "b-extended-resources-x",
            "requestMappings": [
                {"containerName": "main-0", "resourceName": "nvidia.com/gpu", "requestName": "r"}
            ],
        }
    }
    assert [(u.container, u.uid) for u in pod_users(pod, "b-extended-resources-x")] == [
        ("main-0", 4)
    ]


def test_claim_users_reads_each_reserved_pod_once_and_skips_a_replaced_one() -> None:
    replaced = pod_using("b", "c", run_as=2)
    replaced["metadata"]["uid"] = "another-pod"
    pods = FakePods(pod_using("a", "c", run_as=1), replaced)
    users = claim_users(reserved_claim("c", "a", "b", "gone"), pods, "claim default/c")
    assert [(u.pod, u.uid) for u in users] == [("default/a", 1)]
    assert pods.reads == 3


def test_a_pod_that_cannot_be_read_is_a_retryable_prepare_error() -> None:
    pods = FakePods(pod_using("a", "c", run_as=1))
    pods.fail = True
    with pytest.raises(PrepareError) as caught:
        claim_users(reserved_claim("c", "a"), pods, "claim default/c")
    assert caught.value.retryable
    assert "reading pod default/a (status.reservedFor)" in str(caught.value)
    assert "get on pods" in str(caught.value)


def user(uid: int | None, container: str = "main-0", pod: str = "default/a") -> ContainerUser:
    return ContainerUser(pod, container, "spec.containers[0].securityContext.runAsUser", uid)


def test_a_claim_alone_on_a_gpu_is_let_through_whoever_it_runs_as() -> None:
    assert refusal([user(1000)], GPU, others=0, served=None) is None
    assert refusal([user(None)], GPU, others=0, served=None) is None
    assert refusal([user(7), user(7, "second")], GPU, others=0, served=None) is None
    assert served_uid([user(7), user(7, "second")]) == 7
    assert served_uid([user(None)]) is None
    assert served_uid([]) is None


def test_the_uid_the_gpu_serves_is_the_only_one_let_in() -> None:
    assert refusal([user(1000)], GPU, others=2, served=1000) is None
    problem = refusal([user(2000)], GPU, others=2, served=1000)
    assert problem == (
        "container 'main-0' of pod default/a runs as UID 2000 "
        "(spec.containers[0].securityContext.runAsUser), but MPS GPU GPU-0123 serves UID 1000 "
        "for 2 other claim(s): MPS runs one server per user ID at a time, and a second UID's "
        "clients wait until every client of the first is gone; set "
        "spec.containers[0].securityContext.runAsUser to 1000, or ask for another GPU"
    )


def test_an_unknown_user_never_shares() -> None:
    # Joining a GPU that serves a known UID: told to state it.
    problem = refusal([user(None)], GPU, others=1, served=1000)
    assert problem is not None
    assert "states no runAsUser" in problem
    assert "set spec.containers[0].securityContext.runAsUser" in problem and "to 1000" in problem
    # Joining a GPU that serves an unknown one, even unknown itself.
    problem = refusal([user(1000)], GPU, others=1, served=None)
    assert problem is not None and "serves 1 other claim(s) whose user ID is unknown" in problem
    problem = refusal([user(None)], GPU, others=1, served=None)
    assert problem is not None and "states no runAsUser" in problem
    assert "to the UID they all run as" in problem
    # Two containers of one claim, one of them unknown.
    problem = refusal([user(5), user(None, "second")], GPU, others=0, served=None)
    assert problem is not None and "'second'" in problem and "2 containers use" in problem
    # No container uses the claim (its pods are gone): no client joins, nothing to refuse.
    assert refusal([], GPU, others=1, served=5) is None


def test_two_uids_within_one_claim_are_refused_naming_both() -> None:
    problem = refusal([user(1), user(2, "second", "default/b")], GPU, others=0, served=None)
    assert problem is not None
    assert "container 'second' of pod default/b runs as UID 2" in problem
    assert "container 'main-0' of pod default/a runs as UID 1" in problem


def test_the_served_uid_is_recorded_and_anything_else_reads_as_unknown(tmp_path: Path) -> None:
    directory = tmp_path / "GPU-0123"
    assert read_served_user(directory) is None  # no record
    write_served_user(directory, 1000)
    assert read_served_user(directory) == 1000
    write_served_user(directory, None)
    assert read_served_user(directory) is None
    for text in ("{", '{"version": 2, "runAsUser": 5}', '{"version": 1, "runAsUser": "5"}', "[]"):
        (directory / "user.json").write_text(text)
        assert read_served_user(directory) is None, text
    assert sorted(p.name for p in directory.iterdir()) == ["user.json"]  # no temporary left


def test_a_pod_in_a_user_namespace_of_its_own_runs_as_an_unknown_uid() -> None:
    pod: dict[str, Any] = pod_using("a", "c", run_as=1000)
    pod["spec"]["hostUsers"] = False
    (found,) = pod_users(pod, "c")
    assert (found.uid, found.field) == (None, "spec.hostUsers")
    problem = refusal([found], GPU, 1, 1000)
    assert problem is not None
    assert "runs in a user namespace of its own (spec.hostUsers: false)" in problem
    assert "leave spec.hostUsers out (or true) and run it as 1000" in problem
    assert refusal([found], GPU, 0, None) is None  # alone on the GPU
