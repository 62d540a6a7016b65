"""The settings of ``dra-driver controller``: every flag, its environment twin, its default.

One :class:`Settings` object is built at start-up from the command line and the
environment (a flag wins over its twin, the twin over the default) and
validated before anything runs: a wrong value stops the controller with an
error that names the flag (or the environment variable it came from) and the fix.

============================ ==================================== ==============================
flag                         environment twin                     default
============================ ==================================== ==============================
--driver-name                DRA_DRIVER_NAME                      gpu.dra-driver.io
--kubeconfig                 KUBECONFIG                           none: in-cluster configuration
--policy                     DRA_DRIVER_POLICY                    binpack
--namespace                  POD_NAMESPACE, DRA_DRIVER_NAMESPACE  dra-driver (the Lease's and the
                                                                  ConfigMap's namespace)
--identity                   POD_NAME, DRA_DRIVER_IDENTITY        the host name
--leader-elect               DRA_DRIVER_LEADER_ELECT              true
--lease-name                 DRA_DRIVER_LEASE_NAME                dra-driver-controller
--lease-duration-seconds     DRA_DRIVER_LEASE_DURATION_SECONDS    15
--renew-deadline-seconds     DRA_DRIVER_RENEW_DEADLINE_SECONDS    10
--retry-period-seconds       DRA_DRIVER_RETRY_PERIOD_SECONDS      2
--config                     DRA_DRIVER_CONFIG                    none: no cluster pools; the
                                                                  default DeviceClasses
--config-map                 DRA_DRIVER_CONFIG_MAP                none (NAMESPACE/NAME, key
                                                                  config.yaml)
--manage-device-classes      DRA_DRIVER_MANAGE_DEVICE_CLASSES     true
--max-placement-retries      DRA_DRIVER_MAX_PLACEMENT_RETRIES     3
--unschedulable-grace-seconds DRA_DRIVER_UNSCHEDULABLE_GRACE_SECONDS 30
--settle-delay               DRA_DRIVER_SETTLE_DELAY              2 (seconds; 0: confirm at once)
--event-interval-seconds     DRA_DRIVER_EVENT_INTERVAL_SECONDS    60
--queue-size                 DRA_DRIVER_QUEUE_SIZE                10000
--workers                    DRA_DRIVER_WORKERS                   8
--watch-timeout-seconds      DRA_DRIVER_WATCH_TIMEOUT_SECONDS     300
--api-timeout-seconds        DRA_DRIVER_API_TIMEOUT_SECONDS       30
--health-address             DRA_DRIVER_HEALTH_ADDRESS            empty: no probe endpoint
--metrics-address            DRA_DRIVER_METRICS_ADDRESS           empty: no metrics endpoint
--webhook-address            DRA_DRIVER_WEBHOOK_ADDRESS           empty: no admission webhook
--webhook-cert-dir           DRA_DRIVER_WEBHOOK_CERT_DIR          /etc/dra-driver/webhook
                                                                  (tls.crt, tls.key)
--log-format                 DRA_DRIVER_LOG_FORMAT                text
--log-level                  DRA_DRIVER_LOG_LEVEL                 info
============================ ==================================== ==============================

This module is imported when the command line is built, so it stays light: no
Kubernetes client, no Prometheus client.
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent_kit import flags
from agent_kit.flags import Flag, define_flag
from api.validation import is_dns1123_subdomain
from dra_driver.allocator import POLICIES
from dra_driver.slices import DEFAULT_DRIVER_NAME

__all__ = [
    "DEFAULT_LEASE_NAME",
    "DEFAULT_NAMESPACE",
    "DEFAULT_POLICY",
    "DEFAULT_SETTLE_DELAY",
    "FLAGS",
    "Flag",
    "Settings",
    "add_arguments",
    "build_parser",
    "parse_settings",
    "settings_from_args",
    "split_host_port",
]

LogFormat = Literal["text", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]

DEFAULT_POLICY: Final = "binpack"
DEFAULT_NAMESPACE: Final = "dra-driver"
DEFAULT_LEASE_NAME: Final = "dra-driver-controller"
#: Seconds a pod's fresh allocations settle before they are confirmed and its gate removed.
DEFAULT_SETTLE_DELAY: Final = 2.0
DEFAULT_WEBHOOK_CERT_DIR: Final = Path("/etc/dra-driver/webhook")
#: Beyond this the gate stays on for no gain: a racing write has long landed.
MAX_SETTLE_DELAY: Final = 300.0
_OBJ: Final = "controller settings"


def split_host_port(address: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or ``:port`` (every interface) to (host, port).

    Raises ValueError saying what form is expected; see agent_kit.flags.split_host_port.
    """
    return flags.split_host_port(address, example_port=8080)


class Settings(BaseModel):
    """Everything ``dra-driver controller`` is told; validated, immutable.

    Build it with :func:`parse_settings` or :func:`settings_from_args` so errors
    name flags; constructing it directly (tests) raises pydantic's ValidationError.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    driver_name: str = DEFAULT_DRIVER_NAME
    kubeconfig: Path | None = None
    """None: the in-cluster service account configuration."""
    policy: str = DEFAULT_POLICY
    namespace: str = DEFAULT_NAMESPACE
    identity: str = Field(default_factory=lambda: socket.gethostname().lower())
    leader_elect: bool = True
    lease_name: str = DEFAULT_LEASE_NAME
    lease_duration_seconds: float = Field(default=15.0, gt=0)
    renew_deadline_seconds: float = Field(default=10.0, gt=0)
    retry_period_seconds: float = Field(default=2.0, gt=0)
    config: Path | None = None
    config_map: str | None = None
    manage_device_classes: bool = True
    max_placement_retries: int = Field(default=3, ge=0)
    unschedulable_grace_seconds: float = Field(default=30.0, ge=0)
    settle_delay: float = Field(default=DEFAULT_SETTLE_DELAY, ge=0, le=MAX_SETTLE_DELAY)
    """Seconds between writing a pod's allocations and confirming them (see
    :mod:`controller.placement`). The kube-scheduler may have chosen one of the
    same devices for another claim just before its informer saw our write; it
    writes that allocation in the pod's binding cycle, normally well under a
    second after deciding. 2 s covers that with margin on a busy API server and
    adds 2 s to each gated pod's start, which a pod about to load a model onto a
    GPU hardly notices; it is a bound on a lag, not a guarantee, so a conflict
    found later is still reported. 0 confirms right after the write (the check
    still runs, the wait does not)."""
    event_interval_seconds: float = Field(default=60.0, ge=0)
    queue_size: int = Field(default=10_000, ge=1)
    workers: int = Field(default=8, ge=1, le=64)
    watch_timeout_seconds: float = Field(default=300.0, gt=0)
    api_timeout_seconds: float = Field(default=30.0, gt=0)
    health_address: str | None = None
    metrics_address: str | None = None
    webhook_address: str | None = None
    """HTTPS endpoint of the GpuConfig admission webhook (controller.admission); None: off."""
    webhook_cert_dir: Path = DEFAULT_WEBHOOK_CERT_DIR
    log_format: LogFormat = "text"
    log_level: LogLevel = "info"

    @field_validator("driver_name")
    @classmethod
    def _check_driver_name(cls, value: str) -> str:
        return flags.check_driver_name(value)

    @field_validator("policy", mode="before")
    @classmethod
    def _check_policy(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower()
            if value not in POLICIES:
                raise ValueError(f"unknown policy {value!r}: use one of {', '.join(POLICIES)}")
        return value

    @field_validator("namespace", "lease_name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not is_dns1123_subdomain(value):
            raise ValueError(f"{value!r} is not a valid name: use a lower-case DNS subdomain")
        return value

    @field_validator("identity")
    @classmethod
    def _check_identity(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the identity is required; set POD_NAME through the downward API")
        return value

    @field_validator("kubeconfig", "config", mode="before")
    @classmethod
    def _path(cls, value: Any) -> Any:
        return flags.optional_absolute_path(value)

    @field_validator("config_map", mode="before")
    @classmethod
    def _check_config_map(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        if not value.strip():
            return None
        namespace, sep, name = value.partition("/")
        if not sep or not is_dns1123_subdomain(namespace) or not is_dns1123_subdomain(name):
            raise ValueError(f"{value!r}: use NAMESPACE/NAME, e.g. dra-driver/dra-driver-config")
        return value

    @field_validator("webhook_cert_dir", mode="before")
    @classmethod
    def _cert_dir(cls, value: Any) -> Any:
        return flags.optional_absolute_path(value) or DEFAULT_WEBHOOK_CERT_DIR

    @field_validator("health_address", "metrics_address", "webhook_address", mode="before")
    @classmethod
    def _check_address(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        if not value.strip():
            return None
        split_host_port(value)
        return value

    @field_validator("log_format", "log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_lease_timing(self) -> Settings:
        # client-go's rules: a leader must give up (renew deadline) before anyone else
        # may take over (lease duration), and retry several times within the deadline.
        if self.renew_deadline_seconds >= self.lease_duration_seconds:
            raise ValueError(
                "renew_deadline_seconds must be below lease_duration_seconds, so a leader "
                "stops writing before another replica may take over"
            )
        if self.retry_period_seconds >= self.renew_deadline_seconds:
            raise ValueError("retry_period_seconds must be below renew_deadline_seconds")
        return self

    # --- derived values -----------------------------------------------------------

    @property
    def gate(self) -> str:
        """The scheduling gate pods carry to be placed by the controller."""
        return f"{self.driver_name}/placement"

    @property
    def policy_annotation(self) -> str:
        """The pod (or claim) annotation that picks another policy."""
        return f"{self.driver_name}/policy"

    def summary(self) -> dict[str, str]:
        """Every setting as text, for the start-up log line."""
        data = self.model_dump(mode="json")
        return {key: "" if value is None else str(value) for key, value in data.items()}


# --- Flags and environment twins ------------------------------------------------------------


FLAGS: Final[tuple[Flag, ...]] = (
    define_flag(
        "driver_name",
        DEFAULT_DRIVER_NAME,
        "DRA driver name: its gate is <name>/placement, its policy annotation <name>/policy",
        env=("DRA_DRIVER_NAME",),
    ),
    define_flag(
        "kubeconfig",
        "in-cluster configuration",
        "kubeconfig file for the API server",
        env=("KUBECONFIG",),
        metavar="FILE",
    ),
    define_flag(
        "policy",
        DEFAULT_POLICY,
        f"placement policy ({', '.join(POLICIES)}); the pod annotation <driver>/policy "
        "overrides it",
    ),
    define_flag(
        "namespace",
        DEFAULT_NAMESPACE,
        "namespace of the leader Lease (and of a --config-map without one)",
        env=("POD_NAMESPACE", "DRA_DRIVER_NAMESPACE"),
    ),
    define_flag(
        "identity",
        "the host name",
        "this replica's name in the leader Lease",
        env=("POD_NAME", "DRA_DRIVER_IDENTITY"),
    ),
    define_flag(
        "leader_elect",
        "true",
        "elect one leader among replicas on a coordination.k8s.io Lease; only the leader writes",
        boolean=True,
    ),
    define_flag("lease_name", DEFAULT_LEASE_NAME, "name of the leader Lease"),
    define_flag(
        "lease_duration_seconds",
        "15",
        "how long a replica waits after the leader's last renewal before taking over",
        metavar="SECONDS",
    ),
    define_flag(
        "renew_deadline_seconds",
        "10",
        "the leader stops writing when it could not renew for this long (below the duration)",
        metavar="SECONDS",
    ),
    define_flag(
        "retry_period_seconds",
        "2",
        "interval between attempts to acquire or renew the Lease",
        metavar="SECONDS",
    ),
    define_flag(
        "config",
        "none",
        "YAML file with cluster-level pools and DeviceClasses (see controller.pools)",
        metavar="FILE",
    ),
    define_flag(
        "config_map",
        "none",
        "ConfigMap NAMESPACE/NAME holding the same YAML under the key config.yaml",
        metavar="NAMESPACE/NAME",
    ),
    define_flag(
        "manage_device_classes",
        "true",
        "create and update the driver's DeviceClasses (never those an admin made)",
        boolean=True,
    ),
    define_flag(
        "max_placement_retries",
        "3",
        "times a placed pod is released and placed again: the scheduler cannot bind it, or "
        "another claim took its devices before the confirm",
        metavar="N",
    ),
    define_flag(
        "settle_delay",
        "2",
        "seconds between writing a gated pod's allocations and confirming that no other "
        "claim took the same devices meanwhile (a scheduler write racing ours lands well "
        "within this); the gate is removed only after the confirm, so each gated pod "
        "starts this much later. 0: confirm at once after the write",
        metavar="SECONDS",
    ),
    define_flag(
        "unschedulable_grace_seconds",
        "30",
        "a re-placed pod still unschedulable after this long is placed again",
        metavar="SECONDS",
    ),
    define_flag(
        "event_interval_seconds",
        "60",
        "an unchanged explanation Event is repeated at most this often",
        metavar="SECONDS",
    ),
    define_flag("queue_size", "10000", "pods the work queue holds at most", metavar="N"),
    define_flag(
        "workers",
        "8",
        "placement workers: decisions are taken one at a time, API writes in parallel",
        metavar="N",
    ),
    define_flag(
        "watch_timeout_seconds",
        "300",
        "the server ends each watch after this long; the controller resumes it",
        metavar="SECONDS",
    ),
    define_flag(
        "api_timeout_seconds", "30", "timeout of one API server request", metavar="SECONDS"
    ),
    define_flag(
        "health_address",
        "empty: off",
        "HTTP endpoint for /healthz (liveness) and /readyz (readiness), HOST:PORT",
        metavar="ADDRESS",
    ),
    define_flag(
        "metrics_address",
        "empty: off",
        "Prometheus metrics endpoint, HOST:PORT (may equal --health-address)",
        metavar="ADDRESS",
    ),
    define_flag(
        "webhook_address",
        "empty: off",
        "HTTPS endpoint of the GpuConfig validating admission webhook, HOST:PORT "
        "(path /validate-gpu-configs)",
        metavar="ADDRESS",
    ),
    define_flag(
        "webhook_cert_dir",
        str(DEFAULT_WEBHOOK_CERT_DIR),
        "directory of the webhook's serving certificate and key, tls.crt and tls.key (a "
        "mounted kubernetes.io/tls Secret); reloaded when they change",
        metavar="DIR",
    ),
    define_flag(
        "log_format", "text", "log format: text or json (one object per line)", metavar="FORMAT"
    ),
    define_flag("log_level", "info", "log level: debug, info, warning or error", metavar="LEVEL"),
)

_FLAG_SET: Final = flags.FlagSet(
    flags=FLAGS,
    settings=Settings,
    obj=_OBJ,
    prog="dra-driver controller",
    description="The cluster agent: places the claims of gated pods under a policy, "
    "explains unallocatable claims as Events, publishes cluster-level pools and "
    "manages the driver's DeviceClasses.",
    # The lease timing rules span three fields; the duration is the one to raise.
    model_error_source="--lease-duration-seconds",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every flag to ``parser``. Defaults stay None: :func:`settings_from_args`
    then takes the environment twin, then the documented default."""
    _FLAG_SET.add_arguments(parser)


def settings_from_args(
    args: argparse.Namespace | Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """The Settings of parsed flags, completed from ``environ`` (default os.environ).

    A flag that was given wins; else the first of its environment twins that is
    set; else the default. Raises InvalidInputError whose field errors name the
    flags (and the environment variable a bad value came from) and the fix; a
    lease timing error names --lease-duration-seconds.
    """
    return _FLAG_SET.settings_from_args(args, environ)


def build_parser(prog: str = "dra-driver controller") -> argparse.ArgumentParser:
    """A parser with just the controller's flags (the subcommand's own)."""
    return _FLAG_SET.build_parser(prog)


def parse_settings(
    argv: list[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Parse ``argv`` (flags only) and ``environ``; see :func:`settings_from_args`."""
    return settings_from_args(build_parser().parse_args(argv), environ)
