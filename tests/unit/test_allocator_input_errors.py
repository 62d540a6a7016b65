"""Allocator errors: invalid input located by object and field, CEL errors naming their
class or claim, and a search aborted by its timeout."""

from __future__ import annotations

import pytest
from allocator_fixtures import (
    DRIVER,
    Version,
    claim,
    device,
    device_class,
    exact,
    first_available,
    gpus,
    resource_slice,
    sub,
)

from api.errors import CelCompileError, CelEvaluationError, InvalidInputError, UnsatisfiableError
from dra_driver.allocator import Snapshot, allocate

# -- input errors ------------------------------------------------------------------------


def test_missing_device_class_names_claim_and_field() -> None:
    snap = Snapshot.build(slices=[resource_slice("s", gpus(1))], classes=[device_class()])
    with pytest.raises(InvalidInputError) as info:
        allocate(snap, [claim("c", exact("gpu", "x"))])
    assert str(info.value).startswith(
        "claim default/c: spec.devices.requests[0].exactly.deviceClassName: "
        'device class "x" not found'
    )
    with pytest.raises(InvalidInputError) as sub_info:
        allocate(snap, [claim("c", first_available("r", sub("a"), sub("b", "y")))])
    assert "spec.devices.requests[0].firstAvailable[1].deviceClassName" in str(sub_info.value)


def test_selector_that_does_not_compile_is_located() -> None:
    broken = device_class("gpu", "device.driver ==")
    snap = Snapshot.build(slices=[resource_slice("s", gpus(1))], classes=[broken])
    with pytest.raises(CelCompileError) as info:
        allocate(snap, [claim("c", exact())])
    assert str(info.value).startswith(
        "class gpu: spec.selectors[0].cel.expression: CEL compile error"
    )
    good = Snapshot.build(slices=[resource_slice("s", gpus(1))], classes=[device_class()])
    with pytest.raises(CelCompileError) as claim_info:
        allocate(good, [claim("c", exact(selectors=["device.driver =="]))])
    assert str(claim_info.value).startswith(
        "claim default/c: spec.devices.requests[0].exactly.selectors[0].cel.expression: "
        "CEL compile error"
    )


def test_class_selector_runtime_error_names_the_class() -> None:
    strict = device_class("gpu", f'device.attributes["{DRIVER}"].model == "x"')
    snap = Snapshot.build(slices=[resource_slice("s", gpus(1))], classes=[strict])
    with pytest.raises(CelEvaluationError) as info:
        allocate(snap, [claim("c", exact())])
    assert str(info.value).startswith(
        "class gpu: selector #0: CEL runtime error: no such key: model"
    )


@pytest.mark.parametrize(
    ("request_", "field", "text"),
    [
        (
            exact(mode="Some"),
            "spec.devices.requests[0].exactly.allocationMode",
            "unsupported count mode Some",
        ),
        (exact(count=0), "spec.devices.requests[0].exactly.count", "greater than zero"),
        (exact(mode="All", count=2), "spec.devices.requests[0].exactly.count", "must not be set"),
    ],
)
def test_invalid_requests(request_: dict[str, object], field: str, text: str) -> None:
    snap = Snapshot.build(slices=[resource_slice("s", gpus(1))], classes=[device_class()])
    with pytest.raises(InvalidInputError) as info:
        allocate(snap, [claim("c", request_)])
    assert f"claim default/c: {field}: " in str(info.value)
    assert text in str(info.value)


def test_constraint_without_attribute_is_invalid() -> None:
    snap = Snapshot.build(slices=[resource_slice("s", gpus(1))], classes=[device_class()])
    with pytest.raises(InvalidInputError) as info:
        allocate(snap, [claim("c", exact(), constraints=[{"requests": ["gpu"]}])])
    assert "spec.devices.constraints[0]" in str(info.value)


def test_unknown_policy_is_invalid() -> None:
    snap = Snapshot.build(slices=[resource_slice("s", gpus(1))], classes=[device_class()])
    with pytest.raises(InvalidInputError) as info:
        allocate(snap, [claim("c", exact())], policy="best")
    assert "first-fit" in str(info.value)


def test_a_search_that_runs_out_of_time_is_aborted() -> None:
    # 38 devices, two of each of 19 slot versions, 20 wanted with distinct slots: no
    # combination works, no cheap condition says so (versions compare as parsed
    # versions, which necessary.py leaves to the search), and proving it exhaustively
    # takes millions of steps.
    devices = [device(f"gpu-{i}", attributes={"slot": Version(f"1.{i % 19}.0")}) for i in range(38)]
    snap = Snapshot.build(slices=[resource_slice("s", devices)], classes=[device_class()])
    pending = claim("c", exact(count=20), constraints=[{"distinctAttribute": f"{DRIVER}/slot"}])
    with pytest.raises(UnsatisfiableError) as info:
        allocate(snap, [pending], timeout=0.05)
    assert "filter operation aborted" in info.value.reasons["claim default/c"]  # type: ignore[attr-defined]


def test_a_constraint_no_value_can_meet_ends_the_search_with_the_reason() -> None:
    # 40 devices on alternating NUMA nodes, two of them without the attribute: 19 per NUMA
    # node, 20 wanted on one. Exhaustive search would take millions of steps; the
    # constraint's necessary condition ends it, without a timeout, and says why.
    devices = [device(f"gpu-{i}", attributes={"numa": i % 2}) for i in range(40)]
    devices[38], devices[39] = device("gpu-38"), device("gpu-39")
    snap = Snapshot.build(slices=[resource_slice("s", devices)], classes=[device_class()])
    pending = claim("c", exact(count=20), constraints=[{"matchAttribute": f"{DRIVER}/numa"}])
    with pytest.raises(UnsatisfiableError) as info:
        allocate(snap, [pending], timeout=None)
    reason = info.value.reasons["claim default/c"]  # type: ignore[attr-defined]
    assert "filter operation aborted" not in reason
    assert f"no value of {DRIVER}/numa (matchAttribute over gpu)" in reason, reason


def test_per_device_node_selector_is_checked_when_the_snapshot_is_built() -> None:
    bad = {
        "nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.uid", "operator": "In", "values": ["x"]}]}
        ]
    }
    with pytest.raises(InvalidInputError) as info:
        Snapshot.build(
            slices=[
                resource_slice(
                    "s",
                    [device("d", nodeSelector=bad)],
                    node=None,
                    perDeviceNodeSelection=True,
                )
            ],
            classes=[device_class()],
        )
    assert "slice s: spec.devices[0].nodeSelector.nodeSelectorTerms[0].matchFields[0].key" in str(
        info.value
    )
