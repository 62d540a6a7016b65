"""Decoding raw API objects once, and comparing the versions the watches deliver.

Shared by the cache's stores; nothing here keeps state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ValidationError

from api.errors import InvalidInputError
from api.pod_group import PodGroup
from api.resource_v1 import (
    DeviceClass,
    DeviceTaintRule,
    K8sObject,
    Node,
    ResourceClaim,
    ResourceSlice,
    describe,
    field_errors,
)
from controller.scheduling import parse_pod

__all__ = [
    "content",
    "decode",
    "decode_object",
    "is_older",
    "resource_version",
    "version_below",
]

_M = TypeVar("_M", bound=K8sObject)


def decode(model: type[_M], raw: Mapping[str, Any]) -> _M:
    """Decode a raw object with this project's model; InvalidInputError names the object."""
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise InvalidInputError(obj=describe(raw), errors=field_errors(err)) from None


#: The model of each watched resource but pods.
_MODELS: Final[Mapping[str, type[K8sObject]]] = {
    "resourceslices": ResourceSlice,
    "deviceclasses": DeviceClass,
    "devicetaintrules": DeviceTaintRule,
    "nodes": Node,
    "resourceclaims": ResourceClaim,
    "podgroups": PodGroup,
}


def decode_object(resource: str, raw: Mapping[str, Any]) -> object:
    """What the cache keeps of a raw object of ``resource`` (a PodInfo for a pod), or the
    InvalidInputError that says why it does not decode (returned, not raised).

    The watches call this before they take the cache's lock: decoding is most of an
    event's cost, and the placement workers need the lock meanwhile."""
    try:
        if resource == "pods":
            return parse_pod(raw)
        return decode(_MODELS[resource], raw)
    except InvalidInputError as err:
        return err


def resource_version(obj: K8sObject) -> int | None:
    """The object's resourceVersion as a number (None when it is not one)."""
    try:
        return int(obj.metadata.resource_version or "")
    except ValueError:
        return None


def version_below(new: str | None, old: str | None) -> bool:
    """Whether resourceVersion ``new`` is below ``old`` (False when either is not a number)."""
    try:
        return int(new or "") < int(old or "")
    except ValueError:
        return False


def is_older(new: K8sObject, old: K8sObject) -> bool:
    """Whether ``new`` is an older version of the same object than ``old``."""
    if new.metadata.uid != old.metadata.uid:
        return False
    return version_below(new.metadata.resource_version, old.metadata.resource_version)


def content(model: BaseModel | None) -> Any:
    """What a spec or status says, to compare two versions by content."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True) if model else None
