"""Where the API server is and how to reach it: kubeconfig files and the in-cluster
service account, as kubectl reads them, into a configured ``kubernetes`` client.

Bodies go out as compact JSON (no spaces after separators): the API server compares
a claim's opaque config parameters byte for byte (``runtime.RawExtension``) when a
write keeps ``status.allocation``, and keeps what a create sent, so objects this
project creates hold the same bytes the API server's own JSON encoding writes back.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Final

from kubernetes import client as k8s_client
from kubernetes import config as _k8s_config
from kubernetes.client import rest as _k8s_rest

from agent_kit.kube.errors import KubeConfigError

__all__ = ["CONNECTION_POOL_SIZE", "default_kubeconfig", "kubeconfig_contexts", "load_api_client"]

# Parts of the client without type annotations.
k8s_config: Any = _k8s_config


class _CompactJson:
    """What the client's REST layer uses of :mod:`json`, with compact separators."""

    dumps = staticmethod(functools.partial(json.dumps, separators=(",", ":")))
    loads = staticmethod(json.loads)


# The REST layer encodes every request body with ``json.dumps``; it reads nothing else of
# the module.
_k8s_rest.json = _CompactJson  # type: ignore[attr-defined,assignment]


#: Connections kept open to the API server: one per watch (five) plus the workers'
#: writes. The client's default (5 per CPU) would make writers on a small machine
#: open (and TLS-handshake) a new connection for nearly every request.
CONNECTION_POOL_SIZE: Final = 64


def load_api_client(
    kubeconfig: str | None,
    *,
    pool_size: int = CONNECTION_POOL_SIZE,
    context: str | None = None,
) -> Any:
    """A configured ``kubernetes.client.ApiClient``: from ``kubeconfig`` (its ``context``,
    default its current one), or, when None or empty, from the in-cluster service account.

    Raises KubeConfigError when neither works (a missing or unusable file, an unknown
    context, not in a pod); the caller says where it looked.
    """
    configuration = k8s_client.Configuration()
    try:
        if kubeconfig:
            k8s_config.load_kube_config(
                config_file=kubeconfig, context=context, client_configuration=configuration
            )
        else:
            k8s_config.load_incluster_config(client_configuration=configuration)
    except Exception as err:
        # The client raises its ConfigException, OSErrors, YAML and value errors alike.
        raise KubeConfigError(str(err) or type(err).__name__) from None
    configuration.connection_pool_maxsize = pool_size
    return k8s_client.ApiClient(configuration)


def default_kubeconfig() -> str | None:
    """The kubeconfig kubectl would read: the first file of ``KUBECONFIG``, else
    ``~/.kube/config``; None when neither exists (then: the in-cluster configuration)."""
    for candidate in (os.environ.get("KUBECONFIG"), os.path.expanduser("~/.kube/config")):
        if candidate and os.path.exists(candidate.split(os.pathsep)[0]):
            return candidate.split(os.pathsep)[0]
    return None


def kubeconfig_contexts(kubeconfig: str) -> tuple[list[str], str | None]:
    """The context names of a kubeconfig file and its current context.

    Raises KubeConfigError for a missing or unusable file.
    """
    try:
        contexts, current = k8s_config.list_kube_config_contexts(config_file=kubeconfig)
    except Exception as err:
        raise KubeConfigError(str(err) or type(err).__name__) from None
    names = [str(c["name"]) for c in contexts or []]
    return names, (str(current["name"]) if current else None)
