"""The Pod as the API server judges the parts the offline tools read: resource names and
quantities (whole numbers, requests equal to limits for extended resources), container
names, the pod's ResourceClaims."""

from __future__ import annotations

from typing import Any

import pytest
from extended_resource_fixtures import GPU, container, pod

from api.resource_v1 import parse_object
from api.validation import (
    is_dra_extended_resource_name,
    is_extended_resource_name,
    validate,
)


def problems(data: dict[str, Any]) -> list[str]:
    return [str(e) for e in validate(parse_object(data))]


@pytest.mark.parametrize(
    ("name", "extended", "dra"),
    [
        ("nvidia.com/gpu", True, True),
        ("deviceclass.resource.kubernetes.io/gpu", False, True),
        ("example.kubernetes.io/thing", False, False),
        ("cpu", False, False),
        ("hugepages-2Mi", False, False),
        ("requests.example.com/x", False, False),
    ],
)
def test_which_names_are_extended_and_which_dra_may_serve(
    name: str, extended: bool, dra: bool
) -> None:
    assert is_extended_resource_name(name) is extended
    assert is_dra_extended_resource_name(name) is dra


def test_a_device_plugin_pod_is_valid() -> None:
    assert problems(pod("p", container("main", {GPU: 2, "cpu": "500m"}, {"cpu": "250m"}))) == []


def test_overcommittable_requests_may_be_below_their_limit_but_not_above() -> None:
    assert problems(pod("p", container("main", {"cpu": "1"}, {"cpu": "2"}))) == [
        "spec.containers[0].resources.requests.cpu: 2 must be less than or equal to the cpu "
        "limit of 1"
    ]


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        ({"gpu": 1}, 'limits.gpu: "gpu" is not a standard resource for containers'),
        ({"nvidia.com/": 1}, "invalid resource name"),
        ({"requests.nvidia.com/gpu": 1}, "does not follow the extended resource name standard"),
    ],
)
def test_resource_names_follow_the_api_server(resources: dict[str, Any], expected: str) -> None:
    (problem,) = problems(pod("p", container("main", resources)))
    assert expected in problem


def test_container_names_are_labels_unique_across_init_and_regular_containers() -> None:
    found = problems(pod("p", container("main"), container("Bad_Name"), init=[container("main")]))
    assert any("spec.containers[1].name" in p for p in found)
    assert any('container name "main" is used twice' in p for p in found)


def test_restart_policy_is_one_the_api_server_knows() -> None:
    (problem,) = problems(
        pod("p", container("main"), init=[container("i", restart_policy="Sometimes")])
    )
    assert problem.startswith("spec.initContainers[0].restartPolicy: unsupported value")


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"name": "gpu"}, "exactly one of `resourceClaimName`, `resourceClaimTemplateName`"),
        (
            {"name": "gpu", "resourceClaimName": "a", "resourceClaimTemplateName": "b"},
            "found resourceClaimName, resourceClaimTemplateName",
        ),
        ({"name": "Gpu", "resourceClaimName": "a"}, "spec.resourceClaims[0].name"),
    ],
)
def test_each_pod_claim_names_a_claim_or_a_template(entry: dict[str, Any], expected: str) -> None:
    (problem,) = problems(pod("p", container("main"), resourceClaims=[entry]))
    assert expected in problem


def test_a_pod_needs_a_container() -> None:
    assert problems(pod("p")) == ["spec.containers: required: at least one container"]
