"""What the API server would reject: what holds for every kind (:mod:`api.validation`).

The rules of each kind are tested next to this module, one module per kind as in
``api/validation/``: test_validation_names, _node, _slice, _class and _claim.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from validation_fixtures import CLAIM, CLASS, SLICE, dev, messages

from api import limits
from api.errors import InvalidInputError
from api.resource_v1 import ObjectMeta, ResourcePool, ResourceSlice, ResourceSliceSpec, parse_object
from api.validation import ensure_valid, validate


@pytest.mark.parametrize("base", [SLICE, CLASS, CLAIM])
def test_realistic_objects_are_valid(base: dict[str, Any]) -> None:
    assert messages(base) == []


# --- Dispatch and raising ------------------------------------------------------------------------


def test_every_problem_is_reported_not_only_the_first() -> None:
    def many(d: dict[str, Any]) -> None:
        d["spec"]["driver"] = "bad_driver"
        dev(d, 0)["name"] = "Bad"
        dev(d, 1)["attributes"]["x/y/z"] = {"int": 1}

    found = messages(SLICE, many)
    assert [m.split(":")[0] for m in found] == [
        "spec.driver",
        "spec.devices[0].name",
        "spec.devices[1].attributes[x/y/z]",
    ]


def test_ensure_valid_raises_naming_object_and_fields() -> None:
    claim = parse_object(copy.deepcopy(CLAIM))
    ensure_valid(claim)
    broken = copy.deepcopy(CLAIM)
    broken["spec"]["devices"]["requests"][0]["exactly"]["allocationMode"] = "Some"
    with pytest.raises(InvalidInputError) as info:
        ensure_valid(parse_object(broken), source="claims.yaml")
    assert str(info.value).startswith(
        "claims.yaml: claim default/train-0: spec.devices.requests[0].exactly.allocationMode: "
        'unsupported value "Some"'
    )


def test_validate_refuses_foreign_types() -> None:
    slice_ = ResourceSlice(
        spec=ResourceSliceSpec(
            driver="d", pool=ResourcePool(name="p", generation=0, resource_slice_count=1)
        )
    )
    assert validate(slice_)  # no name, no node selection
    with pytest.raises(TypeError):
        validate(ObjectMeta())  # type: ignore[arg-type]


def test_limits_used_match_the_spec() -> None:
    assert limits.MAX_DEVICES_PER_SLICE == 128
    assert limits.MAX_DEVICES_PER_SLICE_WITH_ADVANCED == 64
    assert limits.CEL_SELECTOR_EXPRESSION_MAX_LENGTH == 10240
    assert limits.ALLOCATION_CONFIG_MAX == 64
