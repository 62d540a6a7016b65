"""Device metadata files for containers (KEP-5304): names, paths and the JSON a workload reads.

For each request of a prepared claim, the kubelet plugin writes one file that
tells the containers using the request which devices they got and what those
devices are (GPU UUID, PCI bus ID, NUMA node...), so a workload (NCCL, vLLM,
KubeVirt) needs no access to the API server. The layout and the format are the
ones the upstream Go kubelet-plugin library writes (``kubeletplugin/metadata.go``
and ``api/metadata`` in ``k8s.io/dynamic-resource-allocation``):

- inside the container, read-only:
  ``/var/run/kubernetes.io/dra-device-attributes`` (:data:`CONTAINER_DIR`), then
  ``resourceclaims/<claim name>/<request>/<driver>-metadata.json`` for a claim the pod
  names, and
  ``resourceclaimtemplates/<pod claim name>/<request>/<driver>-metadata.json``
  for a claim made from a template, where ``<pod claim name>`` is the pod's
  ``spec.resourceClaims[].name`` (the claim's ``resource.kubernetes.io/pod-claim-name``
  annotation): the generated claim name is not known when the pod is written;
- ``<request>`` is the request's name without a subrequest (``gpu`` for ``gpu/large``);
- the file is a stream of JSON documents, the same ``DeviceMetadata`` once per API
  version, newest first (``metadata.resource.k8s.io/v1beta1``, then ``v1alpha1`` for
  readers built against Kubernetes 1.36), each pretty-printed with two-space indents and
  followed by a newline; a reader takes the first version it knows.

On the host the plugin keeps the files under ``<metadata root>/<claim uid>/<request>/``
and the claim's CDI spec bind-mounts each one (a CDI device per request, named
``<claim uid>-metadata-<request>``, whose ID the plugin adds to the first device of the
request in its answer to the kubelet, as the upstream library does).

Pure: paths and bytes only; the kubelet plugin writes and removes the files.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from api.resource_v1 import DeviceAttribute
from api.validation.names import is_dns1123_label
from dra_driver.cdi import cdi_device_id
from dra_driver.discovery.model import NodeInventory
from dra_driver.slices import device_attributes

__all__ = [
    "CONTAINER_DIR",
    "METADATA_API_VERSIONS",
    "POD_CLAIM_NAME_ANNOTATION",
    "MetadataDevice",
    "PlannedMetadata",
    "base_request",
    "container_file_path",
    "encode_device_metadata",
    "first_device_ids",
    "host_claim_dir",
    "host_file_path",
    "metadata_cdi_device_name",
    "plan_request_files",
    "request_file_contents",
]

#: Where containers find the metadata files (part of the consumer-facing API upstream).
CONTAINER_DIR: Final = "/var/run/kubernetes.io/dra-device-attributes"
_CLAIMS_SUBDIR: Final = "resourceclaims"
_TEMPLATES_SUBDIR: Final = "resourceclaimtemplates"
_FILE_SUFFIX: Final = "-metadata.json"

#: The API versions written, newest first. v1beta1 is the latest the pinned library knows
#: (it refuses to write without it); v1alpha1 is all that 1.36 readers understand.
METADATA_API_VERSIONS: Final = (
    "metadata.resource.k8s.io/v1beta1",
    "metadata.resource.k8s.io/v1alpha1",
)

#: Set by the ResourceClaim controller on claims made from a template: the pod's name
#: for the claim (``pod.spec.resourceClaims[].name``).
POD_CLAIM_NAME_ANNOTATION: Final = "resource.kubernetes.io/pod-claim-name"

# json.dumps leaves these as they are; Go's encoder writes them as \u escapes.
_GO_ESCAPES: Final = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


@dataclass(frozen=True, slots=True)
class MetadataDevice:
    """One device of a request, as the metadata file lists it."""

    pool: str
    name: str
    attributes: Mapping[str, DeviceAttribute]
    """Keys as in a ResourceSlice (``uuid``, ``resource.kubernetes.io/pciBusID``)."""


def base_request(request: str) -> str:
    """The request's name without its subrequest: ``gpu/large`` -> ``gpu``."""
    return request.split("/", 1)[0]


def _checked(value: str, what: str) -> str:
    # A name becomes a path segment on the host and in the container: DNS labels only.
    if not is_dns1123_label(value):
        raise ValueError(f"{what} {value!r} is not a DNS label; it cannot name a metadata path")
    return value


def container_file_path(
    driver_name: str, claim_name: str, pod_claim_name: str | None, request: str
) -> str:
    """Where a container reads the file of ``request`` (subrequest dropped).

    Under ``resourceclaimtemplates/<pod claim name>`` when ``pod_claim_name`` is set and
    not empty (a claim made from a template), else ``resourceclaims/<claim name>``.
    Raises ValueError when a name is not a DNS label (the claim name: a subdomain).
    """
    request_dir = _checked(base_request(request), "request name")
    if pod_claim_name:
        owner = posixpath.join(_TEMPLATES_SUBDIR, _checked(pod_claim_name, "pod claim name"))
    else:
        if not claim_name or "/" in claim_name or claim_name in (".", ".."):
            raise ValueError(f"claim name {claim_name!r} cannot name a metadata path")
        owner = posixpath.join(_CLAIMS_SUBDIR, claim_name)
    return posixpath.join(CONTAINER_DIR, owner, request_dir, driver_name + _FILE_SUFFIX)


def host_claim_dir(root: str, claim_uid: str) -> str:
    """The host directory of one claim's metadata files: ``<root>/<claim uid>``."""
    if not claim_uid or "/" in claim_uid or claim_uid in (".", ".."):
        raise ValueError(f"claim UID {claim_uid!r} cannot name a metadata directory")
    return posixpath.join(root, claim_uid)


def host_file_path(root: str, claim_uid: str, driver_name: str, request: str) -> str:
    """The host file of ``request``: ``<root>/<claim uid>/<request>/<driver>-metadata.json``."""
    request_dir = _checked(base_request(request), "request name")
    return posixpath.join(host_claim_dir(root, claim_uid), request_dir, driver_name + _FILE_SUFFIX)


def metadata_cdi_device_name(claim_uid: str, request: str) -> str:
    """The CDI device (in the claim's spec) that mounts the file of ``request``."""
    return f"{claim_uid}-metadata-{_checked(base_request(request), 'request name')}"


def encode_device_metadata(
    *,
    driver_name: str,
    namespace: str,
    name: str,
    uid: str,
    pod_claim_name: str | None,
    request: str,
    devices: Sequence[MetadataDevice],
    generation: int = 1,
) -> bytes:
    """The metadata file of one request: a ``DeviceMetadata`` per API version, newest first.

    ``request`` is the name as allocated (``gpu/large`` keeps its subrequest here; the
    path does not). Deterministic: the same inputs give the same bytes, which are
    those the upstream library writes for the same object.
    """
    newest, *older = METADATA_API_VERSIONS
    # Key order is the Go struct's field order; attribute names are sorted, as Go sorts
    # map keys.
    document: dict[str, object] = {
        "kind": "DeviceMetadata",
        "apiVersion": newest,
        "metadata": {"name": name, "namespace": namespace, "uid": uid, "generation": generation},
    }
    if pod_claim_name is not None:
        document["podClaimName"] = pod_claim_name
    listed: list[dict[str, object]] = []
    for device in devices:
        entry: dict[str, object] = {"driver": driver_name, "pool": device.pool, "name": device.name}
        if device.attributes:
            entry["attributes"] = {
                key: device.attributes[key].model_dump(
                    mode="json", by_alias=True, exclude_none=True
                )
                for key in sorted(device.attributes)
            }
        listed.append(entry)
    request_entry: dict[str, object] = {"name": request}
    if listed:
        request_entry["devices"] = listed
    document["requests"] = [request_entry]
    text = json.dumps(document, indent=2, ensure_ascii=False)
    for raw, escaped in _GO_ESCAPES.items():
        text = text.replace(raw, escaped)
    # The versions differ only in apiVersion, the document's second key: one encoding
    # (json's indenting encoder is pure Python, the costliest step of a prepare) serves all.
    stamp = f'"apiVersion": "{newest}"'
    parts = [text + "\n"]
    parts += [text.replace(stamp, f'"apiVersion": "{version}"', 1) + "\n" for version in older]
    return "".join(parts).encode()


# --- One claim's files ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlannedMetadata:
    """The device metadata file of one request of a claim being prepared."""

    request: str
    """The request's name as allocated (``gpu`` or ``gpu/large``): what the file says."""
    devices: tuple[str, ...]
    """Names of the claim's devices of this request, in allocation order."""
    host_path: str
    container_path: str
    cdi_device_name: str
    cdi_device_id: str


def plan_request_files(
    uid: str,
    claim_name: str,
    devices: Iterable[tuple[str, Sequence[str]]],
    *,
    driver_name: str,
    root: str,
    pod_claim_name: str | None,
) -> tuple[PlannedMetadata, ...]:
    """One file per request of ``devices`` ((device name, its requests), in allocation
    order), in the order requests first appear. Raises ValueError for a name that cannot
    be a path segment (a request or pod claim name that is not a DNS label)."""
    by_request: dict[str, list[str]] = {}
    for device, requests in devices:
        for request in requests:
            by_request.setdefault(request, []).append(device)
    planned: list[PlannedMetadata] = []
    for request, names in by_request.items():
        cdi_name = metadata_cdi_device_name(uid, request)
        planned.append(
            PlannedMetadata(
                request=request,
                devices=tuple(names),
                host_path=host_file_path(root, uid, driver_name, request),
                container_path=container_file_path(
                    driver_name, claim_name, pod_claim_name, request
                ),
                cdi_device_name=cdi_name,
                cdi_device_id=cdi_device_id(driver_name, cdi_name),
            )
        )
    return tuple(planned)


def first_device_ids(metadata: Iterable[PlannedMetadata]) -> dict[str, tuple[str, ...]]:
    """Device name to the metadata CDI IDs it carries: each request's goes to the first
    device of the request, which every container using the request gets from the
    kubelet (the upstream library does the same)."""
    first: dict[str, tuple[str, ...]] = {}
    given: set[str] = set()
    for planned in metadata:
        request = base_request(planned.request)
        if request in given or not planned.devices:
            continue
        given.add(request)
        device = planned.devices[0]
        first[device] = (*first.get(device, ()), planned.cdi_device_id)
    return first


def request_file_contents(
    metadata: Iterable[PlannedMetadata],
    devices: Mapping[str, tuple[str, str]],
    inventory: NodeInventory,
    *,
    driver_name: str,
    namespace: str,
    name: str,
    uid: str,
    pod_claim_name: str | None,
) -> dict[str, bytes]:
    """The content of each file of ``metadata``, by host path.

    ``devices`` maps a device name to its pool and the UUID of the prepared device. A
    device's attributes are those the node's slices publish for it now
    (:func:`~dra_driver.slices.device_attributes`), with that UUID (a dynamic MIG
    device's, once created). Deterministic for the same inputs.
    """
    files: dict[str, bytes] = {}
    for planned in metadata:
        listed = []
        for device_name in planned.devices:
            pool, uuid = devices[device_name]
            attributes = device_attributes(inventory, device_name)
            if uuid:
                attributes["uuid"] = DeviceAttribute(string=uuid)
            listed.append(MetadataDevice(pool=pool, name=device_name, attributes=attributes))
        files[planned.host_path] = encode_device_metadata(
            driver_name=driver_name,
            namespace=namespace,
            name=name,
            uid=uid,
            pod_claim_name=pod_claim_name,
            request=planned.request,
            devices=listed,
        )
    return files
