"""The CDI spec model: names, the JSON schema as frozen models, the cdiVersion a spec needs.

Names follow the CDI parser's rules (spec/cdi.md §2): a kind is
``<vendor>/<class>``, a device ID ``<kind>=<name>``. The models carry CDI's JSON
field names and reject unknown fields, as the Go loaders do.
"""

from __future__ import annotations

import json
import re
from typing import Final

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic.alias_generators import to_camel

#: The class part of the kind (``<driver>/gpu``).
CDI_CLASS: Final = "gpu"

#: The highest cdiVersion this project ever writes: containerd 1.7 rejects 1.0.0 and later.
MAX_CDI_VERSION: Final = "0.8.0"

# Name rules of the CDI parser (spec/cdi.md §2).
_VENDOR_RE: Final = re.compile(r"^[A-Za-z](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?$")
_CLASS_RE: Final = _VENDOR_RE
_DEVICE_NAME_RE: Final = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.:-]*[A-Za-z0-9])?$")
_ENV_NAME_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# --- Names ----------------------------------------------------------------------------


def is_valid_cdi_vendor(vendor: str) -> bool:
    """Whether ``vendor`` is a valid CDI vendor (the part before ``/`` of a kind)."""
    return _VENDOR_RE.match(vendor) is not None


def is_valid_cdi_class(cls: str) -> bool:
    """Whether ``cls`` is a valid CDI class (the part after ``/`` of a kind)."""
    return _CLASS_RE.match(cls) is not None and len(cls) <= 63


def is_valid_cdi_device_name(name: str) -> bool:
    """Whether ``name`` is a valid CDI device name (a leading digit needs cdiVersion 0.5.0)."""
    return _DEVICE_NAME_RE.match(name) is not None


def cdi_kind(driver_name: str) -> str:
    """The spec kind for a driver: ``gpu.dra-driver.io/gpu``.

    Raises ValueError when the driver name is not a valid CDI vendor; driver
    names are DNS subdomains, which always are.
    """
    if not is_valid_cdi_vendor(driver_name):
        raise ValueError(f"driver name {driver_name!r} is not a valid CDI vendor name")
    return f"{driver_name}/{CDI_CLASS}"


def cdi_device_name(claim_uid: str, device: str, share_id: str | None = None) -> str:
    """The CDI device name of one allocated device: ``<claim uid>-<device>``.

    The claim UID makes names unique per claim, so a runtime's CDI cache never
    serves a stale entry for a reused device. A device allocated more than once
    within a claim (consumable capacity) is told apart by its share ID. Raises
    ValueError when the result is not a valid CDI device name (a device name
    from a ResourceSlice is a DNS label, so it never is invalid).
    """
    name = f"{claim_uid}-{device}" if share_id is None else f"{claim_uid}-{device}-{share_id}"
    if not is_valid_cdi_device_name(name):
        raise ValueError(f"{name!r} is not a valid CDI device name")
    return name


def cdi_device_id(driver_name: str, name: str) -> str:
    """The fully qualified CDI device ID the kubelet passes to the runtime: ``<kind>=<name>``."""
    return f"{cdi_kind(driver_name)}={name}"


def spec_file_name(driver_name: str, claim_uid: str) -> str:
    """The file name of a claim's spec in the CDI root: ``<driver>-<claim uid>.json``."""
    return f"{driver_name}-{claim_uid}.json"


# --- Model ------------------------------------------------------------------------------


class _CdiModel(BaseModel):
    """CDI JSON names, and no unknown fields: the Go loaders reject them too."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        strict=True,
    )


def _check_env(entries: list[str] | None) -> list[str] | None:
    for entry in entries or ():
        name, sep, _ = entry.partition("=")
        if not sep or _ENV_NAME_RE.match(name) is None:
            raise ValueError(f"env entry {entry!r} must be NAME=value")
    return entries


def _check_absolute(path: str) -> str:
    if not path.startswith("/"):
        raise ValueError(f"path {path!r} must be absolute")
    return path


class DeviceNode(_CdiModel):
    """A device node; the runtime fills in type, major and minor by stat()-ing the host path."""

    path: str
    """Path inside the container."""
    host_path: str | None = None
    """Path on the host when it differs from ``path`` (needs cdiVersion 0.5.0)."""
    permissions: str | None = None

    @field_validator("path", "host_path")
    @classmethod
    def _absolute(cls, path: str | None) -> str | None:
        return path if path is None else _check_absolute(path)


class Mount(_CdiModel):
    host_path: str
    container_path: str
    options: list[str] | None = None
    type: str | None = None
    """Setting it needs cdiVersion 0.4.0; bind mounts work without it."""

    @field_validator("host_path", "container_path")
    @classmethod
    def _absolute(cls, path: str) -> str:
        return _check_absolute(path)


class Hook(_CdiModel):
    hook_name: str
    path: str
    args: list[str] | None = None
    env: list[str] | None = None
    timeout: int | None = None

    @field_validator("path")
    @classmethod
    def _absolute(cls, path: str) -> str:
        return _check_absolute(path)

    @field_validator("env")
    @classmethod
    def _env(cls, env: list[str] | None) -> list[str] | None:
        return _check_env(env)


class ContainerEdits(_CdiModel):
    env: list[str] | None = None
    device_nodes: list[DeviceNode] | None = None
    mounts: list[Mount] | None = None
    hooks: list[Hook] | None = None

    @field_validator("env")
    @classmethod
    def _env(cls, env: list[str] | None) -> list[str] | None:
        return _check_env(env)

    def is_empty(self) -> bool:
        return not (self.env or self.device_nodes or self.mounts or self.hooks)


class CdiDevice(_CdiModel):
    name: str
    container_edits: ContainerEdits

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        if not is_valid_cdi_device_name(name):
            raise ValueError(f"{name!r} is not a valid CDI device name")
        return name

    @field_validator("container_edits")
    @classmethod
    def _not_empty(cls, edits: ContainerEdits) -> ContainerEdits:
        # The Go validator refuses a device without edits ("empty device edits").
        if edits.is_empty():
            raise ValueError("a device needs at least one container edit")
        return edits


class CdiSpec(_CdiModel):
    cdi_version: str
    kind: str
    devices: list[CdiDevice]
    container_edits: ContainerEdits | None = None

    @field_validator("devices")
    @classmethod
    def _devices(cls, devices: list[CdiDevice]) -> list[CdiDevice]:
        if not devices:
            raise ValueError("a spec needs at least one device")
        names = [d.name for d in devices]
        if len(set(names)) != len(names):
            raise ValueError(f"device names must be unique within a spec: {names}")
        return devices

    @field_validator("kind")
    @classmethod
    def _kind(cls, kind: str) -> str:
        vendor, sep, cls_name = kind.partition("/")
        if not sep or not is_valid_cdi_vendor(vendor) or not is_valid_cdi_class(cls_name):
            raise ValueError(f"kind {kind!r} must be <vendor>/<class>")
        return kind


def version_key(version: str) -> tuple[int, ...]:
    """A cdiVersion as numbers, in the order versions compare."""
    return tuple(int(part) for part in version.split("."))


def minimum_cdi_version(spec: CdiSpec) -> str:
    """The lowest cdiVersion that can express ``spec`` (spec/cdi.md §4), at least 0.3.0.

    0.4.0 for a mount with ``type``; 0.5.0 for a device node with ``hostPath``
    or a device name that starts with a digit. ``spec.cdi_version`` is ignored.
    """
    needed = "0.3.0"

    def need(version: str) -> None:
        nonlocal needed
        if version_key(version) > version_key(needed):
            needed = version

    edits = [d.container_edits for d in spec.devices]
    if spec.container_edits is not None:
        edits.append(spec.container_edits)
    for edit in edits:
        if any(m.type is not None for m in edit.mounts or ()):
            need("0.4.0")
        if any(n.host_path is not None for n in edit.device_nodes or ()):
            need("0.5.0")
    if any(d.name[0].isdigit() for d in spec.devices):
        need("0.5.0")
    return needed


def encode_cdi_spec(spec: CdiSpec) -> bytes:
    """The spec file's bytes: compact JSON with the CDI field names, unset fields left out.

    Compact because indenting switches ``json`` to its pure-Python encoder, which
    costs more than the rest of preparing a claim; ``jq`` reads it fine.
    """
    document = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    return (json.dumps(document, separators=(",", ":")) + "\n").encode()
