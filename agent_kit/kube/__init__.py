"""The one Kubernetes API client of both agents, and its error tree.

:mod:`agent_kit.kube.errors` is the error tree (every call raises one of its
classes); :mod:`agent_kit.kube.client` the port (:class:`ClusterClient`), its
adapter over the official ``kubernetes`` client, the retry policy and the
:class:`Reflector` that mirrors one resource.
"""

from agent_kit.kube.client import (
    RESOURCES,
    ClusterClient,
    KubernetesClient,
    ObjectList,
    Reflector,
    Resource,
    Sink,
    WatchEvent,
    WatchEventType,
    call_with_retries,
    load_api_client,
)
from agent_kit.kube.errors import (
    ApiError,
    ConflictError,
    ForbiddenError,
    GoneError,
    InvalidError,
    NotFoundError,
    UnavailableError,
    api_error,
)

__all__ = [
    "RESOURCES",
    "ApiError",
    "ClusterClient",
    "ConflictError",
    "ForbiddenError",
    "GoneError",
    "InvalidError",
    "KubernetesClient",
    "NotFoundError",
    "ObjectList",
    "Reflector",
    "Resource",
    "Sink",
    "UnavailableError",
    "WatchEvent",
    "WatchEventType",
    "api_error",
    "call_with_retries",
    "load_api_client",
]
