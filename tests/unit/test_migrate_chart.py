"""The values `dra-driver migrate` prints are this chart's: ``helm template`` takes them, and
the DeviceClasses the chart then makes are the ones migrate shows as made by the chart;
together with the classes migrate prints, every name the device plugin advertised maps to
exactly one class, and every claim template names a class that exists."""

from __future__ import annotations

from pathlib import Path

import pytest
from chart_fixtures import (
    documents as chart_documents,
)
from chart_fixtures import (
    helm_fixture,  # noqa: F401  (pytest finds it as `helm`)
    helm_template,
)
from migrate_support import by_kind, documents, fixture, migrate, request_of

from api.errors import ExitCode

CASES = [
    ("whole-gpus.yaml",),
    ("mig-single.yaml", "-l", "nvidia.com/mig.config=all-1g.10gb"),
    ("mig-mixed.yaml", "--mig-profile", "3g.40gb"),
    ("time-slicing.yaml", "--gpu-memory", "80Gi"),
    ("time-slicing-renamed.yaml", "--gpu-memory", "80Gi"),
    ("mps.yaml", "--gpu-memory", "80Gi"),
    ("configmap.yaml", "--gpu-memory", "80Gi", "--mig-profile", "1g.10gb"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_the_chart_takes_the_values_and_makes_the_classes_migrate_shows(
    capsys: pytest.CaptureFixture[str], helm: str, tmp_path: Path, case: tuple[str, ...]
) -> None:
    name, *extra = case
    code, values, err = migrate(capsys, "-f", fixture(name), "--part", "values", *extra)
    assert code == ExitCode.OK, err
    values_file = tmp_path / "values.yaml"
    values_file.write_text(values)
    rendered = chart_documents(helm_template(helm, "--values", str(values_file)))
    chart_classes = {
        d["metadata"]["name"]: d["spec"] for d in rendered if d["kind"] == "DeviceClass"
    }
    code, manifests, err = migrate(capsys, "-f", fixture(name), "--part", "manifests", *extra)
    assert code == ExitCode.OK, err
    code, to_apply, err = migrate(capsys, "-f", fixture(name), "--part", "classes", *extra)
    assert code == ExitCode.OK, err
    applied = {d["metadata"]["name"]: d["spec"] for d in documents(to_apply)}
    shown = {n: c["spec"] for n, c in by_kind(manifests, "DeviceClass").items()}
    # What migrate shows as the chart's is what the chart renders from its values.
    for class_name, spec in shown.items():
        if class_name not in applied:
            assert chart_classes[class_name] == spec
    # The chart's classes and the applied ones do not overlap, and each name maps one class.
    assert not set(applied) & set(chart_classes)
    mapped = [
        spec["extendedResourceName"]
        for spec in [*chart_classes.values(), *applied.values()]
        if "extendedResourceName" in spec
    ]
    assert len(mapped) == len(set(mapped))
    assert set(mapped) == {spec["extendedResourceName"] for spec in shown.values()}
    for template in by_kind(manifests, "ResourceClaimTemplate").values():
        assert request_of(template)["deviceClassName"] in {*chart_classes, *applied}
