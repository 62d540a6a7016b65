"""Object metadata as every kind's validation checks it: a valid name (or
generateName), and a namespace only on the namespaced kinds.
"""

from __future__ import annotations

from api.resource_v1 import ObjectMeta
from api.validation._common import Errors, Path, _error, _required
from api.validation.names import _check_label, _check_subdomain


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
