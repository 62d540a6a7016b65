"""The API server, as the controller sees it: a small port, its real adapter, and watches.

:class:`ClusterClient` is the port: a handful of REST verbs over raw JSON
objects (``dict``), addressed by resource (``pods``, ``resourceclaims``...).
Objects stay raw here on purpose: the cache decodes them once into this
project's models, and writes send back exactly what the caller built.

- :class:`KubernetesClient` implements it with the official ``kubernetes``
  client (``CoreV1Api``, ``ResourceV1Api``, ``CoordinationV1Api``; watches
  through ``kubernetes.watch.Watch``). It is the only module of the
  controller that imports the client.
- :class:`tests.fakes.cluster.FakeCluster` implements it in memory with
  the API server's REST semantics (resourceVersion, conflicts, 410 Gone,
  status subresource, merge patches) for unit tests.

Contracts every implementation keeps (every method raises :class:`ApiError`):

- ``replace`` and ``replace_status`` are guarded by
  ``metadata.resourceVersion`` when the object carries one: a stale version
  is a 409 conflict; a missing object a 404.
- ``patch`` applies a JSON merge patch (RFC 7386); a patch carrying
  ``metadata.resourceVersion`` is guarded by it (409 when stale).
- ``watch`` yields the changes after ``resource_version`` until
  ``timeout_s`` passes, then returns; a version the server no longer keeps
  raises GoneError (the caller lists again).

:class:`Reflector` keeps one resource in sync: list, then watch from the
list's resourceVersion, relist on 410 Gone, retry everything else with
exponential backoff (tenacity).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, TypeVar

from kubernetes import client as k8s_client
from kubernetes import config as _k8s_config
from kubernetes import watch as _k8s_watch
from kubernetes.client.exceptions import ApiException
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_any,
    stop_when_event_set,
    wait_exponential,
    wait_random,
)
from tenacity.wait import wait_base
from urllib3.exceptions import HTTPError

from agent_kit.kube.errors import ApiError, GoneError, InvalidError, NotFoundError, api_error
from api.resource_v1 import object_key

# Parts of the client without type annotations.
k8s_config: Any = _k8s_config
k8s_watch: Any = _k8s_watch

__all__ = [
    "RESOURCES",
    "ClusterClient",
    "KubernetesClient",
    "ObjectList",
    "Reflector",
    "Resource",
    "Sink",
    "WatchEvent",
    "WatchEventType",
    "call_with_retries",
    "load_api_client",
]

log = logging.getLogger(__name__)

Resource = Literal[
    "pods",
    "nodes",
    "events",
    "configmaps",
    "leases",
    "resourceslices",
    "deviceclasses",
    "resourceclaims",
]
WatchEventType = Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK"]

_T = TypeVar("_T")


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
    """The REST calls the controller makes (see the module docstring for the contracts)."""

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

    def delete(self, resource: Resource, name: str, *, namespace: str | None = None) -> None:
        """Delete; an object that is already gone is not an error."""
        ...


# --- The real client ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Binding:
    """How one resource maps onto the official client's generated methods."""

    group: Literal["core", "resource", "coordination"]
    singular: str  # snake_case, as in ``read_namespaced_<singular>``
    namespaced: bool
    model: str  # the client's model class for request bodies


RESOURCES: Final[Mapping[Resource, _Binding]] = {
    "pods": _Binding("core", "pod", True, "V1Pod"),
    "nodes": _Binding("core", "node", False, "V1Node"),
    "events": _Binding("core", "event", True, "CoreV1Event"),
    "configmaps": _Binding("core", "config_map", True, "V1ConfigMap"),
    "leases": _Binding("coordination", "lease", True, "V1Lease"),
    "resourceslices": _Binding("resource", "resource_slice", False, "V1ResourceSlice"),
    "deviceclasses": _Binding("resource", "device_class", False, "V1DeviceClass"),
    "resourceclaims": _Binding("resource", "resource_claim", True, "ResourceV1ResourceClaim"),
}


#: Connections kept open to the API server: one per watch (five) plus the workers'
#: writes. The client's default (5 per CPU) would make writers on a small machine
#: open (and TLS-handshake) a new connection for nearly every request.
CONNECTION_POOL_SIZE: Final = 64


def load_api_client(kubeconfig: str | None, *, pool_size: int = CONNECTION_POOL_SIZE) -> Any:
    """A configured ``kubernetes.client.ApiClient``: from ``kubeconfig``, or in-cluster."""
    configuration = k8s_client.Configuration()
    if kubeconfig:
        k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        k8s_config.load_incluster_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = pool_size
    return k8s_client.ApiClient(configuration)


class KubernetesClient:
    """:class:`ClusterClient` over the official client (see the module docstring).

    Responses are read raw (``_preload_content=False``) and decoded as JSON, so
    objects reach the caller exactly as the server sent them.
    """

    def __init__(self, api_client: Any, *, timeout_s: float = 30.0) -> None:
        self._api_client = api_client
        self._apis = {
            "core": k8s_client.CoreV1Api(api_client),
            "resource": k8s_client.ResourceV1Api(api_client),
            "coordination": k8s_client.CoordinationV1Api(api_client),
        }
        self._timeout_s = timeout_s

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
        elif binding.namespaced:
            suffix = "_status" if verb == "replace_status" else ""
            base = "replace" if verb == "replace_status" else verb
            name = f"{base}_namespaced_{binding.singular}{suffix}"
        else:
            suffix = "_status" if verb == "replace_status" else ""
            base = "replace" if verb == "replace_status" else verb
            name = f"{base}_{binding.singular}{suffix}"
        return getattr(api, name)

    def _body(self, resource: Resource, obj: Mapping[str, Any]) -> Any:
        model = getattr(k8s_client, RESOURCES[resource].model)
        return model.from_dict(dict(obj))

    def _call(self, what: str, call: Callable[..., Any], **kwargs: Any) -> dict[str, Any]:
        try:
            response = call(_preload_content=False, _request_timeout=self._timeout_s, **kwargs)
            data = response.data
            decoded: dict[str, Any] = json.loads(data) if data else {}
            return decoded
        except ApiException as err:
            raise api_error(_api_message(what, err), status=err.status or 0) from None
        except (OSError, HTTPError, ValueError) as err:
            # urllib3 errors (refused, reset, timed out) and bodies that are not JSON.
            raise api_error(f"{what}: {err}") from None

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
        watcher: Any = _RawWatch()
        try:
            for raw in watcher.stream(method, **kwargs):
                if not isinstance(raw, dict):
                    continue
                kind = raw.get("type")
                obj = raw.get("raw_object") or raw.get("object") or {}
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if kind in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK"):
                    yield WatchEvent(kind, obj, str(rv) if rv is not None else None)
        except ApiException as err:
            raise api_error(
                _api_message(f"watch {resource}", err), status=err.status or 0
            ) from None
        except (OSError, HTTPError, ValueError) as err:
            raise api_error(f"watch {resource}: {err}") from None
        finally:
            watcher.stop()

    def get(self, resource: Resource, name: str, *, namespace: str | None = None) -> dict[str, Any]:
        method = self._method(resource, "read")
        return self._call(
            f"get {resource} {object_key(namespace, name)}",
            method,
            name=name,
            **self._scope(resource, namespace),
        )

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
            body=self._body(resource, obj),
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
        return self._call(
            f"patch {resource} {object_key(namespace, name)}",
            self._method(resource, "patch"),
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


class _RawWatch(k8s_watch.Watch):  # type: ignore[misc]  # an untyped base class
    """``Watch`` that hands back raw JSON events (``raw_object``): the cache decodes
    them with this project's models, and the client's own decoding is skipped."""

    def get_return_type(self, func: Any) -> Any:
        del func
        return None


# --- Retries ------------------------------------------------------------------------------


def _backoff(initial_s: float, max_s: float) -> wait_base:
    """Exponential backoff from ``initial_s`` up to ``max_s``, plus up to ``initial_s`` of
    jitter so that many clients do not retry in step."""
    return wait_exponential(multiplier=initial_s, max=max_s) + wait_random(0, initial_s)


def _sleep_until(event: threading.Event) -> Callable[[float], None]:
    """A sleep for tenacity that ends early when ``event`` is set."""

    def sleep(seconds: float) -> None:
        event.wait(seconds)

    return sleep


def _is_retryable(err: BaseException) -> bool:
    return isinstance(err, ApiError) and err.retryable


def call_with_retries(
    call: Callable[[], _T],
    *,
    attempts: int = 5,
    initial_s: float = 0.2,
    max_s: float = 5.0,
    stop: threading.Event | None = None,
) -> _T:
    """``call()``, retried with exponential backoff and jitter while it raises a
    retryable ApiError (no answer, 429, 5xx), at most ``attempts`` times or until
    ``stop`` is set; the last error is raised."""
    event = stop or threading.Event()
    retrying = Retrying(
        retry=retry_if_exception(_is_retryable),
        wait=_backoff(initial_s, max_s),
        stop=stop_any(stop_after_attempt(attempts), stop_when_event_set(event)),
        sleep=_sleep_until(event),
        reraise=True,
        before_sleep=_log_retry,
    )
    return retrying(call)


def _log_retry(state: RetryCallState) -> None:
    outcome = state.outcome
    err = outcome.exception() if outcome is not None else None
    log.warning(
        "retrying after an API error",
        extra={"attempt": state.attempt_number, "error": str(err)},
    )


# --- Watches ------------------------------------------------------------------------------


class Sink(Protocol):
    """Where a :class:`Reflector` delivers what it sees (the cache)."""

    def replace(self, resource: Resource, items: list[dict[str, Any]]) -> None:
        """The complete current list (after a list or a relist)."""
        ...

    def apply(self, resource: Resource, event_type: str, obj: dict[str, Any]) -> None:
        """One ADDED / MODIFIED / DELETED change."""
        ...


class Reflector:
    """Keeps one resource of the cluster mirrored into a :class:`Sink`.

    ``run()`` lists, delivers the list, then watches from the list's
    resourceVersion, delivering each change, and resumes the watch from the
    last version seen (BOOKMARK events move it too) whenever the server ends
    it. A 410 Gone (the version is too old) means: list again. Any other error
    is retried after an exponential backoff with jitter (``initial_s`` up to
    ``max_s``), forever, until ``stop`` is set. ``synced`` is set after the
    first complete list was delivered.
    """

    def __init__(
        self,
        client: ClusterClient,
        resource: Resource,
        sink: Sink,
        *,
        stop: threading.Event,
        field_selector: str | None = None,
        label_selector: str | None = None,
        watch_timeout_s: float = 300.0,
        initial_s: float = 0.5,
        max_s: float = 30.0,
        on_relist: Callable[[Resource], None] | None = None,
    ) -> None:
        self.client = client
        self.resource = resource
        self.sink = sink
        self.stop = stop
        self.field_selector = field_selector
        self.label_selector = label_selector
        self.watch_timeout_s = watch_timeout_s
        self.initial_s = initial_s
        self.max_s = max_s
        self.on_relist = on_relist
        self.synced = threading.Event()
        self.resource_version: str | None = None
        #: Consecutive failures (0 while healthy); liveness looks at it.
        self.failures = 0

    def run(self) -> None:
        """Mirror until ``stop`` is set (see the class docstring). Never raises ApiError."""
        retrying = Retrying(
            retry=retry_if_exception(lambda err: isinstance(err, ApiError)),
            wait=_backoff(self.initial_s, self.max_s),
            stop=stop_when_event_set(self.stop),
            sleep=_sleep_until(self.stop),
            reraise=True,
            before_sleep=self._before_sleep,
        )
        while not self.stop.is_set():
            try:
                retrying(self._cycle)
            except ApiError:
                # Only reached when stop was set while failing.
                return

    def _before_sleep(self, state: RetryCallState) -> None:
        self.failures += 1
        outcome = state.outcome
        err = outcome.exception() if outcome is not None else None
        log.warning(
            "watch failed; retrying",
            extra={"resource": self.resource, "attempt": state.attempt_number, "error": str(err)},
        )

    def _cycle(self) -> None:
        """One list (when needed) and one watch until the server ends it."""
        if self.resource_version is None:
            listed = self.client.list(
                self.resource,
                field_selector=self.field_selector,
                label_selector=self.label_selector,
            )
            self.sink.replace(self.resource, listed.items)
            self.resource_version = listed.resource_version
            self.synced.set()
            # The server answered: healthy again, even if no change follows for a while
            # (after a restart, the first answer to a watch is a 410 and then this list).
            self.failures = 0
        try:
            for event in self.client.watch(
                self.resource,
                resource_version=self.resource_version,
                timeout_s=self.watch_timeout_s,
                field_selector=self.field_selector,
                label_selector=self.label_selector,
            ):
                if event.type != "BOOKMARK":
                    self.sink.apply(self.resource, event.type, event.object)
                if event.resource_version:
                    self.resource_version = event.resource_version
                self.failures = 0
                if self.stop.is_set():
                    return
        except GoneError:
            log.info("watch expired; listing again", extra={"resource": self.resource})
            self.resource_version = None
            if self.on_relist is not None:
                self.on_relist(self.resource)
            return
        self.failures = 0
