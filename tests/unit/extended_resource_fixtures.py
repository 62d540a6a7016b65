"""Manifests of the extended-resource tests: pods asking for ``nvidia.com/gpu`` the
device-plugin way, a class that maps the name, GPU nodes, as plain dicts a user would write."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from typing import Any

from allocator_fixtures import GPU_SELECTOR, claim, exact, gpus, resource_slice

from api.resource_v1 import dump
from dra_cli.main import main
from dra_driver.manifest_read import Document
from dra_driver.manifests import Inventory, load_inventory

GPU = "nvidia.com/gpu"


def gpu_class(
    name: str = "gpu", resource: str | None = GPU, created: str | None = None
) -> dict[str, Any]:
    """A DeviceClass of every device of the driver, mapping ``resource`` when given."""
    spec: dict[str, Any] = {"selectors": [{"cel": {"expression": GPU_SELECTOR}}]}
    if resource is not None:
        spec["extendedResourceName"] = resource
    metadata: dict[str, Any] = {"name": name}
    if created is not None:
        metadata["creationTimestamp"] = created
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": metadata,
        "spec": spec,
    }


def container(
    name: str,
    limits: Mapping[str, object] | None = None,
    requests: Mapping[str, object] | None = None,
    *,
    restart_policy: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "image": "busybox:1.37"}
    resources: dict[str, Any] = {}
    if limits is not None:
        resources["limits"] = dict(limits)
    if requests is not None:
        resources["requests"] = dict(requests)
    if resources:
        body["resources"] = resources
    if restart_policy is not None:
        body["restartPolicy"] = restart_policy
    return body


def pod(
    name: str,
    *containers: dict[str, Any],
    init: Iterable[dict[str, Any]] = (),
    namespace: str = "default",
    **spec: Any,
) -> dict[str, Any]:
    """A Pod of ``containers`` (and init containers), with any other spec fields."""
    body: dict[str, Any] = {"containers": list(containers), **spec}
    init_list = list(init)
    if init_list:
        body["initContainers"] = init_list
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def gpu_node(
    name: str, count: int, allocatable: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """A Node and the slice of its ``count`` GPUs; ``allocatable`` as a device plugin sets it."""
    node: dict[str, Any] = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}
    if allocatable is not None:
        node["status"] = {"allocatable": dict(allocatable)}
    return [node, dump(resource_slice(f"{name}-gpus", gpus(count), node=name))]


def pending_claim(name: str, count: int) -> dict[str, Any]:
    """A pending ResourceClaim ``default/NAME`` of ``count`` devices of class ``gpu``."""
    return dump(claim(name, exact("gpu", count=count)))


def inventory(*objects: dict[str, Any] | list[dict[str, Any]]) -> Inventory:
    """The inventory of these objects (lists flattened), as the offline tools load it."""
    flat = _flat(objects)
    return load_inventory([Document(f"input.yaml#{i}", o) for i, o in enumerate(flat)])


def run(argv: list[str], *objects: dict[str, Any] | list[dict[str, Any]]) -> tuple[int, str]:
    """``dra-driver ARGV -f -`` with the objects as a List on stdin: (exit code, stdout)."""
    flat = _flat(objects)
    listing = json.dumps({"apiVersion": "v1", "kind": "List", "items": flat})
    out = io.StringIO()
    code = main([*argv, "-f", "-"], stdin=io.StringIO(listing), stdout=out)
    return code, out.getvalue()


def _flat(objects: Iterable[dict[str, Any] | list[dict[str, Any]]]) -> list[dict[str, Any]]:
    flat: list[dict[str, Any]] = []
    for obj in objects:
        flat.extend(obj if isinstance(obj, list) else [obj])
    return flat
