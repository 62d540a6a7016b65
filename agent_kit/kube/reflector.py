"""Watch mirroring: :class:`Reflector` keeps one resource of the cluster in a :class:`Sink`.

It lists, then watches from the list's resourceVersion, relists on 410 Gone, and retries
everything else with the policy of :func:`agent_kit.kube.retry.retry_until_stopped`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from agent_kit.kube.client import ClusterClient, Resource
from agent_kit.kube.errors import ApiError, GoneError
from agent_kit.kube.retry import retry_until_stopped

__all__ = ["Reflector", "Sink"]

log = logging.getLogger(__name__)


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
        retrying = retry_until_stopped(
            self.stop,
            initial_s=self.initial_s,
            max_s=self.max_s,
            on_retry=self._before_sleep,
        )
        while not self.stop.is_set():
            try:
                retrying(self._cycle)
            except ApiError:
                # Only reached when stop was set while failing.
                return

    def _before_sleep(self, err: BaseException, attempt: int) -> None:
        self.failures += 1
        log.warning(
            "watch failed; retrying",
            extra={"resource": self.resource, "attempt": attempt, "error": str(err)},
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
