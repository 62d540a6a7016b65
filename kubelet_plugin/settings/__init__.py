"""The settings of ``dra-driver kubelet-plugin``: every flag, its environment twin, its default.

One :class:`Settings` object is built at start-up from the command line and the
environment (a flag wins over its twin, the twin over the default) and
validated before anything runs: a wrong value stops the plugin with an error
that names the flag (or the environment variable it came from) and the fix.

========================== =============================== =======================================
flag                       environment twin                default
========================== =============================== =======================================
--driver-name              DRA_DRIVER_NAME                 gpu.dra-driver.io
--node-name                NODE_NAME, DRA_DRIVER_NODE_NAME the host name, lower-cased (as the
                                                           kubelet names its node)
--kubeconfig               KUBECONFIG                      none: in-cluster configuration
--registry-dir             DRA_DRIVER_REGISTRY_DIR         /var/lib/kubelet/plugins_registry
--plugins-dir              DRA_DRIVER_PLUGINS_DIR          /var/lib/kubelet/plugins
--cdi-root                 DRA_DRIVER_CDI_ROOT             /var/run/cdi
--driver-root              DRA_DRIVER_DRIVER_ROOT          /
--host-driver-root         DRA_DRIVER_HOST_DRIVER_ROOT     --driver-root
--dev-root                 DRA_DRIVER_DEV_ROOT             /
--hook-path                DRA_DRIVER_HOOK_PATH            none: no ldcache hook in CDI specs
--gpu-backend              DRA_DRIVER_GPU_BACKEND          auto (NVML; an error if it does not load)
--mock-profile             DRA_DRIVER_MOCK_PROFILE         8xH100-80GB
--device-order             DRA_DRIVER_DEVICE_ORDER         index
--partitionable            DRA_DRIVER_PARTITIONABLE        true
--shared-gpus              DRA_DRIVER_SHARED_GPUS          false
--checkpoint-path          DRA_DRIVER_CHECKPOINT_PATH      <plugins dir>/<driver>/checkpoint.json
--pod-uid                  POD_UID, DRA_DRIVER_POD_UID     empty: the only plugin instance of
                                                           the node (no rolling update)
--liveness-address         DRA_DRIVER_LIVENESS_ADDRESS     empty: no liveness service
--metrics-address          DRA_DRIVER_METRICS_ADDRESS      empty: no metrics endpoint
--health-policy            DRA_DRIVER_HEALTH_POLICY        xid=NoSchedule,ecc-double-bit=NoExecute,
                                                           gpu-lost=NoExecute
--ignored-xids             DRA_DRIVER_IGNORED_XIDS         13,31,43,45,68,109
--health-recovery-seconds  DRA_DRIVER_HEALTH_RECOVERY_SECONDS  300
--auto-reset               DRA_DRIVER_AUTO_RESET           false
--log-format               DRA_DRIVER_LOG_FORMAT           text
--log-level                DRA_DRIVER_LOG_LEVEL            info
========================== =============================== =======================================

The settings model is :mod:`~kubelet_plugin.settings.model`; the flags, their
help and the parsing are :mod:`~kubelet_plugin.settings.command_line`; the
health policy's parsers are :mod:`kubelet_plugin.health.taints`. This package
is imported when the command line is built, so it stays light: no gRPC, no
Kubernetes client, no NVML.
"""

from kubelet_plugin.health.taints import (
    DEFAULT_HEALTH_POLICY,
    DEFAULT_IGNORED_XIDS,
    DEFAULT_RECOVERY_SECONDS,
    HEALTH_EVENT_KINDS,
    parse_health_policy,
    parse_xids,
)
from kubelet_plugin.settings.command_line import (
    FLAGS,
    Flag,
    add_arguments,
    build_parser,
    parse_settings,
    settings_from_args,
)
from kubelet_plugin.settings.model import (
    DEFAULT_CDI_ROOT,
    DEFAULT_PLUGINS_DIR,
    DEFAULT_REGISTRY_DIR,
    GpuBackend,
    LogFormat,
    Settings,
    split_host_port,
)

__all__ = [
    "DEFAULT_CDI_ROOT",
    "DEFAULT_HEALTH_POLICY",
    "DEFAULT_IGNORED_XIDS",
    "DEFAULT_PLUGINS_DIR",
    "DEFAULT_RECOVERY_SECONDS",
    "DEFAULT_REGISTRY_DIR",
    "FLAGS",
    "HEALTH_EVENT_KINDS",
    "Flag",
    "GpuBackend",
    "LogFormat",
    "Settings",
    "add_arguments",
    "build_parser",
    "parse_health_policy",
    "parse_settings",
    "parse_xids",
    "settings_from_args",
    "split_host_port",
]
