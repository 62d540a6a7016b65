"""Name and value rules shared by every kind: RFC 1123 labels and subdomains, driver
and pool names, attribute/capacity names, Kubernetes qualified names (label, taint and
condition keys) and label values.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

from api import limits
from api.validation._common import Errors, Path, _error, _required

_DNS1123_LABEL_RE: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN_RE: Final = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_C_IDENTIFIER_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Kubernetes "qualified name" (label keys, taint keys): [prefix/]name.
_QUALIFIED_NAME_PART_RE: Final = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS1123_LABEL_RULE: Final = (
    "a lowercase RFC 1123 label: at most 63 characters, lowercase alphanumerics "
    "or '-', starting and ending with an alphanumeric"
)
_DNS1123_SUBDOMAIN_RULE: Final = (
    "a lowercase RFC 1123 subdomain: at most 253 characters, dot-separated labels of "
    "lowercase alphanumerics or '-', each starting and ending with an alphanumeric"
)


def is_dns1123_label(value: str) -> bool:
    """RFC 1123 label: ``[a-z0-9]([-a-z0-9]*[a-z0-9])?``, at most 63 characters."""
    return len(value) <= limits.DNS1123_LABEL_MAX_LENGTH and bool(
        _DNS1123_LABEL_RE.fullmatch(value)
    )


def is_dns1123_subdomain(value: str) -> bool:
    """RFC 1123 subdomain: dot-separated labels, at most 253 characters."""
    return len(value) <= limits.DNS1123_SUBDOMAIN_MAX_LENGTH and bool(
        _DNS1123_SUBDOMAIN_RE.fullmatch(value)
    )


def _check_label(errors: Errors, path: Path, value: str | None, what: str) -> None:
    if not value:
        _required(errors, path, f"{what}, {_DNS1123_LABEL_RULE}")
    elif not is_dns1123_label(value):
        _error(errors, path, f'invalid {what} "{value}": must be {_DNS1123_LABEL_RULE}')


def _check_subdomain(errors: Errors, path: Path, value: str | None, what: str) -> None:
    if not value:
        _required(errors, path, f"{what}, {_DNS1123_SUBDOMAIN_RULE}")
    elif not is_dns1123_subdomain(value):
        _error(errors, path, f'invalid {what} "{value}": must be {_DNS1123_SUBDOMAIN_RULE}')


def _driver_name_problem(value: str) -> str | None:
    if len(value) > limits.DRIVER_NAME_MAX_LENGTH:
        return f"must be at most {limits.DRIVER_NAME_MAX_LENGTH} characters, not {len(value)}"
    # Same rule as CSI driver names: a DNS subdomain once lower-cased.
    if not _DNS1123_SUBDOMAIN_RE.fullmatch(value.lower()):
        return "must be a DNS subdomain such as gpu.example.com"
    return None


def _check_driver_name(errors: Errors, path: Path, value: str | None) -> None:
    if not value:
        _required(errors, path, "driver name, a DNS subdomain such as gpu.example.com")
        return
    problem = _driver_name_problem(value)
    if problem:
        _error(errors, path, f'invalid driver name "{value}": {problem}')


def _check_pool_name(errors: Errors, path: Path, value: str | None) -> None:
    if not value:
        _required(errors, path, "pool name, one or more DNS subdomains separated by '/'")
        return
    if len(value) > limits.POOL_NAME_MAX_LENGTH:
        _error(
            errors,
            path,
            f"pool name too long: {len(value)} characters, at most "
            f"{limits.POOL_NAME_MAX_LENGTH} allowed",
        )
    elif not all(is_dns1123_subdomain(part) for part in value.split("/")):
        _error(
            errors,
            path,
            f'invalid pool name "{value}": must be one or more DNS subdomains separated by "/"',
        )


def _check_qualified_attribute_name(
    errors: Errors, path: Path, name: str, *, fully_qualified: bool = False
) -> None:
    """Attribute/capacity names: ``<C identifier>`` or ``<domain>/<C identifier>``."""
    for problem in _qualified_attribute_name_problems(name, fully_qualified):
        _error(errors, path, f'invalid name "{name}": {problem}')


@lru_cache(maxsize=1024)
def _qualified_attribute_name_problems(name: str, fully_qualified: bool) -> tuple[str, ...]:
    # Memoised: every device of a slice repeats the same few names.
    parts = name.split("/")
    if len(parts) > 2:
        return ('at most one "/" allowed (<domain>/<identifier>)',)
    problems: list[str] = []
    if len(parts) == 2:
        domain, ident = parts
        if not domain:
            problems.append('the domain before "/" is empty')
        elif len(domain) > limits.DEVICE_MAX_DOMAIN_LENGTH:
            problems.append(
                f"domain must be at most {limits.DEVICE_MAX_DOMAIN_LENGTH} characters, "
                f"not {len(domain)}"
            )
        elif (problem := _driver_name_problem(domain)) is not None:
            problems.append(f"domain {problem}")
    else:
        ident = name
        if fully_qualified:
            problems.append(
                f'must include the domain, e.g. "{limits.STANDARD_DOMAIN}/{name or "pcieRoot"}"'
            )
    if not ident:
        problems.append("the identifier is empty")
    elif len(ident) > limits.DEVICE_MAX_ID_LENGTH:
        problems.append(
            f"identifier must be at most {limits.DEVICE_MAX_ID_LENGTH} characters, not {len(ident)}"
        )
    elif not _C_IDENTIFIER_RE.fullmatch(ident):
        problems.append(
            "identifier must be a C identifier (letters, digits and '_', not starting with a digit)"
        )
    return tuple(problems)


def _k8s_qualified_name_problem(value: str) -> str | None:
    """Kubernetes label-key rule: ``[DNS subdomain/]name``, name at most 63 characters."""
    prefix, slash, name = value.rpartition("/")
    if slash and not is_dns1123_subdomain(prefix):
        return "the prefix before '/' must be a DNS subdomain"
    if not name or len(name) > limits.QUALIFIED_NAME_MAX_LENGTH:
        return f"the name part must be 1 to {limits.QUALIFIED_NAME_MAX_LENGTH} characters"
    if not _QUALIFIED_NAME_PART_RE.fullmatch(name):
        return (
            "the name part must consist of alphanumerics, '-', '_' or '.', "
            "starting and ending with an alphanumeric"
        )
    return None


def _check_k8s_qualified_name(errors: Errors, path: Path, value: str | None, what: str) -> None:
    if not value:
        _required(errors, path, what)
    elif (problem := _k8s_qualified_name_problem(value)) is not None:
        _error(errors, path, f'invalid {what} "{value}": {problem}')


def _check_label_value(errors: Errors, path: Path, value: str | None) -> None:
    if not value:
        return
    if len(value) > limits.LABEL_VALUE_MAX_LENGTH or not _QUALIFIED_NAME_PART_RE.fullmatch(value):
        _error(
            errors,
            path,
            f'invalid value "{value}": must be at most {limits.LABEL_VALUE_MAX_LENGTH} '
            "alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric",
        )
