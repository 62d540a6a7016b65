"""The controller's GpuConfig webhook judges a review as ``dra-driver allocate`` judges the
object: the same messages, for the configs the request adds or changes."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from api.errors import InvalidInputError
from controller.admission import GpuConfigReviewer
from dra_driver.manifest_read import Document
from dra_driver.manifests import load_inventory

DRIVER = "gpu.dra-driver.io"
GOOD: dict[str, Any] = {
    "apiVersion": "gpu.dra-driver.io/v1alpha1",
    "kind": "GpuConfig",
    "sharing": {"strategy": "MPS", "mpsConfig": {"defaultActiveThreadPercentage": 50}},
}
BAD: dict[str, Any] = {
    "apiVersion": "gpu.dra-driver.io/v1alpha1",
    "kind": "GpuConfig",
    "sharing": {"strategy": "Timeslicing", "mpsConfig": {"defaultActiveThreadPercentage": 500}},
}
review = GpuConfigReviewer(DRIVER)


def claim(*params: dict[str, Any], driver: str = DRIVER) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": "train", "namespace": "team-a", "uid": "u-1"},
        "spec": {
            "devices": {
                "requests": [{"name": "gpu", "exactly": {"deviceClassName": DRIVER}}],
                "config": [{"opaque": {"driver": driver, "parameters": p}} for p in params],
            }
        },
    }


def request(obj: dict[str, Any], old: dict[str, Any] | None = None) -> dict[str, Any]:
    operation = "CREATE" if old is None else "UPDATE"
    return {"uid": "r-1", "operation": operation, "object": obj, "oldObject": old}


def cli_errors(obj: dict[str, Any]) -> list[str]:
    with pytest.raises(InvalidInputError) as raised:
        load_inventory([Document("test", obj)])
    return [str(e) for e in raised.value.errors]


def test_a_good_config_passes() -> None:
    assert review(request(claim(GOOD))) is None


def test_a_bad_config_is_refused_with_every_message_the_cli_gives() -> None:
    obj = claim(GOOD, BAD)
    refusal = review(request(obj))
    assert refusal is not None
    assert refusal.startswith(f"invalid GpuConfig of driver {DRIVER}: ")
    expected = cli_errors(obj)
    assert len(expected) >= 1
    assert refusal.removeprefix(f"invalid GpuConfig of driver {DRIVER}: ") == "; ".join(expected)
    assert "spec.devices.config[1].opaque.parameters.sharing.strategy" in refusal


@pytest.mark.parametrize(
    "obj",
    [
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "DeviceClass",
            "metadata": {"name": "gpu"},
            "spec": {"config": [{"opaque": {"driver": DRIVER, "parameters": BAD}}]},
        },
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaimTemplate",
            "metadata": {"name": "train", "namespace": "team-a"},
            "spec": {"spec": claim(BAD)["spec"]},
        },
    ],
    ids=["DeviceClass", "ResourceClaimTemplate"],
)
def test_classes_and_templates_are_judged_too(obj: dict[str, Any]) -> None:
    refusal = review(request(obj))
    assert refusal is not None
    assert "; ".join(cli_errors(obj)) in refusal


def test_configs_of_other_drivers_are_not_looked_at() -> None:
    assert review(request(claim(BAD, driver="other.example.com"))) is None


def test_a_driver_of_another_name_judges_its_own_configs() -> None:
    other = GpuConfigReviewer("gpu.example.com")
    assert other(request(claim(BAD))) is None
    assert other(request(claim(BAD, driver="gpu.example.com"))) is not None


def test_an_update_that_leaves_a_stored_bad_config_alone_passes() -> None:
    stored = claim(BAD)
    labelled = copy.deepcopy(stored)
    labelled["metadata"]["labels"] = {"team": "a"}
    labelled["metadata"]["finalizers"] = []
    assert review(request(labelled, old=stored)) is None


def test_an_update_that_changes_a_config_is_judged() -> None:
    stored = claim(GOOD)
    assert review(request(claim(BAD), old=stored)) is not None
    # The same bad parameters moved to another index count as added.
    assert review(request(claim(GOOD, BAD), old=claim(BAD))) is not None


@pytest.mark.parametrize("operation", ["DELETE", "CONNECT"])
def test_other_operations_pass(operation: str) -> None:
    assert review({**request(claim(BAD)), "operation": operation}) is None


def test_objects_it_does_not_review_or_cannot_read_pass() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}
    assert review(request(pod)) is None
    unreadable = claim(BAD)
    unreadable["spec"]["devices"]["requests"] = "not a list"
    assert review(request(unreadable)) is None
    assert review({"uid": "r", "operation": "CREATE", "object": None}) is None
