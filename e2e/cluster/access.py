"""Reads from a local cluster's API server as its admin, without the kubernetes client.

The harness waits on these (the node Ready, resource.k8s.io/v1 served, the
default ServiceAccount) before the client library is of any use to a test.
The credentials are the admin certificate under the cluster's ``pki/``.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["AdminReader"]


class AdminReader:
    """GETs against ``apiserver_url`` with the admin identity of the cluster in ``directory``."""

    def __init__(self, directory: Path, apiserver_url: str) -> None:
        self.directory = directory
        self.apiserver_url = apiserver_url

    def ssl_context(self) -> ssl.SSLContext:
        """The cluster CA to verify the server, the admin certificate to present."""
        pki_dir = self.directory / "pki"
        context = ssl.create_default_context(cafile=str(pki_dir / "ca.crt"))
        context.load_cert_chain(str(pki_dir / "admin.crt"), str(pki_dir / "admin.key"))
        return context

    def get(self, path: str) -> Any:
        """GET ``path`` as admin; the decoded JSON, or None on any error (404 included)."""
        try:
            with urllib.request.urlopen(
                self.apiserver_url + path, timeout=5, context=self.ssl_context()
            ) as response:
                return json.loads(response.read())
        except (OSError, urllib.error.URLError, ValueError):
            return None

    def node_ready(self, node_name: str) -> bool:
        """Whether Node ``node_name`` exists and its Ready condition is True."""
        node = self.get(f"/api/v1/nodes/{node_name}")
        if not node:
            return False
        conditions = node.get("status", {}).get("conditions") or []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    def default_namespace_usable(self) -> bool:
        """Whether ServiceAccount default/default and ConfigMap default/kube-root-ca.crt exist:
        pods in ``default`` can be admitted and mount their token."""
        return (
            self.get("/api/v1/namespaces/default/serviceaccounts/default") is not None
            and self.get("/api/v1/namespaces/default/configmaps/kube-root-ca.crt") is not None
        )
