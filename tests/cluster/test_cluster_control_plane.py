"""The control plane serves resource.k8s.io/v1 and stores DRA objects as written."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from cluster_access import (
    ClusterUnderTest,
    is_gone,
    read_json,
    resource_api,
)
from kubernetes import client

from agent_kit.kube import InvalidError, api_errors

RESOURCE_KINDS = {
    "deviceclasses": "DeviceClass",
    "resourceslices": "ResourceSlice",
    "resourceclaims": "ResourceClaim",
    "resourceclaimtemplates": "ResourceClaimTemplate",
}


@pytest.fixture
def resources(api_client: Any) -> Any:
    """``ResourceV1Api`` with admin rights."""
    return resource_api(api_client)


def test_resource_v1_is_served_with_the_dra_kinds(api_client: Any) -> None:
    discovery = read_json(client.ApisApi(api_client).get_api_versions)
    groups = {g["name"]: g for g in discovery["groups"]}
    versions = [v["version"] for v in groups["resource.k8s.io"]["versions"]]
    assert "v1" in versions
    assert groups["resource.k8s.io"]["preferredVersion"]["version"] == "v1"

    resources = read_json(resource_api(api_client).get_api_resources)
    served = {r["name"]: r["kind"] for r in resources["resources"] if "/" not in r["name"]}
    assert {k: served.get(k) for k in RESOURCE_KINDS} == RESOURCE_KINDS


def test_device_class_is_stored_as_written(resources: Any) -> None:
    name = f"roundtrip-{uuid.uuid4().hex[:6]}.dra-driver.io"
    expression = 'device.driver == "roundtrip.dra-driver.io" && device.attributes["x"].y == 1'
    body = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": name},
        "spec": {"selectors": [{"cel": {"expression": expression}}]},
    }
    created = resources.create_device_class(body)
    try:
        stored = read_json(resources.read_device_class, name)
        assert stored["spec"] == body["spec"]
        assert stored["metadata"]["uid"] == created.metadata.uid
    finally:
        resources.delete_device_class(name)
    assert is_gone(lambda: resources.read_device_class(name))


def test_device_class_with_a_broken_selector_is_rejected(
    resources: Any,
) -> None:
    body = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": "broken.dra-driver.io"},
        "spec": {"selectors": [{"cel": {"expression": "device.driver =="}}]},
    }
    with pytest.raises(InvalidError) as raised, api_errors("create deviceclass"):
        resources.create_device_class(body)
    assert "spec.selectors[0].cel.expression" in str(raised.value)


def test_resource_slice_is_stored_as_written(
    resources: Any, local_cluster: ClusterUnderTest
) -> None:
    # A driver of its own, so that no scheduling test ever sees this device.
    driver = "roundtrip.dra-driver.io"
    name = f"roundtrip-{uuid.uuid4().hex[:6]}"
    spec = {
        "driver": driver,
        "nodeName": local_cluster.node_name,
        "pool": {"name": name, "generation": 1, "resourceSliceCount": 1},
        "devices": [
            {
                "name": "dev-0",
                "attributes": {
                    "model": {"string": "roundtrip"},
                    "index": {"int": 0},
                    "version": {"version": "1.2.3"},
                    "healthy": {"bool": True},
                },
                "capacity": {"memory": {"value": "16Gi"}},
            }
        ],
    }
    body = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": name},
        "spec": spec,
    }
    resources.create_resource_slice(body)
    try:
        stored = read_json(resources.read_resource_slice, name)
        assert stored["spec"] == spec
    finally:
        resources.delete_resource_slice(name)


def test_resource_claim_is_stored_as_written_and_starts_unallocated(
    resources: Any, namespace: str
) -> None:
    spec = {
        "devices": {
            "requests": [
                {
                    "name": "gpu",
                    "exactly": {
                        "deviceClassName": "gpu.dra-driver.io",
                        "allocationMode": "ExactCount",
                        "count": 1,
                        "selectors": [
                            {
                                "cel": {
                                    "expression": 'device.capacity["gpu.dra-driver.io"].memory'
                                    '.compareTo(quantity("40Gi")) >= 0'
                                }
                            }
                        ],
                    },
                }
            ]
        }
    }
    body = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": "one-gpu"},
        "spec": spec,
    }
    resources.create_namespaced_resource_claim(namespace, body)
    stored = read_json(resources.read_namespaced_resource_claim, "one-gpu", namespace)
    # allocationMode and count are the defaults, given explicitly: nothing is added.
    assert stored["spec"] == spec
    assert "allocation" not in stored.get("status", {})
