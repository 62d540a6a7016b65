"""Where device-plugin configs come from: files, directories, ConfigMaps; and node labels.

- A file holds one config (named after the file, less ``.yaml``/``.yml``/``.json``), or
  one or more ConfigMap manifests whose ``data`` holds one config per key (the device
  plugin's Helm chart builds such a ConfigMap from ``config.map``; the key is the name a
  node selects with the label ``nvidia.com/device-plugin.config``).
- A directory contributes every file in it, whatever its name: a mounted ConfigMap is a
  directory whose file names are the keys, without a suffix. Hidden entries (the
  ``..data`` links of a mounted ConfigMap) are skipped.
- ``-`` is standard input.

YAML is read with the bounded loader of :mod:`dra_driver.manifest_read`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

from api.errors import FieldError, InvalidInputError
from dra_driver.manifest_read import Document, read_documents, split_documents
from dra_driver.migration.config import DevicePluginConfig, decode_config

__all__ = [
    "CONFIG_LABEL",
    "MIG_CONFIG_LABEL",
    "parse_labels",
    "read_configs",
    "select_configs",
]

#: The node label that selects a named config of the device plugin's ConfigMap.
CONFIG_LABEL: Final = "nvidia.com/device-plugin.config"
#: The node label the MIG manager reads (``all-1g.10gb``, ``all-disabled``, ...).
MIG_CONFIG_LABEL: Final = "nvidia.com/mig.config"
_SUFFIXES: Final = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class _Raw:
    name: str
    source: str
    data: Any


def _stem(source: str) -> str:
    name = Path(source).name
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _from_documents(documents: Sequence[Document], file_source: str) -> list[_Raw]:
    found: list[_Raw] = []
    for document in documents:
        data = document.data
        kind, api_version = data.get("kind"), data.get("apiVersion")
        if kind is None and api_version is None:
            if len(documents) > 1:
                raise InvalidInputError(
                    "a device-plugin config file holds one config; put several in a "
                    "ConfigMap (one key each) or in several files",
                    source=document.source,
                )
            found.append(_Raw(_stem(file_source), document.source, data))
            continue
        if kind != "ConfigMap" or api_version != "v1":
            raise InvalidInputError(
                f"{kind or 'an object'} ({api_version}) is neither a device-plugin config "
                "(version: v1, flags, sharing, ...) nor a v1 ConfigMap holding such configs",
                source=document.source,
            )
        name = (data.get("metadata") or {}).get("name", "")
        if data.get("binaryData"):
            raise InvalidInputError(
                source=document.source,
                obj=f"configmap {name}",
                errors=[FieldError("binaryData", "configs must be text under data")],
            )
        configs = data.get("data") or {}
        if not isinstance(configs, dict) or not configs:
            raise InvalidInputError(
                source=document.source,
                obj=f"configmap {name}",
                errors=[FieldError("data", "must hold at least one named config")],
            )
        for key, text in configs.items():
            where = f"{document.source} configmap {name} data.{key}"
            if not isinstance(text, str):
                raise InvalidInputError("must be the config's YAML text (a string)", source=where)
            inner = split_documents(text, where)
            if len(inner) != 1:
                raise InvalidInputError(
                    f"holds {len(inner)} documents; a config is one", source=where
                )
            found.append(_Raw(str(key), where, inner[0].data))
    return found


def read_configs(paths: Sequence[str], stdin: TextIO) -> list[DevicePluginConfig]:
    """Every named config of ``paths``, checked; names must be unique across them."""
    raws: list[_Raw] = []
    for path in paths:
        target = Path(path)
        if path != "-" and target.is_dir():
            files = sorted(
                p for p in target.iterdir() if p.is_file() and not p.name.startswith(".")
            )
            if not files:
                raise InvalidInputError("no config files in this directory", source=path)
        else:
            files = [target]
        for file in files:
            source = "<stdin>" if str(file) == "-" else str(file)
            raws.extend(_from_documents(read_documents([str(file)], stdin), source))
    if not raws:
        raise InvalidInputError("no device-plugin config in the input", source=", ".join(paths))
    seen: dict[str, str] = {}
    configs: list[DevicePluginConfig] = []
    for raw in raws:
        if raw.name in seen:
            raise InvalidInputError(
                f'config name "{raw.name}" given twice (first in {seen[raw.name]}): a node '
                "selects a config by name, so names must be unique",
                source=raw.source,
            )
        seen[raw.name] = raw.source
        configs.append(decode_config(raw.data, name=raw.name, source=raw.source))
    return configs


def parse_labels(pairs: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` pairs (``--node-label``); raise InvalidInputError for a malformed one."""
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInputError(
                f'"{pair}" is not KEY=VALUE, e.g. {CONFIG_LABEL}=time-sliced',
                obj="--node-label",
            )
        labels[key] = value
    return labels


def select_configs(
    configs: Sequence[DevicePluginConfig], labels: Mapping[str, str]
) -> list[DevicePluginConfig]:
    """The configs to migrate: the one the node label names, else all of them."""
    wanted = labels.get(CONFIG_LABEL)
    if wanted is None:
        return list(configs)
    chosen = [c for c in configs if c.name == wanted]
    if not chosen:
        names = ", ".join(c.name for c in configs)
        raise InvalidInputError(
            f"{CONFIG_LABEL}={wanted}: no config of that name in the input (it has {names}); "
            "give the ConfigMap or the file that holds it",
            obj="--node-label",
        )
    return chosen
