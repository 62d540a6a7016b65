"""Flags and environment twins (agent_kit.flags), on a small Settings model of their own."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent_kit.flags import FlagSet, define_flag, env_twin, split_host_port
from api.errors import FieldError, InvalidInputError


class _Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "alpha"
    workers: int = Field(default=2, ge=1)
    low: int = 1
    high: int = 5
    verbose: bool = False

    @model_validator(mode="after")
    def _check_order(self) -> _Settings:
        if self.low >= self.high:
            raise ValueError("low must be below high")
        return self


_FLAGS = (
    define_flag("name", "alpha", "a name", env=("UPSTREAM_NAME", "DRA_DRIVER_NAME")),
    define_flag("workers", "2", "how many workers", metavar="N"),
    define_flag("low", "1", "lower bound", metavar="N"),
    define_flag("high", "5", "upper bound", metavar="N"),
    define_flag("verbose", "false", "say more", boolean=True),
)


def _no_reserved_name(settings: _Settings, sources: Mapping[str, str]) -> list[FieldError]:
    if settings.name != "reserved":
        return []
    return [FieldError(sources.get("name", "--name"), "'reserved' is taken; pick another name")]


def _flag_set(*, model_error_source: str = "", cross_check: bool = False) -> FlagSet[_Settings]:
    return FlagSet(
        flags=_FLAGS,
        settings=_Settings,
        obj="test settings",
        prog="dra-driver test",
        description="A command for the tests.",
        cross_check=_no_reserved_name if cross_check else None,
        model_error_source=model_error_source,
    )


def _errors(flag_set: FlagSet[_Settings], argv: list[str], environ: dict[str, str]) -> str:
    with pytest.raises(InvalidInputError) as info:
        flag_set.parse_settings(argv, environ)
    return str(info.value)


def test_a_flag_is_named_after_its_field_and_has_the_driver_twin() -> None:
    flag = define_flag("lease_duration_seconds", "15", "help", metavar="SECONDS")
    assert flag.flag == "--lease-duration-seconds"
    assert flag.env == ("DRA_DRIVER_LEASE_DURATION_SECONDS",)
    assert (flag.default, flag.help, flag.metavar, flag.boolean) == ("15", "help", "SECONDS", False)
    assert define_flag("node_name", "", "", env=("NODE_NAME",)).env == ("NODE_NAME",)
    assert env_twin("--log-level", prefix="OTHER_") == "OTHER_LOG_LEVEL"
    custom = define_flag("log_level", "", "", twin=lambda flag: flag.upper())
    assert custom.env == ("--LOG-LEVEL",)


def test_a_flag_wins_over_its_twins_and_the_first_twin_set_wins() -> None:
    flag_set = _flag_set()
    environ = {"DRA_DRIVER_NAME": "second", "UPSTREAM_NAME": "first", "DRA_DRIVER_WORKERS": "7"}
    settings = flag_set.parse_settings(["--workers", "3"], environ)
    assert (settings.name, settings.workers) == ("first", 3)
    assert flag_set.parse_settings([], {"DRA_DRIVER_NAME": "second"}).name == "second"
    assert flag_set.parse_settings([], {}) == _Settings()


def test_an_empty_twin_counts_as_set() -> None:
    # An empty value is passed on (settings use it to turn an address off), not skipped.
    settings = _flag_set().parse_settings([], {"UPSTREAM_NAME": "", "DRA_DRIVER_NAME": "x"})
    assert settings.name == ""


def test_boolean_flags_take_no_value_and_their_twin_takes_text() -> None:
    flag_set = _flag_set()
    assert flag_set.parse_settings(["--verbose"], {}).verbose is True
    assert (
        flag_set.parse_settings(["--no-verbose"], {"DRA_DRIVER_VERBOSE": "true"}).verbose is False
    )
    assert flag_set.parse_settings([], {"DRA_DRIVER_VERBOSE": "true"}).verbose is True


def test_settings_from_args_takes_a_mapping_and_ignores_absent_values() -> None:
    settings = _flag_set().settings_from_args({"workers": "4", "name": None}, {})
    assert (settings.name, settings.workers) == ("alpha", 4)


def test_errors_name_the_object_the_flag_and_the_variable_the_value_came_from() -> None:
    message = _errors(_flag_set(), ["--workers", "0"], {"DRA_DRIVER_LOW": "x"})
    assert message.startswith("test settings: ")
    assert "--low (from env DRA_DRIVER_LOW): Input should be a valid integer" in message
    assert "--workers: Input should be greater than or equal to 1" in message


def test_a_model_error_points_where_the_agent_says() -> None:
    pointed = _errors(_flag_set(model_error_source="--high"), ["--low", "9"], {})
    assert pointed == "test settings: --high: low must be below high"
    assert _errors(_flag_set(), ["--low", "9"], {}) == "test settings: low must be below high"


def test_the_cross_check_runs_on_valid_fields_and_names_its_flag() -> None:
    flag_set = _flag_set(cross_check=True)
    assert _errors(flag_set, [], {"UPSTREAM_NAME": "reserved"}) == (
        "test settings: --name (from env UPSTREAM_NAME): 'reserved' is taken; pick another name"
    )
    # A field error is reported alone: the cross-check needs valid settings to run.
    assert "taken" not in _errors(flag_set, ["--name", "reserved", "--workers", "0"], {})
    assert flag_set.parse_settings(["--name", "free"], {}).name == "free"


def test_the_help_shows_each_flag_with_its_twins_and_default(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "1000")
    parser = _flag_set().build_parser()
    assert parser.prog == "dra-driver test"
    assert _flag_set().build_parser("other").prog == "other"
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["--help"])
    assert exited.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "A command for the tests." in help_text
    assert "--name NAME a name (env UPSTREAM_NAME, DRA_DRIVER_NAME; default alpha)" in help_text
    assert "--workers N how many workers (env DRA_DRIVER_WORKERS; default 2)" in help_text
    assert "--verbose, --no-verbose say more (env DRA_DRIVER_VERBOSE; default false)" in help_text


def test_an_unknown_flag_exits_with_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        _flag_set().parse_settings(["--nope"], {})
    assert exited.value.code == 2
    assert "unrecognized arguments: --nope" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        (":0", ("", 0)),
        ("[::1]:65535", ("::1", 65535)),
        ("metrics.local:80", ("metrics.local", 80)),
    ],
)
def test_split_host_port_accepts_the_usual_forms(address: str, expected: tuple[str, int]) -> None:
    assert split_host_port(address) == expected


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("9400", "'9400' has no port; use HOST:PORT, e.g. 127.0.0.1:9400"),
        ("host:x", "'host:x': port 'x' is not a number; use HOST:PORT"),
        ("host:65536", "'host:65536': port 65536 is out of range 0-65535"),
        ("[zz]:1", "'[zz]:1': 'zz' is not an IPv6 address"),
        ("::1:9400", "'::1:9400': write an IPv6 host in brackets, e.g. [::1]:9400"),
    ],
)
def test_split_host_port_says_what_form_is_expected(address: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        split_host_port(address, example_port=9400)
    assert str(info.value) == message
