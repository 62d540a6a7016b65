"""DeviceClass rules (:mod:`api.validation.device_class`): selectors, opaque configuration,
the extended resource name, and their limits.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from validation_fixtures import CLASS, Mutation, assert_rejected, messages

from api.errors import InvalidInputError
from api.resource_v1 import parse_object


@pytest.mark.parametrize(
    ("mutate", "path", "fragment"),
    [
        (lambda d: d["spec"]["selectors"].append({}), "spec.selectors[1].cel", "CEL expression"),
        (
            lambda d: d["spec"]["selectors"].append({"cel": {"expression": "  "}}),
            "spec.selectors[1].cel.expression",
            "non-empty",
        ),
        (
            lambda d: d["spec"]["selectors"].append(
                {"cel": {"expression": "'" + "é" * 5120 + "'"}}
            ),
            "spec.selectors[1].cel.expression",
            "too long: 10242 bytes, at most 10240",
        ),
        (
            lambda d: d["spec"].update(selectors=[{"cel": {"expression": "true"}}] * 33),
            "spec.selectors",
            "too many selectors: 33, at most 32",
        ),
        (
            lambda d: d["spec"].update(config=[{"opaque": {"driver": "d", "parameters": {}}}] * 33),
            "spec.config",
            "too many configs: 33, at most 32",
        ),
        (lambda d: d["spec"]["config"].append({}), "spec.config[1].opaque", "required"),
        (
            lambda d: d["spec"]["config"][0]["opaque"].update(driver="Bad_Driver"),
            "spec.config[0].opaque.driver",
            "DNS subdomain",
        ),
        (
            lambda d: d["spec"]["config"][0]["opaque"].update(parameters={"blob": "x" * 10240}),
            "spec.config[0].opaque.parameters",
            "too large",
        ),
        (
            lambda d: d["spec"].update(extendedResourceName="gpu"),
            "spec.extendedResourceName",
            "domain prefix",
        ),
        (
            lambda d: d["spec"].update(extendedResourceName="kubernetes.io/gpu"),
            "spec.extendedResourceName",
            "reserved",
        ),
        (lambda d: d["metadata"].update(name="GPU"), "metadata.name", "subdomain"),
    ],
)
def test_device_class_rules(mutate: Mutation, path: str, fragment: str) -> None:
    assert_rejected(CLASS, mutate, path, fragment)


def test_device_class_limits_are_inclusive() -> None:
    def at_limits(d: dict[str, Any]) -> None:
        d["spec"]["selectors"] = [{"cel": {"expression": "'" + "x" * 10238 + "'"}}] * 32
        d["spec"]["config"] = [{"opaque": {"driver": "d", "parameters": {"k": "x" * 10232}}}] * 32
        d["spec"]["extendedResourceName"] = "example.com/gpu"

    assert messages(CLASS, at_limits) == []


def test_opaque_parameters_must_be_an_object() -> None:
    data = copy.deepcopy(CLASS)
    data["spec"]["config"][0]["opaque"]["parameters"] = ["a"]
    with pytest.raises(
        InvalidInputError, match=r"spec\.config\[0\]\.opaque\.parameters: must be an object"
    ):
        parse_object(data)
