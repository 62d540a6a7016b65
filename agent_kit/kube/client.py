"""The API server, as both agents see it: a small port and its real adapter.

:class:`ClusterClient` is the port: a handful of REST verbs over raw JSON
objects (``dict``), addressed by resource (``pods``, ``resourceclaims``...).
Objects stay raw here on purpose: each caller decodes them once into this
project's models (the controller's cache, the kubelet plugin's slice client and
claim source), and writes send back exactly what the caller built.

- :class:`KubernetesClient` implements it with the official ``kubernetes``
  client (``CoreV1Api``, ``ResourceV1Api``, ``CoordinationV1Api``; watches
  through ``kubernetes.watch.Watch``). With :func:`load_api_client` and
  :func:`api_errors` it is the only code of either agent that touches the
  official client.
- :class:`tests.fakes.cluster.FakeCluster` implements it in memory with
  the API server's REST semantics (resourceVersion, conflicts, 410 Gone,
  status subresource, merge patches) for tests.

Contracts every implementation keeps (every method raises :class:`ApiError`):

- ``replace`` and ``replace_status`` are guarded by
  ``metadata.resourceVersion`` when the object carries one: a stale version
  is a 409 conflict; a missing object a 404.
- ``patch`` and ``patch_status`` apply a JSON merge patch (RFC 7386); a patch carrying
  ``metadata.resourceVersion`` is guarded by it (409 when stale).
- ``watch`` yields the changes after ``resource_version`` until
  ``timeout_s`` passes, then returns; a version the server no longer keeps
  raises GoneError (the caller lists again).

The retry policy is :mod:`agent_kit.kube.retry`; watch mirroring
:mod:`agent_kit.kube.reflector`.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from kubernetes import client as k8s_client
from kubernetes import watch as _k8s_watch
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from agent_kit.kube.config import default_kubeconfig, kubeconfig_contexts, load_api_client
from agent_kit.kube.errors import (
    InvalidError,
    NotFoundError,
    UnavailableError,
    api_error,
)
from agent_kit.kube.resources import RESOURCES, Resource
from api.resource_v1 import object_key

# Parts of the client without type annotations.
k8s_watch: Any = _k8s_watch

__all__ = [
    "RESOURCES",
    "ClusterClient",
    "KubernetesClient",
    "ObjectList",
    "Resource",
    "WatchEvent",
    "WatchEventType",
    "api_errors",
    "default_kubeconfig",
    "kubeconfig_contexts",
    "load_api_client",
]

WatchEventType = Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK"]


@dataclass(frozen=True, slots=True)
class ObjectList:
    """The items of a list call and the resourceVersion to watch from."""

    items: list[dict[str, Any]]
    resource_version: str


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: WatchEventType
    object: dict[str, Any]
    """The object (for BOOKMARK only its metadata is meaningful)."""
    resource_version: str | None


class ClusterClient(Protocol):
    """The REST calls the agents make (see the module docstring for the contracts)."""

    def list(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        field_selector: str | None = None,
        label_selector: str | None = None,
    ) -> ObjectList: ...

    def watch(
        self,
        resource: Resource,
        *,
        resource_version: str,
        timeout_s: float,
        field_selector: str | None = None,
        label_selector: str | None = None,
    ) -> Iterator[WatchEvent]: ...

    def get(self, resource: Resource, name: str, *, namespace: str | None = None) -> dict[str, Any]:
        """The object; NotFoundError when it does not exist."""
        ...

    def create(self, resource: Resource, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create (namespace from ``metadata.namespace``); 409 when the name is taken."""
        ...

    def replace(self, resource: Resource, obj: Mapping[str, Any]) -> dict[str, Any]: ...

    def replace_status(self, resource: Resource, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Replace the status subresource (only ``resourceclaims``)."""
        ...

    def patch(
        self,
        resource: Resource,
        name: str,
        patch: Mapping[str, Any],
        *,
        namespace: str | None = None,
    ) -> dict[str, Any]: ...

    def patch_status(
        self,
        resource: Resource,
        name: str,
        patch: Mapping[str, Any],
        *,
        namespace: str | None = None,
    ) -> dict[str, Any]:
        """A JSON merge patch of the status subresource (only ``resourceclaims``): what it
        does not name is left as the server holds it, byte for byte."""
        ...

    def delete(self, resource: Resource, name: str, *, namespace: str | None = None) -> None:
        """Delete; an object that is already gone is not an error."""
        ...


# --- The real client ----------------------------------------------------------------------


@contextlib.contextmanager
def api_errors(what: str) -> Iterator[None]:
    """Inside, the official client's failures become this project's error tree.

    An ``ApiException`` becomes the ApiError subclass of its status (through
    :func:`~agent_kit.kube.errors.api_error`, the one place a status is mapped); no
    answer at all (refused, reset, timed out: urllib3's errors, OSError) an
    UnavailableError; a body that is not JSON too. ``what`` starts the message
    (``get pods default/p``). For code that calls the official client itself (the
    cluster tests); :class:`KubernetesClient` raises the tree already.
    """
    try:
        yield
    except ApiException as err:
        raise api_error(_api_message(what, err), status=err.status or 0) from None
    except (OSError, HTTPError, ValueError) as err:
        raise api_error(f"{what}: {err}") from None


def without_managed_fields(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """``obj`` without ``metadata.managedFields``, for a write to a subresource: the API
    server keeps the live object's managed fields there whatever the request says
    (``decodeLiveOrNew`` in k8s.io/apimachinery's field manager), so sending them only costs
    their encoding, twice, and the bytes."""
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping) or "managedFields" not in meta:
        return obj
    return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


class KubernetesClient:
    """:class:`ClusterClient` over the official client (see the module docstring).

    Responses are read raw (``_preload_content=False``) and decoded as JSON, so
    objects reach the caller exactly as the server sent them. ``timeout_s`` bounds
    every request (a watch: its own timeout plus this). :meth:`interrupt_watches`
    ends the watches in progress from another thread, for a prompt shutdown.
    """

    def __init__(self, api_client: Any, *, timeout_s: float = 30.0) -> None:
        self._api_client = api_client
        self._apis = {
            "core": k8s_client.CoreV1Api(api_client),
            "resource": k8s_client.ResourceV1Api(api_client),
            "resource_alpha": k8s_client.ResourceV1alpha3Api(api_client),
            "coordination": k8s_client.CoordinationV1Api(api_client),
            "scheduling": k8s_client.SchedulingV1beta1Api(api_client),
        }
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._streams: set[Any] = set()
        self._interrupted = False

    # -- plumbing ------------------------------------------------------------------------

    def _method(self, resource: Resource, verb: str, *, all_namespaces: bool = False) -> Any:
        binding = RESOURCES[resource]
        api = self._apis[binding.group]
        if verb == "list" and binding.namespaced:
            name = (
                f"list_{binding.singular}_for_all_namespaces"
                if all_namespaces
                else f"list_namespaced_{binding.singular}"
            )
        else:
            # replace_status / patch_status: the status subresource's method.
            base, _, status = verb.partition("_")
            scope = "namespaced_" if binding.namespaced else ""
            name = f"{base}_{scope}{binding.singular}{'_status' if status else ''}"
        return getattr(api, name)

    def _body(self, resource: Resource, obj: Mapping[str, Any]) -> Any:
        model = getattr(k8s_client, RESOURCES[resource].model)
        return model.from_dict(dict(obj))

    def _call(self, what: str, call: Callable[..., Any], **kwargs: Any) -> dict[str, Any]:
        with api_errors(what):
            response = call(_preload_content=False, _request_timeout=self._timeout_s, **kwargs)
            data = response.data
            decoded: dict[str, Any] = json.loads(data) if data else {}
            return decoded

    @staticmethod
    def _meta(obj: Mapping[str, Any]) -> tuple[str, str | None]:
        meta = obj.get("metadata") or {}
        return str(meta.get("name") or ""), meta.get("namespace")

    def _scope(self, resource: Resource, namespace: str | None) -> dict[str, Any]:
        if RESOURCES[resource].namespaced:
            if not namespace:
                raise InvalidError(f"{resource}: a namespace is required")
            return {"namespace": namespace}
        return {}

    # -- verbs ---------------------------------------------------------------------------

    def list(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        field_selector: str | None = None,
        label_selector: str | None = None,
    ) -> ObjectList:
        method = self._method(resource, "list", all_namespaces=namespace is None)
        kwargs: dict[str, Any] = {}
        if namespace is not None and RESOURCES[resource].namespaced:
            kwargs["namespace"] = namespace
        if field_selector:
            kwargs["field_selector"] = field_selector
        if label_selector:
            kwargs["label_selector"] = label_selector
        data = self._call(f"list {resource}", method, **kwargs)
        return ObjectList(
            items=list(data.get("items") or []),
            resource_version=str((data.get("metadata") or {}).get("resourceVersion") or ""),
        )

    def watch(
        self,
        resource: Resource,
        *,
        resource_version: str,
        timeout_s: float,
        field_selector: str | None = None,
        label_selector: str | None = None,
    ) -> Iterator[WatchEvent]:
        method = self._method(resource, "list", all_namespaces=True)
        kwargs: dict[str, Any] = {
            "resource_version": resource_version,
            "allow_watch_bookmarks": True,
            # The server ends the watch after timeout_seconds; the request timeout
            # only guards against a connection that died silently.
            "timeout_seconds": max(1, int(timeout_s)),
            "_request_timeout": timeout_s + self._timeout_s,
        }
        if field_selector:
            kwargs["field_selector"] = field_selector
        if label_selector:
            kwargs["label_selector"] = label_selector
        what = f"watch {resource}"
        with self._lock:
            if self._interrupted:
                raise UnavailableError(f"{what}: the client's watches were interrupted")
        opened: list[Any] = []

        def open_stream(*args: Any, **call_kwargs: Any) -> Any:
            response = method(*args, **call_kwargs)
            opened.append(response)
            with self._lock:
                self._streams.add(response)
                interrupted = self._interrupted
            if interrupted:  # interrupt_watches() ran while this one was opening
                _shut_down(response)
            return response

        watcher: Any = _RawWatch()
        try:
            with api_errors(what):
                for raw in watcher.stream(open_stream, **kwargs):
                    if not isinstance(raw, dict):
                        continue
                    kind = raw.get("type")
                    obj = raw.get("raw_object") or raw.get("object") or {}
                    rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if kind in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK"):
                        yield WatchEvent(kind, obj, str(rv) if rv is not None else None)
        finally:
            watcher.stop()
            with self._lock:
                self._streams.difference_update(opened)

    def interrupt_watches(self) -> None:
        """End every watch in progress now, and refuse new ones (UnavailableError).

        For shutdown: a watch blocks in a read for up to its timeout (minutes); this
        shuts its socket down from another thread, so the watching thread returns at
        once (with an UnavailableError, or the watch simply ends).
        """
        with self._lock:
            self._interrupted = True
            streams = list(self._streams)
        for response in streams:
            _shut_down(response)

    def get(self, resource: Resource, name: str, *, namespace: str | None = None) -> dict[str, Any]:
        method = self._method(resource, "read")
        return self._call(
            f"get {resource} {object_key(namespace, name)}",
            method,
            name=name,
            **self._scope(resource, namespace),
        )

    def get_pod_proxy(self, namespace: str, pod: str, port: int, path: str) -> str:
        """The body of ``GET /PATH`` on the pod's ``port``, through the API server's pod
        proxy (``/api/v1/namespaces/NS/pods/POD:PORT/proxy/PATH``; the ``pods/proxy``
        verb ``get`` in RBAC). The API server dials the pod's IP itself: a pod it cannot
        reach, or a port nothing serves, is an UnavailableError (503) naming the dial."""
        core: Any = self._apis["core"]
        what = f"get pods {object_key(namespace, pod)}:{port}/proxy/{path}"
        with api_errors(what):
            response = core.connect_get_namespaced_pod_proxy_with_path(
                f"{pod}:{port}",
                namespace,
                path,
                _preload_content=False,
                _request_timeout=self._timeout_s,
            )
            data: bytes = response.data or b""
            return data.decode("utf-8", errors="replace")

    def create(self, resource: Resource, obj: Mapping[str, Any]) -> dict[str, Any]:
        name, namespace = self._meta(obj)
        return self._call(
            f"create {resource} {object_key(namespace, name)}",
            self._method(resource, "create"),
            body=self._body(resource, obj),
            **self._scope(resource, namespace),
        )

    def replace(self, resource: Resource, obj: Mapping[str, Any]) -> dict[str, Any]:
        name, namespace = self._meta(obj)
        return self._call(
            f"update {resource} {object_key(namespace, name)}",
            self._method(resource, "replace"),
            name=name,
            body=self._body(resource, obj),
            **self._scope(resource, namespace),
        )

    def replace_status(self, resource: Resource, obj: Mapping[str, Any]) -> dict[str, Any]:
        name, namespace = self._meta(obj)
        return self._call(
            f"update {resource}/status {object_key(namespace, name)}",
            self._method(resource, "replace_status"),
            name=name,
            body=self._body(resource, without_managed_fields(obj)),
            **self._scope(resource, namespace),
        )

    def patch(
        self,
        resource: Resource,
        name: str,
        patch: Mapping[str, Any],
        *,
        namespace: str | None = None,
    ) -> dict[str, Any]:
        return self._patch("patch", resource, name, patch, namespace)

    def patch_status(
        self,
        resource: Resource,
        name: str,
        patch: Mapping[str, Any],
        *,
        namespace: str | None = None,
    ) -> dict[str, Any]:
        return self._patch("patch_status", resource, name, patch, namespace)

    def _patch(
        self,
        verb: str,
        resource: Resource,
        name: str,
        patch: Mapping[str, Any],
        namespace: str | None,
    ) -> dict[str, Any]:
        subresource = "/status" if verb == "patch_status" else ""
        return self._call(
            f"patch {resource}{subresource} {object_key(namespace, name)}",
            self._method(resource, verb),
            name=name,
            body=dict(patch),
            _content_type="application/merge-patch+json",
            **self._scope(resource, namespace),
        )

    def delete(self, resource: Resource, name: str, *, namespace: str | None = None) -> None:
        with contextlib.suppress(NotFoundError):
            self._call(
                f"delete {resource} {object_key(namespace, name)}",
                self._method(resource, "delete"),
                name=name,
                **self._scope(resource, namespace),
            )


def _api_message(what: str, err: Any) -> str:
    """``what: 409 Conflict: <the server's message>``."""
    detail = ""
    body = getattr(err, "body", None)
    if body:
        try:
            detail = str(json.loads(body).get("message") or "")
        except (ValueError, AttributeError):
            detail = ""
    text = f"{what}: {err.status} {err.reason}"
    return f"{text}: {detail}" if detail else text


def _shut_down(response: Any) -> None:
    """Shut the socket of a streamed response down, unblocking a read in another thread."""
    with contextlib.suppress(Exception):  # already closed or released: nothing to cut
        response.shutdown()


class _RawWatch(k8s_watch.Watch):  # type: ignore[misc]  # an untyped base class
    """``Watch`` that hands back raw JSON events (``raw_object``): the cache decodes
    them with this project's models, and the client's own decoding is skipped."""

    def get_return_type(self, func: Any) -> Any:
        del func
        return None
