"""``dra-driver controller`` settings: flags, environment twins, defaults, errors naming flags."""

from __future__ import annotations

import pytest

from api.errors import InvalidInputError
from controller.settings import parse_settings


def test_defaults() -> None:
    settings = parse_settings([], environ={})
    assert settings.policy == "binpack"
    assert settings.gate == "gpu.dra-driver.io/placement"
    assert settings.policy_annotation == "gpu.dra-driver.io/policy"
    assert settings.leader_elect is True
    assert (settings.lease_duration_seconds, settings.renew_deadline_seconds) == (15, 10)
    assert settings.health_address is None and settings.metrics_address is None


def test_a_flag_wins_over_its_twin_and_the_twin_over_the_default() -> None:
    environ = {
        "DRA_DRIVER_POLICY": "spread",
        "POD_NAMESPACE": "gpu-system",
        "POD_NAME": "controller-0",
        "DRA_DRIVER_LEADER_ELECT": "false",
    }
    settings = parse_settings(["--policy", "most-capable"], environ=environ)
    assert settings.policy == "most-capable"
    assert settings.namespace == "gpu-system"
    assert settings.identity == "controller-0"
    assert settings.leader_elect is False
    assert parse_settings(["--driver-name", "gpu.example.com"], environ={}).gate == (
        "gpu.example.com/placement"
    )


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["--policy", "fastest"], {}, "--policy: unknown policy 'fastest'"),
        ([], {"DRA_DRIVER_POLICY": "x"}, "--policy (from env DRA_DRIVER_POLICY)"),
        (["--config-map", "nameonly"], {}, "use NAMESPACE/NAME"),
        (["--metrics-address", "8080"], {}, "has no port"),
        (["--renew-deadline-seconds", "20"], {}, "below lease_duration_seconds"),
        (["--driver-name", "Not_A_Domain"], {}, "--driver-name: invalid driver name"),
        (["--queue-size", "0"], {}, "--queue-size"),
    ],
)
def test_errors_name_the_flag_and_the_fix(
    argv: list[str], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_settings(argv, environ=environ)
    assert message in str(info.value)
    assert str(info.value).startswith("controller settings: ")
