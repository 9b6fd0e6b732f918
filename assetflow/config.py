"""Asset configuration: a pydantic model parameter, filled from ``--config FILE`` (TOML or JSON, one
table per asset). Its canonical JSON hash is part of the asset's version, so changing a value makes that
asset (and its downstream) stale with ``config_changed``."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import xxhash

from .errors import ConfigError
from .graph import AssetGraph

if TYPE_CHECKING:
    from pydantic import BaseModel

ConfigSource = str | Path | Mapping[str, Mapping[str, Any]] | None


def read_config(source: ConfigSource) -> dict[str, dict[str, Any]]:
    """Raw per-asset tables from a TOML/JSON file path or a mapping."""
    if source is None:
        return {}
    if isinstance(source, Mapping):
        return {str(k): dict(v) for k, v in source.items()}
    path = Path(source)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {exc}") from None
    if not isinstance(data, dict) or any(not isinstance(v, dict) for v in data.values()):
        raise ConfigError(f"config file {path}: expected one table per asset name")
    return data


def bind_config(graph: AssetGraph, raw: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, BaseModel], dict[str, str]]:
    """Validate each configurable asset's table into its model; returns instances and their hashes."""
    unknown = sorted(set(raw) - {a.name for a in graph.assets() if a.signature and a.signature.config})
    if unknown:
        raise ConfigError(f"config has a table for '{unknown[0]}', which is not an asset with a config parameter")
    instances: dict[str, BaseModel] = {}
    hashes: dict[str, str] = {}
    for asset in graph.assets():
        if not asset.signature or not asset.signature.config:
            continue
        from pydantic import ValidationError  # only projects with config models need pydantic

        _, model = asset.signature.config
        table = raw.get(asset.name, {})
        known = set(model.model_fields) | {f.alias for f in model.model_fields.values() if f.alias}
        unknown_keys = sorted(set(table) - known)
        if unknown_keys:  # a misspelled key would otherwise silently fall back to the default
            raise ConfigError(f"invalid config for asset '{asset.name}': unknown field '{unknown_keys[0]}'")
        try:
            instance = model.model_validate(table)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or model.__name__
            raise ConfigError(f"invalid config for asset '{asset.name}': {where}: {first['msg']}") from None
        instances[asset.name] = instance
        canonical = json.dumps(instance.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        hashes[asset.name] = xxhash.xxh3_128_hexdigest(canonical.encode())
    return instances, hashes
