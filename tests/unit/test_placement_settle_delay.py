"""``--settle-delay``: default, environment twin, bounds, and how it reaches the Placer."""

from __future__ import annotations

import pytest

from api.errors import InvalidInputError
from controller.app import Controller
from controller.settings import DEFAULT_SETTLE_DELAY, build_parser, parse_settings
from tests.fakes.cluster import FakeCluster


def test_the_default_is_two_seconds_and_the_help_says_what_it_costs() -> None:
    assert parse_settings([], environ={}).settle_delay == DEFAULT_SETTLE_DELAY == 2.0
    text = " ".join(build_parser().format_help().split())
    assert "--settle-delay SECONDS" in text
    assert "DRA_DRIVER_SETTLE_DELAY" in text
    assert "starts this much later" in text


def test_the_flag_wins_over_its_twin_and_zero_is_allowed() -> None:
    environ = {"DRA_DRIVER_SETTLE_DELAY": "5"}
    assert parse_settings([], environ=environ).settle_delay == 5.0
    assert parse_settings(["--settle-delay", "0.5"], environ=environ).settle_delay == 0.5
    assert parse_settings(["--settle-delay", "0"], environ={}).settle_delay == 0.0


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["--settle-delay", "-1"], {}, "--settle-delay"),
        (["--settle-delay", "3600"], {}, "--settle-delay"),
        (
            [],
            {"DRA_DRIVER_SETTLE_DELAY": "soon"},
            "--settle-delay (from env DRA_DRIVER_SETTLE_DELAY)",
        ),
    ],
)
def test_a_bad_value_names_the_flag(argv: list[str], environ: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_settings(argv, environ=environ)
    assert message in str(info.value)


def test_the_controller_hands_the_delay_to_its_placer() -> None:
    settings = parse_settings(["--settle-delay", "3", "--no-leader-elect"], environ={})
    assert Controller(settings, FakeCluster()).placer.settle_s == 3.0
