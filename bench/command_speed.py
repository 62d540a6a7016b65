"""Whole-command speed: ``dra-driver allocate`` beside the upstream allocator, start-up beside
a bare interpreter.

Usage::

    make bench                                   # builds bench/goalloc, runs this
    .venv/bin/python bench/command_speed.py      # both shapes, 5 runs each
    .venv/bin/python bench/command_speed.py --runs 9 --shape 500x10

Per shape (``NODES x GPUS``), one directory of manifests as a user would write them
(``classes.yaml``, ``nodes.yaml``, ``slices.yaml``, ``claims.yaml``): one DeviceClass,
a Node and a ResourceSlice per node, ``--in-use`` one-GPU claims already allocated, filling
the first nodes as first-fit does, and ``--pending`` one-GPU claims to allocate together, as
for one pod. Timed as whole processes, interleaved run by run: median, min and max
wall-clock ms, and median CPU ms (user + system, every thread; less sensitive to other load
on the machine), after one uncounted round that warms the caches:

- ``dra-driver allocate -f DIR`` (the console script of the virtual environment);
- ``bench/goalloc/goalloc -f DIR``: the kube-scheduler's allocator
  (``k8s.io/dynamic-resource-allocation`` ``structured.NewAllocator``, Kubernetes 1.37
  default features) on the same files, node after node in input order (``make bench``
  builds it; without it the Go column is left out);
- ``dra-driver --version``, ``dra-driver --help``, ``kubectl-dra --help`` and the bare
  start of the same interpreter (``python -c pass``).

Both allocators must name the same node; the run stops if they do not. Prints one JSON
object, with the machine's load average before and after. Benchmarks print figures; they
never pass or fail on time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

# bench/ is the script's own directory, first on sys.path.
from allocator_bench import CLASS_SELECTOR, DRIVER, gpu_device

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
GOALLOC = ROOT / "bench" / "goalloc" / "goalloc"
NAMESPACE = "bench"


def _node_name(index: int) -> str:
    return f"node-{index:05d}"


def _claim(name: str, allocated: tuple[str, str] | None = None) -> dict[str, Any]:
    claim: dict[str, Any] = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu"}}]}},
    }
    if allocated is not None:
        node, device = allocated
        claim["status"] = {
            "allocation": {
                "devices": {
                    "results": [
                        {"request": "gpu", "driver": DRIVER, "pool": node, "device": device}
                    ]
                },
                "nodeSelector": {
                    "nodeSelectorTerms": [
                        {
                            "matchFields": [
                                {"key": "metadata.name", "operator": "In", "values": [node]}
                            ]
                        }
                    ]
                },
            }
        }
    return claim


def write_shape(directory: Path, nodes: int, gpus: int, in_use: int, pending: int) -> None:
    """The manifests of one shape; the claims in use fill node after node, GPU after GPU."""
    if in_use + pending > nodes * gpus:
        raise SystemExit(f"{nodes}x{gpus}: {in_use + pending} claims do not fit")
    names = [_node_name(n) for n in range(nodes)]
    classes = [
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "DeviceClass",
            "metadata": {"name": "gpu"},
            "spec": {"selectors": [{"cel": {"expression": CLASS_SELECTOR}}]},
        }
    ]
    node_objects = [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        }
        for name in names
    ]
    slices = [
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceSlice",
            "metadata": {"name": f"{name}-gpus"},
            "spec": {
                "driver": DRIVER,
                "nodeName": name,
                "pool": {"name": name, "generation": 1, "resourceSliceCount": 1},
                "devices": [gpu_device(i) for i in range(gpus)],
            },
        }
        for name in names
    ]
    claims = [_claim(f"used-{i:05d}", (names[i // gpus], f"gpu-{i % gpus}")) for i in range(in_use)]
    claims += [_claim(f"pending-{i:03d}") for i in range(pending)]
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    for file, documents in (
        ("classes.yaml", classes),
        ("nodes.yaml", node_objects),
        ("slices.yaml", slices),
        ("claims.yaml", claims),
    ):
        with (directory / file).open("w", encoding="utf-8") as stream:
            yaml.dump_all(documents, stream, Dumper=dumper, sort_keys=False)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


#: The commands run as installed: Python may read and write its bytecode caches (an
#: installed package has them; with PYTHONDONTWRITEBYTECODE and none, every run compiles
#: the driver's sources again, about 90 ms here).
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _timed(argv: Sequence[str]) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """Wall and CPU (user + system, every thread) milliseconds of one run, and the run."""
    cpu, start = _children_cpu_s(), time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False, env=CHILD_ENV)
    wall = (time.perf_counter() - start) * 1000
    return wall, (_children_cpu_s() - cpu) * 1000, done


def _node_of_dra_driver(done: subprocess.CompletedProcess[str]) -> str:
    if done.returncode != 0:
        raise SystemExit(f"dra-driver allocate failed ({done.returncode}): {done.stderr}")
    for item in json.loads(done.stdout)["items"]:
        terms = item["status"]["allocation"]["nodeSelector"]["nodeSelectorTerms"]
        return str(terms[0]["matchFields"][0]["values"][0])
    return ""


def _node_of_goalloc(done: subprocess.CompletedProcess[str]) -> str:
    if done.returncode != 0:
        raise SystemExit(f"goalloc failed ({done.returncode}): {done.stderr}")
    return str(json.loads(done.stdout)["node"])


def _figures(samples: list[tuple[float, float]]) -> dict[str, float]:
    wall = [w for w, _ in samples]
    return {
        "median_ms": round(statistics.median(wall), 1),
        "min_ms": round(min(wall), 1),
        "max_ms": round(max(wall), 1),
        "cpu_median_ms": round(statistics.median(c for _, c in samples), 1),
    }


def _baseline_cli(tree: Path) -> list[str]:
    """``dra-driver`` of another source tree (a checkout of an earlier commit), run by this
    interpreter with that tree first on sys.path."""
    code = f"import sys; sys.path.insert(0, {str(tree)!r}); from dra_cli.main import main; "
    return [sys.executable, "-c", code + "sys.exit(main())"]


def measure_shape(
    shape: str, runs: int, in_use: int, pending: int, *, go: bool, baseline: Path | None
) -> dict[str, Any]:
    nodes, gpus = (int(part) for part in shape.split("x"))
    with tempfile.TemporaryDirectory(prefix="dra-command-speed-") as tmp:
        directory = Path(tmp)
        write_shape(directory, nodes, gpus, in_use, pending)
        commands = {
            "dra-driver allocate": [str(BIN / "dra-driver"), "allocate", "-f", tmp],
            # One process: what a machine without a free second processor gets.
            "dra-driver allocate --serial": [
                str(BIN / "dra-driver"),
                "allocate",
                "--serial",
                "-f",
                tmp,
            ],
        }
        if baseline is not None:
            commands["baseline allocate"] = [*_baseline_cli(baseline), "allocate", "-f", tmp]
        if go:
            commands["goalloc"] = [str(GOALLOC), "-f", tmp]
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        chosen: dict[str, set[str]] = {name: set() for name in commands}
        go_phases: list[dict[str, float]] = []
        for round_ in range(runs + 1):  # round 0 warms caches and is not counted
            for name, argv in commands.items():
                wall, cpu, done = _timed(argv)
                if round_:
                    samples[name].append((wall, cpu))
                if name == "goalloc":
                    chosen[name].add(_node_of_goalloc(done))
                    if round_:
                        go_phases.append(json.loads(done.stdout))
                else:
                    chosen[name].add(_node_of_dra_driver(done))
        nodes_chosen = set().union(*chosen.values())
        if len(nodes_chosen) != 1:
            raise SystemExit(f"{shape}: the allocators chose different nodes: {chosen}")
        result: dict[str, Any] = {
            "shape": f"{nodes} nodes x {gpus} GPUs, {in_use} claims in use, {pending} pending",
            "manifest_bytes": sum(f.stat().st_size for f in directory.iterdir()),
            "node": nodes_chosen.pop(),
        }
    for name, values in samples.items():
        result[name] = _figures(values)
    if go:
        result["goalloc in-process median_ms"] = {
            phase: round(statistics.median(p[phase] for p in go_phases), 1)
            for phase in ("read_ms", "build_ms", "allocate_ms")
        }
        ours, theirs = result["dra-driver allocate"], result["goalloc"]
        if baseline is not None:
            result["ratio baseline/goalloc"] = round(
                result["baseline allocate"]["median_ms"] / theirs["median_ms"], 2
            )
        result["ratio dra-driver/goalloc"] = round(ours["median_ms"] / theirs["median_ms"], 2)
        result["ratio dra-driver/goalloc cpu"] = round(
            ours["cpu_median_ms"] / theirs["cpu_median_ms"], 2
        )
        serial = result["dra-driver allocate --serial"]
        result["ratio serial/goalloc"] = round(serial["median_ms"] / theirs["median_ms"], 2)
        result["ratio serial/goalloc cpu"] = round(
            serial["cpu_median_ms"] / theirs["cpu_median_ms"], 2
        )
    return result


def measure_start(runs: int, baseline: Path | None) -> dict[str, Any]:
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "dra-driver --version": [str(BIN / "dra-driver"), "--version"],
        "dra-driver --help": [str(BIN / "dra-driver"), "--help"],
        "kubectl-dra --help": [str(BIN / "kubectl-dra"), "--help"],
    }
    if baseline is not None:
        commands["baseline --version"] = [*_baseline_cli(baseline), "--version"]
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for round_ in range(runs + 1):  # round 0 warms caches and is not counted
        for name, argv in commands.items():
            wall, cpu, done = _timed(argv)
            if done.returncode != 0:
                raise SystemExit(f"{name} failed ({done.returncode}): {done.stderr}")
            if round_:
                samples[name].append((wall, cpu))
    result: dict[str, Any] = {name: _figures(values) for name, values in samples.items()}
    bare = result["python -c pass"]["median_ms"]
    result["ratios to python -c pass"] = {
        name: round(result[name]["median_ms"] / bare, 2)
        for name in commands
        if name != "python -c pass"
    }
    return result


def _load() -> str:
    return Path("/proc/loadavg").read_text(encoding="ascii").strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", action="append", help="NODESxGPUS (repeatable)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--start-runs", type=int, default=15)
    parser.add_argument("--in-use", type=int, default=1000)
    parser.add_argument("--pending", type=int, default=10)
    parser.add_argument(
        "--baseline",
        type=Path,
        help="also time dra-driver of this source tree (e.g. git archive of an earlier commit)",
    )
    args = parser.parse_args()
    go = GOALLOC.exists()
    if not go:
        print(f"{GOALLOC} not built (make bench builds it): Go column left out", file=sys.stderr)
    report: dict[str, Any] = {
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "load_before": _load(),
        "start": measure_start(args.start_runs, args.baseline),
        "allocate": [
            measure_shape(
                shape, args.runs, args.in_use, args.pending, go=go, baseline=args.baseline
            )
            for shape in args.shape or ["500x10", "100x128"]
        ],
    }
    report["load_after"] = _load()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
