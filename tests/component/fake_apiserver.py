"""A small stand-in for kube-apiserver on loopback: the REST calls the kubelet plugin makes.

Paths and semantics follow the real server, as far as the plugin can tell:

- ``GET /api/v1/nodes/<name>``: the Node (the plugin reads its UID).
- ``GET /apis/resource.k8s.io/v1/namespaces/<ns>/resourceclaims/<name>``.
- ``GET /apis/resource.k8s.io/v1/resourceslices?fieldSelector=...``: a list whose
  ``metadata.resourceVersion`` is the latest write; items without ``kind`` and
  ``apiVersion``, as the real server sends them. Supported field selectors:
  ``spec.nodeName`` and ``spec.driver`` (``=`` or ``==``); others get a 400.
- the same with ``watch=true&resourceVersion=N&timeoutSeconds=T``: a chunked
  stream of JSON watch events (``{"type": ..., "object": ...}`` per line) for
  writes after N, until T seconds passed or the server stops.
- ``POST .../resourceslices``, ``PUT .../resourceslices/<name>`` (409 when
  ``metadata.resourceVersion`` is stale, 404 when gone), ``DELETE
  .../resourceslices/<name>`` (404 when gone).

Every write gets a new resourceVersion from one counter; new slices get a
uid and a creationTimestamp; taints without ``timeAdded`` get one, as the
real server stamps them. Errors are ``Status`` objects. Tests drive it
directly: :meth:`FakeApiServer.put_claim`, :meth:`FakeApiServer.delete_slice`
(what the kubelet does at its start-up), and read :attr:`FakeApiServer.history`.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

RESOURCE = "/apis/resource.k8s.io/v1"
SLICES = f"{RESOURCE}/resourceslices"
NOW = "2026-01-01T00:00:00Z"
_SELECTABLE = {"spec.nodeName": ("nodeName",), "spec.driver": ("driver",)}


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message

    def status(self) -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }


@dataclass(frozen=True)
class Write:
    """One write to a ResourceSlice, as the server stored it (DELETED: the last state)."""

    type: str
    resource_version: int
    object: dict[str, Any]


def _utc(text: str) -> str:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _selector(query: dict[str, list[str]]) -> Callable[[dict[str, Any]], bool]:
    terms: list[tuple[tuple[str, ...], str]] = []
    for raw in ",".join(query.get("fieldSelector", [])).split(","):
        if not raw:
            continue
        field, _, value = raw.replace("==", "=").partition("=")
        if field not in _SELECTABLE:
            raise ApiError(
                400,
                "BadRequest",
                f'field label not supported: "{field}"',
            )
        terms.append((_SELECTABLE[field], value))

    def matches(obj: dict[str, Any]) -> bool:
        spec = obj.get("spec") or {}
        return all(spec.get(path[0]) == value for path, value in terms)

    return matches


class FakeApiServer:
    """Serve on 127.0.0.1 with a free port; thread-safe; use as a context manager."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._rv = itertools.count(1)
        self._last_rv = 0
        self._closing = False
        self.nodes: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        """Every core/v1 Event created, in order."""
        self.claims: dict[tuple[str, str], dict[str, Any]] = {}
        self._slices: dict[str, dict[str, Any]] = {}
        self.history: list[Write] = []
        """Every slice write in order (created, updated, deleted)."""
        self.requests: list[tuple[str, str]] = []
        """(method, path with query) of every request, in arrival order."""
        self.unreachable = False
        """While true, every request's connection is closed without an answer (an
        API server restarting, a load balancer dropping connections)."""
        self._streams: set[socket.socket] = set()
        handler = type("Handler", (_Handler,), {"api": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> FakeApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def write_kubeconfig(self, path: Path) -> Path:
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "current-context": "fake",
        }
        path.write_text(json.dumps(document))  # JSON is YAML
        return path

    # --- test controls ------------------------------------------------------------

    def put_node(self, name: str, uid: str) -> None:
        with self._cond:
            self.nodes[name] = {
                "kind": "Node",
                "apiVersion": "v1",
                "metadata": {"name": name, "uid": uid, "resourceVersion": str(self._bump())},
            }

    def set_node_status(self, name: str, status: dict[str, Any]) -> None:
        """Replace the Node's status (``allocatable``, ``capacity``), as the kubelet does."""
        with self._cond:
            node = self.nodes[name]
            node["status"] = copy.deepcopy(status)
            node["metadata"]["resourceVersion"] = str(self._bump())

    def event_reasons(self) -> list[str]:
        with self._cond:
            return [e["reason"] for e in self.events]

    def put_claim(self, claim: dict[str, Any]) -> None:
        meta = claim["metadata"]
        with self._cond:
            stored = copy.deepcopy(claim)
            stored["metadata"]["resourceVersion"] = str(self._bump())
            self.claims[(meta["namespace"], meta["name"])] = stored

    def slices(self) -> dict[str, dict[str, Any]]:
        """The stored slices by name (copies)."""
        with self._cond:
            return copy.deepcopy(self._slices)

    def delete_slice(self, name: str) -> None:
        """Delete as a client would (the kubelet wipes a node's slices at its start-up)."""
        with self._cond:
            self._delete(name)

    def drop_watches(self) -> None:
        """Cut every open watch connection without ending its stream properly."""
        with self._cond:
            streams = list(self._streams)
        for connection in streams:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def wait_for(
        self,
        predicate: Callable[[], bool],
        what: str,
        timeout: float = 30.0,
        on_timeout: Callable[[], str] | None = None,
    ) -> None:
        """Poll ``predicate`` until true; AssertionError naming ``what`` (and what
        ``on_timeout`` says, e.g. the plugin's log) after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                detail = f":\n{on_timeout()}" if on_timeout is not None else ""
                raise AssertionError(f"timed out waiting for {what}{detail}")
            time.sleep(0.05)

    # --- storage (caller holds the condition) --------------------------------------

    def _bump(self) -> int:
        self._last_rv = next(self._rv)
        return self._last_rv

    def _record(self, kind: str, obj: dict[str, Any], rv: int) -> None:
        self.history.append(Write(kind, rv, copy.deepcopy(obj)))
        self._cond.notify_all()

    def _store_slice(
        self, body: dict[str, Any], *, existing: dict[str, Any] | None
    ) -> dict[str, Any]:
        obj = copy.deepcopy(body)
        obj["kind"], obj["apiVersion"] = "ResourceSlice", "resource.k8s.io/v1"
        meta = obj.setdefault("metadata", {})
        if existing is None:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = NOW
        else:
            meta["uid"] = existing["metadata"]["uid"]
            meta["creationTimestamp"] = existing["metadata"]["creationTimestamp"]
        for device in (obj.get("spec") or {}).get("devices") or []:
            for taint in device.get("taints") or []:
                # Stored as metav1.Time: RFC 3339 in UTC, whole seconds, "Z".
                added = taint.get("timeAdded")
                taint["timeAdded"] = _utc(added) if added else NOW
        rv = self._bump()
        meta["resourceVersion"] = str(rv)
        self._slices[meta["name"]] = obj
        self._record("MODIFIED" if existing else "ADDED", obj, rv)
        return obj

    def _delete(self, name: str) -> dict[str, Any]:
        obj = self._slices.pop(name, None)
        if obj is None:
            raise ApiError(404, "NotFound", f'resourceslices.resource.k8s.io "{name}" not found')
        rv = self._bump()
        obj["metadata"]["resourceVersion"] = str(rv)
        self._record("DELETED", obj, rv)
        return obj

    # --- request handling -------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Any:
        """The JSON answer of a non-watch request; raises ApiError."""
        parts = path.strip("/").split("/")
        with self._cond:
            if method == "GET" and parts[:3] == ["api", "v1", "nodes"] and len(parts) == 4:
                node = self.nodes.get(parts[3])
                if node is None:
                    raise ApiError(404, "NotFound", f'nodes "{parts[3]}" not found')
                return node
            if (
                method == "POST"
                and parts[:3] == ["api", "v1", "namespaces"]
                and parts[4:] == ["events"]
            ):
                event = copy.deepcopy(body)
                event.setdefault("metadata", {})["resourceVersion"] = str(self._bump())
                self.events.append(event)
                return event
            if (
                method == "GET"
                and path.startswith(f"{RESOURCE}/namespaces/")
                and len(parts) == 7
                and parts[5] == "resourceclaims"
            ):
                claim = self.claims.get((parts[4], parts[6]))
                if claim is None:
                    raise ApiError(
                        404, "NotFound", f'resourceclaims.resource.k8s.io "{parts[6]}" not found'
                    )
                return claim
            if path == SLICES and method == "GET":
                matches = _selector(query)
                items = []
                for name in sorted(self._slices):
                    obj = self._slices[name]
                    if matches(obj):
                        item = copy.deepcopy(obj)
                        item.pop("kind", None)
                        item.pop("apiVersion", None)
                        items.append(item)
                return {
                    "kind": "ResourceSliceList",
                    "apiVersion": "resource.k8s.io/v1",
                    "metadata": {"resourceVersion": str(self._last_rv)},
                    "items": items,
                }
            if path == SLICES and method == "POST":
                created = (body.get("metadata") or {}).get("name")
                if not created:
                    raise ApiError(422, "Invalid", "metadata.name: Required value")
                if created in self._slices:
                    raise ApiError(
                        409,
                        "AlreadyExists",
                        f'resourceslices.resource.k8s.io "{created}" already exists',
                    )
                return self._store_slice(body, existing=None)
            if path.startswith(SLICES + "/") and len(parts) == 5:
                name = parts[4]
                if method == "GET":
                    if name not in self._slices:
                        raise ApiError(
                            404, "NotFound", f'resourceslices.resource.k8s.io "{name}" not found'
                        )
                    return self._slices[name]
                if method == "PUT":
                    existing = self._slices.get(name)
                    if existing is None:
                        raise ApiError(
                            404, "NotFound", f'resourceslices.resource.k8s.io "{name}" not found'
                        )
                    wanted = (body.get("metadata") or {}).get("resourceVersion")
                    if wanted and wanted != existing["metadata"]["resourceVersion"]:
                        raise ApiError(
                            409,
                            "Conflict",
                            f"Operation cannot be fulfilled on resourceslices.resource.k8s.io "
                            f'"{name}": the object has been modified; please apply your '
                            "changes to the latest version and try again",
                        )
                    return self._store_slice(body, existing=existing)
                if method == "DELETE":
                    return self._delete(name)
        raise ApiError(404, "NotFound", f"the server could not find the requested resource {path}")

    def watch(
        self, query: dict[str, list[str]], is_open: Callable[[], bool]
    ) -> Iterator[dict[str, Any] | None]:
        """Watch events after ``resourceVersion``; None now and then so the caller can
        notice a closed connection. Ends at ``timeoutSeconds`` or when the server stops."""
        matches = _selector(query)
        position = int((query.get("resourceVersion") or ["0"])[0] or 0)
        timeout = float((query.get("timeoutSeconds") or ["1800"])[0])
        deadline = time.monotonic() + timeout
        while is_open():
            with self._cond:
                pending = [w for w in self.history if w.resource_version > position]
                if not pending:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._closing:
                        return
                    self._cond.wait(min(remaining, 0.5))
                    pending = [w for w in self.history if w.resource_version > position]
                if self._closing:
                    return
            if not pending:
                yield None
                continue
            for write in pending:
                position = write.resource_version
                if matches(write.object):
                    yield {"type": write.type, "object": write.object}


class _Handler(BaseHTTPRequestHandler):
    api: FakeApiServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        query = parse_qs(split.query)
        with self.api._cond:
            self.api.requests.append((method, self.path))
            unreachable = self.api.unreachable
        if unreachable:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        if method == "GET" and (query.get("watch") or ["false"])[0] in ("true", "1"):
            try:
                events = self.api.watch(query, lambda: not self.wfile.closed)
                first = next(events, None)  # a bad selector fails before the headers
            except ApiError as err:
                self._answer(err.code, err.status())
                return
            self._stream(first, events)
            return
        try:
            answer = self.api.handle(method, split.path, query, body)
        except ApiError as err:
            self._answer(err.code, err.status())
            return
        self._answer(201 if method == "POST" else 200, answer)

    def _answer(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, first: dict[str, Any] | None, rest: Iterator[dict[str, Any] | None]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        with self.api._cond:
            self.api._streams.add(self.connection)
        try:
            for event in itertools.chain([first], rest):
                if event is None:
                    continue
                data = json.dumps(event).encode() + b"\n"
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:  # the client went away, or drop_watches() cut the stream
            self.close_connection = True
        finally:
            with self.api._cond:
                self.api._streams.discard(self.connection)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")
