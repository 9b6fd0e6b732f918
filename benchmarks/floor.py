"""The W1 floor: the least work any engine honouring assetflow's storage contract must do for W1.

Issue 5 asks for W1 ≥ 2,000 materializations/s "end to end, lineage included", and, where a target is
out of reach on this machine, for the measurement that proves it. This is that measurement: the same
materializations as W1, in the same folder layout (``run/data`` and ``run/lineage.duckdb`` of the W1
project, emptied before every run), with **no orchestration at all** — no graph, no planner, no
scheduler, no run records, no input edges, no code versions:

1. a plain Python loop over the (asset, partition) items in a topological order (layer by layer,
   computed before the timer), calling a no-op function that returns ``b"x"``;
2. per value: its ``xxh3_128`` content hash and an atomic write under the content-addressed path
   ``data/<asset>/<hash>.bin`` (``os.makedirs`` of the asset folder, a temp file in that folder,
   ``os.replace``). A path names its content, so a path already written in this run is not written
   again — assetflow skips it too (after a ``stat``); in partitioned W1 every partition of an asset
   returns the same bytes, so 200 files back 20,000 materializations in both;
3. one ``syncfs`` of the data folder (values durable before lineage points at them, the group commit
   assetflow does per lineage batch);
4. one fresh DuckDB file (with the 16 KiB blocks assetflow creates its stores with), one table
   ``(asset, partition, data_version)``, **one** batched insert of all rows from an Arrow table, commit,
   close.

Any engine must at least run the user's functions, hash and durably store their values atomically
and record which version each materialization produced; doing that with a bare loop and a single
write per store is as cheap as it gets in Python, so an engine's W1 time divided by this one
(``× N floor`` in the report) is its orchestration overhead, and a floor above the target's
0.1 s would prove the target physically out of reach here.

On a local disk most of the unpartitioned floor is DuckDB creating its instance and file (~25 ms of
instance alone, whatever the configuration) and the kernel creating 200 folders and 200 files. The
kernel's part depends on the filesystem's state: deleting the previous run's files just before made it
several times dearer, which is why the harness moves old folders aside instead (see
:mod:`benchmarks.trash`). So the floor is measured in the very folders and rounds of assetflow's W1
runs and is never quoted as a constant.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.projects import Shape

_LIBC = ctypes.CDLL(None, use_errno=True)


def items(shape: Shape) -> list[tuple[str, str | None]]:
    """Every (asset, partition) of ``shape`` in a topological order: layer by layer, each asset's
    partitions in a row (edges are identity mappings, so any partition order is valid)."""
    keys: list[str | None] = list(shape.partition_keys()) or [None]
    return [(asset, key) for asset in shape.names() for key in keys]


def noop() -> bytes:
    """The W1 asset body."""
    return b"x"


def _syncfs(folder: Path) -> None:
    """Flush the filesystem holding ``folder`` (Linux ``syncfs``; a global ``sync`` elsewhere) — the
    same call assetflow's value store makes before committing lineage."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        syncfs: Callable[[int], int] | None = getattr(_LIBC, "syncfs", None)
        if syncfs is None or syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def materialize(work: list[tuple[str, str | None]], data: Path, store: Path, fn: Callable[[], bytes] = noop
                ) -> dict[str, Any]:
    """Steps 1–4 of the module docstring (the timed part); returns what was written."""
    import duckdb
    import pyarrow as pa
    import xxhash

    assets: list[str] = []
    partitions: list[str | None] = []
    versions: list[str] = []
    written: set[str] = set()
    pid = os.getpid()
    for asset, partition in work:
        value = fn()
        version = xxhash.xxh3_128_hexdigest(value)
        folder = f"{data}/{asset}"
        final = f"{folder}/{version}.bin"
        if final not in written:
            os.makedirs(folder, exist_ok=True)
            temp = f"{folder}/.tmp-{pid}-{version}.bin"
            with open(temp, "wb") as handle:
                handle.write(value)
            os.replace(temp, final)
            written.add(final)
        assets.append(asset)
        partitions.append(partition)
        versions.append(version)
    _syncfs(data)
    rows = pa.table({"asset": pa.array(assets, pa.string()), "partition": pa.array(partitions, pa.string()),
                     "data_version": pa.array(versions, pa.string())})
    # The same file settings as assetflow's new stores (any engine may choose them): 16 KiB blocks.
    con = duckdb.connect(str(store), config={"default_block_size": "16384"})
    try:
        con.execute("BEGIN")
        con.execute("CREATE TABLE lineage (asset VARCHAR, partition VARCHAR, data_version VARCHAR)")
        con.register("batch", rows)
        con.execute("INSERT INTO lineage SELECT asset, partition, data_version FROM batch")
        con.execute("COMMIT")
    finally:
        con.close()
    return {"files": len(written)}


def count_rows(store: Path) -> int:
    """Rows in the floor's lineage table (verification, after the timer)."""
    import duckdb

    with duckdb.connect(str(store), read_only=True) as con:
        found = con.execute("SELECT count(*) FROM lineage").fetchone()
    return int(found[0]) if found else 0
