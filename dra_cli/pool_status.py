"""``gpus --check-pool-status``: the upstream pool status next to what ``gpus`` computes.

Kubernetes 1.36 added ``ResourcePoolStatusRequest`` (``resource.k8s.io/v1alpha3``, KEP-5677,
alpha: the API server needs the ``DRAResourcePoolStatus`` gate and
``--runtime-config=resource.k8s.io/v1alpha3=true``, the controller-manager the gate, which
starts its ``resourcepoolstatusrequest-controller``). A client creates a request naming a
driver; that controller fills ``status.pools`` once, from its own caches of ResourceSlices,
ResourceClaims and DeviceTaintRules; the request is then frozen (the controller deletes it an
hour later; we delete it at once).

:func:`expected_pools` computes the same figures from the lists ``gpus`` read, with the rules
upstream documents for each field:

- only the slices at a pool's highest ``spec.pool.generation`` count (``generation``,
  ``resourceSliceCount``); fewer slices than ``spec.pool.resourceSliceCount`` make the pool
  *incomplete*: upstream then sets ``validationError`` and leaves every count unset;
- ``totalDevices``: every device entry of those slices (whole GPUs, MIG devices, anything);
- ``allocatedDevices``: distinct device names of the pool in claims' allocation results,
  results with ``adminAccess`` left out (a shared GPU held by three claims counts once);
- ``unavailableDevices``: devices with a ``NoSchedule`` or ``NoExecute`` taint, in the
  slice or from a DeviceTaintRule that selects them (allocated or not);
- ``availableDevices``: total - allocated - unavailable, never below 0;
- ``nodeName``: the slices' node when they all name the same one;
- ``shareableSummary`` (pools with a device that allows multiple allocations): such devices
  held by nobody (``fullyAvailableDevices``) or by someone (``partiallyAvailableDevices``),
  and per capacity name the total over them, the sum of the claims' ``consumedCapacity``
  and what is left.

``partitionSummary`` is not compared: upstream fills it only for slices that declare a
``partitionTypeAttribute``, which this driver's slices do not. The two sides read the
cluster at slightly different moments: while claims come and go they can differ for a
moment, and running the check again settles it.
"""

from __future__ import annotations

import secrets
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from api.quantity import Quantity
from api.resource_v1 import ResourceClaim, ResourceSlice
from api.resource_v1.device_taint_rule import DeviceTaintRule

__all__ = [
    "NOT_SERVED",
    "PoolStatusResult",
    "check_pool_status",
    "compare_pools",
    "expected_pools",
]

NOT_SERVED = (
    "the cluster does not serve the pool status API (resource.k8s.io/v1alpha3 "
    "ResourcePoolStatusRequest, alpha: turn on the DRAResourcePoolStatus gate in the API "
    "server and the controller-manager and serve --runtime-config=resource.k8s.io/v1alpha3=true)"
)
UNAVAILABLE_EFFECTS = frozenset({"NoSchedule", "NoExecute"})
COUNTS = (
    "generation",
    "resourceSliceCount",
    "totalDevices",
    "allocatedDevices",
    "availableDevices",
    "unavailableDevices",
    "nodeName",
)


def _selects(rule: DeviceTaintRule, driver: str, pool: str, device: str) -> bool:
    if rule.spec.taint.effect not in UNAVAILABLE_EFFECTS:
        return False
    selector = rule.spec.device_selector
    if selector is None:  # a rule without a selector picks no device
        return False
    return all(
        want is None or want == have
        for want, have in (
            (selector.driver, driver),
            (selector.pool, pool),
            (selector.device, device),
        )
    )


def expected_pools(
    slices: Iterable[ResourceSlice],
    claims: Iterable[ResourceClaim],
    rules: Iterable[DeviceTaintRule],
    driver_name: str,
) -> dict[str, dict[str, Any]]:
    """Per pool name, the fields upstream reports, computed as the module docstring says
    (``validationError`` is ``True`` for an incomplete pool; quantities are Quantity)."""
    mine = [s for s in slices if s.spec.driver == driver_name]
    newest: dict[str, int] = {}
    for s in mine:
        newest[s.spec.pool.name] = max(newest.get(s.spec.pool.name, 0), s.spec.pool.generation)
    current: dict[str, list[ResourceSlice]] = defaultdict(list)
    for s in mine:
        if s.spec.pool.generation == newest[s.spec.pool.name]:
            current[s.spec.pool.name].append(s)
    in_use: dict[str, set[str]] = defaultdict(set)
    consumed: dict[str, dict[str, Quantity]] = defaultdict(dict)
    for claim in claims:
        allocation = claim.status.allocation if claim.status else None
        if allocation is None or allocation.devices is None:
            continue
        for result in allocation.devices.results or []:
            if result.driver != driver_name or result.admin_access:
                continue
            in_use[result.pool].add(result.device)
            for name, quantity in (result.consumed_capacity or {}).items():
                held = consumed[result.pool]
                held[name] = held[name] + quantity if name in held else quantity
    rule_list = list(rules)
    pools: dict[str, dict[str, Any]] = {}
    for pool, members in current.items():
        nodes = {s.spec.node_name or "" for s in members}
        node = nodes.pop() if len(nodes) == 1 else ""
        figures: dict[str, Any] = {"generation": newest[pool], "nodeName": node or None}
        if len(members) < members[0].spec.pool.resource_slice_count:
            pools[pool] = {**figures, "validationError": True}
            continue
        devices = [d for s in members for d in s.spec.devices or []]
        unavailable = sum(
            1
            for d in devices
            if any(t.effect in UNAVAILABLE_EFFECTS for t in d.taints or [])
            or any(_selects(r, driver_name, pool, d.name) for r in rule_list)
        )
        allocated = len(in_use[pool])
        figures |= {
            "resourceSliceCount": len(members),
            "totalDevices": len(devices),
            "allocatedDevices": allocated,
            "unavailableDevices": unavailable,
            "availableDevices": max(0, len(devices) - allocated - unavailable),
            "validationError": False,
        }
        shared = [d for d in devices if d.allow_multiple_allocations]
        if shared:
            totals: dict[str, Quantity] = {}
            for d in shared:
                for name, capacity in (d.capacity or {}).items():
                    totals[name] = (
                        totals[name] + capacity.value if name in totals else capacity.value
                    )
            partial = sum(1 for d in shared if d.name in in_use[pool])
            figures["shareableSummary"] = {
                "fullyAvailableDevices": len(shared) - partial,
                "partiallyAvailableDevices": partial,
                "capacity": {
                    name: _capacity(total, consumed[pool].get(name))
                    for name, total in sorted(totals.items())
                },
            }
        pools[pool] = figures
    return pools


def _capacity(total: Quantity, used: Quantity | None) -> dict[str, Quantity]:
    zero = Quantity.parse(0)
    used = used if used is not None else zero
    return {"total": total, "consumed": used, "available": max(total - used, zero)}


def _upstream(pool: Mapping[str, Any]) -> dict[str, Any]:
    """One ``status.pools`` entry in :func:`expected_pools`' shape."""
    figures: dict[str, Any] = {key: pool.get(key) for key in COUNTS}
    figures["generation"] = int(pool.get("generation") or 0)
    figures["validationError"] = bool(pool.get("validationError"))
    if figures["validationError"] and pool.get("totalDevices") is None:
        return {k: figures[k] for k in ("generation", "nodeName", "validationError")}
    summary = pool.get("shareableSummary")
    if summary is not None:
        figures["shareableSummary"] = {
            "fullyAvailableDevices": int(summary.get("fullyAvailableDevices") or 0),
            "partiallyAvailableDevices": int(summary.get("partiallyAvailableDevices") or 0),
            "capacity": {
                str(c.get("name")): {
                    key: Quantity.parse(c.get(key) or 0)
                    for key in ("total", "consumed", "available")
                }
                for c in summary.get("capacity") or []
            },
        }
    return figures


def _flat(figures: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in figures.items():
        if isinstance(value, Mapping):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def compare_pools(
    expected: Mapping[str, Mapping[str, Any]], status: Mapping[str, Any]
) -> tuple[int, list[str]]:
    """The pools upstream reports and, for each field where ``gpus`` and upstream differ, a
    line ``pool P: FIELD gpus X, upstream Y`` (a pool only one side knows is one line)."""
    reported = {str(p.get("poolName")): _upstream(p) for p in status.get("pools") or []}
    problems: list[str] = []
    count = int(status.get("poolCount") or 0)
    if count > len(reported):
        problems.append(f"upstream listed {len(reported)} of {count} pools (its limit)")
    for pool in sorted(set(expected) | set(reported)):
        if pool not in reported:
            if count <= len(reported):
                problems.append(f"pool {pool}: seen by gpus, not reported upstream")
            continue
        if pool not in expected:
            problems.append(f"pool {pool}: reported upstream, not seen by gpus")
            continue
        mine, theirs = _flat(expected[pool]), _flat(reported[pool])
        for field in sorted(set(mine) | set(theirs)):
            if mine.get(field) != theirs.get(field):
                problems.append(
                    f"pool {pool}: {field} gpus {_text(mine.get(field))}, "
                    f"upstream {_text(theirs.get(field))}"
                )
    return len(reported), problems


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


class PoolStatusResult:
    """The outcome for one cluster: ``served``, ``pools`` compared, ``problems`` (empty:
    agreement), or ``error`` (the request could not be answered)."""

    def __init__(
        self,
        *,
        served: bool,
        pools: int = 0,
        problems: Sequence[str] = (),
        error: str | None = None,
    ) -> None:
        self.served, self.pools, self.problems, self.error = served, pools, list(problems), error

    @property
    def agrees(self) -> bool:
        return self.served and self.error is None and not self.problems

    def lines(self, cluster: str = "") -> list[str]:
        where = f" {cluster}" if cluster else ""
        head = f"pool status{where}:"
        if not self.served:
            return [f"{head} {NOT_SERVED}"]
        if self.error:
            return [f"{head} {self.error}"]
        if not self.problems:
            return [f"{head} agrees with resource.k8s.io/v1alpha3 on {self.pools} pools"]
        return [f"{head} disagrees with resource.k8s.io/v1alpha3:"] + [
            f"  {p}" for p in self.problems
        ]

    def to_json(self, cluster: str = "") -> dict[str, Any]:
        return {
            "cluster": cluster or None,
            "served": self.served,
            "pools": self.pools,
            "agrees": self.agrees,
            "problems": self.problems,
            "error": self.error,
        }


def check_pool_status(
    client: Any,
    driver_name: str,
    slices: Sequence[ResourceSlice],
    claims: Sequence[ResourceClaim],
    *,
    timeout_s: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
) -> PoolStatusResult:
    """Create a request for ``driver_name``, wait up to ``timeout_s`` for its status, compare
    it with the lists ``gpus`` read, delete it. ``client``: an agent_kit ClusterClient."""
    from pydantic import ValidationError

    from agent_kit.kube import NotFoundError

    try:
        listed = client.list("devicetaintrules").items
    except NotFoundError:
        listed = []
    rules = []
    for raw in listed:
        try:
            rules.append(DeviceTaintRule.model_validate(raw))
        except ValidationError:
            continue
    name = f"dra-gpus-{secrets.token_hex(4)}"
    request = {
        "apiVersion": "resource.k8s.io/v1alpha3",
        "kind": "ResourcePoolStatusRequest",
        "metadata": {"name": name},
        "spec": {"driver": driver_name, "limit": 1000},
    }
    try:
        client.create("resourcepoolstatusrequests", request)
    except NotFoundError:
        return PoolStatusResult(served=False)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            status = client.get("resourcepoolstatusrequests", name).get("status")
            if status is not None:
                break
            if time.monotonic() >= deadline:
                return PoolStatusResult(
                    served=True,
                    error=f"ResourcePoolStatusRequest {name} got no status in {timeout_s:g}s "
                    "(is the controller-manager running with the DRAResourcePoolStatus gate?)",
                )
            sleep(0.2)
    finally:
        client.delete("resourcepoolstatusrequests", name)
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            return PoolStatusResult(
                served=True, error=f"upstream failed: {condition.get('message') or '?'}"
            )
    pools, problems = compare_pools(expected_pools(slices, claims, rules, driver_name), status)
    return PoolStatusResult(served=True, pools=pools, problems=problems)
