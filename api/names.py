"""Short names of objects for messages (``slice node-a``, ``claim default/c``), from their
kind, name and namespace: no models needed, so code that reads raw manifests before any
model is imported (:mod:`dra_driver.manifest_read`) names objects as the decoder does."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from api import limits

__all__ = ["describe_parts", "describe_raw"]

_SHORT_KIND: Final[dict[str, str]] = {
    limits.KIND_DEVICE_CLASS: "class",
    limits.KIND_RESOURCE_CLAIM: "claim",
    limits.KIND_RESOURCE_CLAIM_TEMPLATE: "claim template",
    limits.KIND_RESOURCE_SLICE: "slice",
    limits.KIND_DEVICE_TAINT_RULE: "taint rule",
    limits.KIND_NODE: "node",
    limits.KIND_POD: "pod",
}


def describe_parts(kind: object, name: object, namespace: object) -> str:
    """``<short kind> [<namespace>/]<name>``; ``object`` and ``<unnamed>`` stand in for a
    kind or name that is missing or not a string."""
    short = _SHORT_KIND.get(kind, kind.lower()) if isinstance(kind, str) and kind else "object"
    shown = name if isinstance(name, str) and name else "<unnamed>"
    if isinstance(namespace, str) and namespace:
        shown = f"{namespace}/{shown}"
    return f"{short} {shown}"


def describe_raw(obj: Mapping[str, Any]) -> str:
    """The short name of a raw object (a mapping as read from a manifest)."""
    raw_meta = obj.get("metadata")
    meta: Mapping[str, Any] = raw_meta if isinstance(raw_meta, Mapping) else {}
    return describe_parts(obj.get("kind"), meta.get("name"), meta.get("namespace"))
