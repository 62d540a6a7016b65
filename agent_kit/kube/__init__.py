"""The one Kubernetes API client of both agents, and its error tree.

- :mod:`agent_kit.kube.errors`: the error tree (every call raises one of its classes);
- :mod:`agent_kit.kube.client`: the port (:class:`ClusterClient`) and its adapter over
  the official ``kubernetes`` client (:class:`KubernetesClient`, :func:`load_api_client`,
  :func:`api_errors`);
- :mod:`agent_kit.kube.resources`: the resources it reaches; :mod:`agent_kit.kube.config`:
  kubeconfig files and the in-cluster account;
- :mod:`agent_kit.kube.retry`: the retry policy (tenacity);
- :mod:`agent_kit.kube.reflector`: :class:`Reflector`, which mirrors one resource.
"""

from agent_kit.kube.client import (
    RESOURCES,
    ClusterClient,
    KubernetesClient,
    ObjectList,
    Resource,
    WatchEvent,
    WatchEventType,
    api_errors,
    default_kubeconfig,
    kubeconfig_contexts,
    load_api_client,
)
from agent_kit.kube.errors import (
    ApiError,
    ConflictError,
    ForbiddenError,
    GoneError,
    InvalidError,
    KubeConfigError,
    NotFoundError,
    UnavailableError,
    api_error,
)
from agent_kit.kube.reflector import Reflector, Sink
from agent_kit.kube.retry import call_with_retries, retry_on_conflict, retry_until_stopped

__all__ = [
    "RESOURCES",
    "ApiError",
    "ClusterClient",
    "ConflictError",
    "ForbiddenError",
    "GoneError",
    "InvalidError",
    "KubeConfigError",
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
    "api_errors",
    "call_with_retries",
    "default_kubeconfig",
    "kubeconfig_contexts",
    "load_api_client",
    "retry_on_conflict",
    "retry_until_stopped",
]
