"""From device-plugin configs to this driver: chart values and DeviceClasses, with warnings.

What maps to what (docs/migration.md has the table):

- ``migStrategy: none``: whole GPUs; ``nvidia.com/gpu`` maps to a class of ``type == "gpu"``
  devices. ``single``: ``nvidia.com/gpu`` was a whole GPU or, on a MIG node, a MIG device:
  the class takes either (only the profile of ``nvidia.com/mig.config=all-<profile>`` or
  ``--mig-profile`` when given). ``mixed``: ``nvidia.com/gpu`` for whole GPUs and one
  class per MIG profile for ``nvidia.com/mig-<profile>`` (the profiles come from
  ``--mig-profile``, the ``nvidia.com/mig.config`` label and the shared resources' names).
  MIG devices stay the static ones the MIG manager made (``kubeletPlugin.partitionable:
  false``): what the device plugin saw.
- ``sharing.timeSlicing`` / ``sharing.mps`` of ``nvidia.com/gpu``: shared GPUs
  (``kubeletPlugin.sharedGpus``); the class of the advertised name (``nvidia.com/gpu``, or
  ``nvidia.com/gpu.shared`` with ``renameByDefault``) carries the GpuConfig strategy, and a
  claim asks for 1/replicas of the compute and memory (:mod:`.workloads`).
- Time slicing of a MIG profile: the profile's class carries the TimeSlicing GpuConfig.

Every class maps the device plugin's advertised name (``spec.extendedResourceName``), so a
pod that asks for it runs unchanged. Where the chart has the class (whole GPUs
``<driver>``, ``timeslicing.<driver>``, ``mps.<driver>``) the values give it the name
(``deviceClasses.extendedResourceNames``); the other classes (per MIG profile, single's GPU
or MIG device) the migration makes, named after the name they answer to
(``nvidia.com/mig-1g.10gb`` -> ``nvidia-mig-1g-10gb.<driver>``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from api.errors import FieldError, InvalidInputError
from dra_driver.migration.config import RESOURCE_PREFIX, DevicePluginConfig, SharingGroup
from dra_driver.migration.sources import CONFIG_LABEL, MIG_CONFIG_LABEL

__all__ = ["ClassPlan", "MigrationPlan", "plan_migration"]

GPU_RESOURCE: Final = f"{RESOURCE_PREFIX}/gpu"
_MIG_RESOURCE = re.compile(rf"^{re.escape(RESOURCE_PREFIX)}/mig-(?P<profile>[0-9]+g\.[0-9]+gb)$")
_PROFILE = re.compile(r"^[0-9]+g\.[0-9]+gb$")
_ALL_PROFILE_LABEL = re.compile(r"^all-(?P<profile>[0-9]+g\.[0-9]+gb)$")
_CTK_FLAGS: Final = ("cdiAnnotationPrefix", "nvidiaCTKPath", "containerDriverRoot")
_UNSUPPORTED_FLAGS: Final = {
    "gdsEnabled": "GPUDirect Storage (nvidia-fs) devices",
    "mofedEnabled": "the MOFED (InfiniBand) devices",
    "gdrcopyEnabled": "the GDRCopy device",
}


@dataclass(frozen=True)
class ClassPlan:
    """One DeviceClass to make: ``kind`` gpu, mig or share (a fraction of a GPU)."""

    name: str
    kind: str
    extended_resource_name: str
    types: tuple[str, ...]
    profile: str | None = None
    strategy: str | None = None
    replicas: int | None = None
    #: The chart's class this is (deviceClasses.extendedResourceNames.<key>), or None when
    #: the migration makes the class itself.
    chart_key: str | None = None
    origin: str = field(default="", compare=False)


@dataclass
class MigrationPlan:
    """What the migration produces, before it is written out."""

    driver_name: str
    values: dict[str, Any] = field(default_factory=dict)
    classes: list[ClassPlan] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def class_for(self, resource: str) -> ClassPlan | None:
        return next((c for c in self.classes if c.extended_resource_name == resource), None)


def class_name(resource: str, driver_name: str) -> str:
    """``nvidia.com/mig-1g.10gb`` -> ``nvidia-mig-1g-10gb.<driver>``."""
    domain, _, part = resource.partition("/")
    return f"{domain.split('.')[0]}-{part.replace('.', '-')}.{driver_name}"


def _config_errors(config: DevicePluginConfig) -> list[FieldError]:
    errors: list[FieldError] = []
    for key, what in _UNSUPPORTED_FLAGS.items():
        if config.flag(key) is True:
            errors.append(
                FieldError(
                    f"flags.{key}",
                    f"unsupported: this driver does not inject {what} into containers; set "
                    "it false, or keep the pods that need it on the device plugin",
                )
            )
    if config.flag("deviceDiscoveryStrategy") == "tegra":
        errors.append(
            FieldError(
                "flags.deviceDiscoveryStrategy",
                'unsupported: "tegra": this driver finds GPUs through NVML only; '
                "keep Tegra nodes on the device plugin",
            )
        )
    channels = (config.data.get("imex") or {}).get("channelIDs") or []
    if channels:
        errors.append(
            FieldError(
                "imex.channelIDs",
                "unsupported: this driver does not inject IMEX channels; remove it, or keep "
                "multi-node NVLink workloads on the device plugin",
            )
        )
    return errors


def _sharing_errors(config: DevicePluginConfig, group: SharingGroup) -> list[FieldError]:
    errors: list[FieldError] = []
    for resource in group.resources:
        mig = _MIG_RESOURCE.match(resource.name)
        where = f"{resource.path}.name"
        if resource.name == GPU_RESOURCE:
            continue
        if group.key == "mps":
            errors.append(
                FieldError(
                    where,
                    f"{resource.name}: MPS shares whole GPUs only ({GPU_RESOURCE}), "
                    "as in the device plugin",
                )
            )
        elif mig is None:
            errors.append(
                FieldError(
                    where,
                    f"{resource.name}: only {GPU_RESOURCE} and, with migStrategy mixed, "
                    f"{RESOURCE_PREFIX}/mig-<profile> can be shared",
                )
            )
        elif config.mig_strategy != "mixed":
            errors.append(
                FieldError(
                    where,
                    f"{resource.name}: migStrategy {config.mig_strategy} advertises no MIG "
                    "profile by name; set migStrategy: mixed or remove this entry",
                )
            )
    return errors


def _warn_flags(config: DevicePluginConfig, warn: list[str]) -> None:
    at = f"{config.source}: config {config.name}"
    if config.flag("nvidiaDriverRoot") is None:
        warn.append(
            f"{at}: flags.nvidiaDriverRoot unset: the device plugin's default / becomes "
            "kubeletPlugin.driverRoot; if the GPU Operator ran the device plugin it set "
            "NVIDIA_DRIVER_ROOT (usually /run/nvidia/driver): set kubeletPlugin.driverRoot to it"
        )
    if config.flag("failOnInitError") is True:
        warn.append(
            f"{at}: flags.failOnInitError carries over partly: the kubelet plugin does not "
            "exit when NVML fails; it logs, retries and publishes no devices meanwhile"
        )
    if config.flag("restartOnDeviceUnhealthy") is True:
        warn.append(
            f"{at}: flags.restartOnDeviceUnhealthy carries over partly: an unhealthy GPU gets "
            "a device taint (kubeletPlugin.healthPolicy); the plugin does not restart"
        )
    dev_root = config.flag("nvidiaDevRoot")
    if dev_root is not None and dev_root != config.flag("nvidiaDriverRoot"):
        warn.append(
            f"{at}: flags.nvidiaDevRoot has no counterpart: the plugin finds the device "
            "nodes through the driver root (kubeletPlugin.driverRoot)"
        )
    if config.flag("mpsRoot") is not None:
        warn.append(
            f"{at}: flags.mpsRoot has no counterpart: the kubelet plugin runs the MPS control "
            "daemons itself, one per shared GPU, under its plugin directory "
            "(<plugins dir>/<driver>/mps)"
        )
    if config.flag("gfd") or config.flag("useNodeFeatureAPI") is True:
        warn.append(
            f"{at}: flags.gfd / useNodeFeatureAPI do not carry over: this driver publishes "
            "device attributes in ResourceSlices, not node labels; keep GPU Feature Discovery "
            "running if workloads select nodes by its labels"
        )
    if config.flag("plugin", "deviceIDStrategy") == "index":
        warn.append(
            f"{at}: flags.plugin.deviceIDStrategy index carries over partly: "
            "NVIDIA_VISIBLE_DEVICES names GPUs by UUID"
        )
    unused = [k for k in _CTK_FLAGS if config.flag("plugin", k) is not None]
    if unused:
        warn.append(
            f"{at}: flags.plugin.{', '.join(unused)} not needed: the kubelet hands the "
            "container runtime CDI device names (for the ldcache hook set "
            "kubeletPlugin.hookPath to nvidia-cdi-hook)"
        )
    resources = config.data.get("resources") or {}
    if resources.get("gpus") or resources.get("mig"):
        warn.append(
            f"{at}: resources is ignored by the device plugin (it logs that customizing it "
            "is not supported), so no pod used its names; not carried over"
        )


def _profiles(
    configs: Sequence[DevicePluginConfig], labels: Mapping[str, str], extra: Sequence[str]
) -> list[str]:
    profiles: list[str] = []
    for profile in extra:
        if not _PROFILE.match(profile):
            raise InvalidInputError(
                f'"{profile}" is not a MIG profile such as 1g.10gb or 3g.40gb', obj="--mig-profile"
            )
        profiles.append(profile)
    label = labels.get(MIG_CONFIG_LABEL)
    if label is not None:
        match = _ALL_PROFILE_LABEL.match(label)
        if match:
            profiles.append(match["profile"])
    for config in configs:
        for resource in config.sharing.resources if config.sharing else ():
            mig = _MIG_RESOURCE.match(resource.name)
            if mig:
                profiles.append(mig["profile"])
    return list(dict.fromkeys(profiles))


def _share_class(
    config: DevicePluginConfig, group: SharingGroup, driver: str, warn: list[str]
) -> tuple[ClassPlan, str] | None:
    """The class of the shared ``nvidia.com/gpu`` and the name it answers to."""
    at = f"{config.source}: config {config.name}"
    for resource in group.resources:
        if resource.rename is not None and resource.rename != resource.advertised(
            group.rename_by_default
        ):
            warn.append(
                f"{at}: {resource.path}.rename is ignored by the device plugin (only the "
                "default .shared rename applies), so pods used "
                f"{resource.advertised(group.rename_by_default)}: that name carries over"
            )
        if resource.devices != "all":
            warn.append(
                f"{at}: {resource.path}.devices is ignored by the device plugin (every GPU "
                "is shared); not carried over"
            )
    shared = next((r for r in group.resources if r.name == GPU_RESOURCE), None)
    if shared is None:
        return None
    name = shared.advertised(group.rename_by_default)
    if group.strategy == "MPS":
        how = (
            "the kubelet plugin runs one MPS control daemon per shared GPU, holding the "
            "largest share's limits; each share's own are CUDA_MPS_* variables in its "
            "container, advisory below that (docs/sharing.md)"
        )
    else:
        how = (
            "each share is time-sliced, as with the device plugin: no MPS daemon, and a "
            "share's compute and memory are not enforced (docs/sharing.md)"
        )
    warn.append(
        f"{at}: {shared.path} ({name}, {shared.replicas} replicas) carries over partly: "
        f"the claim form asks for 1/{shared.replicas} of a shared GPU's compute and memory, "
        f"so {shared.replicas} claims share one GPU ({how}); the extended-resource form "
        f"({name}: 1) gets a whole GPU each, since a request the scheduler makes names no "
        "capacity"
        + (
            f"; a pod asking {name}: 2 gets two GPUs, it is not refused"
            if group.fail_requests_greater_than_one
            else ""
        )
    )
    return (
        ClassPlan(
            name=f"{group.strategy.lower()}.{driver}",
            kind="share",
            extended_resource_name=name,
            types=("gpu",),
            strategy=group.strategy,
            chart_key=group.strategy.lower(),
            replicas=shared.replicas,
            origin=f"{config.name}: {shared.path}",
        ),
        name,
    )


def _classes(
    config: DevicePluginConfig, profiles: Sequence[str], driver: str, warn: list[str]
) -> list[ClassPlan]:
    at = f"{config.source}: config {config.name}"
    group = config.sharing
    classes: list[ClassPlan] = []
    taken: set[str] = set()
    if group is not None:
        share = _share_class(config, group, driver, warn)
        if share is not None:
            classes.append(share[0])
            taken.add(share[1])
            if config.mig_strategy == "single":
                warn.append(
                    f"{at}: with migStrategy single the device plugin shared MIG devices "
                    "too; this driver shares whole GPUs only: MIG devices go whole"
                )
    if GPU_RESOURCE not in taken:
        types: tuple[str, ...] = ("gpu",)
        profile = None
        if config.mig_strategy == "single":
            if len(profiles) > 1:
                raise InvalidInputError(
                    f"migStrategy single has one MIG profile per node, not {', '.join(profiles)}",
                    source=config.source,
                    obj=f"config {config.name}",
                )
            profile = profiles[0] if profiles else None
            types = ("mig",) if profile else ("gpu", "mig")
        classes.append(
            ClassPlan(
                name=class_name(GPU_RESOURCE, driver) if profile or len(types) > 1 else driver,
                kind="gpu",
                extended_resource_name=GPU_RESOURCE,
                types=types,
                chart_key=None if profile or len(types) > 1 else "gpu",
                profile=profile,
                origin=f"{config.name}: flags.migStrategy {config.mig_strategy}",
            )
        )
    if config.mig_strategy != "mixed":
        return classes
    if not profiles:
        warn.append(
            f"{at}: migStrategy mixed: no MIG profile known, so no class for "
            f"{RESOURCE_PREFIX}/mig-<profile>; pass --mig-profile (e.g. 1g.10gb, repeatable) "
            f"or --node-label {MIG_CONFIG_LABEL}=all-<profile>"
        )
    sliced = {
        r.name: r
        for r in (group.resources if group is not None and group.key == "timeSlicing" else ())
    }
    for profile in profiles:
        base = f"{RESOURCE_PREFIX}/mig-{profile}"
        entry = sliced.get(base)
        name = entry.advertised(group.rename_by_default) if entry and group else base
        if entry is not None:
            warn.append(
                f"{at}: {entry.path} ({name}, {entry.replicas} replicas) carries over partly: "
                "a MIG device cannot be split by capacity, so each claim gets a whole one, "
                "time-sliced if pods share the claim"
            )
        classes.append(
            ClassPlan(
                name=class_name(name, driver),
                kind="mig",
                extended_resource_name=name,
                types=("mig",),
                profile=profile,
                strategy="TimeSlicing" if entry is not None else None,
                replicas=entry.replicas if entry is not None else None,
                origin=f"{config.name}: MIG profile {profile}",
            )
        )
    return classes


def _merge(plan: MigrationPlan, new: ClassPlan) -> None:
    old = next(
        (
            c
            for c in plan.classes
            if new.name == c.name or new.extended_resource_name == c.extended_resource_name
        ),
        None,
    )
    if old is None:
        plan.classes.append(new)
    elif old != new:
        raise InvalidInputError(
            f"{new.extended_resource_name} means one thing in config {old.origin} and "
            f"another in config {new.origin}; a DeviceClass maps a name for the whole "
            "cluster: give the shared resource its own name (renameByDefault: true) first, "
            f"or migrate one config (--node-label {CONFIG_LABEL}=NAME)"
        )


def plan_migration(
    configs: Sequence[DevicePluginConfig],
    *,
    driver_name: str,
    labels: Mapping[str, str] | None = None,
    mig_profiles: Sequence[str] = (),
) -> MigrationPlan:
    """The chart values, classes and warnings for ``configs`` (all of them at once)."""
    labels = labels or {}
    plan = MigrationPlan(driver_name=driver_name)
    for key in labels:
        if key not in (MIG_CONFIG_LABEL, CONFIG_LABEL):
            plan.warnings.append(f"--node-label {key}: has no bearing on the migration; ignored")
    mig_label = labels.get(MIG_CONFIG_LABEL)
    if mig_label not in (None, "all-disabled") and not _ALL_PROFILE_LABEL.match(mig_label):
        plan.warnings.append(
            f"--node-label {MIG_CONFIG_LABEL}={mig_label}: names no single profile "
            "(all-<profile>); pass the node's profiles with --mig-profile"
        )
    profiles = _profiles(configs, labels, mig_profiles)
    if profiles and all(c.mig_strategy == "none" for c in configs):
        plan.warnings.append(
            f"MIG profiles {', '.join(profiles)} are ignored: migStrategy none advertises no "
            "MIG device (set migStrategy single or mixed in the config if the nodes use MIG)"
        )
    roots: dict[str, str] = {}
    shared = mig = False
    for config in configs:
        errors = _config_errors(config)
        if config.sharing is not None:
            errors.extend(_sharing_errors(config, config.sharing))
        if errors:
            raise InvalidInputError(
                source=config.source, obj=f"config {config.name}", errors=errors
            )
        _warn_flags(config, plan.warnings)
        roots.setdefault(str(config.flag("nvidiaDriverRoot") or "/"), config.name)
        for new in _classes(config, profiles, driver_name, plan.warnings):
            _merge(plan, replace(new))
            shared = shared or new.kind == "share"
        mig = mig or config.mig_strategy != "none"
    if len(roots) > 1:
        raise InvalidInputError(
            "the configs name different driver roots ("
            + ", ".join(f"{root} in {name}" for root, name in roots.items())
            + "); the chart has one kubeletPlugin.driverRoot: migrate one config at a time"
        )
    plan.values = {
        "driverName": driver_name,
        "kubeletPlugin": {
            "gpuBackend": "nvml",
            "driverRoot": next(iter(roots)),
            "partitionable": False,
            "sharedGpus": shared,
            "nodeSelector": {f"{driver_name}/kubelet-plugin": "true"},
        },
        "deviceClasses": {
            "create": True,
            "sharing": shared,
            "mig": mig,
            # The chart's classes answer to the names whose meaning they have; the others
            # to none (one name maps one class), the migration's own classes to theirs.
            "extendedResourceNames": {
                key: next(
                    (c.extended_resource_name for c in plan.classes if c.chart_key == key), ""
                )
                for key in ("gpu", "timeslicing", "mps", "mig")
            },
        },
    }
    return plan
