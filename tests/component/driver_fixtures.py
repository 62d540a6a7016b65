"""A GpuDriver on real files for the component tests: fake host roots, mock GPUs, claims.

Layout under a test's root directory::

    host/dev/nvidia0..N, nvidiactl, nvidia-uvm      (fake device nodes: plain files)
    driver/usr/lib/x86_64-linux-gnu/libcuda.so.*    (fake driver files)
    driver/usr/bin/nvidia-smi
    cdi/                                            (the CDI root)
    state/checkpoint.json
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from api.semver import Semver
from dra_driver.cdi import HostFiles
from dra_driver.discovery.model import Gpu, NodeInventory
from kubelet_plugin.cdi_writer import CdiWriter, scan_host_files
from kubelet_plugin.checkpoint_store import CheckpointStore
from kubelet_plugin.driver import FaultPoint, GpuDriver
from kubelet_plugin.driver.gpu_driver import PREPARE_WORKERS
from kubelet_plugin.enforcement import SharingEnforcer
from kubelet_plugin.node_lock import NodeFileLock
from tests.fakes.claim_source import FakeClaimSource

DRIVER = "gpu.dra-driver.io"
NODE = "node-a"
BOOT_ID = "0d8e1c52-1111-4c1e-9d54-6c0f1f3f0a01"
#: Exit status of a driver process stopped at a fault point.
FAULT_EXIT_CODE = 86
SCHEMA_DIR = Path(__file__).resolve().parents[1] / "cdi_schema"
DRIVER_FILES = (
    "usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15",
    "usr/lib/x86_64-linux-gnu/libnvidia-ml.so.550.54.15",
    "usr/bin/nvidia-smi",
)


def claim_uid(n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"claim-{n}"))


def inventory(count: int = 8, node: str = NODE) -> NodeInventory:
    return NodeInventory(
        node_name=node,
        driver_version=Semver.parse("550.54.15"),
        cuda_driver_version=Semver.parse("12.4.0"),
        gpus=tuple(
            Gpu(
                index=i,
                minor=i,
                uuid="GPU-" + str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{node}-{i}")),
                product_name="NVIDIA H100 80GB HBM3",
                brand="Nvidia",
                architecture="Hopper",
                cuda_compute_capability=Semver.parse("9.0.0"),
                memory_bytes=80 * 2**30,
                pci_bus_id=f"0000:{i // 32 + 0x10:02x}:{i % 32:02x}.0",
            )
            for i in range(count)
        ),
    )


def claim(
    n: int,
    devices: list[str] | None = None,
    *,
    uid: str | None = None,
    pool: str = NODE,
    configs: list[dict[str, Any]] | None = None,
    namespace: str = "default",
) -> dict[str, Any]:
    """Claim ``claim-<n>`` (UID ``claim_uid(n)``) allocated ``devices`` of this node."""
    results = [
        {"request": "gpu", "driver": DRIVER, "pool": pool, "device": d}
        for d in (devices if devices is not None else [f"gpu-{n}"])
    ]
    allocation: dict[str, Any] = {"devices": {"results": results}}
    if configs:
        allocation["devices"]["config"] = configs
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": f"claim-{n}", "namespace": namespace, "uid": uid or claim_uid(n)},
        "spec": {
            "devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": DRIVER}}]}
        },
        "status": {"allocation": allocation},
    }


def gpu_config_entry(sharing: Any, *, requests: list[str] | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "source": "FromClaim",
        "opaque": {
            "driver": DRIVER,
            "parameters": {
                "apiVersion": "gpu.dra-driver.io/v1alpha1",
                "kind": "GpuConfig",
                "sharing": sharing,
            },
        },
    }
    if requests is not None:
        entry["requests"] = requests
    return entry


def make_host(root: Path, gpus: int) -> None:
    """Fake device nodes and driver files under ``root`` (idempotent)."""
    dev = root / "host" / "dev"
    dev.mkdir(parents=True, exist_ok=True)
    for name in [f"nvidia{i}" for i in range(gpus)] + ["nvidiactl", "nvidia-uvm"]:
        (dev / name).touch()
    for relative in DRIVER_FILES:
        path = root / "driver" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():  # a test may have put a fake tool there
            path.write_bytes(b"\x7fELF")
    link = root / "driver" / "usr/lib/x86_64-linux-gnu/libcuda.so.1"
    if not link.is_symlink():
        link.symlink_to("libcuda.so.550.54.15")


def make_driver(
    root: Path,
    claims: FakeClaimSource,
    *,
    gpus: int = 8,
    boot_id: str = BOOT_ID,
    fault_hook: Callable[[FaultPoint], None] | None = None,
    node_lock: NodeFileLock | None = None,
    cleanup_retry_s: float = 30.0,
    prepare_workers: int = PREPARE_WORKERS,
    host: HostFiles | None = None,
    enforcers: Sequence[SharingEnforcer] = (),
) -> GpuDriver:
    """A driver on real files under ``root`` (``host``: scanned there); not started."""
    make_host(root, gpus)
    return GpuDriver(
        driver_name=DRIVER,
        inventory=inventory(gpus),
        claim_source=claims,
        checkpoints=CheckpointStore(checkpoint_path(root)),
        cdi=CdiWriter(cdi_root(root), DRIVER),
        host=host or scan_host_files(root / "host", root / "driver", None),
        boot_id=boot_id,
        fault_hook=fault_hook,
        node_lock=node_lock,
        cleanup_retry_s=cleanup_retry_s,
        prepare_workers=prepare_workers,
        enforcers=enforcers,
    )


def cdi_root(root: Path) -> Path:
    return root / "cdi"


def checkpoint_path(root: Path) -> Path:
    return root / "state" / "checkpoint.json"


def spec_path(root: Path, n: int) -> Path:
    return cdi_root(root) / f"{DRIVER}-{claim_uid(n)}.json"


def expected_id(n: int, device: str | None = None) -> str:
    return f"{DRIVER}/gpu={claim_uid(n)}-{device or f'gpu-{n}'}"


def files_in(directory: Path) -> list[str]:
    """Every entry of a directory, dot-files (temp files) included; [] when it is missing."""
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def tamper_spec(path: Path) -> bytes:
    """Replace a spec's content as someone else might: the host's ``/`` mounted read-write.

    Returns the new content (valid JSON, still a CDI spec: only its digest tells).
    """
    spec = json.loads(path.read_bytes())
    edits = spec.setdefault("containerEdits", {})
    edits.setdefault("mounts", []).append(
        {"hostPath": "/", "containerPath": "/host", "options": ["rbind", "rw"]}
    )
    content = json.dumps(spec).encode()
    path.write_bytes(content)
    return content


def checkpoint_states(root: Path) -> dict[str, str]:
    """Claim UID to state, read from the file on disk."""
    path = checkpoint_path(root)
    if not path.exists():
        return {}
    document = json.loads(path.read_bytes())
    return {uid: entry["state"] for uid, entry in document["claims"].items()}


@lru_cache(maxsize=1)
def _validator() -> Draft7Validator:
    schema = json.loads((SCHEMA_DIR / "schema.json").read_text())
    defs = json.loads((SCHEMA_DIR / "defs.json").read_text())
    registry: Registry[Any] = Registry().with_resource(
        "defs.json", Resource.from_contents(defs, default_specification=DRAFT7)
    )
    return Draft7Validator(schema, registry=registry)


def validate_cdi_file(path: Path) -> dict[str, Any]:
    """The spec file's JSON, after checking it against the CDI schema."""
    document: dict[str, Any] = json.loads(path.read_bytes())
    _validator().validate(document)
    return document
