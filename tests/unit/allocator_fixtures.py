"""Builders of ResourceSlices, DeviceClasses, ResourceClaims and Nodes for allocator tests.

Every builder writes the object in its JSON form and decodes it with the real
models, so the tests exercise the same objects the CLI and the controller hand
to the allocator. Defaults: driver ``gpu.dra-driver.io``, node ``node-a``,
namespace ``default``, class ``gpu`` (every device of the driver).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from api.resource_v1 import DeviceClass, Node, ResourceClaim, ResourceSlice

DRIVER = "gpu.dra-driver.io"
DEFAULT_CLASS = "gpu"
GPU_SELECTOR = f'device.driver == "{DRIVER}"'


@dataclass(frozen=True)
class Version:
    """Marks an attribute value as a ``version`` (semver) attribute."""

    text: str


def attribute(value: object) -> dict[str, Any]:
    """The DeviceAttribute JSON of a Python value."""
    if isinstance(value, Version):
        return {"version": value.text}
    if isinstance(value, bool):
        return {"bool": value}
    if isinstance(value, int):
        return {"int": value}
    if isinstance(value, str):
        return {"string": value}
    raise TypeError(f"no attribute type for {value!r}")


def device(
    name: str,
    *,
    attributes: Mapping[str, object] | None = None,
    capacity: Mapping[str, str | Mapping[str, Any]] | None = None,
    counters: Mapping[str, Mapping[str, str]] | None = None,
    taints: Iterable[tuple[str, str | None, str]] = (),
    **fields: Any,
) -> dict[str, Any]:
    """A Device. ``capacity`` values: a quantity string or a full DeviceCapacity dict.

    ``counters``: counter set name -> {counter: quantity} consumed. ``taints``:
    (key, value, effect). Other fields (``allowMultipleAllocations``,
    ``nodeName``, ``bindsToNode``, ...) pass through in JSON form.
    """
    out: dict[str, Any] = {"name": name}
    if attributes:
        out["attributes"] = {k: attribute(v) for k, v in attributes.items()}
    if capacity:
        out["capacity"] = {
            k: v if isinstance(v, Mapping) else {"value": v} for k, v in capacity.items()
        }
    if counters:
        out["consumesCounters"] = [
            {"counterSet": s, "counters": {c: {"value": q} for c, q in cs.items()}}
            for s, cs in counters.items()
        ]
    taint_list = [
        {"key": k, **({"value": v} if v is not None else {}), "effect": e} for k, v, e in taints
    ]
    if taint_list:
        out["taints"] = taint_list
    out.update(fields)
    return out


def counter_set(name: str, counters: Mapping[str, str]) -> dict[str, Any]:
    return {"name": name, "counters": {c: {"value": q} for c, q in counters.items()}}


def resource_slice(
    name: str,
    devices: Iterable[dict[str, Any]] = (),
    *,
    node: str | None = "node-a",
    pool: str | None = None,
    driver: str = DRIVER,
    generation: int = 1,
    count: int = 1,
    counter_sets: Iterable[dict[str, Any]] = (),
    **spec: Any,
) -> ResourceSlice:
    """A ResourceSlice. The pool defaults to the node name; ``node=None`` with
    ``allNodes=True`` / ``nodeSelector=...`` / ``perDeviceNodeSelection=True`` in ``spec``."""
    body: dict[str, Any] = {
        "driver": driver,
        "pool": {
            "name": pool or node or name,
            "generation": generation,
            "resourceSliceCount": count,
        },
    }
    if node is not None:
        body["nodeName"] = node
    device_list = list(devices)
    if device_list:
        body["devices"] = device_list
    sets = list(counter_sets)
    if sets:
        body["sharedCounters"] = sets
    body.update(spec)
    return ResourceSlice.model_validate(
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceSlice",
            "metadata": {"name": name},
            "spec": body,
        }
    )


def gpus(count: int, *, prefix: str = "gpu", **attributes: object) -> list[dict[str, Any]]:
    """``count`` plain devices ``gpu-0`` ... with an ``index`` attribute and the given ones."""
    return [device(f"{prefix}-{i}", attributes={"index": i, **attributes}) for i in range(count)]


def device_class(
    name: str = DEFAULT_CLASS,
    *selectors: str,
    config: Iterable[Mapping[str, Any]] = (),
) -> DeviceClass:
    """A DeviceClass; without selectors it selects every device of the driver."""
    exprs = selectors or (GPU_SELECTOR,)
    spec: dict[str, Any] = {"selectors": [{"cel": {"expression": e}} for e in exprs]}
    configs = [{"opaque": {"driver": DRIVER, "parameters": dict(c)}} for c in config]
    if configs:
        spec["config"] = configs
    return DeviceClass.model_validate(
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "DeviceClass",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


def exact(
    name: str = "gpu",
    device_class_name: str = DEFAULT_CLASS,
    *,
    count: int | None = None,
    mode: str | None = None,
    selectors: Iterable[str] = (),
    admin: bool | None = None,
    tolerations: Iterable[Mapping[str, Any]] = (),
    capacity: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A DeviceRequest with ``exactly``."""
    body: dict[str, Any] = {"deviceClassName": device_class_name}
    if count is not None:
        body["count"] = count
    if mode is not None:
        body["allocationMode"] = mode
    sels = [{"cel": {"expression": s}} for s in selectors]
    if sels:
        body["selectors"] = sels
    if admin is not None:
        body["adminAccess"] = admin
    tols = [dict(t) for t in tolerations]
    if tols:
        body["tolerations"] = tols
    if capacity is not None:
        body["capacity"] = {"requests": dict(capacity)}
    return {"name": name, "exactly": body}


def sub(name: str, device_class_name: str = DEFAULT_CLASS, **kwargs: Any) -> dict[str, Any]:
    """A DeviceSubRequest (same keywords as :func:`exact`, minus ``admin``)."""
    body = exact(name, device_class_name, **kwargs)["exactly"]
    return {"name": name, **body}


def first_available(name: str, *subrequests: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "firstAvailable": list(subrequests)}


def claim(
    name: str,
    *requests: dict[str, Any],
    constraints: Iterable[Mapping[str, Any]] = (),
    config: Iterable[Mapping[str, Any]] = (),
    namespace: str = "default",
    results: Iterable[Mapping[str, Any]] | None = None,
) -> ResourceClaim:
    """A ResourceClaim; with ``results`` it is allocated (those device results)."""
    devices: dict[str, Any] = {"requests": list(requests)}
    cons = [dict(c) for c in constraints]
    if cons:
        devices["constraints"] = cons
    cfg = [dict(c) for c in config]
    if cfg:
        devices["config"] = cfg
    body: dict[str, Any] = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"devices": devices},
    }
    if results is not None:
        body["status"] = {"allocation": {"devices": {"results": [dict(r) for r in results]}}}
    return ResourceClaim.model_validate(body)


def result(
    device_name: str,
    *,
    request: str = "gpu",
    pool: str = "node-a",
    driver: str = DRIVER,
    **fields: Any,
) -> dict[str, Any]:
    """A DeviceRequestAllocationResult (JSON)."""
    return {"request": request, "driver": driver, "pool": pool, "device": device_name, **fields}


def holding(name: str, *devices: str, pool: str = "node-a", **fields: Any) -> ResourceClaim:
    """An allocated claim holding ``devices`` of ``pool`` (one result each)."""
    return claim(
        name,
        exact("gpu", count=max(len(devices), 1)),
        results=[result(d, pool=pool, **fields) for d in devices],
    )


def node(name: str, **labels: str) -> Node:
    return Node.model_validate(
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}
    )


def devices_of(allocation: Any) -> list[tuple[str, str]]:
    """(request, device) of every result of an AllocationResult."""
    return [(r.request, r.device) for r in (allocation.devices.results or [])]


def counting_ids() -> Callable[[], str]:
    """A deterministic shareID factory: UUIDs ``00000000-...-000000000001``, ``...02``, ..."""
    counter = itertools.count(1)
    return lambda: str(uuid.UUID(int=next(counter)))
