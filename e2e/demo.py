"""``python -m e2e.demo`` (``make demo``): the driver's main job on the local cluster, mock GPUs.

::

    python -m e2e.demo [--keep-logs] [--machine NAME]

It builds or reuses the cluster binaries (e2e/cluster/build.sh: a line per binary it
builds, progress while compiling, "cache warm" when there is nothing to build) and starts
the local cluster
(``e2e.cluster.LocalCluster``), then ``dra-driver kubelet-plugin`` with mock
GPUs (4 H100 and 4 A100 on the one node, device nodes under the cluster
directory) and ``dra-driver controller``; it applies the DeviceClasses of
deploy/examples/inventory and the manifests of deploy/examples/demo, waits
until every pod runs, and prints one row per pod: its claims, who placed them
(the controller for the gated pod, the scheduler for the others), the node,
the devices, their CDI IDs and what the container saw (``/dev/nvidia*`` and
the GPU environment, from the pod's log).

Then it tears everything down, also after a failure, Ctrl-C or SIGTERM: pods
deleted and their claims unprepared (CDI specs gone), both agents stopped with
SIGTERM, the cluster down. On failure it prints the components' log tails and
exits 1. Needs root (the cluster's kubelet). Each stage is announced on stderr as it starts
(``demo: [2/5] starting the local cluster (at 12 s)``, :data:`STAGES`); timings go to
stdout at the end.

With ``--machine NAME`` (``make demo DEMO_MACHINE=NAME``) the plugin runs the named mock
machine instead (``dgx-h100``, ``pairs-4xA100``, ``pcie-4xL40S``, ``rack-4xH100``:
:mod:`dra_driver.discovery.mock_machines`) and the demo applies the topology scene of
deploy/examples/demo-topology: gated pods the controller places under the ``topology``
policy, with claims that keep their GPUs on one NVLink island (or PCIe root). What each
machine should do is one table, :data:`e2e.demo_topology.SCENES`: the pods expected to run
must run, each on one island, and a pod expected to be refused must get the controller's
``Unplaceable`` Event with the reason, which the table shows; anything else fails the demo.
The table shows each device's NVLink island and PCIe root.

The agents, API calls and waits it drives are :mod:`e2e.demo_support`; the table
is :mod:`e2e.demo_report` (:mod:`e2e.demo_topology` for the topology scene).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, Final

import yaml

from e2e.cluster import ClusterError, LocalCluster, build_binaries
from e2e.cluster.processes import log_tail
from e2e.demo_report import (
    HEADER,
    PodRow,
    allocated_devices,
    cdi_device_ids,
    claim_names,
    container_view,
    devices_held_twice,
    format_table,
    placed_by,
)
from e2e.demo_support import (
    Agent,
    Api,
    DemoError,
    Stages,
    Timings,
    dra_driver_argv,
    say,
    wait_for,
)
from e2e.demo_topology import HEADER as TOPOLOGY_HEADER
from e2e.demo_topology import (
    SCENES,
    Expected,
    TopologyRow,
    awaiting,
    contradictions,
    device_attributes,
    machine_name,
    scene_documents,
    unmatched_constraints,
)

REPO: Final = Path(__file__).resolve().parents[1]
DEVICE_CLASSES: Final = REPO / "deploy" / "examples" / "inventory" / "deviceclasses.yaml"
MANIFESTS: Final = REPO / "deploy" / "examples" / "demo"
TOPOLOGY_MANIFESTS: Final = REPO / "deploy" / "examples" / "demo-topology"
DRIVER: Final = "gpu.dra-driver.io"
MOCK_PROFILE: Final = "4xH100-80GB,4xA100-40GB"
#: Pods have this long to run once applied (a cold containerd start and image unpack included).
PODS_TIMEOUT_S: Final = 180.0
#: Deleted pods have this long to be gone and their claims unprepared.
UNPREPARE_TIMEOUT_S: Final = 90.0
#: What the demo does, in order, each announced as it starts.
BINARIES, CLUSTER, AGENTS, PODS, TEARDOWN = STAGES = (
    "building or reusing the cluster binaries",
    "starting the local cluster",
    "starting the kubelet plugin and the controller",
    "running the demo pods",
    "tearing down",
)


def manifests(folder: Path = MANIFESTS) -> list[dict[str, Any]]:
    """deploy/examples/inventory's DeviceClasses, then every document of ``folder``
    (deploy/examples/demo) in file-name order (the Namespace file sorts first)."""
    docs: list[dict[str, Any]] = []
    for path in [DEVICE_CLASSES, *sorted(folder.glob("*.yaml"))]:
        docs += [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    return docs


def demo_namespace(docs: list[dict[str, Any]]) -> str:
    (namespace,) = {d["metadata"]["namespace"] for d in docs if d["kind"] == "Pod"}
    return str(namespace)


class Demo:
    """One run: cluster, agents, manifests, table, teardown."""

    def __init__(self, keep_logs: bool, machine: str | None = None) -> None:
        self.keep_logs = keep_logs
        self.machine = machine
        self.profile = machine or MOCK_PROFILE
        self.timings = Timings()
        self.stages = Stages(STAGES, self.timings)
        self.cluster: LocalCluster | None = None
        self.agents: list[Agent] = []
        self.api: Api | None = None
        self.namespace = ""
        self.claim_uids: set[str] = set()

    # --- start ----------------------------------------------------------------------------

    def start(self) -> None:
        self.stages.enter(BINARIES)
        bin_dir = build_binaries(progress=lambda m: say(f"build: {m}"))
        self.timings.mark("cluster binaries built or reused")
        self.stages.enter(CLUSTER)
        cluster = LocalCluster(bin_dir=bin_dir, progress=lambda m: say(f"cluster: {m}"))
        self.cluster = cluster
        cluster.up()
        self.timings.mark("cluster up")
        self.stages.enter(AGENTS)
        self.api = Api(cluster.kubeconfig)
        plugin = Agent.start(
            "kubelet-plugin",
            [
                *dra_driver_argv(),
                "kubelet-plugin",
                f"--node-name={cluster.node_name}",
                f"--kubeconfig={cluster.kubeconfig}",
                f"--registry-dir={cluster.plugins_registry_dir}",
                f"--plugins-dir={cluster.plugins_dir}",
                f"--cdi-root={cluster.cdi_dir}",
                f"--dev-root={cluster.directory / 'mock-dev'}",
                "--gpu-backend=mock",
                f"--mock-profile={self.profile}",
            ],
            cluster.logs_dir / "kubelet-plugin.log",
        )
        self.agents.append(plugin)
        controller = Agent.start(
            "controller",
            [
                *dra_driver_argv(),
                "controller",
                f"--kubeconfig={cluster.kubeconfig}",
                "--no-leader-elect",
                "--no-manage-device-classes",
            ],
            cluster.logs_dir / "controller.log",
        )
        self.agents.append(controller)
        say(f"started {plugin.name} (mock GPUs {self.profile}) and {controller.name}")
        wait_for(
            "the kubelet to register the plugin",
            lambda: "kubelet registered DRA driver" in plugin.text(),
            60,
            plugin,
        )
        self.timings.mark("agents started, plugin registered")

    # --- run ------------------------------------------------------------------------------

    def run(self) -> str:
        """Apply the manifests, wait for every pod to run; return the table."""
        assert self.api is not None
        self.stages.enter(PODS)
        if self.machine is not None:
            return self._run_topology(self.machine)
        api = self.api
        docs = manifests()
        self.namespace = demo_namespace(docs)
        # Everything at once, the gated pod next to the ungated ones: the scheduler may
        # allocate for an ungated pod a device the controller is writing for the gated one,
        # and the controller's confirm (its settle delay) makes its own claim give way.
        for doc in docs:
            say(f"applied {api.apply(doc)}")
        pods = sorted(d["metadata"]["name"] for d in docs if d["kind"] == "Pod")

        def all_running() -> bool:
            phases = {p["metadata"]["name"]: p.get("status", {}).get("phase") for p in self._pods()}
            failed = [name for name, phase in phases.items() if phase in ("Failed", "Succeeded")]
            if failed:
                raise DemoError(f"pod(s) {', '.join(failed)} stopped:\n{self._pod_report(failed)}")
            return sorted(phases) == pods and all(p == "Running" for p in phases.values())

        try:
            wait_for(f"{len(pods)} pods to run", all_running, PODS_TIMEOUT_S, *self.agents)
        except DemoError as err:
            raise DemoError(f"{err}\n{self._pod_report(pods)}") from None
        self.timings.mark("all pods running")
        rows = [self._row(pod) for pod in sorted(self._pods(), key=lambda p: p["metadata"]["name"])]
        twice = devices_held_twice(self.api.claims(self.namespace))
        if twice:
            held = "; ".join(f"{d} by {', '.join(names)}" for d, names in sorted(twice.items()))
            raise DemoError(f"devices allocated to two claims: {held}")
        return format_table(HEADER, [row.cells() for row in rows])

    def _run_topology(self, machine: str) -> str:
        """Apply the topology scene for ``machine``, wait until each pod does what
        :data:`SCENES` expects (runs, or is refused with the controller's reason), check
        that each running claim's devices share what its constraints name; the table."""
        assert self.api is not None
        api, expected = self.api, SCENES[machine]
        docs = scene_documents(manifests(TOPOLOGY_MANIFESTS), machine)
        self.namespace = demo_namespace(docs)
        for doc in docs:
            say(f"applied {api.apply(doc)}")
        refused = [e.pod for e in expected if not e.runs]

        wrong: list[str] = []

        def settled() -> bool:
            pods = {p["metadata"]["name"]: p for p in self._pods()}
            wrong[:] = contradictions(expected, pods)
            events = {name: api.events(self.namespace, name) for name in refused}
            return bool(wrong) or not awaiting(expected, pods, events)

        report = [e.pod for e in expected]
        try:
            wait_for(f"the scene of {machine}", settled, PODS_TIMEOUT_S, *self.agents)
        except DemoError as err:
            pods = {p["metadata"]["name"]: p for p in self._pods()}
            events = {e.pod: api.events(self.namespace, e.pod) for e in expected}
            left = "; ".join(awaiting(expected, pods, events))
            raise DemoError(
                f"{err}\nstill waiting for: {left}\n{self._pod_report(report)}"
            ) from None
        if wrong:
            raise DemoError("; ".join(wrong) + "\n" + self._pod_report(report))
        self.timings.mark("every pod ran or was refused")
        attributes = device_attributes(api.slices())
        rows = [self._topology_row(e, attributes) for e in expected]
        twice = devices_held_twice(api.claims(self.namespace))
        if twice:
            raise DemoError(f"devices allocated to two claims: {sorted(twice)}")
        return format_table(TOPOLOGY_HEADER, [row.cells() for row in rows])

    def _topology_row(
        self, expected: Expected, attributes: dict[str, dict[str, Any]]
    ) -> TopologyRow:
        assert self.api is not None
        api, name = self.api, expected.pod
        pod = next(p for p in self._pods() if p["metadata"]["name"] == name)
        claims = [api.claim(self.namespace, c) for c in claim_names(pod)]
        self.claim_uids |= {c["metadata"]["uid"] for c in claims}
        broken = [b for c in claims for b in unmatched_constraints(c, attributes)]
        if broken:
            raise DemoError(f"pod {name}: " + "; ".join(broken))
        log = ""
        if expected.runs:
            log = wait_for(
                f"pod {name} to print what it sees",
                lambda: (text := api.log(self.namespace, name)) and "--- end" in text and text,
                30,
            )
        return TopologyRow(
            pod=name,
            expected=expected,
            placed_by=",".join(sorted({placed_by(c, DRIVER) for c in claims})) or "-",
            node=str(pod["spec"].get("nodeName") or ""),
            devices=tuple(d for c in claims for d in allocated_devices(c)),
            attributes=attributes,
            log=log,
            events=tuple(api.events(self.namespace, name)),
        )

    def _pods(self) -> list[dict[str, Any]]:
        assert self.api is not None
        return self.api.pods(self.namespace)

    def _row(self, pod: dict[str, Any]) -> PodRow:
        assert self.api is not None and self.cluster is not None
        api, name = self.api, pod["metadata"]["name"]
        claims = [api.claim(self.namespace, c) for c in claim_names(pod)]
        self.claim_uids |= {c["metadata"]["uid"] for c in claims}
        specs = [
            json.loads(path.read_text())
            for claim in claims
            for path in sorted(self.cluster.cdi_dir.glob(f"*{claim['metadata']['uid']}*.json"))
        ]
        log: str = wait_for(
            f"pod {name} to print what it sees",
            lambda: (text := api.log(self.namespace, name)) and "--- end" in text and text,
            30,
        )
        return PodRow(
            pod=name,
            claims=tuple(c["metadata"]["name"] for c in claims),
            placed_by=",".join(sorted({placed_by(c, DRIVER) for c in claims})) or "-",
            node=str(pod["spec"].get("nodeName") or ""),
            devices=tuple(d for c in claims for d in allocated_devices(c)),
            cdi_ids=tuple(cdi_device_ids(specs)),
            saw=tuple(container_view(log)),
        )

    def _pod_report(self, names: list[str]) -> str:
        assert self.api is not None
        lines = []
        by_name = {p["metadata"]["name"]: p for p in self._pods()}
        for name in names:
            pod = by_name.get(name, {})
            lines.append(
                f"  pod {name}: phase {pod.get('status', {}).get('phase')}, "
                f"node {pod.get('spec', {}).get('nodeName')}, "
                f"gates {pod.get('spec', {}).get('schedulingGates')}"
            )
            lines += [f"    event {e}" for e in self.api.events(self.namespace, name)]
        return "\n".join(lines)

    # --- teardown -------------------------------------------------------------------------

    def stop(self) -> list[str]:
        """Undo everything started, each step tried; returns what went wrong."""
        problems: list[str] = []
        self.stages.enter(TEARDOWN)
        if self.api is not None and self.namespace and self.cluster is not None:
            try:
                self._delete_pods()
            except Exception as err:  # teardown goes on whatever this step met
                problems.append(f"deleting the pods: {err}")
        for agent in reversed(self.agents):
            code = agent.stop()
            say(f"{agent.name} stopped (exit status {code})")
            if code == -signal.SIGTERM:
                # Terminated before it installed its handler (still starting): stopped all the same.
                say(f"{agent.name} was still starting and died of the SIGTERM itself")
            elif code != 0:
                problems.append(f"{agent.name} exited {code} on SIGTERM")
        self.agents.clear()
        if self.cluster is not None:
            try:
                self.cluster.down(keep_directory=self.keep_logs)
            except ClusterError as err:
                problems.append(f"cluster down: {err}")
            self.cluster = None
        return problems

    def _delete_pods(self) -> None:
        """Delete the demo's pods and wait until the kubelet had the plugin unprepare their
        claims: no pod left, no CDI spec of theirs left."""
        assert self.api is not None and self.cluster is not None
        self.claim_uids |= self.api.claim_uids(self.namespace)
        self.api.delete_pods(self.namespace)
        cdi_dir = self.cluster.cdi_dir
        wait_for(
            "the pods to be gone and their claims unprepared",
            lambda: (
                not self._pods()
                and not any(any(cdi_dir.glob(f"*{uid}*")) for uid in self.claim_uids)
            ),
            UNPREPARE_TIMEOUT_S,
        )
        say("pods deleted, their claims unprepared (CDI specs gone)")

    def log_tails(self) -> str:
        parts = [f"--- {a.name} ({a.log}):\n{log_tail(a.log, 30)}" for a in self.agents]
        if self.cluster is not None:
            parts.append(self.cluster.log_tails(lines=20))
        return "\n".join(parts)


@contextlib.contextmanager
def _signals(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    """``handler`` for SIGINT and SIGTERM inside the block (which may replace it); the
    handlers from before the block after it."""
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt: a terminated demo tears down like a Ctrl-C."""
    raise KeyboardInterrupt


def _hold_on(signum: int, frame: FrameType | None) -> None:
    """During teardown a signal only says so: stopping it halfway would leave processes
    and mounts behind, and every step of the teardown has a time limit."""
    say(f"{signal.Signals(signum).name}: already tearing down, every step has a time limit")


def _machine_argument(text: str) -> str:
    try:
        return machine_name(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def build_parser() -> argparse.ArgumentParser:
    """The demo's command line: ``--keep-logs``, ``--machine NAME`` (a mock machine of
    :data:`SCENES`; an unknown name is a usage error that lists the names)."""
    parser = argparse.ArgumentParser(
        prog="python -m e2e.demo",
        description="Start the local cluster with the driver on mock GPUs, run the demo pods, "
        "print what each got, tear everything down.",
    )
    parser.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the cluster directory (logs) after teardown",
    )
    parser.add_argument(
        "--machine",
        metavar="NAME",
        type=_machine_argument,
        default=None,
        help="run the named mock machine and the topology scene of "
        f"deploy/examples/demo-topology ({', '.join(sorted(SCENES))}); "
        f"default: {MOCK_PROFILE} and deploy/examples/demo",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 the demo ran and everything was torn down; 1 a step or the teardown
    failed (log tails printed); 130 interrupted; 2 a usage error."""
    args = build_parser().parse_args(argv)
    if os.geteuid() != 0:
        print("python -m e2e.demo: needs root (it runs a kubelet)", file=sys.stderr)
        return 2
    demo = Demo(keep_logs=args.keep_logs, machine=args.machine)
    code = 0
    problems: list[str] = []
    with _signals(_interrupt):
        try:
            try:
                demo.start()
                table = demo.run()
                print(table, flush=True)
            except KeyboardInterrupt:
                say("interrupted; tearing down")
                code = 130
            except Exception as err:  # whatever failed, report it and tear down
                say(f"failed: {type(err).__name__}: {err}")
                print(demo.log_tails(), file=sys.stderr)
                code = 1
        finally:
            # Even when a second signal cut the handling above short.
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, _hold_on)
            problems = demo.stop()
    demo.timings.mark("teardown")
    for problem in problems:
        say(f"teardown: {problem}")
    if problems and code == 0:
        code = 1
    print(demo.timings.report(), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
