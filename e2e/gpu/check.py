"""Checks on a machine with real NVIDIA GPUs: what the test suite can only fake.

Usage, as root on a GPU machine, from the repository root::

    python -m e2e.gpu.check [--out DIR] [--driver-root PATH] [--iterations N]

The suite (``make test``) runs everywhere and fakes pynvml and ``/dev/nvidia*``;
this script checks the same paths against the real driver. Each check prints
one JSON line (``{"check": ..., "ok": ..., ...}``); the exit code is 0 when
every check passed, 1 otherwise. ``--out`` receives ``report.json`` (all
lines), ``slices.yaml`` (the node's pool as published) and ``cdi-spec.json``
(the spec written for a real GPU). It changes nothing on the machine: no MIG
mode switch, no GPU reset; MIG is only read.

Checks:

- ``discovery``: the NVML backend's inventory against ``nvidia-smi``'s own
  answers (UUID, name, memory, PCI bus ID, compute capability, driver
  version, MIG mode) and ``/dev/nvidia<minor>`` as a character device 195:minor;
- ``slices``: the node's pool from that inventory, full GPUs and partitionable
  MIG alike, valid as the API server validates ResourceSlices;
- ``topology``: each GPU's topology attributes as published (PCI bus ID, PCIe
  root, NUMA node, NVLink island and peers, fabric cluster and clique) recorded,
  and compared with ``nvidia-smi topo -m`` / ``nvlink -s``
  (:mod:`e2e.gpu.topology_check`);
- ``recovery``: NVML's GPU recovery action (field 230) of every GPU, or that
  the driver lacks it (recorded, not failed), and the validation the plugin
  lifts taints by (NVML answers, memory and ECC sane) passes on each GPU;
- ``health``: the NVML event set registers on every GPU and a wait times out
  without a spurious event;
- ``plugin``: ``dra-driver kubelet-plugin --gpu-backend nvml`` as a process,
  against an in-process API server stand-in and kubelet stand-in on loopback
  and unix sockets (the component tests' own): it registers, publishes the
  real GPUs, reports them healthy, prepares a claim for the first GPU (a CDI
  spec valid against the schema, whose device node is the real
  ``/dev/nvidia<minor>`` and whose mounts exist, and whose
  ``libnvidia-ml.so.1`` mount initialises NVML when loaded), unprepares it
  (spec gone) and stops on SIGTERM with exit code 0;
- ``plugin-mounted-driver-root``: the same, with the plugin seeing the driver
  root through another path (``--driver-root``, as the chart's container
  mounts it) and ``--host-driver-root`` naming the real one, without
  ``LD_LIBRARY_PATH``: the spec names host paths and NVML is loaded from the
  mounted root;
- ``prepare-latency``: GpuDriver prepare/unprepare of one real GPU, in
  process, with the checkpoint and CDI files on disk.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import socket
import stat
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPONENT_TESTS = ROOT / "tests" / "component"
for path in (ROOT, COMPONENT_TESTS):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from driver_fixtures import DRIVER, claim, validate_cdi_file  # noqa: E402
from fake_apiserver import FakeApiServer  # noqa: E402
from kubelet_standin import KubeletStandin  # noqa: E402
from test_plugin_process import PluginProcess, start_plugin, stop_plugin, wait_running  # noqa: E402

from api.errors import DiscoveryError  # noqa: E402
from api.resource_v1 import dump  # noqa: E402
from api.semver import Semver  # noqa: E402
from api.validation import validate_resource_slice  # noqa: E402
from dra_driver.discovery.model import Gpu, NodeInventory, RecoveryProbe  # noqa: E402
from dra_driver.slices import build_slices  # noqa: E402
from e2e.gpu.topology_check import check_topology  # noqa: E402
from kubelet_plugin.cdi_writer import CdiWriter, scan_host_files  # noqa: E402
from kubelet_plugin.checkpoint_store import CheckpointStore  # noqa: E402
from kubelet_plugin.driver import GpuDriver  # noqa: E402
from kubelet_plugin.node_driver import ClaimRef  # noqa: E402
from kubelet_plugin.nvml import NvmlBackend  # noqa: E402
from kubelet_plugin.proto_gen.dra_health.v1alpha1 import api_pb2 as health_pb2  # noqa: E402
from tests.fakes.claim_source import FakeClaimSource  # noqa: E402

NODE = "gpu-check-node"
NODE_UID = "0b5e3c1f-8a4d-4e8e-9f3b-5d6c7a8b9c0d"
NVIDIA_MAJOR = 195
SMI_FIELDS = "index,uuid,name,memory.total,pci.bus_id,driver_version,compute_cap,mig.mode.current"


class CheckFailedError(AssertionError):
    """One check's expectation did not hold; the message says which and what was seen."""


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailedError(message)


def detect_driver_root() -> Path:
    """Where the driver's user-space files are: ``/`` or a GKE-style ``/usr/local/nvidia``."""
    for candidate in (Path("/usr/local/nvidia"), Path("/run/nvidia/driver")):
        if any(candidate.glob("lib*/libnvidia-ml.so.1")) or any(
            candidate.glob("usr/lib*/**/libnvidia-ml.so.1")
        ):
            return candidate
    return Path("/")


def nvidia_smi() -> list[dict[str, str]]:
    """``nvidia-smi``'s answers for every GPU, keyed by the query field names."""
    output = subprocess.run(
        ["nvidia-smi", f"--query-gpu={SMI_FIELDS}", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = SMI_FIELDS.split(",")
    return [
        dict(zip(names, (v.strip() for v in line.split(",")), strict=True))
        for line in output.splitlines()
        if line.strip()
    ]


def normalized_bus_id(text: str) -> str:
    """``00000000:19:00.0`` (nvidia-smi) and ``0000:19:00.0`` (sysfs) as one form."""
    domain, rest = text.lower().split(":", 1)
    return f"{int(domain, 16):04x}:{rest}"


def check_discovery(inventory: NodeInventory) -> dict[str, Any]:
    smi = {row["uuid"]: row for row in nvidia_smi()}
    expect(len(inventory.gpus) == len(smi), f"NVML found {len(inventory.gpus)}, smi {len(smi)}")
    gpus = []
    for gpu in inventory.gpus:
        row = smi.get(gpu.uuid)
        expect(row is not None, f"{gpu.uuid} unknown to nvidia-smi: {sorted(smi)}")
        assert row is not None
        expect(gpu.product_name == row["name"], f"name {gpu.product_name!r} != {row['name']!r}")
        expect(int(row["index"]) == gpu.index, f"index {gpu.index} != {row['index']}")
        expect(
            gpu.memory_bytes is not None and gpu.memory_bytes // 2**20 == int(row["memory.total"]),
            f"memory {gpu.memory_bytes} B vs {row['memory.total']} MiB",
        )
        expect(
            normalized_bus_id(gpu.pci_bus_id) == normalized_bus_id(row["pci.bus_id"]),
            f"PCI bus {gpu.pci_bus_id} != {row['pci.bus_id']}",
        )
        cc = gpu.cuda_compute_capability
        expect(f"{cc.major}.{cc.minor}" == row["compute_cap"], f"cc {cc} != {row['compute_cap']}")
        smi_mig = row["mig.mode.current"]
        expect(
            gpu.mig_enabled == (smi_mig == "Enabled"),
            f"MIG enabled {gpu.mig_enabled} vs nvidia-smi {smi_mig!r}",
        )
        mode = os.stat(gpu.device_node).st_mode, os.stat(gpu.device_node).st_rdev
        expect(stat.S_ISCHR(mode[0]), f"{gpu.device_node} is not a character device")
        expect(
            (os.major(mode[1]), os.minor(mode[1])) == (NVIDIA_MAJOR, gpu.minor),
            f"{gpu.device_node} is {os.major(mode[1])}:{os.minor(mode[1])}",
        )
        gpus.append(
            {
                "device": gpu.device_name,
                "uuid": gpu.uuid,
                "product": gpu.product_name,
                "architecture": gpu.architecture,
                "memory_bytes": gpu.memory_bytes,
                "pci": gpu.pci_bus_id,
                "pcie_root": gpu.pcie_root,
                "numa": gpu.numa_node,
                "mig_capable": gpu.mig_capable,
                "mig_enabled": gpu.mig_enabled,
                "mig_profiles": [p.name for p in gpu.mig_profiles],
            }
        )
    # nvidia-smi prints 580.159.04; the published semver drops the leading zero.
    versions = {Semver.parse(row["driver_version"], normalize=True) for row in smi.values()}
    expect(versions == {inventory.driver_version}, f"{inventory.driver_version} vs {versions}")
    return {
        "driver": str(inventory.driver_version),
        "cuda": str(inventory.cuda_driver_version),
        "gpus": gpus,
    }


def check_slices(inventory: NodeInventory, out: Path) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for label, partitionable, shared in (
        ("full", False, False),
        ("partitionable", True, False),
        ("shared", False, True),
    ):
        slices = build_slices(
            inventory, driver_name=DRIVER, partitionable=partitionable, shared_gpus=shared
        )
        for slice_ in slices:
            errors = validate_resource_slice(slice_)
            expect(not errors, f"{label} slice {slice_.metadata.name}: {errors}")
        counts[label] = sum(len(s.spec.devices or []) for s in slices)
        if label == "partitionable":
            with (out / "slices.yaml").open("w") as stream:
                yaml.safe_dump_all([dump(s) for s in slices], stream, sort_keys=False)
    expect(counts["full"] == len(inventory.gpus), f"full-GPU devices: {counts}")
    return {"devices": counts}


def check_recovery(backend: RecoveryProbe, inventory: NodeInventory) -> dict[str, Any]:
    gpus: dict[str, dict[str, str]] = {}
    for gpu in inventory:
        action = backend.recovery_action(gpu.uuid)
        problem = backend.validate(gpu.uuid)
        expect(problem is None, f"{gpu.device_name} ({gpu.uuid}) does not validate: {problem}")
        gpus[gpu.device_name] = {
            "recoveryAction": "not-supported" if action is None else action.name
        }
    return {"gpus": gpus}


def check_health(backend: NvmlBackend) -> dict[str, Any]:
    started = time.monotonic()
    event = backend.wait_health_event(2.0)
    waited = time.monotonic() - started
    expect(event is None, f"a health event on a healthy machine: {event}")
    return {"unmonitored": list(backend.unmonitored_gpus), "waited_s": round(waited, 2)}


@contextmanager
def plugin_process(
    root: Path, kubeconfig: Path, driver_root: Path, host_driver_root: Path | None
) -> Iterator[PluginProcess]:
    """The component tests' plugin process, on the real GPUs and driver; stopped with
    SIGTERM at the end of the block, which it must answer with exit code 0."""
    extra = ["--gpu-backend", "nvml", "--node-name", NODE, "--dev-root", "/"]
    extra += ["--driver-root", str(driver_root)]
    if host_driver_root is not None:
        extra += ["--host-driver-root", str(host_driver_root)]
    # As in the chart's container: the loader is not told where the host's libraries are.
    unset = ("LD_LIBRARY_PATH",) if host_driver_root is not None else ()
    plugin = start_plugin(root, kubeconfig, *extra, unset=unset)
    try:
        yield plugin
        code = stop_plugin(plugin)
        expect(code == 0, f"the plugin exited {code} on SIGTERM:\n{plugin.logs()}")
    finally:
        plugin.close()


def nvml_initialises(library: str) -> int:
    """Load ``library`` on its own (as a container would) and count GPUs through it."""
    lib = ctypes.CDLL(library, mode=ctypes.RTLD_LOCAL)
    expect(lib.nvmlInit_v2() == 0, f"nvmlInit_v2 through {library} failed")
    count = ctypes.c_uint(0)
    try:
        expect(lib.nvmlDeviceGetCount_v2(ctypes.byref(count)) == 0, "nvmlDeviceGetCount_v2")
    finally:
        lib.nvmlShutdown()
    return count.value


def check_plugin(
    inventory: NodeInventory,
    driver_root: Path,
    out: Path,
    *,
    mounted_at: Path | None = None,
) -> dict[str, Any]:
    """The plugin process with a real GPU; with ``mounted_at``, the plugin sees the
    driver root through that path (a link to it, as a container's mount would show
    it) and must still name host paths in the spec and load NVML from there."""
    first: Gpu = inventory.gpus[0]
    root = Path(tempfile.mkdtemp(prefix="dra-gpu-"))
    seen_root, host_root = driver_root, None
    if mounted_at is not None:
        seen_root, host_root = root / mounted_at.name, driver_root
        seen_root.symlink_to(driver_root, target_is_directory=True)
    try:
        with FakeApiServer() as api:
            api.put_node(NODE, NODE_UID)
            kubeconfig = api.write_kubeconfig(root / "kubeconfig")
            with plugin_process(root, kubeconfig, seen_root, host_root) as plugin:
                wait_running(api, plugin)
                with KubeletStandin().register(plugin.registration_socket) as kubelet:

                    def node_devices() -> dict[str, dict[str, Any]]:
                        return {
                            d["name"]: d
                            for s in api.slices().values()
                            if s["spec"].get("nodeName") == NODE
                            for d in s["spec"].get("devices") or []
                        }

                    api.wait_for(
                        lambda: first.device_name in node_devices(),
                        "the slices",
                        on_timeout=plugin.logs,
                    )
                    published = node_devices()
                    for gpu in inventory.gpus:
                        attributes = published[gpu.device_name]["attributes"]
                        expect(
                            attributes["uuid"] == {"string": gpu.uuid},
                            f"{gpu.device_name}: published {attributes.get('uuid')}",
                        )
                    stream = kubelet.watch_health()
                    snapshot = stream.next()
                    stream.cancel()
                    health = {d.device.device_name: d.health for d in snapshot.devices}
                    expect(
                        set(health) == set(published)
                        and set(health.values()) == {health_pb2.HEALTHY},
                        f"health snapshot {health}",
                    )

                    claim_uid = str(uuid.uuid4())
                    api.put_claim(claim(0, [first.device_name], uid=claim_uid, pool=NODE))
                    ref = ClaimRef(namespace="default", name="claim-0", uid=claim_uid)
                    outcome = kubelet.prepare([ref])[claim_uid]
                    expect(outcome.error == "", f"prepare failed: {outcome.error}")
                    spec_file = root / "cdi" / f"{DRIVER}-{claim_uid}.json"
                    document = validate_cdi_file(spec_file)
                    shutil.copyfile(spec_file, out / "cdi-spec.json")
                    nodes = [
                        n
                        for d in document["devices"]
                        for n in d["containerEdits"].get("deviceNodes", [])
                    ] + document.get("containerEdits", {}).get("deviceNodes", [])
                    paths = {n["path"] for n in nodes}
                    expect(first.device_node in paths, f"{first.device_node} not in {paths}")
                    for node in nodes:
                        host = node.get("hostPath", node["path"])
                        expect(
                            stat.S_ISCHR(os.stat(host).st_mode), f"{host} not a character device"
                        )
                    mounts = document.get("containerEdits", {}).get("mounts", [])
                    missing = [m["hostPath"] for m in mounts if not os.path.exists(m["hostPath"])]
                    expect(not missing, f"mounts missing on the host: {missing}")
                    outside = [
                        m["hostPath"]
                        for m in mounts
                        if not Path(m["hostPath"]).is_relative_to(driver_root)
                    ]
                    expect(not outside, f"mounts outside the host driver root: {outside}")
                    if mounted_at is not None:
                        expect(
                            plugin.record("NVML library loaded from the driver root") is not None,
                            "the plugin did not load NVML from the mounted driver root",
                        )
                    nvml_libs = [
                        m["hostPath"]
                        for m in mounts
                        if m["containerPath"].endswith("libnvidia-ml.so.1")
                    ]
                    expect(bool(nvml_libs), "no libnvidia-ml.so.1 among the spec's mounts")
                    counted = nvml_initialises(nvml_libs[0])
                    expect(counted == len(inventory.gpus), f"NVML via the mount counted {counted}")
                    answer = kubelet.unprepare([ref])
                    expect(answer == {claim_uid: ""}, f"unprepare: {answer}")
                    expect(not spec_file.exists(), "the spec outlived unprepare")
        return {
            "published_devices": len(published),
            "cdi_ids": list(outcome.devices[0].cdi_device_ids),
            "device_nodes": sorted(paths),
            "mounts": len(mounts),
            "nvml_library": nvml_libs[0],
            "seen_driver_root": str(seen_root),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def check_prepare_latency(
    inventory: NodeInventory, driver_root: Path, iterations: int
) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="dra-gpu-bench-"))
    try:
        claims = FakeClaimSource()
        driver = GpuDriver(
            driver_name=DRIVER,
            inventory=inventory,
            claim_source=claims,
            checkpoints=CheckpointStore(root / "state" / "checkpoint.json"),
            cdi=CdiWriter(root / "cdi", DRIVER),
            host=scan_host_files(Path("/"), driver_root, None),
            boot_id="gpu-check",
        )
        driver.start()
        device = inventory.gpus[0].device_name
        prepare: list[float] = []
        for n in range(iterations):
            uid = str(uuid.uuid4())
            claims.put(claim(n, [device], uid=uid, pool=NODE))
            ref = ClaimRef(namespace="default", name=f"claim-{n}", uid=uid)
            started = time.perf_counter()
            result = driver.prepare([ref])[uid]
            prepare.append(time.perf_counter() - started)
            expect(result.error is None, f"prepare {n}: {result.error}")
            driver.unprepare([ref])
        ms = [v * 1000 for v in prepare]
        return {
            "iterations": iterations,
            "p50_ms": round(percentile(ms, 50), 3),
            "p99_ms": round(percentile(ms, 99), 3),
            "mean_ms": round(statistics.fmean(ms), 3),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.gpu.check", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("gpu-check"), help="report directory")
    parser.add_argument("--driver-root", type=Path, default=None, help="default: detected")
    parser.add_argument("--iterations", type=int, default=200, help="prepare-latency loops")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    driver_root = args.driver_root or detect_driver_root()
    report: list[dict[str, Any]] = [
        {
            "check": "machine",
            "ok": True,
            "host": socket.gethostname(),
            "driver_root": str(driver_root),
        }
    ]
    print(json.dumps(report[0]), flush=True)
    try:
        backend = NvmlBackend(NODE)
    except DiscoveryError as exc:
        print(json.dumps({"check": "nvml", "ok": False, "error": str(exc)}), flush=True)
        return 1
    try:
        inventory = backend.discover()
        checks: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("discovery", lambda: check_discovery(inventory)),
            ("recovery", lambda: check_recovery(backend, inventory)),
            ("slices", lambda: check_slices(inventory, args.out)),
            ("topology", lambda: check_topology(inventory)),
            ("health", lambda: check_health(backend)),
            ("plugin", lambda: check_plugin(inventory, driver_root, args.out)),
            (
                "plugin-mounted-driver-root",
                lambda: check_plugin(
                    inventory, driver_root, args.out, mounted_at=Path("driver-root")
                ),
            ),
            (
                "prepare-latency",
                lambda: check_prepare_latency(inventory, driver_root, args.iterations),
            ),
        ]
        for name, run in checks:
            try:
                line: dict[str, Any] = {"check": name, "ok": True, **run()}
            except Exception as exc:  # every check reports, whatever broke
                line = {"check": name, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
            report.append(line)
            print(json.dumps(line), flush=True)
    finally:
        backend.close()
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(line["ok"] for line in report) else 1


if __name__ == "__main__":
    threading.current_thread().name = "gpu-check"
    sys.exit(main())
