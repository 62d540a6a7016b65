"""A Pod asking for ``nvidia.com/gpu`` the device-plugin way brings the claim the
kube-scheduler 1.37.2 would make for it (``extendeddynamicresources.go``): its name,
annotation, owner, requests per container and resource, and the class found by name."""

from __future__ import annotations

from typing import Any

from extended_resource_fixtures import GPU, container, gpu_class, gpu_node, inventory, pod

from api import limits
from api.resource_v1 import ResourceClaim, dump
from dra_driver.extended_resources import extended_resource_claims


def requests_of(claim: ResourceClaim) -> list[tuple[str, str, int]]:
    """(request name, class, count) of each request, in claim order."""
    out = []
    for request in claim.spec.devices.requests or [] if claim.spec.devices else []:
        assert request.exactly is not None
        assert request.exactly.allocation_mode == limits.ALLOCATION_MODE_EXACT_COUNT
        out.append((request.name, request.exactly.device_class_name, request.exactly.count or 0))
    return out


def made_claim(*objects: Any) -> ResourceClaim:
    """The one claim made for the input's pod."""
    (claim,) = inventory(gpu_class(), *objects).pending_claims
    return claim


def test_a_single_container_gets_one_claim_named_annotated_and_owned_as_the_scheduler_does() -> (
    None
):
    the_pod = pod("train", container("main", {GPU: 2}))
    the_pod["metadata"]["uid"] = "uid-1"
    claim = made_claim(the_pod)
    meta = dump(claim)["metadata"]
    assert meta["generateName"] == "train-extended-resources-"
    assert meta["name"].startswith("train-extended-resources-")
    assert len(meta["name"]) == len("train-extended-resources-") + 5
    assert meta["namespace"] == "default"
    assert meta["annotations"] == {"resource.kubernetes.io/extended-resource-claim": "true"}
    assert meta["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": "train", "uid": "uid-1", "controller": True}
    ]
    assert requests_of(claim) == [("container-0-request-0", "gpu", 2)]
    # Runs agree: the suffix comes from the pod, not from chance.
    assert made_claim(the_pod).metadata.name == claim.metadata.name


def test_a_long_pod_name_is_cut_as_the_name_generator_cuts_it() -> None:
    name = "p" * 60
    claim = made_claim(pod(name, container("main", {GPU: 1})))
    assert claim.metadata.name is not None
    assert len(claim.metadata.name) == 63
    assert claim.metadata.name.startswith("p" * 58)


def test_each_container_gets_its_own_request_named_by_index_and_sorted_resource() -> None:
    claim = made_claim(
        pod(
            "p",
            container("a", {GPU: 1}),
            container("b", {"cpu": "1"}),
            # Requests default to limits: the sorted names are cpu, memory, nvidia.com/gpu.
            container("c", {GPU: 2, "cpu": "2"}, {"memory": "1Gi"}),
        )
    )
    assert requests_of(claim) == [
        ("container-0-request-0", "gpu", 1),
        ("container-2-request-2", "gpu", 2),
    ]


def test_init_containers_reuse_the_regular_containers_devices_and_ask_for_the_largest_rest() -> (
    None
):
    # The pod needs max(2, 3) = 3 GPUs: the first init container needs 3, 2 of them the
    # regular container's; the second init container fits in the regular container's 2.
    found = inventory(
        gpu_class(),
        pod(
            "p",
            container("main", {GPU: 2}),
            init=[container("warm-up", {GPU: 3}), container("check", {GPU: 1})],
        ),
    )
    (claim,) = found.pending_claims
    assert requests_of(claim) == [
        ("container-0-request-0", "gpu", 1),
        ("container-2-request-0", "gpu", 2),
    ]


def test_the_mappings_of_init_containers_name_the_largest_request() -> None:
    the_pod = inventory(
        gpu_class(),
        pod(
            "p",
            container("main", {GPU: 1}),
            init=[container("small", {GPU: 2}), container("big", {GPU: 4})],
        ),
    )
    made = extended_resource_claims(the_pod.pods, list(the_pod.classes.values()), [], [])
    ((label, mappings),) = made.mappings.items()
    assert label.startswith("claim default/p-extended-resources-")
    assert [(m.container_name, m.request_name) for m in mappings] == [
        ("main", "container-2-request-0"),
        ("small", "container-2-request-0"),
        ("small", "container-1-request-0"),
        ("big", "container-2-request-0"),
        ("big", "container-1-request-0"),
    ]
    (claim,) = made.claims
    assert requests_of(claim) == [
        ("container-1-request-0", "gpu", 3),
        ("container-2-request-0", "gpu", 1),
    ]


def test_a_sidecar_keeps_its_devices_and_later_init_containers_ask_for_more() -> None:
    # Sidecar 1 + main 1 run together; the init container runs next to the sidecar and
    # needs 2 of its own: 3 in all, PodRequests' max(1 + 1, 2 + 1).
    claim = made_claim(
        pod(
            "p",
            container("main", {GPU: 1}),
            init=[
                container("proxy", {GPU: 1}, restart_policy="Always"),
                container("setup", {GPU: 2}),
            ],
        )
    )
    assert requests_of(claim) == [
        ("container-0-request-0", "gpu", 1),
        ("container-1-request-0", "gpu", 1),
        ("container-2-request-0", "gpu", 1),
    ]


def test_the_implicit_name_of_a_class_needs_no_extended_resource_name() -> None:
    found = inventory(
        gpu_class("plain", resource=None),
        pod("p", container("main", {"deviceclass.resource.kubernetes.io/plain": 1})),
    )
    (claim,) = found.pending_claims
    assert requests_of(claim) == [("container-0-request-0", "plain", 1)]


def test_of_several_classes_mapping_one_name_the_newest_wins_with_a_warning() -> None:
    found = inventory(
        gpu_class("b-new", created="2026-06-01T00:00:00Z"),
        gpu_class("a-old", created="2025-01-01T00:00:00Z"),
        pod("p", container("main", {GPU: 1})),
    )
    (claim,) = found.pending_claims
    assert requests_of(claim) == [("container-0-request-0", "b-new", 1)]
    (warning,) = found.warnings
    assert "classes a-old, b-new all map nvidia.com/gpu" in warning
    assert "pod default/p" in warning


def test_of_several_classes_created_at_once_the_lower_name_wins() -> None:
    found = inventory(gpu_class("zeta"), gpu_class("alpha"), pod("p", container("main", {GPU: 1})))
    (claim,) = found.pending_claims
    assert requests_of(claim) == [("container-0-request-0", "alpha", 1)]


def test_a_class_without_a_creation_timestamp_counts_as_the_oldest() -> None:
    found = inventory(
        gpu_class("a-undated"),
        gpu_class("b-dated", created="2020-01-01T00:00:00Z"),
        pod("p", container("main", {GPU: 1})),
    )
    (claim,) = found.pending_claims
    assert requests_of(claim) == [("container-0-request-0", "b-dated", 1)]


def test_a_name_no_class_maps_is_left_to_a_device_plugin_with_a_warning() -> None:
    found = inventory(
        gpu_class(),
        pod("p", container("main", {"example.com/fpga": 1, "cpu": "1", "hugepages-2Mi": "2Mi"})),
    )
    assert found.pending_claims == []
    (warning,) = found.warnings
    assert "pod default/p" in warning
    assert "no DeviceClass maps example.com/fpga" in warning
    assert "device plugin" in warning


def test_a_pod_asking_nothing_extended_adds_nothing_and_says_nothing() -> None:
    found = inventory(gpu_class(), pod("p", container("main", {"cpu": "1", "memory": "1Gi"})))
    assert found.pending_claims == []
    assert found.warnings == []
    assert [p.metadata.name for p in found.pods] == ["p"]


def test_a_zero_request_needs_no_claim() -> None:
    assert inventory(gpu_class(), pod("p", container("main", {GPU: 0}))).pending_claims == []


def test_nodes_where_a_device_plugin_advertises_the_name_are_excluded() -> None:
    found = inventory(
        gpu_class(),
        gpu_node("node-a", 4, allocatable={GPU: "4", "cpu": "8"}),
        gpu_node("node-b", 4, allocatable={GPU: "0"}),
        gpu_node("node-c", 4),
        pod("p", container("main", {GPU: 1})),
    )
    assert list(found.excluded_nodes) == ["node-a"]
    assert "device plugin serves nvidia.com/gpu" in found.excluded_nodes["node-a"]


def test_an_existing_claim_of_the_pod_is_used_not_a_new_one() -> None:
    the_pod = pod("p", container("main", {GPU: 1}))
    made = made_claim(the_pod)
    existing = dump(made)
    existing["metadata"]["name"] = "p-extended-resources-abcde"
    found = inventory(gpu_class(), the_pod, existing)
    assert [c.metadata.name for c in found.pending_claims] == ["p-extended-resources-abcde"]


def test_a_pod_bound_by_node_name_bypasses_the_scheduler_so_no_claim_is_made() -> None:
    found = inventory(gpu_class(), pod("p", container("main", {GPU: 1}), nodeName="node-a"))
    assert found.pending_claims == []
    (warning,) = found.warnings
    assert "spec.nodeName is set" in warning


def test_a_claim_the_pod_names_that_is_missing_from_the_input_is_a_warning() -> None:
    found = inventory(
        gpu_class(),
        pod(
            "p",
            container("main", {GPU: 1}),
            resourceClaims=[{"name": "extra", "resourceClaimName": "absent"}],
        ),
    )
    assert len(found.pending_claims) == 1
    (warning,) = found.warnings
    assert "claim absent" in warning
    assert "not in the input" in warning


def test_the_fields_of_a_real_pod_are_tolerated() -> None:
    real = pod(
        "p",
        container("main", {GPU: 1}) | {"env": [{"name": "A", "value": "1"}], "ports": []},
        volumes=[{"name": "v", "emptyDir": {}}],
        tolerations=[{"operator": "Exists"}],
        restartPolicy="Never",
    )
    real["status"] = {"phase": "Pending", "conditions": []}
    assert len(inventory(gpu_class(), real).pending_claims) == 1
