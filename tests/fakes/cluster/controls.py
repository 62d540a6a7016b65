"""The test controls of :class:`~tests.fakes.cluster.FakeCluster`: the call log, injected
faults and write hooks.

Every call is recorded as a :class:`Call` before anything else happens, so a test sees the
calls that failed too. A fault (:meth:`CallControls.fail`) makes the next matching calls
raise the error class of an HTTP status; a hook (:meth:`CallControls.before`) runs a
callback before the next matching writes, outside the server's lock, so the callback may
write to the cluster itself (a competing client).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from agent_kit.kube import api_error

__all__ = ["Call", "CallControls"]


@dataclass(frozen=True, slots=True)
class Call:
    """One recorded call: verb (list, watch, get, create, replace, replace_status,
    patch, patch_status, delete), resource, namespace and name (empty for list and watch)."""

    verb: str
    resource: str
    namespace: str | None
    name: str


@dataclass
class _Fault:
    verb: str
    resource: str
    status: int
    times: int
    name: str | None
    message: str = ""


@dataclass
class _Hook:
    verb: str
    resource: str
    callback: Callable[[], None]
    times: int
    name: str | None = None
    fired: int = field(default=0)


class CallControls:
    """The call log, the faults and the hooks; called with the server's lock held."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._faults: list[_Fault] = []
        self._hooks: list[_Hook] = []

    def fail(
        self, verb: str, resource: str, status: int, *, times: int, name: str | None, message: str
    ) -> None:
        self._faults.append(_Fault(verb, resource, status, times, name, message))

    def before(
        self,
        verb: str,
        resource: str,
        callback: Callable[[], None],
        *,
        times: int,
        name: str | None,
    ) -> None:
        self._hooks.append(_Hook(verb, resource, callback, times, name))

    def check(
        self, verb: str, resource: str, namespace: str | None, name: str, *, write: bool
    ) -> list[Callable[[], None]]:
        """Record the call, raise an injected fault, return the hooks to run (writes only)."""
        self.calls.append(Call(verb, resource, namespace, name))
        for fault in self._faults:
            if (
                fault.times > 0
                and fault.verb in (verb, "*")
                and fault.resource == resource
                and (fault.name is None or fault.name == name)
            ):
                fault.times -= 1
                message = f"{verb} {resource} {name}: injected {fault.status} {fault.message}"
                raise api_error(message.rstrip(), status=fault.status)
        hooks: list[Callable[[], None]] = []
        if write:
            for hook in self._hooks:
                if (
                    hook.fired < hook.times
                    and hook.verb in (verb, "*")
                    and hook.resource == resource
                    and (hook.name is None or hook.name == name)
                ):
                    hook.fired += 1
                    hooks.append(hook.callback)
        return hooks
