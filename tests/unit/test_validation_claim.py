"""ResourceClaim and ResourceClaimTemplate rules (:mod:`api.validation.resource_claim`): the
requests, tolerations, constraints and configs of the spec, and the status.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from validation_fixtures import ALLOCATION, CLAIM, Mutation, assert_rejected, messages, req


@pytest.mark.parametrize(
    ("mutate", "path", "fragment"),
    [
        (lambda d: req(d).update(name="GPU"), "spec.devices.requests[0].name", "RFC 1123 label"),
        (
            lambda d: req(d, 1).update(name="gpu"),
            "spec.devices.requests",
            'duplicate request name "gpu"',
        ),
        (
            lambda d: req(d).update(firstAvailable=[{"name": "a", "deviceClassName": "c"}]),
            "spec.devices.requests[0]",
            "exactly one of `exactly` or `firstAvailable`",
        ),
        (lambda d: req(d).pop("exactly"), "spec.devices.requests[0]", "exactly one of"),
        (
            lambda d: req(d)["exactly"].update(deviceClassName=""),
            "spec.devices.requests[0].exactly.deviceClassName",
            "required",
        ),
        (
            lambda d: req(d)["exactly"].update(deviceClassName="GPU"),
            "spec.devices.requests[0].exactly.deviceClassName",
            "invalid device class name",
        ),
        (
            lambda d: req(d)["exactly"].update(allocationMode="Some"),
            "spec.devices.requests[0].exactly.allocationMode",
            'unsupported value "Some": supported values "ExactCount", "All"',
        ),
        (
            lambda d: req(d)["exactly"].update(count=0),
            "spec.devices.requests[0].exactly.count",
            "greater than zero",
        ),
        (
            lambda d: req(d)["exactly"].update(allocationMode="All"),
            "spec.devices.requests[0].exactly.count",
            "must not be set when allocationMode is All",
        ),
        (
            lambda d: req(d, 1)["firstAvailable"][0].update(adminAccess=True),
            "spec.devices.requests[1].firstAvailable[0].adminAccess",
            "not allowed on a firstAvailable subrequest",
        ),
        (
            lambda d: req(d, 1).update(firstAvailable=[]),
            "spec.devices.requests[1].firstAvailable",
            "at least one subrequest",
        ),
        (
            lambda d: req(d, 1).update(
                firstAvailable=[{"name": f"s{i}", "deviceClassName": "c"} for i in range(9)]
            ),
            "spec.devices.requests[1].firstAvailable",
            "too many subrequests: 9, at most 8",
        ),
        (
            lambda d: req(d, 1)["firstAvailable"][1].update(name="big"),
            "spec.devices.requests[1].firstAvailable",
            'duplicate subrequest name "big"',
        ),
        (
            lambda d: req(d, 1)["firstAvailable"][1].update(count=-1),
            "spec.devices.requests[1].firstAvailable[1].count",
            "greater than zero",
        ),
        (
            lambda d: req(d)["exactly"].update(capacity={"requests": {"a/b/c": "1"}}),
            "spec.devices.requests[0].exactly.capacity.requests[a/b/c]",
            'at most one "/"',
        ),
        (
            lambda d: req(d)["exactly"].update(capacity={"requests": {"memory": "-1Gi"}}),
            "spec.devices.requests[0].exactly.capacity.requests.memory",
            "must not be negative",
        ),
        (
            lambda d: d["spec"]["devices"].update(
                requests=[
                    {"name": f"r{i}", "exactly": {"deviceClassName": "c"}} for i in range(33)
                ],
                constraints=[],
                config=[],
            ),
            "spec.devices.requests",
            "too many requests: 33, at most 32",
        ),
        (
            lambda d: d["metadata"].update(namespace="Default"),
            "metadata.namespace",
            "RFC 1123 label",
        ),
    ],
)
def test_request_rules(mutate: Mutation, path: str, fragment: str) -> None:
    assert_rejected(CLAIM, mutate, path, fragment)


def test_all_mode_without_count_and_explicit_exact_count_are_valid() -> None:
    def modes(d: dict[str, Any]) -> None:
        req(d)["exactly"] = {"deviceClassName": "gpu", "allocationMode": "All", "adminAccess": True}
        req(d, 1)["firstAvailable"][0].update(allocationMode="ExactCount", count=3)

    assert messages(CLAIM, modes) == []


def test_empty_claim_is_valid() -> None:
    assert messages(CLAIM, lambda d: d.update(spec={})) == []
    assert messages(CLAIM, lambda d: d["spec"].update(devices={})) == []


@pytest.mark.parametrize(
    ("toleration", "path", "fragment"),
    [
        ({"key": "", "operator": "Equal"}, ".operator", 'must be "Exists" when the key is empty'),
        ({}, ".operator", 'must be "Exists"'),
        ({"key": "k", "operator": "Exists", "value": "v"}, ".value", "must be empty"),
        ({"key": "k", "operator": "Matches"}, ".operator", 'supported values "Equal", "Exists"'),
        ({"key": "k", "effect": "None"}, ".effect", 'unsupported value "None"'),
        (
            {"key": "k", "effect": "NoSchedule", "tolerationSeconds": 30},
            ".tolerationSeconds",
            "NoExecute",
        ),
        ({"key": "bad key"}, ".key", "invalid toleration key"),
    ],
)
def test_toleration_rules(toleration: dict[str, Any], path: str, fragment: str) -> None:
    assert_rejected(
        CLAIM,
        lambda d: req(d)["exactly"].update(tolerations=[toleration]),
        "spec.devices.requests[0].exactly.tolerations[0]" + path,
        fragment,
    )


def test_valid_tolerations() -> None:
    def tolerations(d: dict[str, Any]) -> None:
        req(d)["exactly"]["tolerations"] = [
            {"operator": "Exists"},
            {"key": "example.com/unhealthy", "operator": "Equal", "value": "xid-79"},
            {"key": "k", "effect": "NoExecute", "tolerationSeconds": 60},
        ]

    assert messages(CLAIM, tolerations) == []
    assert_rejected(
        CLAIM,
        lambda d: req(d)["exactly"].update(tolerations=[{"operator": "Exists"}] * 17),
        "spec.devices.requests[0].exactly.tolerations",
        "at most 16",
    )


@pytest.mark.parametrize(
    ("constraint", "path", "fragment"),
    [
        ({"requests": ["gpu"]}, "", "exactly one of `matchAttribute` or `distinctAttribute`"),
        (
            {"matchAttribute": "example.com/a", "distinctAttribute": "example.com/b"},
            "",
            "exactly one of",
        ),
        ({"matchAttribute": "numa"}, ".matchAttribute", "must include the domain"),
        ({"distinctAttribute": "a/b/c"}, ".distinctAttribute", 'at most one "/"'),
        (
            {"requests": ["tpu"], "matchAttribute": "example.com/a"},
            ".requests[0]",
            '"tpu" does not name a request',
        ),
        (
            {"requests": ["gpu/big"], "matchAttribute": "example.com/a"},
            ".requests[0]",
            "does not name",
        ),
        (
            {"requests": ["mig/huge"], "matchAttribute": "example.com/a"},
            ".requests[0]",
            "does not name",
        ),
        (
            {"requests": ["gpu", "gpu"], "matchAttribute": "example.com/a"},
            ".requests",
            'duplicate request reference "gpu"',
        ),
    ],
)
def test_constraint_rules(constraint: dict[str, Any], path: str, fragment: str) -> None:
    assert_rejected(
        CLAIM,
        lambda d: d["spec"]["devices"].update(constraints=[constraint]),
        "spec.devices.constraints[0]" + path,
        fragment,
    )


def test_constraint_may_name_a_request_with_subrequests_or_none() -> None:
    def refs(d: dict[str, Any]) -> None:
        d["spec"]["devices"]["constraints"] = [
            {"requests": ["mig"], "distinctAttribute": "gpu.dra-driver.io/uuid"},
            {"matchAttribute": "resource.kubernetes.io/pcieRoot"},
        ]

    assert messages(CLAIM, refs) == []


@pytest.mark.parametrize(
    ("config", "path", "fragment"),
    [
        (
            {"requests": ["nope"], "opaque": {"driver": "d", "parameters": {}}},
            ".requests[0]",
            "does not name",
        ),
        ({"requests": ["gpu"]}, ".opaque", "required"),
        ({"opaque": {"driver": "", "parameters": {}}}, ".opaque.driver", "required"),
        (
            {"opaque": {"driver": "d", "parameters": {"x": "y" * 10300}}},
            ".opaque.parameters",
            "too large: 10308 bytes, at most 10240",
        ),
    ],
)
def test_claim_config_rules(config: dict[str, Any], path: str, fragment: str) -> None:
    assert_rejected(
        CLAIM,
        lambda d: d["spec"]["devices"].update(config=[config]),
        "spec.devices.config[0]" + path,
        fragment,
    )


def test_constraint_and_config_list_limits() -> None:
    assert_rejected(
        CLAIM,
        lambda d: d["spec"]["devices"].update(
            constraints=[{"matchAttribute": "example.com/a"}] * 33
        ),
        "spec.devices.constraints",
        "too many constraints: 33, at most 32",
    )
    assert_rejected(
        CLAIM,
        lambda d: d["spec"]["devices"].update(
            config=[{"opaque": {"driver": "d", "parameters": {}}}] * 33
        ),
        "spec.devices.config",
        "too many configs: 33, at most 32",
    )


# --- ResourceClaim status ------------------------------------------------------------------------


def test_allocated_claim_with_status_is_valid() -> None:
    def allocate(d: dict[str, Any]) -> None:
        d["status"] = {
            "allocation": copy.deepcopy(ALLOCATION),
            "reservedFor": [{"resource": "pods", "name": "p", "uid": "u1"}],
            "devices": [
                {
                    "driver": "gpu.dra-driver.io",
                    "pool": "node-a",
                    "device": "gpu-1-mig-0",
                    "shareID": "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "networkData": {"ips": ["192.0.2.5/24", "2001:db8::1/64"]},
                }
            ],
        }

    assert messages(CLAIM, allocate) == []


def allocated(mutate: Callable[[dict[str, Any]], object]) -> Mutation:
    def apply(d: dict[str, Any]) -> None:
        d["status"] = {"allocation": copy.deepcopy(ALLOCATION)}
        mutate(d["status"])

    return apply


@pytest.mark.parametrize(
    ("mutate", "path", "fragment"),
    [
        (
            lambda s: s["allocation"]["devices"].update(
                results=[ALLOCATION["devices"]["results"][0]] * 33
            ),
            "status.allocation.devices.results",
            "too many results: 33, at most 32",
        ),
        (
            lambda s: s["allocation"]["devices"].update(
                config=[ALLOCATION["devices"]["config"][0]] * 65
            ),
            "status.allocation.devices.config",
            "too many configs: 65, at most 64",
        ),
        (
            lambda s: s["allocation"]["devices"]["config"][0].update(source="FromPod"),
            "status.allocation.devices.config[0].source",
            '"FromClass", "FromClaim"',
        ),
        (
            lambda s: s["allocation"]["devices"]["results"][1].update(
                shareID="6BA7B810-9DAD-11D1-80B4-00C04FD430C8"
            ),
            "status.allocation.devices.results[1].shareID",
            "lowercase RFC 4122 UUID",
        ),
        (
            lambda s: s["allocation"]["devices"]["results"][0].update(request="gpu/Big"),
            "status.allocation.devices.results[0].request",
            "invalid request reference",
        ),
        (
            lambda s: s["allocation"]["devices"]["results"][0].update(device="GPU-0"),
            "status.allocation.devices.results[0].device",
            "invalid device name",
        ),
        (
            lambda s: s.update(reservedFor=[{"resource": "pods", "name": "p", "uid": "u"}] * 2),
            "status.reservedFor",
            'duplicate consumer uid "u"',
        ),
        (
            lambda s: s.update(
                reservedFor=[{"resource": "pods", "name": "p", "uid": f"u{i}"} for i in range(257)]
            ),
            "status.reservedFor",
            "too many consumers: 257, at most 256",
        ),
        (
            lambda s: s.update(
                devices=[{"driver": "gpu.dra-driver.io", "pool": "node-a", "device": "gpu-9"}]
            ),
            "status.devices[0]",
            "not in the allocation",
        ),
        (
            lambda s: s.update(
                devices=[
                    {
                        "driver": "gpu.dra-driver.io",
                        "pool": "node-a",
                        "device": "gpu-0",
                        "conditions": [{"type": f"T{i}", "status": "True"} for i in range(9)],
                    }
                ]
            ),
            "status.devices[0].conditions",
            "too many conditions: 9, at most 8",
        ),
        (
            lambda s: s.update(
                devices=[
                    {
                        "driver": "gpu.dra-driver.io",
                        "pool": "node-a",
                        "device": "gpu-0",
                        "networkData": {"ips": ["192.0.2.5"]},
                    }
                ]
            ),
            "status.devices[0].networkData.ips[0]",
            "CIDR form",
        ),
        (
            lambda s: s.update(
                devices=[
                    {
                        "driver": "gpu.dra-driver.io",
                        "pool": "node-a",
                        "device": "gpu-0",
                        "data": {"x": "y" * 10240},
                    }
                ]
            ),
            "status.devices[0].data",
            "too large",
        ),
    ],
)
def test_status_rules(mutate: Callable[[dict[str, Any]], object], path: str, fragment: str) -> None:
    assert_rejected(CLAIM, allocated(mutate), path, fragment)


def test_reserved_for_needs_an_allocation() -> None:
    def reserved(d: dict[str, Any]) -> None:
        d["status"] = {"reservedFor": [{"resource": "pods", "name": "p", "uid": "u"}]}

    assert_rejected(CLAIM, reserved, "status.reservedFor", "not allocated")


# --- ResourceClaimTemplate -----------------------------------------------------------------------


def test_template_rules() -> None:
    template: dict[str, Any] = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": "one-gpu", "namespace": "team-a"},
        "spec": {
            "metadata": {"labels": {"app": "x"}, "annotations": {"a": "b"}},
            "spec": copy.deepcopy(CLAIM["spec"]),
        },
    }
    assert messages(template) == []
    assert_rejected(
        template,
        lambda d: d["spec"]["metadata"].update(name="fixed"),
        "spec.metadata.name",
        "only labels and annotations",
    )
    assert_rejected(
        template,
        lambda d: d["spec"]["spec"]["devices"]["requests"][0].update(name="Bad"),
        "spec.spec.devices.requests[0].name",
        "RFC 1123 label",
    )
