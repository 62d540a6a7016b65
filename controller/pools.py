"""Cluster-level pools published as ResourceSlices, and the driver's DeviceClasses.

The configuration (``--config FILE`` or ``--config-map NAMESPACE/NAME``, key
``config.yaml``) is YAML::

    deviceClasses:
      sharing: true          # timeslicing.<driver> and mps.<driver> (default true)
      mig: true              # mig.<driver> (default true)
      products:              # one class per product, named <slug>.<driver>
      - NVIDIA H100 80GB HBM3
      extendedResourceNames: # the device plugin's names these classes answer to
        gpu: nvidia.com/gpu  # <driver> (default; "" or null: none)
        timeslicing: ""      # e.g. nvidia.com/gpu.shared (default none)
        mps: ""
        mig: ""
    pools:                   # devices that are not node-local
    - name: shared-a100
      nodeSelector:          # core/v1 NodeSelector (one term) ...
        nodeSelectorTerms:
        - matchExpressions: [{key: pool, operator: In, values: [a100]}]
      # allNodes: true       # ... or every node
      sharedCounters: []     # optional resource.k8s.io/v1 CounterSets
      devices:               # resource.k8s.io/v1 Devices
      - name: gpu-0
        attributes: {type: {string: gpu}}
        capacity: {memory: {value: 80Gi}}

**Pools.** Each pool becomes the slices of one resource pool of the driver:
counters-only slices first (at most 8 counter sets each), then the devices in
the order given, at most 128 per slice (64 when a device uses taints or
counters), named ``<pool>-<driver>-<index>`` (the scheduler's first fit walks
slices by name), labelled ``app.kubernetes.io/managed-by`` and
``<driver>/cluster-pool``. :meth:`PoolPublisher.sync` makes the API server hold
exactly those: a pool whose slices already carry the desired content at one
generation is left alone; otherwise every slice is written at a generation
above any seen, with the new ``resourceSliceCount``, obsolete slices deleted
first. Pools removed from the configuration lose their slices (only slices
carrying our label are ever deleted).

**DeviceClasses.** ``<driver>`` (whole GPUs), ``timeslicing.<driver>`` and
``mps.<driver>`` (whole GPUs with the sharing GpuConfig), ``mig.<driver>``
(MIG devices), and ``<slug>.<driver>`` per configured product. A class given an
extended resource name (``spec.extendedResourceName``) also serves pods that ask
for that name in their container resources, as written for the device plugin
(by default ``<driver>`` answers to ``nvidia.com/gpu``); one name maps one class. A class is
created with the managed-by label and updated when its spec differs; a class
of that name *without* the label was made by an admin and is never changed
or deleted; labelled classes no longer configured are deleted.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import yaml
from pydantic import ConfigDict, Field, ValidationError, field_validator

from agent_kit.kube import ClusterClient, ConflictError, NotFoundError
from api import gpu_config, limits
from api.errors import InvalidInputError
from api.resource_v1 import (
    CounterSet,
    Device,
    DeviceClass,
    K8sModel,
    NodeSelector,
    ResourceSlice,
    dump,
    field_errors,
)
from api.validation import ensure_valid
from controller.cache import decode

__all__ = [
    "MANAGED_BY",
    "MANAGED_BY_LABEL",
    "ControllerConfig",
    "PoolConfig",
    "PoolPublisher",
    "build_device_classes",
    "load_config",
    "parse_config",
    "plan_pool_slices",
    "sync_device_classes",
]

log = logging.getLogger(__name__)

MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "dra-driver-controller"
CONFIG_MAP_KEY: Final = "config.yaml"


#: The extended resource name the whole-GPU class answers to, as the device plugin's.
DEFAULT_EXTENDED_RESOURCE_NAME: Final = "nvidia.com/gpu"


class ExtendedResourceNames(K8sModel):
    """Per class, the extended resource name it answers to; None (or empty): none."""

    model_config = ConfigDict(extra="forbid")

    gpu: str | None = DEFAULT_EXTENDED_RESOURCE_NAME
    timeslicing: str | None = None
    mps: str | None = None
    mig: str | None = None

    @field_validator("gpu", "timeslicing", "mps", "mig", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return (value.strip() or None) if isinstance(value, str) else value

    def of(self, kind: str) -> str | None:
        name: str | None = getattr(self, kind)
        return name


class ClassConfig(K8sModel):
    sharing: bool = True
    mig: bool = True
    products: list[str] = Field(default_factory=list)
    extended_resource_names: ExtendedResourceNames = Field(default_factory=ExtendedResourceNames)


class PoolConfig(K8sModel):
    name: str
    node_selector: NodeSelector | None = None
    all_nodes: bool | None = None
    shared_counters: list[CounterSet] | None = None
    devices: list[Device] = Field(default_factory=list)


class ControllerConfig(K8sModel):
    device_classes: ClassConfig = Field(default_factory=ClassConfig)
    pools: list[PoolConfig] = Field(default_factory=list)


def parse_config(text: str, *, source: str) -> ControllerConfig:
    """Decode the YAML configuration; InvalidInputError names ``source`` and the field."""
    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as err:
        raise InvalidInputError(f"not valid YAML: {err}", source=source) from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise InvalidInputError("the configuration must be a mapping", source=source)
    try:
        config = ControllerConfig.model_validate(data)
    except ValidationError as err:
        raise InvalidInputError(source=source, errors=field_errors(err)) from None
    names = [pool.name for pool in config.pools]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidInputError(
            f"pool names must be unique: {', '.join(duplicates)} appear twice", source=source
        )
    return config


def load_config(
    client: ClusterClient | None,
    *,
    path: str | None,
    config_map: str | None,
) -> ControllerConfig:
    """The configuration from a file, a ConfigMap, or the defaults when neither is given.

    Raises InvalidInputError (bad content), OSError (unreadable file), ApiError
    (ConfigMap not readable; 404 when it does not exist).
    """
    if path:
        with open(path, encoding="utf-8") as handle:
            return parse_config(handle.read(), source=path)
    if config_map and client is not None:
        namespace, _, name = config_map.partition("/")
        data = client.get("configmaps", name, namespace=namespace).get("data") or {}
        return parse_config(str(data.get(CONFIG_MAP_KEY) or ""), source=f"configmap {config_map}")
    return ControllerConfig()


# --- Pools --------------------------------------------------------------------------------


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug or "x"


def _advanced(device: Device) -> bool:
    return bool(device.taints or device.consumes_counters)


def plan_pool_slices(
    driver_name: str, pool: PoolConfig, *, generation: int = 0
) -> list[ResourceSlice]:
    """The slices of one cluster pool at ``generation`` (see the module docstring).

    Raises InvalidInputError naming the pool and field when a slice would be
    rejected by the API server (a bad device name, both or neither of
    ``nodeSelector`` / ``allNodes``, a selector with several terms...).
    """
    where = f"pool {pool.name}"
    if (pool.node_selector is None) == (not pool.all_nodes):
        raise InvalidInputError("set exactly one of nodeSelector and allNodes: true", obj=where)
    if pool.node_selector is not None and len(pool.node_selector.node_selector_terms) != 1:
        raise InvalidInputError(
            "a ResourceSlice node selector takes exactly one term; split the pool", obj=where
        )
    chunks: list[tuple[list[CounterSet], list[Device]]] = []
    counters = list(pool.shared_counters or [])
    for start in range(0, len(counters), limits.MAX_COUNTER_SETS_PER_SLICE):
        chunks.append((counters[start : start + limits.MAX_COUNTER_SETS_PER_SLICE], []))
    current: list[Device] = []
    for device in pool.devices:
        advanced = any(_advanced(d) for d in [*current, device])
        room = (
            limits.MAX_DEVICES_PER_SLICE_WITH_ADVANCED if advanced else limits.MAX_DEVICES_PER_SLICE
        )
        if len(current) >= room:
            chunks.append(([], current))
            current = []
        current.append(device)
    if current:
        chunks.append(([], current))
    if not chunks:
        chunks.append(([], []))
    slices = []
    base = f"{_slug(pool.name)}-{_slug(driver_name)}"
    for index, (sets, devices) in enumerate(chunks):
        spec: dict[str, Any] = {
            "driver": driver_name,
            "pool": {
                "name": pool.name,
                "generation": generation,
                "resourceSliceCount": len(chunks),
            },
        }
        if pool.all_nodes:
            spec["allNodes"] = True
        elif pool.node_selector is not None:
            spec["nodeSelector"] = dump(pool.node_selector)
        if sets:
            spec["sharedCounters"] = [dump(s) for s in sets]
        if devices:
            spec["devices"] = [dump(d) for d in devices]
        slice_ = ResourceSlice.model_validate(
            {
                "apiVersion": limits.API_VERSION,
                "kind": limits.KIND_RESOURCE_SLICE,
                "metadata": {
                    "name": f"{base}-{index:05d}",
                    "labels": {
                        MANAGED_BY_LABEL: MANAGED_BY,
                        f"{driver_name}/cluster-pool": _slug(pool.name),
                    },
                },
                "spec": spec,
            }
        )
        ensure_valid(slice_)
        slices.append(slice_)
    return slices


def _without_generation(slice_: ResourceSlice) -> Any:
    data = dump(slice_.spec)
    data["pool"].pop("generation", None)
    return data


@dataclass
class SyncResult:
    """What one sync wrote."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted)


class PoolPublisher:
    """Publishes the cluster pools of one driver (see the module docstring)."""

    def __init__(self, client: ClusterClient, *, driver_name: str) -> None:
        self.client = client
        self.driver_name = driver_name

    def sync(self, pools: Sequence[PoolConfig]) -> SyncResult:
        """Make the cluster's slices of our pools match ``pools``; ApiError on failure
        (a conflict included: the next sync starts from a fresh list)."""
        result = SyncResult()
        listed = self.client.list(
            "resourceslices",
            field_selector=f"spec.driver={self.driver_name}",
            label_selector=f"{MANAGED_BY_LABEL}={MANAGED_BY}",
        )
        existing: dict[str, list[ResourceSlice]] = {}
        for raw in listed.items:
            slice_ = decode(ResourceSlice, raw)
            if slice_.spec.node_name:
                continue  # node-local pools belong to the kubelet plugins
            existing.setdefault(slice_.spec.pool.name, []).append(slice_)
        for pool in pools:
            self._sync_pool(pool, existing.pop(pool.name, []), result)
        for leftovers in existing.values():
            for slice_ in leftovers:
                name = slice_.metadata.name or ""
                self.client.delete("resourceslices", name)
                result.deleted.append(name)
        return result

    def _sync_pool(
        self, pool: PoolConfig, current: list[ResourceSlice], result: SyncResult
    ) -> None:
        desired = plan_pool_slices(self.driver_name, pool)
        by_name = {s.metadata.name: s for s in current}
        generations = {s.spec.pool.generation for s in current}
        if (
            len(generations) == 1
            and set(by_name) == {s.metadata.name for s in desired}
            and all(
                _without_generation(by_name[s.metadata.name]) == _without_generation(s)
                and (by_name[s.metadata.name].metadata.labels or {}) == (s.metadata.labels or {})
                for s in desired
            )
        ):
            return
        generation = max(generations, default=-1) + 1
        wanted = {s.metadata.name for s in desired}
        for slice_ in current:
            if slice_.metadata.name not in wanted:
                self.client.delete("resourceslices", slice_.metadata.name or "")
                result.deleted.append(slice_.metadata.name or "")
        for slice_ in desired:
            slice_.spec.pool.generation = generation
            body = dump(slice_)
            name = slice_.metadata.name or ""
            old = by_name.get(name)
            if old is None:
                self.client.create("resourceslices", body)
                result.created.append(name)
            else:
                body["metadata"]["resourceVersion"] = old.metadata.resource_version
                self.client.replace("resourceslices", body)
                result.updated.append(name)
        log.info(
            "published cluster pool",
            extra={"pool": pool.name, "generation": generation, "slices": len(desired)},
        )


# --- DeviceClasses ------------------------------------------------------------------------


def _device_class(
    name: str,
    expression: str,
    config: Mapping[str, Any] | None,
    driver: str,
    extended_resource_name: str | None = None,
) -> DeviceClass:
    spec: dict[str, Any] = {"selectors": [{"cel": {"expression": expression}}]}
    if extended_resource_name is not None:
        spec["extendedResourceName"] = extended_resource_name
    if config is not None:
        spec["config"] = [{"opaque": {"driver": driver, "parameters": dict(config)}}]
    return DeviceClass.model_validate(
        {
            "apiVersion": limits.API_VERSION,
            "kind": limits.KIND_DEVICE_CLASS,
            "metadata": {"name": name, "labels": {MANAGED_BY_LABEL: MANAGED_BY}},
            "spec": spec,
        }
    )


def build_device_classes(driver_name: str, config: ClassConfig) -> list[DeviceClass]:
    """The driver's DeviceClasses for ``config`` (see the module docstring)."""

    def of_type(kind: str, extra: str = "") -> str:
        return (
            f'device.driver == "{driver_name}" && '
            f'device.attributes["{driver_name}"].type == "{kind}"{extra}'
        )

    def sharing(strategy: str) -> dict[str, Any]:
        return {
            "apiVersion": gpu_config.API_VERSION,
            "kind": gpu_config.KIND,
            "sharing": {"strategy": strategy},
        }

    names = config.extended_resource_names
    classes = [_device_class(driver_name, of_type("gpu"), None, driver_name, names.of("gpu"))]
    if config.sharing:
        for kind, strategy in (
            ("timeslicing", gpu_config.STRATEGY_TIME_SLICING),
            ("mps", gpu_config.STRATEGY_MPS),
        ):
            classes.append(
                _device_class(
                    f"{kind}.{driver_name}",
                    of_type("gpu"),
                    sharing(strategy),
                    driver_name,
                    names.of(kind),
                )
            )
    if config.mig:
        classes.append(
            _device_class(f"mig.{driver_name}", of_type("mig"), None, driver_name, names.of("mig"))
        )
    for product in config.products:
        quoted = product.replace("\\", "\\\\").replace('"', '\\"')
        classes.append(
            _device_class(
                f"{_slug(product)}.{driver_name}",
                of_type("gpu", f' && device.attributes["{driver_name}"].productName == "{quoted}"'),
                None,
                driver_name,
            )
        )
    mapped = [c.spec.extended_resource_name for c in classes if c.spec.extended_resource_name]
    twice = sorted({name for name in mapped if mapped.count(name) > 1})
    if twice:
        raise InvalidInputError(
            f"extended resource name {', '.join(twice)} is given to several classes; "
            "give each name to one class",
            obj="deviceClasses.extendedResourceNames",
        )
    for device_class in classes:
        ensure_valid(device_class)
    return classes


def sync_device_classes(client: ClusterClient, desired: Sequence[DeviceClass]) -> SyncResult:
    """Create, update or delete our DeviceClasses; never touch an admin's (no label)."""
    result = SyncResult()
    existing = {
        obj.metadata.name or "": obj
        for obj in (decode(DeviceClass, raw) for raw in client.list("deviceclasses").items)
    }
    wanted = {c.metadata.name for c in desired}
    for device_class in desired:
        name = device_class.metadata.name or ""
        current = existing.get(name)
        if current is None:
            try:
                client.create("deviceclasses", dump(device_class))
                result.created.append(name)
            except ConflictError:
                pass
            continue
        if (current.metadata.labels or {}).get(MANAGED_BY_LABEL) != MANAGED_BY:
            log.debug("leaving an admin's DeviceClass alone", extra={"class": name})
            continue
        if dump(current.spec) == dump(device_class.spec):
            continue
        body = dump(device_class)
        body["metadata"] = {**dump(current.metadata), "labels": device_class.metadata.labels}
        client.replace("deviceclasses", body)
        result.updated.append(name)
    for stale, current in existing.items():
        if stale in wanted or (current.metadata.labels or {}).get(MANAGED_BY_LABEL) != MANAGED_BY:
            continue
        try:
            client.delete("deviceclasses", stale)
            result.deleted.append(stale)
        except NotFoundError:
            pass
    return result
