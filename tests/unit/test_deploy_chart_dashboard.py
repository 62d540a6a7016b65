"""The Grafana dashboard (deploy/helm/dra-driver/dashboards/): every query names metrics the
driver really exports, each area the operators watch has a panel, and the chart ships it as
an optional ConfigMap with the sidecar's label."""

from __future__ import annotations

import json
import re
from typing import Any

from chart_fixtures import (
    CHART,
    documents,
    helm_fixture,  # noqa: F401  (pytest finds it as `helm`)
    helm_template,
)

from controller.metrics import ControllerMetrics
from kubelet_plugin.metrics import PluginMetrics
from kubelet_plugin.usage.collector import usage_families

DASHBOARD = CHART / "dashboards" / "dra-driver-dashboard.json"
METRIC = re.compile(r"\bdra_driver_[a-zA-Z0-9_]+")
#: The series names a family gives in the exposition, by family type.
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}


def _exported() -> set[str]:
    """Every series name the controller's and the plugin's registries expose (the plugin's
    per-claim usage families are added to its registry at start-up)."""
    names: set[str] = set()
    for registry in (ControllerMetrics().registry, PluginMetrics().registry):
        for family in registry.collect():
            names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    names.update(family.name for family in usage_families())
    return names


def _queries() -> list[tuple[str, str]]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def test_every_query_names_only_metrics_the_driver_exports() -> None:
    exported = _exported()
    queries = _queries()
    assert queries
    for title, expr in queries:
        named = set(METRIC.findall(expr))
        assert named, f"panel {title!r}: {expr!r} names no metric of the driver"
        assert named <= exported, f"panel {title!r}: not exported: {sorted(named - exported)}"


def test_each_area_has_a_panel() -> None:
    used = {name for _, expr in _queries() for name in METRIC.findall(expr)}
    for name in (
        "dra_driver_published_devices",  # allocation
        "dra_driver_prepared_devices",
        "dra_driver_fragmentation_ratio",  # fragmentation
        "dra_driver_free_mig_devices",
        "dra_driver_tainted_devices",  # health and taints
        "dra_driver_health_events_total",
        "dra_driver_request_duration_seconds_bucket",  # prepare latency
        "dra_driver_placements_total",  # placement
        "dra_driver_admission_reviews_total",  # admission
        "dra_driver_gpu_memory_used_bytes",  # usage by namespace
        "dra_driver_gpu_utilisation",
    ):
        assert name in used, name


def test_the_check_catches_a_metric_that_does_not_exist() -> None:
    assert "dra_driver_placements" not in _exported()  # a counter is queried as ..._total
    assert "dra_driver_request_duration_seconds" not in _exported()


def test_the_chart_ships_the_dashboard_only_when_asked(helm: str) -> None:
    assert not [
        o for o in documents(helm_template(helm)) if o["metadata"]["name"].endswith("-dashboards")
    ]
    objects = documents(
        helm_template(
            helm,
            "--set",
            "dashboards.enabled=true",
            "--set",
            "dashboards.namespace=monitoring",
            "--set",
            "dashboards.annotations.grafana_folder=GPUs",
        )
    )
    (config_map,) = [o for o in objects if o["metadata"]["name"].endswith("-dashboards")]
    assert config_map["kind"] == "ConfigMap"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "GPUs"}
    shipped = json.loads(config_map["data"]["dra-driver-dashboard.json"])
    assert shipped == json.loads(DASHBOARD.read_text())
