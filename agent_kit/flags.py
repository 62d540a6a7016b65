"""Flags and their environment twins: how each agent builds its one Settings object.

Every flag of ``dra-driver kubelet-plugin`` and ``dra-driver controller`` has an
environment twin and a documented default. The rule that turns them into a
Settings object is the same for both agents and lives here:

- a flag that was given wins;
- else the first of its environment twins that is set (an empty value counts:
  it turns an address off);
- else the Settings field's default.

Validation is the Settings model's (pydantic); each problem comes back as an
:class:`~api.errors.InvalidInputError` whose field errors name the flag and,
when the bad value came from the environment, the variable:
``--log-level (from env DRA_DRIVER_LOG_LEVEL): Input should be ...``.

What differs between the agents is a parameter of :class:`FlagSet`: the flags,
the Settings class, the object errors name, the program name and description,
an optional check between settings, and where an error about no single field
points. Pure: argparse and mappings only, no I/O (the environment is read only
when the caller passes none).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from api import limits
from api.errors import FieldError, InvalidInputError
from api.validation import is_dns1123_subdomain
from dra_driver.slices import DEFAULT_DRIVER_NAME

__all__ = [
    "ENV_PREFIX",
    "CrossCheck",
    "Flag",
    "FlagSet",
    "check_driver_name",
    "define_flag",
    "env_twin",
    "optional_absolute_path",
    "split_host_port",
]

#: Prefix of the environment twins the driver names itself (DESIGN.md: every flag
#: has one). Upstream names such as ``NODE_NAME`` or ``KUBECONFIG`` are given per flag.
ENV_PREFIX: Final = "DRA_DRIVER_"

SettingsT = TypeVar("SettingsT", bound=BaseModel)

#: A rule between settings, run after each field validated: ``(settings, sources)``
#: to the problems found, each naming the flag it blames. ``sources`` maps a field
#: to where its value came from (``--flag`` or ``--flag (from env NAME)``); a field
#: left at its default is absent.
CrossCheck = Callable[[SettingsT, Mapping[str, str]], Sequence[FieldError]]


@dataclass(frozen=True, slots=True)
class Flag:
    """One command-line flag, the Settings field it sets, its environment twins."""

    field: str
    flag: str
    env: tuple[str, ...]
    """Twins in order of precedence: the first one set wins."""
    default: str
    """The default as the help text shows it."""
    help: str
    boolean: bool = False
    """``--x`` / ``--no-x`` instead of a value."""
    metavar: str | None = None


def env_twin(flag: str, prefix: str = ENV_PREFIX) -> str:
    """The driver's own twin of ``flag``: ``--log-level`` to ``DRA_DRIVER_LOG_LEVEL``."""
    return prefix + flag.removeprefix("--").upper().replace("-", "_")


def define_flag(
    field: str,
    default: str,
    help_text: str,
    *,
    env: tuple[str, ...] | None = None,
    boolean: bool = False,
    metavar: str | None = None,
    twin: Callable[[str], str] = env_twin,
) -> Flag:
    """The flag of Settings field ``field``: ``--field-name``, twin ``twin(flag)``
    unless ``env`` names the twins. ``default`` is what the help text shows."""
    flag = "--" + field.replace("_", "-")
    return Flag(
        field=field,
        flag=flag,
        env=(twin(flag),) if env is None else env,
        default=default,
        help=help_text,
        boolean=boolean,
        metavar=metavar,
    )


def _source(flag: Flag, env_name: str | None) -> str:
    return f"{flag.flag} (from env {env_name})" if env_name else flag.flag


@dataclass(frozen=True)
class FlagSet(Generic[SettingsT]):
    """The flags of one agent and how they become its Settings.

    ``flags`` should cover every field of ``settings`` (a field without a flag
    can only keep its default). ``obj`` is the object the errors name
    (``controller settings``). ``model_error_source`` is where a problem of the
    whole model (a ``model_validator``, which names no field) points, e.g. the
    flag to change; empty, the error names no flag.
    """

    flags: tuple[Flag, ...]
    settings: type[SettingsT]
    obj: str
    prog: str
    description: str
    cross_check: CrossCheck[SettingsT] | None = None
    model_error_source: str = ""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add every flag to ``parser``, its help ending ``(env TWINS; default D)``.

        Defaults stay None, so :meth:`settings_from_args` can tell a flag that
        was given from one that was not and fall back to the twins.
        """
        for flag in self.flags:
            help_text = f"{flag.help} (env {', '.join(flag.env)}; default {flag.default})"
            if flag.boolean:
                parser.add_argument(
                    flag.flag,
                    dest=flag.field,
                    action=argparse.BooleanOptionalAction,
                    help=help_text,
                )
            else:
                parser.add_argument(
                    flag.flag, dest=flag.field, default=None, metavar=flag.metavar, help=help_text
                )

    def settings_from_args(
        self,
        args: argparse.Namespace | Mapping[str, Any],
        environ: Mapping[str, str] | None = None,
    ) -> SettingsT:
        """The Settings of parsed flags, completed from ``environ`` (default os.environ).

        A flag that was given (not None) wins; else the first of its twins that
        is set, even to an empty value; else the default. Raises
        InvalidInputError naming ``obj``: first the field problems (each naming
        its flag and the variable a bad value came from); only when there are
        none, the cross-check's problems.
        """
        values = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
        env = os.environ if environ is None else environ
        raw: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for flag in self.flags:
            given = values.get(flag.field)
            if given is not None:
                raw[flag.field] = given
                sources[flag.field] = _source(flag, None)
                continue
            for name in flag.env:
                if name in env:
                    raw[flag.field] = env[name]
                    sources[flag.field] = _source(flag, name)
                    break
        try:
            settings = self.settings.model_validate(raw)
        except ValidationError as err:
            by_field = {flag.field: flag for flag in self.flags}
            errors = []
            for problem in err.errors():
                field = str(problem["loc"][0]) if problem["loc"] else ""
                known = by_field.get(field)
                where = sources.get(field) or (
                    known.flag if known else (self.model_error_source or field)
                )
                message = str(problem["msg"]).removeprefix("Value error, ")
                errors.append(FieldError(where, message))
            raise InvalidInputError(obj=self.obj, errors=errors) from None
        if self.cross_check is not None:
            problems = list(self.cross_check(settings, sources))
            if problems:
                raise InvalidInputError(obj=self.obj, errors=problems)
        return settings

    def build_parser(self, prog: str | None = None) -> argparse.ArgumentParser:
        """A parser with just these flags (the subcommand's own), named ``prog``."""
        parser = argparse.ArgumentParser(
            prog=self.prog if prog is None else prog, description=self.description
        )
        self.add_arguments(parser)
        return parser

    def parse_settings(
        self, argv: list[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> SettingsT:
        """Parse ``argv`` (flags only, no subcommand) and ``environ``; see settings_from_args.

        An unknown flag exits through argparse (status 2) like any CLI error.
        """
        return self.settings_from_args(self.build_parser().parse_args(argv), environ)


def check_driver_name(value: str) -> str:
    """A ``--driver-name`` as both agents take it: the API server's rule for a driver name.
    Raises ValueError (the settings model's field error) naming the rule and an example."""
    if len(value) > limits.DRIVER_NAME_MAX_LENGTH or not is_dns1123_subdomain(value):
        raise ValueError(
            f"invalid driver name {value!r}: must be a lower-case DNS subdomain of at "
            f"most {limits.DRIVER_NAME_MAX_LENGTH} characters, such as {DEFAULT_DRIVER_NAME}"
        )
    return value


def optional_absolute_path(value: Any) -> Any:
    """A path setting's raw value, before validation: None for a missing or blank one
    (an empty twin turns the setting off), an absolute Path for text or a Path (relative
    ones taken from the working directory); anything else is left to the model to refuse."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str | Path):
        return Path(value).absolute()
    return value


def split_host_port(address: str, *, example_port: int = 8080) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or ``:port`` (every interface) to (host, port).

    The host is not resolved; a bracketed one must be an IPv6 address. Raises
    ValueError saying what form is expected, its examples using ``example_port``
    (the agent's usual port, so the fix reads naturally).
    """
    host, sep, port_text = address.rpartition(":")
    if not sep:
        raise ValueError(f"{address!r} has no port; use HOST:PORT, e.g. 127.0.0.1:{example_port}")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(
            f"{address!r}: port {port_text!r} is not a number; use HOST:PORT"
        ) from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{address!r}: port {port} is out of range 0-65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{address!r}: {host!r} is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError(f"{address!r}: write an IPv6 host in brackets, e.g. [::1]:{example_port}")
    return host, port
