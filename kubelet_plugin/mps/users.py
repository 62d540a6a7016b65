"""One user ID per MPS GPU, enforced at prepare.

An MPS control daemon runs one server per user ID at a time: the clients of a
second UID wait, without an error, until every client of the first UID is
gone. The plugin runs one daemon per GPU for every claim holding shares of it
(:mod:`.daemons`), so it checks, before a claim joins a GPU, that the claim's
containers run as the UID the GPU already serves.

Who a claim's containers run as: the pods in the claim's ``status.reservedFor``
(the kubelet's prepare request names the claim only), each read with one GET,
and in each pod the containers and init containers that use the claim (their
``resources.claims`` name the pod's ``spec.resourceClaims`` entry of this claim,
or the scheduler mapped their extended resources to it). A container's UID is its
``securityContext.runAsUser``, else the pod's ``spec.securityContext.runAsUser``.

A container with neither runs as its image's user, which the plugin cannot know
(the image's config is the runtime's, read after prepare). Such a user is
*unknown*, and unknown matches nothing, not even another unknown one (two
images may name two users): a claim whose containers state no UID may use an
MPS GPU only alone (one container, no other claim on the GPU), and while it
does, no other claim joins the GPU. So two UIDs never share a daemon unnoticed;
the price is that pods sharing an MPS GPU must state ``runAsUser``. A pod in a
user namespace of its own (``spec.hostUsers: false``) is unknown too: its
runAsUser maps to a UID on the node that the runtime picks per pod.

What the plugin cannot see: a pod reserved on a claim after the claim was
prepared (the kubelet prepares a claim once, for its first pod on the node),
and a container's process that changes its own UID (setuid). docs/sharing.md
says so.

The UID a GPU serves is kept in ``user.json`` in the daemon's directory (next
to ``daemon.json``), written before the daemon starts and removed with the
directory when the last claim goes: a restarted plugin reads it again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from agent_kit.kube import ApiError, ClusterClient, NotFoundError
from api.errors import PrepareError
from api.resource_v1 import ResourceClaim

__all__ = [
    "ContainerUser",
    "KubernetesPodReader",
    "PodReader",
    "claim_users",
    "pod_users",
    "read_served_user",
    "refusal",
    "served_uid",
    "write_served_user",
]

#: Schema version of ``user.json``.
USER_RECORD_VERSION: Final = 1
USER_FILE: Final = "user.json"
HOST_USERS: Final = "spec.hostUsers"


@dataclass(frozen=True, slots=True)
class ContainerUser:
    """A container that uses a claim, and the UID it runs as.

    ``field`` is the field that sets ``uid`` (``spec.containers[0].securityContext.runAsUser``
    or ``spec.securityContext.runAsUser``); when ``uid`` is None (unknown), the container's
    field to set, or ``spec.hostUsers`` for a pod in a user namespace of its own (its
    runAsUser is mapped to a UID on the node that the plugin cannot know).
    """

    pod: str
    container: str
    field: str
    uid: int | None

    def describe(self) -> str:
        if self.field == HOST_USERS:
            return (
                f"container {self.container!r} of pod {self.pod} runs in a user namespace of "
                f"its own ({HOST_USERS}: false): its UID on the node is not its runAsUser, and "
                "the plugin cannot know it"
            )
        if self.uid is None:
            return (
                f"container {self.container!r} of pod {self.pod} states no runAsUser "
                f"({self.field} and spec.securityContext.runAsUser unset: it runs as its "
                "image's user, which the plugin cannot know)"
            )
        return (
            f"container {self.container!r} of pod {self.pod} runs as UID {self.uid} ({self.field})"
        )

    def fix(self, uid: str) -> str:
        """What makes this container run as ``uid`` on the node."""
        if self.field == HOST_USERS:
            return f"leave {HOST_USERS} out (or true) and run it as {uid}"
        return f"set {self.field} (or spec.securityContext.runAsUser) to {uid}"


class PodReader(Protocol):
    """Reads one pod as the API server returns it."""

    def get(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The pod's JSON, or None when it does not exist. Raises ApiError otherwise."""
        ...


class KubernetesPodReader:
    """Pods from the API server (the chart's kubelet plugin role grants ``get`` on pods)."""

    def __init__(self, client: ClusterClient) -> None:
        self._client = client

    def get(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        try:
            return self._client.get("pods", name, namespace=namespace)
        except NotFoundError:
            return None


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _sequence(value: object) -> Sequence[Any]:
    return value if isinstance(value, list) else []


def _run_as_user(context: object) -> int | None:
    uid = _mapping(context).get("runAsUser")
    return uid if isinstance(uid, int) and not isinstance(uid, bool) else None


def pod_users(pod: Mapping[str, Any], claim_name: str) -> list[ContainerUser]:
    """The containers (init containers first) of ``pod`` that use the claim ``claim_name``."""
    metadata, spec, status = (_mapping(pod.get(k)) for k in ("metadata", "spec", "status"))
    label = f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"
    generated = {
        s.get("name"): s.get("resourceClaimName")
        for s in map(_mapping, _sequence(status.get("resourceClaimStatuses")))
    }
    entries = {
        e.get("name")
        for e in map(_mapping, _sequence(spec.get("resourceClaims")))
        if claim_name in (e.get("resourceClaimName"), generated.get(e.get("name")))
    }
    extended = _mapping(status.get("extendedResourceClaimStatus"))
    mapped = (
        {m.get("containerName") for m in map(_mapping, _sequence(extended.get("requestMappings")))}
        if extended.get("resourceClaimName") == claim_name
        else set()
    )
    pod_uid = _run_as_user(spec.get("securityContext"))
    # In a user namespace of its own, each pod's UIDs map to a range of the node's.
    own_namespace = spec.get("hostUsers") is False
    users: list[ContainerUser] = []
    for key in ("initContainers", "containers"):
        for index, container in enumerate(map(_mapping, _sequence(spec.get(key)))):
            name = str(container.get("name", ""))
            claims = _sequence(_mapping(container.get("resources")).get("claims"))
            if name not in mapped and not any(_mapping(c).get("name") in entries for c in claims):
                continue
            own_field = f"spec.{key}[{index}].securityContext.runAsUser"
            own = _run_as_user(container.get("securityContext"))
            if own_namespace:
                users.append(ContainerUser(label, name, HOST_USERS, None))
            elif own is not None:
                users.append(ContainerUser(label, name, own_field, own))
            elif pod_uid is not None:
                users.append(ContainerUser(label, name, "spec.securityContext.runAsUser", pod_uid))
            else:
                users.append(ContainerUser(label, name, own_field, None))
    return users


def claim_users(claim: ResourceClaim, pods: PodReader, label: str) -> list[ContainerUser]:
    """The containers of the claim's reserved pods that use it; one GET per pod.

    A pod that is gone (or replaced by one of the same name) is skipped: it runs nothing.
    Raises a retryable PrepareError when a pod cannot be read."""
    namespace = claim.metadata.namespace or ""
    name = claim.metadata.name or ""
    users: list[ContainerUser] = []
    reserved = claim.status.reserved_for if claim.status is not None else None
    for ref in reserved or []:
        if ref.resource != "pods" or ref.api_group:
            continue
        try:
            pod = pods.get(namespace, ref.name)
        except ApiError as err:
            raise PrepareError(
                f"reading pod {namespace}/{ref.name} (status.reservedFor) for the user ID its "
                f"containers run as, which an MPS GPU needs, failed: {err}; the kubelet retries "
                "(the plugin needs get on pods)",
                claim=label,
                retryable=True,
            ) from None
        if pod is None or _mapping(pod.get("metadata")).get("uid") != ref.uid:
            continue
        users.extend(pod_users(pod, name))
    return users


_SAME_UID: Final = (
    "MPS runs one server per user ID at a time, and a second UID's clients wait until every "
    "client of the first is gone"
)


def refusal(
    users: Sequence[ContainerUser], gpu: str, others: int, served: int | None
) -> str | None:
    """Why a claim whose containers are ``users`` may not use the MPS GPU ``gpu``; None if
    it may. ``others``: how many other claims hold the GPU; ``served``: the UID they run
    as (None: unknown, the image's user). A claim none of whose reserved pods' containers
    uses it (the pods are gone) starts no client: it is let through, and alone on the GPU
    it leaves the UID unknown (pods reserved later are not prepared again)."""
    known = [u for u in users if u.uid is not None]
    unknown = [u for u in users if u.uid is None]
    for user in known[1:]:
        if user.uid != known[0].uid:
            return (
                f"{user.describe()}, but {known[0].describe()}, and both use MPS GPU {gpu}: "
                f"{_SAME_UID}; set runAsUser of both to one UID"
            )
    if unknown and (len(users) > 1 or others):
        sharing = f"{len(users)} containers use" if len(users) > 1 else "other claims hold"
        wanted = f"{served}" if others and served is not None else "the UID they all run as"
        return (
            f"{unknown[0].describe()}, and {sharing} MPS GPU {gpu}: {_SAME_UID}, so every "
            f"container that shares it must state its UID; {unknown[0].fix(wanted)}"
        )
    if not others:
        return None
    if not users:
        return None  # no container of its reserved pods uses it: nobody joins the server
    if served is None:
        return (
            f"{known[0].describe()}, but MPS GPU {gpu} serves {others} other claim(s) whose "
            f"user ID is unknown (their containers state no runAsUser, or no UID was recorded "
            f"when they were prepared): {_SAME_UID}; give every pod that shares the GPU one "
            "runAsUser, or ask for another GPU"
        )
    if known[0].uid != served:
        return (
            f"{known[0].describe()}, but MPS GPU {gpu} serves UID {served} for {others} other "
            f"claim(s): {_SAME_UID}; set {known[0].field} to {served}, or ask for another GPU"
        )
    return None


def served_uid(users: Sequence[ContainerUser]) -> int | None:
    """The one UID of a claim that :func:`refusal` let through; None: unknown."""
    known = [u.uid for u in users if u.uid is not None]
    return known[0] if known and len(known) == len(users) else None


def read_served_user(directory: Path) -> int | None:
    """The UID recorded in ``directory``'s ``user.json``; None: unknown (no record, a
    record of an unknown user, or one that does not read)."""
    try:
        data = json.loads(Path(directory, USER_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != USER_RECORD_VERSION:
        return None
    uid = data.get("runAsUser")
    return uid if isinstance(uid, int) and not isinstance(uid, bool) else None


def write_served_user(directory: Path, uid: int | None) -> None:
    """Record ``uid`` (None: unknown) in ``directory``'s ``user.json``, crash-safely.
    Raises OSError."""
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    path = directory / USER_FILE
    temporary = path.with_suffix(".tmp")
    with open(temporary, "w") as out:
        json.dump({"version": USER_RECORD_VERSION, "runAsUser": uid}, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
