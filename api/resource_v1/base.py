"""The base of every model and the field types that parse themselves: quantities,
strict semantic versions (both memoised) and RFC 3339 timestamps kept as text.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Any, TypeAlias

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    GetCoreSchemaHandler,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError, core_schema

from api.quantity import Quantity
from api.semver import Semver


@lru_cache(maxsize=4096, typed=True)
def parse_quantity(text: str | int) -> Quantity:
    """:meth:`Quantity.parse`, memoised: slices repeat the same few capacity strings.

    ``typed=True`` keeps ``True`` from hitting the cache entry of ``1``.
    """
    return Quantity.parse(text)


@lru_cache(maxsize=1024)
def parse_version(text: str) -> Semver:
    """Strict :meth:`Semver.parse`, memoised: a node's devices share a few driver versions."""
    return Semver.parse(text)


def _validate_quantity(value: object) -> Quantity:
    if isinstance(value, Quantity):
        return value
    if isinstance(value, float) and math.isfinite(value):
        # The API server's decoder takes bare JSON numbers (``memory: 1.5``) too.
        value = repr(value)
    if isinstance(value, str | int) and not isinstance(value, bool):
        try:
            return parse_quantity(value)
        except ValueError as err:
            raise PydanticCustomError("quantity", "{reason}", {"reason": str(err)}) from None
    raise PydanticCustomError(
        "quantity_type",
        'must be a quantity: a string such as "80Gi" or a number, not {type}',
        {"type": type(value).__name__},
    )


class _QuantitySchema:
    """Pydantic glue: accept str/int/Quantity, serialise to the canonical string."""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            _validate_quantity,
            serialization=core_schema.plain_serializer_function_ser_schema(
                str, return_schema=core_schema.str_schema()
            ),
        )


#: A Quantity-typed model field: input ``"80Gi"``/``80``, output ``"80Gi"``.
QuantityField: TypeAlias = Annotated[Quantity, _QuantitySchema]


def _check_version(text: str) -> str:
    try:
        parse_version(text)
    except ValueError as err:
        raise PydanticCustomError("semver", "{reason}", {"reason": str(err)}) from None
    return text


#: A strict semantic version kept as its string (so it round-trips byte for byte).
_VersionString = Annotated[str, AfterValidator(_check_version)]


def _timestamp_text(value: object) -> object:
    # YAML loaders turn RFC 3339 timestamps into datetimes; the API speaks strings.
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return value


#: An RFC 3339 timestamp kept as text.
Timestamp = Annotated[str, BeforeValidator(_timestamp_text)]


class K8sModel(BaseModel):
    """Base of every model: camelCase JSON names, strict types, unknown fields kept."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="allow",
        strict=True,
    )
