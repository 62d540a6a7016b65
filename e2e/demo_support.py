"""What ``python -m e2e.demo`` drives: the driver's two processes (:class:`Agent`), the few
API calls it makes (:class:`Api`), waits that fail as soon as an agent exits, the stage it
is in (:class:`Stages`) and the timings it prints at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

__all__ = [
    "Agent",
    "Api",
    "DemoError",
    "Stages",
    "Timings",
    "dra_driver_argv",
    "say",
    "wait_for",
]

REPO: Final = Path(__file__).resolve().parents[1]
#: An agent has this long to exit after SIGTERM before it is killed.
STOP_TIMEOUT_S: Final = 30.0


class DemoError(Exception):
    """A step of the demo failed; the message says which and what was seen."""


def say(message: str) -> None:
    print(f"demo: {message}", file=sys.stderr, flush=True)


def dra_driver_argv() -> list[str]:
    """The ``dra-driver`` console script of this environment, or the module behind it."""
    script = Path(sys.executable).with_name("dra-driver")
    if script.exists():
        return [str(script)]
    return [
        sys.executable,
        "-c",
        "import sys; from dra_cli.main import main; sys.exit(main())",
    ]


@dataclass
class Agent:
    """One of the driver's processes, in its own session, its output in ``log``."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, name: str, argv: list[str], log: Path) -> Agent:
        with log.open("ab") as out:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                start_new_session=True,
            )
        return cls(name, process, log)

    def alive(self) -> bool:
        return self.process.poll() is None

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> int:
        """SIGTERM to its process group, SIGKILL after STOP_TIMEOUT_S; returns the exit status."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            say(f"{self.name} did not exit on SIGTERM within {STOP_TIMEOUT_S:.0f} s; killing it")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()


@dataclass
class Timings:
    """Seconds since the demo started, per milestone."""

    started: float = field(default_factory=time.monotonic)
    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, what: str) -> None:
        self.marks[what] = time.monotonic() - self.started

    def report(self) -> str:
        lines = ["timings:"]
        previous = 0.0
        for what, at in self.marks.items():
            lines.append(f"  {what:<36} {at - previous:6.1f} s  (at {at:6.1f} s)")
            previous = at
        lines.append(f"  {'total':<36} {previous:6.1f} s")
        return "\n".join(lines)


@dataclass
class Stages:
    """The demo's stages in order; :meth:`enter` announces one as it starts, so that a long
    step (a cold build compiles Kubernetes for tens of minutes) says where the demo is.

    ``demo: [2/5] starting the local cluster (at 12 s)``
    """

    names: tuple[str, ...]
    timings: Timings
    out: Callable[[str], None] = say
    entered: list[str] = field(default_factory=list)

    def enter(self, name: str) -> None:
        """Announce stage ``name`` (one of ``names``; a stage is entered once, in order)."""
        if name not in self.names:
            raise ValueError(f"stage {name!r}: not one of {', '.join(self.names)}")
        if self.entered and self.names.index(name) <= self.names.index(self.entered[-1]):
            raise ValueError(f"stage {name!r} after {self.entered[-1]!r}: out of order")
        self.entered.append(name)
        at = time.monotonic() - self.timings.started
        self.out(f"[{self.names.index(name) + 1}/{len(self.names)}] {name} (at {at:.0f} s)")


def wait_for(what: str, condition: Callable[[], Any], timeout_s: float, *watch: Agent) -> Any:
    """Poll ``condition`` until it returns something truthy and return that.

    Raises DemoError on timeout, or as soon as one of ``watch`` has exited.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        for agent in watch:
            if not agent.alive():
                raise DemoError(
                    f"{agent.name} exited {agent.process.returncode} while waiting for {what}"
                )
        if time.monotonic() >= deadline:
            raise DemoError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.5)


class Api:
    """The few API calls the demo makes, through the official client; objects as raw JSON."""

    def __init__(self, kubeconfig: Path) -> None:
        from kubernetes import client, config

        api_client = config.new_client_from_config(str(kubeconfig))  # type: ignore[no-untyped-call]
        self.core: Any = client.CoreV1Api(api_client)
        self.resource: Any = client.ResourceV1Api(api_client)
        self._api_exception: type[Exception] = client.ApiException

    def _json(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(call(*args, _preload_content=False, **kwargs).data)
        return data

    def apply(self, doc: dict[str, Any]) -> str:
        """Create ``doc`` (Namespace, DeviceClass, ResourceClaim(Template) or Pod); returns
        ``kind namespace/name``. An existing DeviceClass or Namespace is left as it is."""
        kind, meta = doc["kind"], doc["metadata"]
        namespace, name = meta.get("namespace", "default"), meta["name"]
        creates: dict[str, Callable[[], Any]] = {
            "Namespace": lambda: self.core.create_namespace(doc),
            "DeviceClass": lambda: self.resource.create_device_class(doc),
            "ResourceClaimTemplate": lambda: (
                self.resource.create_namespaced_resource_claim_template(namespace, doc)
            ),
            "ResourceClaim": lambda: self.resource.create_namespaced_resource_claim(namespace, doc),
            "Pod": lambda: self.core.create_namespaced_pod(namespace, doc),
        }
        if kind not in creates:
            raise DemoError(f"{kind} {name}: the demo applies only {', '.join(creates)}")
        try:
            creates[kind]()
        except self._api_exception as err:
            if getattr(err, "status", None) != 409 or kind not in ("Namespace", "DeviceClass"):
                raise DemoError(f"creating {kind} {name}: {err}") from None
        scope = "" if kind in ("Namespace", "DeviceClass") else f"{namespace}/"
        return f"{kind} {scope}{name}"

    def pods(self, namespace: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self._json(self.core.list_namespaced_pod, namespace)["items"]
        return items

    def claim(self, namespace: str, name: str) -> dict[str, Any]:
        return self._json(self.resource.read_namespaced_resource_claim, name, namespace)

    def log(self, namespace: str, pod: str) -> str:
        text: str = self.core.read_namespaced_pod_log(pod, namespace)
        return text

    def events(self, namespace: str, name: str) -> list[str]:
        listed = self.core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name}"
        )
        return [f"{e.reason}: {e.message}" for e in listed.items]

    def claims(self, namespace: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self._json(
            self.resource.list_namespaced_resource_claim, namespace
        )["items"]
        return items

    def slices(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self._json(self.resource.list_resource_slice)["items"]
        return items

    def claim_uids(self, namespace: str) -> set[str]:
        return {str(c["metadata"]["uid"]) for c in self.claims(namespace)}

    def delete_pods(self, namespace: str) -> None:
        self.core.delete_collection_namespaced_pod(namespace, grace_period_seconds=0)
