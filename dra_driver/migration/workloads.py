"""The migration's objects: DeviceClasses and, per workload pattern, both ways to ask.

For each pattern (one GPU, two GPUs, a MIG profile, a share of a GPU) two forms:

- the claim form: a ResourceClaimTemplate of the pattern's class and a Pod naming it;
- the extended-resource form: the Pod as it was written for the device plugin
  (``resources.limits: {nvidia.com/gpu: 1}``), unchanged; the scheduler makes its claim
  from the class that maps the name (Kubernetes 1.34+, on by default since 1.36).

A share asks for ``compute`` 100/replicas percent and ``memory`` 1/replicas of
``--gpu-memory`` in whole GiB (the capacities of a shared GPU, ``kubeletPlugin.sharedGpus``):
a share that named no memory would take all of it and no second share would fit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from api.errors import InvalidInputError
from api.gpu_config import API_VERSION, KIND
from api.quantity import Quantity
from dra_driver.migration.plan import ClassPlan, MigrationPlan
from dra_driver.slices import SHARED_COMPUTE_CAPACITY, SHARED_MEMORY_CAPACITY

__all__ = ["MigrationOutput", "Pattern", "build_output"]

RESOURCE_API: Final = "resource.k8s.io/v1"
#: The implicit extended resource name of every DeviceClass: this prefix and its name.
IMPLICIT_PREFIX: Final = "deviceclass.resource.kubernetes.io/"
_GIB: Final = 1 << 30
_IMAGE: Final = "busybox:1.37"
_COMMAND: Final = ["sh", "-c", "env | grep -E '^(NVIDIA|CUDA_MPS|DRA_GPU)_' | sort; sleep 3600"]


@dataclass(frozen=True)
class Pattern:
    """One workload pattern in both forms (``extended`` None when there is no such form)."""

    key: str
    title: str
    claim_form: list[dict[str, Any]]
    extended: dict[str, Any] | None


@dataclass
class MigrationOutput:
    """``classes`` are the ones to apply; ``chart_classes`` the chart makes from the values
    (shown so that the output allocates offline as it is)."""

    values: dict[str, Any]
    classes: list[dict[str, Any]]
    chart_classes: list[dict[str, Any]] = field(default_factory=list)
    patterns: list[Pattern] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def manifests(self) -> list[dict[str, Any]]:
        """Every Kubernetes object: classes, then each pattern's template and pods."""
        objects = self.chart_classes + self.classes
        for pattern in self.patterns:
            objects.extend(pattern.claim_form)
            if pattern.extended is not None:
                objects.append(pattern.extended)
        return objects

    def to_json(self) -> dict[str, Any]:
        return {
            "helmValues": self.values,
            "deviceClasses": self.classes,
            "chartDeviceClasses": self.chart_classes,
            "workloads": [
                {
                    "pattern": p.key,
                    "title": p.title,
                    "claimForm": p.claim_form,
                    "extendedResourceForm": p.extended,
                }
                for p in self.patterns
            ],
            "warnings": self.warnings,
        }


def _selector(plan: ClassPlan, driver: str) -> str:
    attr = f'device.attributes["{driver}"]'
    types = " || ".join(f'{attr}.type == "{t}"' for t in plan.types)
    if len(plan.types) > 1:
        types = f"({types})"
    expression = f'device.driver == "{driver}" && {types}'
    if plan.profile is not None:
        expression += f' && {attr}.profile == "{plan.profile}"'
    return expression


def device_class(plan: ClassPlan, driver: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"selectors": [{"cel": {"expression": _selector(plan, driver)}}]}
    if plan.strategy is not None:
        spec["config"] = [
            {
                "opaque": {
                    "driver": driver,
                    "parameters": {
                        "apiVersion": API_VERSION,
                        "kind": KIND,
                        "sharing": {"strategy": plan.strategy},
                    },
                }
            }
        ]
    spec["extendedResourceName"] = plan.extended_resource_name
    return {
        "apiVersion": RESOURCE_API,
        "kind": "DeviceClass",
        "metadata": {"name": plan.name},
        "spec": spec,
    }


def _pod(name: str, resources: dict[str, Any], claim: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"restartPolicy": "Never"}
    if claim is not None:
        spec["resourceClaims"] = [{"name": "gpu", "resourceClaimTemplateName": claim}]
    spec["containers"] = [
        {"name": "main", "image": _IMAGE, "command": _COMMAND, "resources": resources}
    ]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def _template(name: str, request: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": RESOURCE_API,
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": name},
        "spec": {"spec": {"devices": {"requests": [{"name": "gpu", "exactly": request}]}}},
    }


def _pattern(
    key: str, title: str, request: dict[str, Any], extended_name: str | None, count: int
) -> Pattern:
    claim_form = [_template(key, request), _pod(f"{key}-claim", {"claims": [{"name": "gpu"}]}, key)]
    extended = None
    if extended_name is not None:
        extended = _pod(f"{key}-extended", {"limits": {extended_name: count}})
    return Pattern(key, title, claim_form, extended)


def _share_capacity(plan: ClassPlan, gpu_memory: Quantity | None) -> dict[str, str]:
    replicas = plan.replicas or 1
    compute = 100 // replicas
    if compute < 1:
        raise InvalidInputError(
            f"{plan.origin}: {replicas} replicas: a share of a GPU is at least 1% of its "
            "compute; use at most 100 replicas"
        )
    if gpu_memory is None:
        raise InvalidInputError(
            f"{plan.origin}: a share of a GPU must ask for its part of the memory, or it "
            "takes all of it and no second share fits: pass --gpu-memory with the memory "
            "of one GPU of these nodes (e.g. 80Gi; nvidia-smi --query-gpu=memory.total)",
            obj="--gpu-memory",
        )
    gib = int(gpu_memory.value) // replicas // _GIB
    if gib < 1:
        raise InvalidInputError(
            f"{plan.origin}: {gpu_memory} split {replicas} ways is under 1Gi, the smallest "
            "share of memory a shared GPU grants",
            obj="--gpu-memory",
        )
    return {SHARED_COMPUTE_CAPACITY: str(compute), SHARED_MEMORY_CAPACITY: f"{gib}Gi"}


def _patterns(plan: MigrationPlan, gpu_memory: Quantity | None) -> list[Pattern]:
    driver = plan.driver_name
    patterns: list[Pattern] = []
    whole = next((c for c in plan.classes if c.kind == "gpu"), None)
    if whole is not None:
        what = "whole GPU" if whole.types == ("gpu",) else "GPU or MIG device"
        name = whole.extended_resource_name
        for count, key, title in ((1, "one-gpu", f"one {what}"), (2, "two-gpus", f"two {what}s")):
            request: dict[str, Any] = {"deviceClassName": whole.name}
            if count > 1:
                request |= {"allocationMode": "ExactCount", "count": count}
            patterns.append(_pattern(key, title, request, name, count))
    else:
        # The advertised nvidia.com/gpu was a share: whole GPUs through the chart's class,
        # whose implicit extended resource name is the only one left for them.
        for count, key, title in (
            (1, "one-gpu", "one whole GPU"),
            (2, "two-gpus", "two whole GPUs"),
        ):
            request = {"deviceClassName": driver}
            if count > 1:
                request |= {"allocationMode": "ExactCount", "count": count}
            note = f"{title} (the chart's class: nvidia.com/gpu meant a share)"
            patterns.append(_pattern(key, note, request, IMPLICIT_PREFIX + driver, count))
    for mig in (c for c in plan.classes if c.kind == "mig"):
        key = "mig-" + (mig.profile or "").replace(".", "-")
        title = f"one MIG device {mig.profile}" + (", time-sliced" if mig.strategy else "")
        request = {"deviceClassName": mig.name}
        patterns.append(_pattern(key, title, request, mig.extended_resource_name, 1))
    for share in (c for c in plan.classes if c.kind == "share"):
        key = "gpu-share"
        title = f"one {share.strategy} share (1/{share.replicas}) of a GPU"
        request = {
            "deviceClassName": share.name,
            "capacity": {"requests": _share_capacity(share, gpu_memory)},
        }
        patterns.append(_pattern(key, title, request, share.extended_resource_name, 1))
    return patterns


def build_output(plan: MigrationPlan, *, gpu_memory: Quantity | None = None) -> MigrationOutput:
    """The values, classes and workload patterns of ``plan``."""
    return MigrationOutput(
        values=plan.values,
        classes=[device_class(c, plan.driver_name) for c in plan.classes if not c.chart_key],
        chart_classes=[device_class(c, plan.driver_name) for c in plan.classes if c.chart_key],
        patterns=_patterns(plan, gpu_memory),
        warnings=list(plan.warnings),
    )
