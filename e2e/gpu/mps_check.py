"""MPS and the time slice on a real GPU, as the kubelet plugin runs them. Not yet run.

Usage, as root on a GPU machine, from the repository root::

    python -m e2e.gpu.mps_check [--driver-root PATH] [--limit-mib N]

Each check prints one JSON line; exit 0 when all passed. It changes the first
GPU's time slice for a moment and sets it back to Default.

- ``mps-daemon``: :class:`kubelet_plugin.mps.MpsDaemon` starts the driver's
  ``nvidia-cuda-mps-control -d`` for the first GPU with its own ``/dev/shm``
  (as on real GPUs) and a pinned memory limit of ``--limit-mib`` (the daemon-wide
  default, as the plugin sets a GPU's ceiling); two client processes, each in a
  mount namespace whose ``/dev/shm`` is the daemon's (as the CDI spec mounts it in a
  container), allocate with ``libcuda`` (``cuInit``, ``cuCtxCreate``, ``cuMemAlloc``):
  the first, with no limit of its own, gets just under the limit and fails just over
  it; the second lowers its own to half (``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT``) and
  fails over that; ``get_server_list`` names a server while they run; ``quit``
  stops the daemon;
- ``time-slice``: :class:`kubelet_plugin.time_slicing.TimeSlicePolicy` sets Long
  for one claim (``nvidia-smi compute-policy -i <UUID> --set-timeslice 3``), the
  policy list is recorded, and releasing the claim sets Default again.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dra_driver.cdi import SharingSettings
from e2e.gpu.check import detect_driver_root, nvidia_smi
from kubelet_plugin.cdi_writer import scan_host_files
from kubelet_plugin.mps import MPS_CONTROL_BINARY, MpsDaemon
from kubelet_plugin.sharing_tools import driver_library_path, driver_tool
from kubelet_plugin.time_slicing import NVIDIA_SMI, TimeSlicePolicy

#: A CUDA client: allocates the sizes (MiB) in argv one after another, keeping each,
#: and prints one JSON line: the result code of each allocation.
_CLIENT = r"""
import ctypes, json, sys
cuda = ctypes.CDLL("libcuda.so.1")
device, context = ctypes.c_int(), ctypes.c_void_p()
assert cuda.cuInit(0) == 0, "cuInit"
assert cuda.cuDeviceGet(ctypes.byref(device), 0) == 0, "cuDeviceGet"
assert cuda.cuCtxCreate_v2(ctypes.byref(context), 0, device) == 0, "cuCtxCreate"
codes = []
for mib in sys.argv[1:]:
    pointer = ctypes.c_uint64()
    codes.append(cuda.cuMemAlloc_v2(ctypes.byref(pointer), ctypes.c_size_t(int(mib) << 20)))
print(json.dumps(codes), flush=True)
"""
#: The client in a mount namespace whose /dev/shm is the daemon's, as in a container.
_IN_SHM = ("unshare", "--mount", "--propagation", "private", "--", "sh", "-c")
_BIND = 'mount --bind "$0" /dev/shm && exec "$@"'


def _client(daemon: MpsDaemon, sizes: list[int], env: dict[str, str]) -> list[int]:
    argv = [*_IN_SHM, _BIND, daemon.dirs.shm, sys.executable, "-c", _CLIENT]
    done = subprocess.run(
        [*argv, *map(str, sizes)],
        env={**daemon.environment(), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"client exited with {done.returncode}: {done.stderr.strip()}")
    codes: list[int] = json.loads(done.stdout.strip().splitlines()[-1])
    return codes


def check_mps(binary: Path, library_path: str | None, uuid: str, limit_mib: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mps-") as root:
        daemon = MpsDaemon(binary, Path(root), uuid, library_path=library_path, shared_shm=True)
        daemon.start()
        try:
            daemon.send(f"set_default_device_pinned_mem_limit 0 {limit_mib}M")
            own = limit_mib // 2
            first = _client(daemon, [limit_mib - 256, 512], {})
            second = _client(
                daemon, [own - 256, 512], {"CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": f"0={own}M"}
            )
            servers = daemon.send("get_server_list").split()
        finally:
            daemon.stop()
        ok = first[0] == 0 and first[1] != 0 and second[0] == 0 and second[1] != 0
        return {
            "check": "mps-daemon",
            "ok": ok and not daemon.alive(),
            "limit_mib": limit_mib,
            "first_client_codes": first,
            "second_client_codes": second,
            "servers_seen": servers,
        }


def check_time_slice(smi: Path, library_path: str | None, uuid: str) -> dict[str, Any]:
    policy = TimeSlicePolicy(smi, library_path=library_path)
    settings = SharingSettings(strategy="TimeSlicing", time_slice_interval="Long")

    def listed() -> str:
        return subprocess.run(
            [str(smi), "compute-policy", "-l", "-i", uuid],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout.strip()

    policy.hold("check-claim", "claim e2e/time-slice", [(uuid, settings)])
    while_held = listed()
    policy.release("check-claim")
    return {
        "check": "time-slice",
        "ok": policy.intervals() == {},
        "listed_while_long": while_held,
        "listed_after": listed(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.gpu.mps_check", description=__doc__)
    parser.add_argument("--driver-root", type=Path, default=None, help="default: detected")
    parser.add_argument("--limit-mib", type=int, default=2048, help="the daemon's memory limit")
    args = parser.parse_args(argv)
    driver_root = args.driver_root or detect_driver_root()
    host = scan_host_files(Path("/"), driver_root, None)
    library_path = driver_library_path(host, driver_root)
    uuid = nvidia_smi()[0]["uuid"]
    mps, smi = (driver_tool(host, driver_root, n) for n in (MPS_CONTROL_BINARY, NVIDIA_SMI))
    checks: list[tuple[str, Callable[[], dict[str, Any]]]] = []
    if mps is not None:
        checks.append(("mps-daemon", lambda: check_mps(mps, library_path, uuid, args.limit_mib)))
    if smi is not None:
        checks.append(("time-slice", lambda: check_time_slice(smi, library_path, uuid)))
    passed = True
    for name, tool in (("mps-daemon", mps), ("time-slice", smi)):
        if tool is None:
            print(json.dumps({"check": name, "ok": False, "error": f"no tool under {driver_root}"}))
            passed = False
    for name, check in checks:
        try:
            line = check()
        except Exception as err:  # a check's failure is its line, the others still run
            line = {"check": name, "ok": False, "error": f"{type(err).__name__}: {err}"}
        passed = passed and bool(line["ok"])
        print(json.dumps(line), flush=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
