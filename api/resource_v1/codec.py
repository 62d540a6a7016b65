"""Decoding and encoding: :func:`parse_object` by apiVersion and kind, :func:`dump`,
pydantic errors translated to JSON-name :class:`FieldError` paths, and the short
object names used in messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, TypeAlias

from pydantic import ValidationError

from api import limits
from api.errors import FieldError, InvalidInputError
from api.resource_v1.base import K8sModel
from api.resource_v1.device_class import DeviceClass
from api.resource_v1.meta import K8sObject
from api.resource_v1.node import Node
from api.resource_v1.resource_claim import ResourceClaim, ResourceClaimTemplate
from api.resource_v1.resource_slice import ResourceSlice


class UnknownKindError(InvalidInputError):
    """A document whose apiVersion/kind is not one this project reads."""

    def __init__(
        self, api_version: object, kind: object, *, source: str = "", obj: str = ""
    ) -> None:
        self.api_version = api_version
        self.kind = kind
        super().__init__(
            f"unsupported apiVersion {api_version!r} and kind {kind!r}: supported are "
            f"{limits.API_VERSION} DeviceClass, ResourceClaim, ResourceClaimTemplate, "
            f"ResourceSlice and {limits.CORE_API_VERSION} Node",
            source=source,
            obj=obj,
        )


#: Everything :func:`parse_object` returns.
ParsedObject: TypeAlias = DeviceClass | ResourceClaim | ResourceClaimTemplate | ResourceSlice | Node
_KINDS: Final[dict[tuple[str, str], type[ParsedObject]]] = {
    (limits.API_VERSION, limits.KIND_DEVICE_CLASS): DeviceClass,
    (limits.API_VERSION, limits.KIND_RESOURCE_CLAIM): ResourceClaim,
    (limits.API_VERSION, limits.KIND_RESOURCE_CLAIM_TEMPLATE): ResourceClaimTemplate,
    (limits.API_VERSION, limits.KIND_RESOURCE_SLICE): ResourceSlice,
    (limits.CORE_API_VERSION, limits.KIND_NODE): Node,
}
_SHORT_KIND: Final[dict[str, str]] = {
    limits.KIND_DEVICE_CLASS: "class",
    limits.KIND_RESOURCE_CLAIM: "claim",
    limits.KIND_RESOURCE_CLAIM_TEMPLATE: "claim template",
    limits.KIND_RESOURCE_SLICE: "slice",
    limits.KIND_NODE: "node",
}


def dump(obj: K8sModel) -> dict[str, Any]:
    """The object as the API server would write it in JSON.

    camelCase names, ``None`` fields left out, unknown fields kept, quantities in
    canonical form, only JSON types (str, int, float, bool, None, list, dict).
    """
    exclude: set[str] | None = None
    if (
        isinstance(obj, K8sObject)
        and "metadata" not in obj.model_fields_set
        and not obj.metadata.model_dump(exclude_none=True)
    ):
        exclude = {"metadata"}
    return obj.model_dump(mode="json", by_alias=True, exclude_none=True, exclude=exclude)


def describe(obj: K8sObject | Mapping[str, Any]) -> str:
    """Short name of an object for messages: ``slice node-a``, ``claim default/c``, ``class gpu``.

    Accepts a parsed object or a raw mapping (for errors raised before parsing).
    """
    kind: object
    name: object
    namespace: object
    if isinstance(obj, K8sObject):
        kind, name, namespace = obj.kind, obj.metadata.name, obj.metadata.namespace
    else:
        raw_meta = obj.get("metadata")
        meta: Mapping[str, Any] = raw_meta if isinstance(raw_meta, Mapping) else {}
        kind, name, namespace = obj.get("kind"), meta.get("name"), meta.get("namespace")
    short = _SHORT_KIND.get(kind, kind.lower()) if isinstance(kind, str) and kind else "object"
    shown = name if isinstance(name, str) and name else "<unnamed>"
    if isinstance(namespace, str) and namespace:
        shown = f"{namespace}/{shown}"
    return f"{short} {shown}"


def field_path(parts: tuple[str | int, ...] | list[str | int]) -> str:
    """A field path in JSON names: ``spec.devices[3].attributes.index.int``.

    Integers become ``[i]``; map keys that are not plain identifiers (such as
    ``resource.kubernetes.io/pciBusID``) become ``[key]`` so the path stays readable.
    """
    out: list[str] = []
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif part and all(c.isalnum() or c in "_-" for c in part):
            out.append(f".{part}" if out else part)
        else:
            out.append(f"[{part}]")
    return "".join(out)


_TYPE_MESSAGES: Final[dict[str, str]] = {
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "bool_type": "must be a boolean (true or false)",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "missing": "required field is missing",
    "extra_forbidden": "unknown field",
}


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def field_errors(err: ValidationError) -> list[FieldError]:
    """Translate pydantic errors into FieldErrors with JSON-name paths."""
    errors: list[FieldError] = []
    for item in err.errors(include_url=False):
        kind = item["type"]
        message = _TYPE_MESSAGES.get(kind)
        if message is None:
            message = item["msg"]
        elif kind not in ("missing", "extra_forbidden"):
            message = f"{message}, not {_type_name(item['input'])}"
        errors.append(FieldError(field_path(tuple(item["loc"])), message))
    return errors


def parse_object(data: Mapping[str, Any], *, source: str = "") -> ParsedObject:
    """Decode one object by its apiVersion and kind.

    Raises UnknownKindError for any other apiVersion/kind, and InvalidInputError
    (naming the object and each offending field) when the document does not
    decode. No semantic validation: see :func:`api.validation.validate`.
    """
    if not isinstance(data, Mapping):
        raise InvalidInputError(
            f"a manifest must be an object, not {_type_name(data)}", source=source
        )
    api_version, kind = data.get("apiVersion"), data.get("kind")
    model = (
        _KINDS.get((api_version, kind))
        if isinstance(api_version, str) and isinstance(kind, str)
        else None
    )
    if model is None:
        raise UnknownKindError(api_version, kind, source=source, obj=describe(data) if kind else "")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise InvalidInputError(
            source=source, obj=describe(data), errors=field_errors(err)
        ) from None
