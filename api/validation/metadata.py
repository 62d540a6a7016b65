"""Object metadata as every kind's validation checks it: a valid name (or
generateName), and a namespace only on the namespaced kinds.
"""

from __future__ import annotations

from api import limits
from api.resource_v1 import ObjectMeta
from api.validation._common import Errors, Path, _error, _required
from api.validation.names import (
    _check_k8s_qualified_name,
    _check_label,
    _check_label_value,
    _check_subdomain,
)


def _check_metadata(errors: Errors, meta: ObjectMeta, *, namespaced: bool) -> None:
    path: Path = ("metadata",)
    if meta.name:
        _check_subdomain(errors, (*path, "name"), meta.name, "name")
    elif not meta.generate_name:
        _required(errors, (*path, "name"), "name or generateName")
    if namespaced and meta.namespace:
        _check_label(errors, (*path, "namespace"), meta.namespace, "namespace")
    elif not namespaced and meta.namespace:
        _error(errors, (*path, "namespace"), "not allowed: the object is cluster-scoped")
    _check_labels_and_annotations(errors, path, meta)


def _check_labels_and_annotations(errors: Errors, path: Path, meta: ObjectMeta) -> None:
    """Label keys and values, annotation keys, and the annotations' total size."""
    for key, value in (meta.labels or {}).items():
        _check_k8s_qualified_name(errors, (*path, "labels"), key, "label key")
        _check_label_value(errors, (*path, "labels", key), value)
    annotations = meta.annotations or {}
    for key in annotations:
        _check_k8s_qualified_name(errors, (*path, "annotations"), key.lower(), "annotation key")
    size = sum(len(key.encode()) + len(value.encode()) for key, value in annotations.items())
    if size > limits.TOTAL_ANNOTATION_SIZE_MAX:
        _error(
            errors,
            (*path, "annotations"),
            f"too long: {size} bytes in all, at most {limits.TOTAL_ANNOTATION_SIZE_MAX} "
            "allowed (keys and values together)",
        )
