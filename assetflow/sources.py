"""Observing source assets: what version of each external file exists right now.

Observation is cheap by default — an etag or checksum the filesystem already knows, else size and
modification time — and exact on request (``version="content"`` hashes the bytes, so touching a file
without changing it is not a change). Absent partitions observe as ``None``: downstream waits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import pyarrow as pa
import xxhash

from .arrays import strings
from .definitions import SourceDef
from .errors import DefinitionError
from .mappings import keys_of

if TYPE_CHECKING:
    import fsspec


def _version_from_info(info: dict) -> str:
    for field in ("ETag", "etag", "checksum", "md5", "crc32c"):
        if info.get(field):
            return field.lower() + ":" + str(info[field]).strip('"')
    mtime = info.get("mtime") or info.get("LastModified") or info.get("last_modified") or info.get("created")
    if hasattr(mtime, "timestamp"):
        mtime = mtime.timestamp()
    return f"size:{info.get('size')}:mtime:{mtime}"


def observe_path(fs: fsspec.AbstractFileSystem, path: str, by_content: bool) -> str | None:
    """The version of one file, or None when it is absent."""
    try:
        if by_content:
            hasher = xxhash.xxh3_128()
            with fs.open(path, "rb") as handle:
                while chunk := handle.read(1 << 22):
                    hasher.update(chunk)
            return "xxh3:" + hasher.hexdigest()
        info = fs.info(path)
    except FileNotFoundError:
        return None
    if info.get("type") == "directory":
        return None
    return _version_from_info(info)


def observe_source(source: SourceDef, now: datetime) -> list[tuple[str, str | None]]:
    """(partition, version) for every partition of ``source`` at ``now``."""
    keys = keys_of(source.partitions, now)
    if source.observe is not None:
        try:
            return [(k, source.observe(k or None)) for k in keys]
        except Exception as exc:
            raise DefinitionError(f"source '{source.name}': observe function failed: {exc}") from None
    assert source.path is not None
    import fsspec  # only projects with path sources need it

    fs, _ = fsspec.core.url_to_fs(source.path.split("{")[0] or ".", **dict(source.storage_options))
    return [(k, observe_path(fs, fs._strip_protocol(source.path_for(k or None)), source.version == "content")) for k in keys]


def observe_sources(sources: Sequence[SourceDef], now: datetime) -> pa.Table:
    """Observations of every source as a (source, partition, version) table."""
    names: list[str] = []
    partitions: list[str] = []
    versions: list[str | None] = []
    for source in sources:
        for key, version in observe_source(source, now):
            names.append(source.name)
            partitions.append(key)
            versions.append(version)
    return pa.table({"source": strings(names), "partition": strings(partitions), "version": strings(versions)})
