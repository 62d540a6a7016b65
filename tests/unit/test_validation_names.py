"""Name rules every kind shares (:mod:`api.validation.names`, :mod:`api.validation.metadata`):
RFC 1123 labels and subdomains, metadata names, driver and pool names, device names and
qualified attribute names.
"""

from __future__ import annotations

from typing import Any

import pytest
from validation_fixtures import SLICE, Mutation, assert_rejected, dev, messages

from api.resource_v1 import field_path
from api.validation import is_dns1123_label, is_dns1123_subdomain


@pytest.mark.parametrize(
    ("value", "label", "subdomain"),
    [
        ("gpu-0", True, True),
        ("a", True, True),
        ("gpu.example.com", False, True),
        ("-gpu", False, False),
        ("gpu-", False, False),
        ("GPU", False, False),
        ("gpu_0", False, False),
        ("a" * 63, True, True),
        ("a" * 64, False, True),
        (".".join(["a" * 63] * 4), False, False),
        ("", False, False),
        ("gpu-0\n", False, False),
        ("gpu.example.com\n", False, False),
    ],
)
def test_dns_name_rules(value: str, label: bool, subdomain: bool) -> None:
    assert is_dns1123_label(value) is label
    assert is_dns1123_subdomain(value) is subdomain


@pytest.mark.parametrize(
    ("mutate", "path", "fragment"),
    [
        (lambda d: d["metadata"].update(name="Node_A"), "metadata.name", "RFC 1123 subdomain"),
        (lambda d: d["metadata"].pop("name"), "metadata.name", "name or generateName"),
        (lambda d: d["metadata"].update(namespace="x"), "metadata.namespace", "cluster-scoped"),
        (lambda d: d["spec"].update(driver=""), "spec.driver", "required"),
        (lambda d: d["spec"].update(driver="gpu_example.com"), "spec.driver", "DNS subdomain"),
        (lambda d: d["spec"].update(driver="a" * 64), "spec.driver", "at most 63"),
        (lambda d: d["spec"]["pool"].update(name=""), "spec.pool.name", "required"),
        (lambda d: d["spec"]["pool"].update(name="a//b"), "spec.pool.name", "separated by"),
        (
            lambda d: d["spec"]["pool"].update(name="a" * 254),
            "spec.pool.name",
            "at most 253 allowed",
        ),
        (lambda d: d["spec"]["pool"].update(generation=-1), "spec.pool.generation", ">= 0"),
        (
            lambda d: d["spec"]["pool"].update(resourceSliceCount=0),
            "spec.pool.resourceSliceCount",
            "greater than zero",
        ),
        (lambda d: dev(d).update(name="GPU0"), "spec.devices[0].name", "RFC 1123 label"),
        (lambda d: dev(d, 1).update(name="gpu-0"), "spec.devices", 'duplicate device name "gpu-0"'),
    ],
)
def test_slice_name_rules(mutate: Mutation, path: str, fragment: str) -> None:
    if fragment == ">= 0":
        fragment = "greater than or equal to 0"
    assert_rejected(SLICE, mutate, path, fragment)


def test_driver_name_is_checked_case_insensitively() -> None:
    # Same as CSI driver names: upper case passes the DNS check after lower-casing.
    assert messages(SLICE, lambda d: d["spec"].update(driver="GPU.Example.com")) == []


def test_generate_name_replaces_name() -> None:
    def generated(d: dict[str, Any]) -> None:
        d["metadata"] = {"generateName": "node-a-gpu-"}

    assert messages(SLICE, generated) == []


# --- Qualified attribute and capacity names ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("a/b/c", 'at most one "/"'),
        ("/index", "domain before"),
        ("gpu.example.com/", "identifier is empty"),
        ("0index", "C identifier"),
        ("has-dash", "C identifier"),
        ("a" * 33, "at most 32 characters, not 33"),
        ("a" * 64 + "/x", "at most 63 characters, not 64"),
        ("bad_domain!/x", "DNS subdomain"),
    ],
)
def test_qualified_attribute_names(name: str, fragment: str) -> None:
    assert_rejected(
        SLICE,
        lambda d: dev(d)["attributes"].update({name: {"int": 1}}),
        field_path(("spec", "devices", 0, "attributes", name)),
        fragment,
    )


def test_qualified_names_that_are_valid() -> None:
    def names(d: dict[str, Any]) -> None:
        dev(d)["attributes"].update(
            {
                "a" * 32: {"int": 1},
                "_private": {"int": 1},
                "resource.kubernetes.io/pciBusID": {"string": "0000:3b:00.0"},
                "example.com/x_1": {"bool": True},
            }
        )
        dev(d)["capacity"].update({"example.com/memory": {"value": "1Gi"}})

    assert messages(SLICE, names) == []
