"""The migration kit: from NVIDIA's k8s-device-plugin to this driver, offline.

:func:`read_configs` reads the device plugin's ``version: v1`` config files (or the
ConfigMap holding several named ones), :func:`plan_migration` turns them into this chart's
values and DeviceClasses that map the device plugin's resource names
(``spec.extendedResourceName``), and :func:`build_output` adds, per workload pattern, the
ResourceClaimTemplate form and the unchanged extended-resource form. Problems are
:class:`~api.errors.InvalidInputError` naming the file, the key and the fix; what carries
over only partly is a warning in the plan. ``dra-driver migrate`` is the command line;
docs/migration.md the procedure.
"""

from __future__ import annotations

from dra_driver.migration.config import DevicePluginConfig, decode_config
from dra_driver.migration.plan import ClassPlan, MigrationPlan, plan_migration
from dra_driver.migration.sources import (
    CONFIG_LABEL,
    MIG_CONFIG_LABEL,
    parse_labels,
    read_configs,
    select_configs,
)
from dra_driver.migration.workloads import MigrationOutput, Pattern, build_output

__all__ = [
    "CONFIG_LABEL",
    "MIG_CONFIG_LABEL",
    "ClassPlan",
    "DevicePluginConfig",
    "MigrationOutput",
    "MigrationPlan",
    "Pattern",
    "build_output",
    "decode_config",
    "parse_labels",
    "plan_migration",
    "read_configs",
    "select_configs",
]
