"""DeviceTaintRules in the allocator: a rule's taint counts as if the slice published it.

The kube-scheduler's rules (k8s.io/dynamic-resource-allocation v0.37.2): the
ResourceSlice tracker appends the taint of every rule whose selector (driver, pool,
device; each set field must match) picks a device; the allocator refuses a device with a
NoSchedule or NoExecute taint that no toleration of the request tolerates; None and
effects it does not know never block.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from allocator_fixtures import (
    DRIVER,
    claim,
    device,
    device_class,
    devices_of,
    exact,
    first_available,
    gpus,
    resource_slice,
    sub,
)

from api.errors import UnsatisfiableError
from api.resource_v1 import DeviceTaintRule, ResourceClaim
from dra_driver.allocator import Snapshot, allocate, explain

KEY = "example.com/maintenance"


def rule(
    name: str,
    *,
    effect: str = "NoSchedule",
    value: str | None = "drain",
    selector: dict[str, str] | None = None,
) -> DeviceTaintRule:
    """A DeviceTaintRule; ``selector`` None leaves ``deviceSelector`` out (selects nothing)."""
    spec: dict[str, Any] = {
        "taint": {"key": KEY, "effect": effect, **({"value": value} if value else {})}
    }
    if selector is not None:
        spec["deviceSelector"] = selector
    return DeviceTaintRule.model_validate(
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "DeviceTaintRule",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


def snapshot(*rules: DeviceTaintRule, slice_taints: bool = False) -> Snapshot:
    """node-a and node-b with gpu-0 and gpu-1 each (pool = node); node-a's gpu-0 carries a
    slice taint ``example.com/xid=79:NoSchedule`` when ``slice_taints``."""
    first = device(
        "gpu-0", taints=[("example.com/xid", "79", "NoSchedule")] if slice_taints else ()
    )
    return Snapshot.build(
        slices=[
            resource_slice("a", [first, device("gpu-1")], node="node-a"),
            resource_slice("b", gpus(2), node="node-b"),
        ],
        classes=[device_class()],
        taint_rules=rules,
    )


def placed(snap: Snapshot, request: ResourceClaim, node: str | None = None) -> tuple[str, ...]:
    """(node, device, ...) of the one claim's allocation."""
    alloc = allocate(snap, [request], node=node)
    return (alloc.node or "", *(name for _, name in devices_of(alloc.results[0])))


def one(**fields: Any) -> ResourceClaim:
    return claim("c", exact(**fields))


def test_a_rule_selecting_one_device_by_driver_pool_and_name_blocks_only_it() -> None:
    selector = {"driver": DRIVER, "pool": "node-a", "device": "gpu-0"}
    assert placed(snapshot(rule("r", selector=selector)), one()) == ("node-a", "gpu-1")
    # The same device name in another pool is not selected.
    assert placed(snapshot(rule("r", selector=selector)), one(), "node-b") == ("node-b", "gpu-0")


def test_a_rule_selecting_a_pool_sends_the_claim_to_another_node() -> None:
    snap = snapshot(rule("r", selector={"pool": "node-a"}))
    assert placed(snap, one(count=2)) == ("node-b", "gpu-0", "gpu-1")


def test_a_rule_by_driver_selects_only_that_drivers_devices() -> None:
    other = snapshot(rule("r", selector={"driver": "fpga.example.com"}))
    assert placed(other, one()) == ("node-a", "gpu-0")
    with pytest.raises(UnsatisfiableError):
        allocate(snapshot(rule("r", selector={"driver": DRIVER})), [one()])


def test_an_empty_selector_selects_every_device_and_none_selects_nothing() -> None:
    with pytest.raises(UnsatisfiableError):
        allocate(snapshot(rule("r", selector={})), [one()])
    assert placed(snapshot(rule("r")), one()) == ("node-a", "gpu-0")


@pytest.mark.parametrize("effect", ["NoSchedule", "NoExecute"])
def test_no_schedule_and_no_execute_block(effect: str) -> None:
    snap = snapshot(rule("r", effect=effect, selector={"pool": "node-a", "device": "gpu-0"}))
    assert placed(snap, one(), "node-a") == ("node-a", "gpu-1")


@pytest.mark.parametrize("effect", ["None", "PreferNoSchedule", "EvictEventually"])
def test_none_and_unknown_effects_never_block(effect: str) -> None:
    # A rule from a newer API server may carry an effect this version does not know: None.
    snap = snapshot(rule("r", effect=effect, selector={}))
    assert placed(snap, one(count=2)) == ("node-a", "gpu-0", "gpu-1")


@pytest.mark.parametrize(
    ("toleration", "tolerated"),
    [
        ({"key": KEY, "operator": "Exists"}, True),
        ({"key": KEY, "operator": "Equal", "value": "drain"}, True),
        ({"key": KEY, "value": "drain"}, True),  # the operator defaults to Equal
        ({"key": KEY, "operator": "Equal", "value": "other"}, False),
        ({"key": KEY, "operator": "Exists", "effect": "NoExecute"}, True),
        ({"key": KEY, "operator": "Exists", "effect": "NoSchedule"}, False),
        ({"operator": "Exists"}, True),  # an empty key with Exists tolerates every taint
        ({"key": "example.com/other", "operator": "Exists"}, False),
    ],
)
def test_tolerations_match_key_operator_value_and_effect(
    toleration: dict[str, str], tolerated: bool
) -> None:
    snap = snapshot(rule("r", effect="NoExecute", selector={"pool": "node-a"}))
    expected = ("node-a", "gpu-0") if tolerated else ("node-b", "gpu-0")
    assert placed(snap, one(tolerations=[toleration])) == expected


def test_a_first_available_subrequest_brings_its_own_tolerations() -> None:
    snap = snapshot(rule("r", selector={"pool": "node-a"}))
    request = claim(
        "c",
        first_available(
            "gpu",
            sub("plain", count=2),
            sub("tolerant", count=2, tolerations=[{"key": KEY, "operator": "Exists"}]),
        ),
    )
    alloc = allocate(snap, [request], node="node-a")
    assert devices_of(alloc.results[0]) == [("gpu/tolerant", "gpu-0"), ("gpu/tolerant", "gpu-1")]


def test_a_rule_and_a_slice_taint_on_one_device_must_both_be_tolerated() -> None:
    snap = snapshot(rule("r", selector={"device": "gpu-0"}), slice_taints=True)
    slice_only = [{"key": "example.com/xid", "operator": "Exists"}]
    both = [*slice_only, {"key": KEY, "operator": "Exists"}]
    assert placed(snap, one(tolerations=slice_only), "node-a") == ("node-a", "gpu-1")
    assert placed(snap, one(tolerations=[both[1]]), "node-a") == ("node-a", "gpu-1")
    assert placed(snap, one(tolerations=both), "node-a") == ("node-a", "gpu-0")


def test_rules_still_apply_after_a_pool_is_replaced() -> None:
    snap = snapshot(rule("r", selector={"pool": "node-a", "device": "gpu-0"}))
    snap.replace_pools([(DRIVER, "node-a")], [resource_slice("a2", gpus(3), node="node-a")])
    assert placed(snap, one(count=2), "node-a") == ("node-a", "gpu-1", "gpu-2")


def _explained() -> dict[str, Any]:
    snap = snapshot(
        rule("drain-a", selector={"pool": "node-a", "device": "gpu-1"}), slice_taints=True
    )
    report: dict[str, Any] = explain(snap, [one(count=2)], node="node-a").to_json()
    return report


def test_explain_names_the_taint_and_the_rule_of_each_blocked_device() -> None:
    (node,) = _explained()["nodes"]
    (request,) = node["claims"][0]["requests"]
    assert request["tainted"] == 2
    assert request["taintedDevices"] == [
        {
            "device": f"{DRIVER}/node-a/gpu-0",
            "key": "example.com/xid",
            "value": "79",
            "effect": "NoSchedule",
            "rule": None,
        },
        {
            "device": f"{DRIVER}/node-a/gpu-1",
            "key": KEY,
            "value": "drain",
            "effect": "NoSchedule",
            "rule": "drain-a",
        },
    ]
    json.dumps(node)  # the report stays plain JSON


def test_explain_table_and_reasons_name_the_rule() -> None:
    snap = snapshot(rule("drain-a", selector={"pool": "node-a"}))
    table = explain(snap, [one()], node="node-a").render_table()
    assert (
        f"node-a gpu: {DRIVER}/node-a/gpu-0 tainted {KEY}=drain:NoSchedule "
        "(DeviceTaintRule drain-a)" in table
    )
    with pytest.raises(UnsatisfiableError) as info:
        allocate(snap, [one()], node="node-a")
    assert f"2 tainted: {KEY}=drain:NoSchedule (DeviceTaintRule drain-a) x2" in str(
        info.value.reasons
    )
