"""The NVIDIA k8s-device-plugin's configuration file (``version: v1``), read strictly.

The format is the device plugin's ``api/config/v1`` (the file its ``--config-file`` reads
and its Helm chart's ConfigMap holds one per key)::

    version: v1
    flags:
      migStrategy: none | single | mixed
      failOnInitError: <bool>
      nvidiaDriverRoot: /run/nvidia/driver
      plugin: {passDeviceSpecs: <bool>, deviceListStrategy: envvar, deviceIDStrategy: uuid}
      gfd: {oneshot: <bool>, sleepInterval: 60s, ...}
    resources: {gpus: [{pattern: "*", name: gpu}], mig: [...]}
    sharing:
      timeSlicing:                       # or mps: (the same shape); the two exclude each other
        renameByDefault: <bool>          # advertise <name>.shared instead of <name>
        failRequestsGreaterThanOne: <bool>
        resources:
        - {name: nvidia.com/gpu, replicas: 4, devices: all, rename: ...}
    imex: {channelIDs: [0], required: <bool>}

The device plugin itself ignores unknown keys; here an unknown key, a value of the wrong
type and a value outside the allowed set are each a :class:`~api.errors.FieldError` with
the key's path, all of one file reported together in one
:class:`~api.errors.InvalidInputError` naming the file: a typo must not change the
migration silently.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from api.errors import FieldError, InvalidInputError
from api.validation import unsupported_value

__all__ = [
    "DEVICE_ID_STRATEGIES",
    "DEVICE_LIST_STRATEGIES",
    "MIG_STRATEGIES",
    "DevicePluginConfig",
    "ReplicatedResource",
    "SharingGroup",
    "decode_config",
]

VERSION: Final = "v1"
MIG_STRATEGIES: Final = ("none", "single", "mixed")
DEVICE_LIST_STRATEGIES: Final = ("envvar", "volume-mounts", "cdi-annotations", "cdi-cri")
DEVICE_ID_STRATEGIES: Final = ("uuid", "index")
DISCOVERY_STRATEGIES: Final = ("auto", "nvml", "tegra")
#: The device plugin prefixes a resource name without a domain with this one.
RESOURCE_PREFIX: Final = "nvidia.com"
SHARED_SUFFIX: Final = ".shared"
#: The longest resource name the device plugin accepts.
MAX_RESOURCE_NAME_LENGTH: Final = 63

_NAME_PART = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_GO_DURATION = re.compile(r"^([0-9]+(\.[0-9]*)?(ns|us|µs|ms|s|m|h))+$")
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_DEVICE_REF = re.compile(
    rf"^(\d+|\d+:\d+|GPU-{_UUID}|MIG-{_UUID}|MIG-GPU-{_UUID}/\d+/\d+)$",
)

Check = Callable[[Any, str, list[FieldError]], None]


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return f'the string "{value}"'
    if isinstance(value, list):
        return "a list"
    return "an object"


def _boolean(value: Any, path: str, errors: list[FieldError]) -> None:
    if not isinstance(value, bool):
        errors.append(FieldError(path, f"must be true or false, not {_type_name(value)}"))


def _string(value: Any, path: str, errors: list[FieldError]) -> None:
    if not isinstance(value, str):
        errors.append(FieldError(path, f"must be a string, not {_type_name(value)}"))


def _integer(value: Any, path: str, errors: list[FieldError]) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        errors.append(FieldError(path, f"must be an integer, not {_type_name(value)}"))


def _one_of(allowed: Sequence[str]) -> Check:
    def check(value: Any, path: str, errors: list[FieldError]) -> None:
        if not isinstance(value, str):
            _string(value, path, errors)
        elif value not in allowed:
            errors.append(FieldError(path, unsupported_value(value, allowed)))

    return check


def _string_or_list_of(allowed: Sequence[str]) -> Check:
    one = _one_of(allowed)

    def check(value: Any, path: str, errors: list[FieldError]) -> None:
        if isinstance(value, list):
            for index, item in enumerate(value):
                one(item, f"{path}[{index}]", errors)
        else:
            one(value, path, errors)

    return check


def _duration(value: Any, path: str, errors: list[FieldError]) -> None:
    if isinstance(value, bool) or not (
        isinstance(value, int | float) or (isinstance(value, str) and _GO_DURATION.match(value))
    ):
        errors.append(
            FieldError(path, f"must be a duration such as 60s or 5m, not {_type_name(value)}")
        )


def _devices(value: Any, path: str, errors: list[FieldError]) -> None:
    if value == "all":
        return
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            errors.append(FieldError(path, f"a count of devices must be above 0, not {value}"))
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            text = str(item) if isinstance(item, int) and not isinstance(item, bool) else item
            if not (isinstance(text, str) and _DEVICE_REF.match(text)):
                errors.append(
                    FieldError(
                        f"{path}[{index}]",
                        f"must be a GPU index (0), a MIG index (0:1) or a GPU or MIG UUID, "
                        f"not {_type_name(item)}",
                    )
                )
        return
    errors.append(
        FieldError(path, f'must be "all", a count or a list of devices, not {_type_name(value)}')
    )


def _object(fields: Mapping[str, Check]) -> Check:
    def check(value: Any, path: str, errors: list[FieldError]) -> None:
        if not isinstance(value, dict):
            errors.append(FieldError(path, f"must be an object, not {_type_name(value)}"))
            return
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if key not in fields:
                close = difflib.get_close_matches(str(key), list(fields), n=1)
                hint = f'did you mean "{close[0]}"? ' if close else ""
                errors.append(
                    FieldError(
                        where,
                        f'unknown key "{key}": {hint}the device plugin\'s v1 config knows '
                        + ", ".join(fields)
                        + " here (a misspelt key is ignored by the device plugin; remove or "
                        "correct it)",
                    )
                )
            elif item is not None:
                fields[key](item, where, errors)

    return check


def _list_of(item_check: Check) -> Check:
    def check(value: Any, path: str, errors: list[FieldError]) -> None:
        if not isinstance(value, list):
            errors.append(FieldError(path, f"must be a list, not {_type_name(value)}"))
            return
        for index, item in enumerate(value):
            item_check(item, f"{path}[{index}]", errors)

    return check


_PLUGIN_FLAGS: Final = {
    "passDeviceSpecs": _boolean,
    "deviceListStrategy": _string_or_list_of(DEVICE_LIST_STRATEGIES),
    "deviceIDStrategy": _one_of(DEVICE_ID_STRATEGIES),
    "cdiAnnotationPrefix": _string,
    "nvidiaCTKPath": _string,
    "containerDriverRoot": _string,
}
_GFD_FLAGS: Final = {
    "oneshot": _boolean,
    "noTimestamp": _boolean,
    "sleepInterval": _duration,
    "outputFile": _string,
    "machineTypeFile": _string,
}
_FLAGS: Final = {
    "migStrategy": _one_of(MIG_STRATEGIES),
    "failOnInitError": _boolean,
    "restartOnDeviceUnhealthy": _boolean,
    "mpsRoot": _string,
    "nvidiaDriverRoot": _string,
    "nvidiaDevRoot": _string,
    "gdrcopyEnabled": _boolean,
    "gdsEnabled": _boolean,
    "mofedEnabled": _boolean,
    "useNodeFeatureAPI": _boolean,
    "deviceDiscoveryStrategy": _one_of(DISCOVERY_STRATEGIES),
    "plugin": _object(_PLUGIN_FLAGS),
    "gfd": _object(_GFD_FLAGS),
}
_RESOURCE: Final = _object({"pattern": _string, "name": _string})
_REPLICATED: Final = _object(
    {"name": _string, "rename": _string, "devices": _devices, "replicas": _integer}
)
_SHARING_GROUP: Final = _object(
    {
        "renameByDefault": _boolean,
        "failRequestsGreaterThanOne": _boolean,
        "resources": _list_of(_REPLICATED),
    }
)
_CONFIG: Final = _object(
    {
        "version": _string,
        "flags": _object(_FLAGS),
        "resources": _object({"gpus": _list_of(_RESOURCE), "mig": _list_of(_RESOURCE)}),
        "sharing": _object({"timeSlicing": _SHARING_GROUP, "mps": _SHARING_GROUP}),
        "imex": _object({"channelIDs": _list_of(_integer), "required": _boolean}),
    }
)


@dataclass(frozen=True)
class ReplicatedResource:
    """One entry of ``sharing.<group>.resources``, its name with the domain filled in."""

    path: str
    name: str
    rename: str | None
    devices: object
    replicas: int

    def advertised(self, rename_by_default: bool) -> str:
        """The name the device plugin advertised: it honours only the default rename."""
        return self.name + SHARED_SUFFIX if rename_by_default else self.name


@dataclass(frozen=True)
class SharingGroup:
    """``sharing.timeSlicing`` or ``sharing.mps``."""

    key: str
    strategy: str
    rename_by_default: bool
    fail_requests_greater_than_one: bool
    resources: tuple[ReplicatedResource, ...]


@dataclass(frozen=True)
class DevicePluginConfig:
    """One named config, checked: ``data`` is the decoded file, ``sharing`` its active group."""

    name: str
    source: str
    data: Mapping[str, Any]
    mig_strategy: str
    sharing: SharingGroup | None

    def flag(self, *path: str) -> Any:
        """The value at ``flags.<path>``, None when unset."""
        node: Any = self.data.get("flags") or {}
        for key in path:
            if not isinstance(node, dict):
                return None
            node = node.get(key)
        return node


def full_resource_name(name: str) -> str:
    """The device plugin's rule: a name without a domain gets ``nvidia.com/``."""
    return name if "/" in name else f"{RESOURCE_PREFIX}/{name}"


def _resource_name_errors(name: str, path: str) -> list[FieldError]:
    full = full_resource_name(name)
    part = full.split("/", 1)[1]
    if len(full) > MAX_RESOURCE_NAME_LENGTH:
        return [FieldError(path, f"{full}: at most {MAX_RESOURCE_NAME_LENGTH} characters")]
    if not _NAME_PART.match(part):
        return [
            FieldError(
                path,
                f'"{full}": the part after the domain must be lower-case letters, digits, '
                "'-' and '.', starting and ending with a letter or digit",
            )
        ]
    return []


def _sharing_group(
    data: Mapping[str, Any], key: str, strategy: str, errors: list[FieldError]
) -> SharingGroup | None:
    group = (data.get("sharing") or {}).get(key)
    if group is None:
        return None
    path = f"sharing.{key}"
    raw = group.get("resources") or []
    if not raw:
        errors.append(
            FieldError(
                f"{path}.resources",
                "no resources specified: list the resources to share (name and replicas) "
                f"or remove {path}",
            )
        )
    resources: list[ReplicatedResource] = []
    seen: dict[str, str] = {}
    for index, item in enumerate(raw):
        where = f"{path}.resources[{index}]"
        name, replicas = item.get("name"), item.get("replicas")
        if name is None:
            errors.append(FieldError(f"{where}.name", "required: the resource to share"))
            continue
        if replicas is None:
            errors.append(FieldError(f"{where}.replicas", "required: how many shares per GPU"))
            continue
        errors.extend(_resource_name_errors(name, f"{where}.name"))
        if replicas < 1:
            errors.append(FieldError(f"{where}.replicas", f"must be 1 or more, not {replicas}"))
        full = full_resource_name(name)
        if full in seen:
            errors.append(
                FieldError(f"{where}.name", f"{full} is shared twice (first {seen[full]})")
            )
        seen[full] = where
        rename = item.get("rename")
        resources.append(
            ReplicatedResource(
                path=where,
                name=full,
                rename=full_resource_name(rename) if rename else None,
                devices=item.get("devices", "all"),
                replicas=replicas,
            )
        )
    return SharingGroup(
        key=key,
        strategy=strategy,
        rename_by_default=bool(group.get("renameByDefault")),
        # The device plugin forces it on for MPS.
        fail_requests_greater_than_one=key == "mps"
        or bool(group.get("failRequestsGreaterThanOne")),
        resources=tuple(resources),
    )


def decode_config(data: Any, *, name: str, source: str) -> DevicePluginConfig:
    """Check one device-plugin config; raise InvalidInputError listing every bad key."""
    errors: list[FieldError] = []
    if not isinstance(data, dict):
        raise InvalidInputError(
            f"a device-plugin config must be an object with version: v1, not {_type_name(data)}",
            source=source,
        )
    _CONFIG(data, "", errors)
    if errors:
        raise InvalidInputError(source=source, obj=f"config {name}", errors=errors)
    version = data.get("version") or VERSION
    if version != VERSION:
        errors.append(FieldError("version", unsupported_value(version, [VERSION])))
    groups = [
        _sharing_group(data, "timeSlicing", "TimeSlicing", errors),
        _sharing_group(data, "mps", "MPS", errors),
    ]
    active = [g for g in groups if g is not None]
    if len(active) > 1:
        errors.append(
            FieldError(
                "sharing",
                "timeSlicing and mps exclude each other (the device plugin applies one "
                "sharing method to a node): keep one of them",
            )
        )
    if errors:
        raise InvalidInputError(source=source, obj=f"config {name}", errors=errors)
    return DevicePluginConfig(
        name=name,
        source=source,
        data=data,
        mig_strategy=(data.get("flags") or {}).get("migStrategy") or "none",
        sharing=active[0] if active else None,
    )
