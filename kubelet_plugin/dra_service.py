"""The DRA kubelet plugin services v1 and v1beta1: NodePrepareResources and
NodeUnprepareResources translated into :class:`~kubelet_plugin.node_driver.NodeDriver` calls.

Both versions share one :class:`ClaimDispatcher`, which owns the response
contract the kubelet relies on:

- every claim of a request gets an entry, keyed by its UID, and no other
  UID appears (the kubelet fails the pod sync on a missing or foreign UID);
- a failing claim is reported in its own entry, never as a failed RPC: an
  invalid claim reference, a driver that leaves a claim out, a driver that
  raises (logged with its traceback) or one that overruns the kubelet's
  deadline each become per-claim errors, and the kubelet retries;
- driver calls run on the dispatcher's own thread pool, so a slow driver
  holds at most ``max_workers`` driver calls at a time and a gRPC handler
  waits for it no longer than the caller's deadline. Calls from concurrent
  RPCs run concurrently (the driver is thread-safe by contract).
- a call still queued when the caller's deadline passes is dropped, never
  run later; one already running goes on in the background (it cannot be cut
  short between side effects), and the driver keeps it from undoing an
  unprepare that comes after it (:mod:`kubelet_plugin.driver.ordering`).

A request without claims answers at once without calling the driver; the
liveness check uses it to exercise the DRA socket cheaply.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import Protocol, TypeVar

import grpc

from kubelet_plugin.node_driver import ClaimRef, NodeDriver, PreparedDevice, PrepareResult
from kubelet_plugin.proto_gen.dra.v1 import api_pb2 as dra_v1
from kubelet_plugin.proto_gen.dra.v1 import api_pb2_grpc as dra_v1_grpc
from kubelet_plugin.proto_gen.dra.v1beta1 import api_pb2 as dra_v1beta1
from kubelet_plugin.proto_gen.dra.v1beta1 import api_pb2_grpc as dra_v1beta1_grpc

_log = logging.getLogger(__name__)

_Result = TypeVar("_Result")


class _WireClaim(Protocol):
    """``Claim`` of either API version."""

    namespace: str
    uid: str
    name: str


def _describe(claim: ClaimRef) -> str:
    return f"{claim} (uid {claim.uid!r})"


class ClaimDispatcher:
    """Runs prepare/unprepare on a :class:`NodeDriver` and completes its answers.

    Thread-safe. :meth:`shutdown` waits for driver calls in progress, so that a
    stopping plugin does not cut a prepare short between its side effects.
    """

    def __init__(self, driver: NodeDriver, *, max_workers: int = 8) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
        self._driver = driver
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix="dra-driver-call")

    def prepare(
        self, claims: Sequence[ClaimRef], timeout: float | None = None
    ) -> dict[str, PrepareResult]:
        """Prepare ``claims``; returns a result for every claim UID of the request.

        ``timeout`` (seconds, None for no limit) bounds the wait for the driver,
        normally the caller's remaining deadline.
        """
        return self._call(
            "prepare",
            self._driver.prepare,
            claims,
            timeout,
            lambda message: PrepareResult(error=message),
        )

    def unprepare(
        self, claims: Sequence[ClaimRef], timeout: float | None = None
    ) -> dict[str, str | None]:
        """Unprepare ``claims``; returns None (done) or an error message per claim UID."""
        return self._call("unprepare", self._driver.unprepare, claims, timeout, lambda m: m)

    def shutdown(self) -> None:
        """Refuse new calls and wait for the driver calls in progress to return."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _call(
        self,
        operation: str,
        method: Callable[[Sequence[ClaimRef]], Mapping[str, _Result]],
        claims: Sequence[ClaimRef],
        timeout: float | None,
        failure: Callable[[str], _Result],
    ) -> dict[str, _Result]:
        results: dict[str, _Result] = {}
        todo: dict[str, ClaimRef] = {}
        for claim in claims:
            if not (claim.namespace and claim.name and claim.uid):
                results[claim.uid] = failure(
                    f"{_describe(claim)}: the kubelet sent a claim without namespace, name "
                    "or uid; all three are required"
                )
            else:
                todo.setdefault(claim.uid, claim)
        if not todo:
            return results

        batch = list(todo.values())
        try:
            future = self._executor.submit(method, batch)
        except RuntimeError:  # shut down: the plugin is stopping
            message = (
                f"{operation} refused: the kubelet plugin is shutting down; the kubelet retries"
            )
            return results | {uid: failure(message) for uid in todo}
        try:
            answer = future.result(timeout=timeout)
        except FutureTimeoutError:
            if future.cancel():
                # Queued behind other calls and never started: drop it, so that it
                # cannot run after the kubelet moved on (and, say, unprepared a claim).
                _log.error(
                    "%s of %d claim(s) not started before the caller's deadline (%.1f s), "
                    "dropped: %s",
                    operation,
                    len(batch),
                    timeout,
                    ", ".join(_describe(c) for c in batch),
                )
                message = (
                    f"{operation} did not start before the kubelet's deadline (the plugin is "
                    "busy with other calls); nothing was done, the kubelet retries"
                )
                return results | {uid: failure(message) for uid in todo}
            _log.error(
                "%s of %d claim(s) still running after the caller's deadline (%.1f s): %s",
                operation,
                len(batch),
                timeout,
                ", ".join(_describe(c) for c in batch),
            )
            message = (
                f"{operation} did not finish before the kubelet's deadline; it goes on in "
                "the background and the kubelet retries"
            )
            return results | {uid: failure(message) for uid in todo}
        except Exception as error:
            _log.exception(
                "%s of %d claim(s) raised: %s",
                operation,
                len(batch),
                ", ".join(_describe(c) for c in batch),
            )
            message = (
                f"{operation} failed with an unexpected driver error "
                f"({type(error).__name__}: {error}); the kubelet retries, the plugin log "
                "has the details"
            )
            return results | {uid: failure(message) for uid in todo}

        for uid, claim in todo.items():
            if uid in answer:
                results[uid] = answer[uid]
            else:
                _log.error("%s: the driver returned no %s result", _describe(claim), operation)
                results[uid] = failure(
                    f"{operation} returned no result for this claim (a driver bug); "
                    "the kubelet retries"
                )
        foreign = sorted(set(answer) - set(todo))
        if foreign:
            _log.error("%s: the driver answered for claims not requested: %s", operation, foreign)
        return results


def _claim_refs(claims: Iterable[_WireClaim]) -> list[ClaimRef]:
    return [ClaimRef(namespace=c.namespace, name=c.name, uid=c.uid) for c in claims]


def request_names(device: PreparedDevice) -> list[str]:
    """The ``request_names`` the kubelet expects for ``device``.

    Subrequests (``gpu/big``) are reported as their parent request (``gpu``):
    containers reference top-level requests in ``resources.claims[].request``.
    Order is kept, duplicates dropped.
    """
    return list(dict.fromkeys(name.split("/", 1)[0] for name in device.requests))


def _driver_timeout(context: grpc.ServicerContext) -> float | None:
    """How long to wait for the driver: the caller's remaining deadline, less a
    margin so that the per-claim "did not finish" answer, which says what
    happens next, still reaches the kubelet before its own deadline fires."""
    remaining: float | None = context.time_remaining()
    if remaining is None:
        return None
    return max(remaining - min(1.0, remaining * 0.1), 0.0)


class DraV1Servicer(dra_v1_grpc.DRAPluginServicer):
    """``k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin``."""

    def __init__(self, dispatcher: ClaimDispatcher) -> None:
        self._dispatcher = dispatcher

    def NodePrepareResources(  # noqa: N802 - the gRPC method name
        self, request: dra_v1.NodePrepareResourcesRequest, context: grpc.ServicerContext
    ) -> dra_v1.NodePrepareResourcesResponse:
        results = self._dispatcher.prepare(_claim_refs(request.claims), _driver_timeout(context))
        response = dra_v1.NodePrepareResourcesResponse()
        for uid, result in results.items():
            entry = response.claims[uid]
            if result.error:
                entry.error = result.error
                continue
            for device in result.devices:
                wire = entry.devices.add(
                    request_names=request_names(device),
                    pool_name=device.pool,
                    device_name=device.device,
                    cdi_device_ids=list(device.cdi_device_ids),
                )
                if device.share_id is not None:
                    wire.share_id = device.share_id
        return response

    def NodeUnprepareResources(  # noqa: N802 - the gRPC method name
        self, request: dra_v1.NodeUnprepareResourcesRequest, context: grpc.ServicerContext
    ) -> dra_v1.NodeUnprepareResourcesResponse:
        results = self._dispatcher.unprepare(_claim_refs(request.claims), _driver_timeout(context))
        response = dra_v1.NodeUnprepareResourcesResponse()
        for uid, error in results.items():
            response.claims[uid].error = error or ""
        return response


class DraV1beta1Servicer(dra_v1beta1_grpc.DRAPluginServicer):
    """``k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin`` (kubelet 1.32/1.33).

    Same behaviour as v1; v1beta1 has no ``share_id``, so a device's share ID
    is not reported (kubelets that only speak v1beta1 predate consumable
    capacity).
    """

    def __init__(self, dispatcher: ClaimDispatcher) -> None:
        self._dispatcher = dispatcher

    def NodePrepareResources(  # noqa: N802 - the gRPC method name
        self, request: dra_v1beta1.NodePrepareResourcesRequest, context: grpc.ServicerContext
    ) -> dra_v1beta1.NodePrepareResourcesResponse:
        results = self._dispatcher.prepare(_claim_refs(request.claims), _driver_timeout(context))
        response = dra_v1beta1.NodePrepareResourcesResponse()
        for uid, result in results.items():
            entry = response.claims[uid]
            if result.error:
                entry.error = result.error
                continue
            for device in result.devices:
                entry.devices.add(
                    request_names=request_names(device),
                    pool_name=device.pool,
                    device_name=device.device,
                    cdi_device_ids=list(device.cdi_device_ids),
                )
        return response

    def NodeUnprepareResources(  # noqa: N802 - the gRPC method name
        self, request: dra_v1beta1.NodeUnprepareResourcesRequest, context: grpc.ServicerContext
    ) -> dra_v1beta1.NodeUnprepareResourcesResponse:
        results = self._dispatcher.unprepare(_claim_refs(request.claims), _driver_timeout(context))
        response = dra_v1beta1.NodeUnprepareResourcesResponse()
        for uid, error in results.items():
            response.claims[uid].error = error or ""
        return response
