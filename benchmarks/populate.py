"""Populating a lineage store directly, as if every (asset, partition) of a project had been built.

Building 365,000 materializations for real would take the benchmark longer than it measures, so the
rows are bulk-inserted (Arrow → DuckDB) into the tables ``runs``, ``materializations``, ``inputs`` and
``heads`` of ``assetflow/lineage_store.py``'s schema version 1 (its own DDL, ``_SCHEMA_V1``). The store is then
opened once with assetflow's ``LineageStore``, which migrates it to the current schema — so tables
assetflow *derives* from these (e.g. ``head_inputs`` since schema 2) are built by assetflow's own
migration code. The rows are what a real run would have recorded:

* ``code_version`` is exactly what assetflow computes (``assetflow.api.code_versions``), config hash
  NULL (no config parameters);
* every partition has its own data version; each head's ``inputs`` rows carry the upstream's current
  data version, so heads and inputs agree;
* values are ``None``-like: ``path`` / ``format`` NULL (the contract: "None stores nothing"), so no
  value files need to exist.

The caller verifies that ``af.plan(stale=True)`` finds 0 steps before anything is timed.

Staleness (:func:`make_stale`) is introduced the way a code edit would: for a random set of partition
dates, the heads of every *first-layer* asset get another ``code_version``; those partitions are
``code_changed`` and everything downstream of them ``upstream_stale`` (identity edges), so exactly
``dates / partitions`` of all asset-partitions are stale.

History (``history_runs``): earlier runs, each re-materializing a random ~1 % of all (asset, partition)
pairs with other data versions, recorded before the current heads (smaller ``mat_id`` s); heads are
unchanged, so the plan must be the same and only the history tables grow.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import random
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import xxhash

from benchmarks.projects import Shape

EDITED_CODE_VERSION = "benchmark-edited-code-version"
"""The code version written into the heads made stale: any value differing from the current one."""


@dataclass(frozen=True)
class Populated:
    """What was written."""

    store: Path
    heads: int
    inputs: int
    materializations: int
    runs: int


def load_defs(project: Path, module_name: str) -> object:
    """Import ``project`` (a generated ``project.py``) and return its ``defs``."""
    spec = importlib.util.spec_from_file_location(module_name, project)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module.defs


def current_code_versions(project: Path, module_name: str) -> dict[str, str]:
    """The code version assetflow computes for every asset of ``project``."""
    from assetflow.api import code_versions
    from assetflow.graph import AssetGraph

    return code_versions(AssetGraph(load_defs(project, module_name)))


def _versions(gids: np.ndarray, salt: str) -> pa.Array:
    """Distinct 32-hex data versions for global ids ``gids`` (deterministic per ``salt``)."""
    prefix = salt.encode() + b":"
    return pa.array([xxhash.xxh3_128_hexdigest(prefix + str(g).encode()) for g in gids.tolist()], pa.string())


def _take(values: list[str] | pa.Array, index: np.ndarray) -> pa.Array:
    array = values if isinstance(values, pa.Array) else pa.array(values, pa.string())
    return array.take(pa.array(index, pa.int64()))


def _edge_arrays(shape: Shape) -> tuple[np.ndarray, np.ndarray]:
    index = {name: i for i, name in enumerate(shape.names())}
    pairs = shape.edges()
    down = np.array([index[d] for d, _ in pairs], np.int64)
    up = np.array([index[u] for _, u in pairs], np.int64)
    return down, up


def _materializations(mat_ids: np.ndarray, run_ids: pa.Array, assets: pa.Array, partitions: pa.Array,
                      code: pa.Array, versions: pa.Array, at: dt.datetime) -> pa.Table:
    n = len(mat_ids)
    null_str = pa.nulls(n, pa.string())
    return pa.table({
        "mat_id": pa.array(mat_ids, pa.int64()), "run_id": run_ids, "asset": assets, "partition": partitions,
        "attempt": pa.array(np.ones(n, np.int32)), "outcome": pa.array(["materialized"] * n, pa.string()),
        "started_at": pa.array([at] * n, pa.timestamp("us", tz="UTC")),
        "duration_s": pa.array(np.full(n, 1e-4)), "error": null_str, "traceback": null_str,
        "logs": pa.array([""] * n, pa.string()), "code_version": code, "config_hash": null_str,
        "data_version": versions, "path": null_str, "format": null_str, "size": pa.array(np.zeros(n, np.int64)),
        "metadata": null_str,
    })


def _inputs(mat_ids: np.ndarray, down: np.ndarray, up: np.ndarray, n_parts: int, names: list[str],
            keys: list[str], salt: str, rows: np.ndarray) -> pa.Table:
    """Input rows of the materializations ``mat_ids`` of global ids ``rows`` (gid = asset * n_parts + partition)."""
    asset_of, part_of = rows // n_parts, rows % n_parts
    order = np.argsort(down, kind="stable")
    down, up = down[order], up[order]
    lo = np.searchsorted(down, asset_of, "left")
    hi = np.searchsorted(down, asset_of, "right")
    counts = hi - lo
    owner = np.repeat(np.arange(len(rows)), counts)
    edge = np.concatenate([np.arange(a, b) for a, b in zip(lo.tolist(), hi.tolist(), strict=True)]) if len(rows) else np.zeros(0, np.int64)
    up_gid = up[edge] * n_parts + part_of[owner]
    return pa.table({
        "mat_id": pa.array(mat_ids[owner], pa.int64()), "up_asset": _take(names, up[edge]),
        "up_partition": _take(keys, part_of[owner]), "data_version": _versions(up_gid, salt),
    })


def _run_row(run_id: str, at: dt.datetime, materialized: int) -> dict[str, object]:
    return {"run_id": run_id, "kind": "manual", "status": "success", "tags": json.dumps({"kind": "manual"}),
            "selection": "[]", "started_at": at, "finished_at": at, "pid": 0, "host": "benchmark",
            "materialized": materialized, "skipped": 0, "failed": 0, "upstream_failed": 0, "error": None}


@contextmanager
def _schema_v1_connection(store: Path) -> Iterator[Any]:
    """A connection to a new store in schema version 1 (``assetflow.lineage_store._SCHEMA_V1``, marked as
    version 1), or — if this assetflow has no such constant — in its current schema."""
    import duckdb

    lineage = importlib.import_module("assetflow.lineage_store")
    schema_v1 = getattr(lineage, "_SCHEMA_V1", None)
    if schema_v1 is None:
        with lineage.LineageStore(store).connect(write=True) as con:
            yield con
        return
    # Created as assetflow creates a store file (its block size), so figures read a file like users' own.
    con = duckdb.connect(str(store), config=dict(getattr(lineage, "NEW_STORE_CONFIG", {})))
    try:
        con.execute(schema_v1)
        con.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        yield con
    finally:
        con.close()


def populate(project: Path, store: Path, shape: Shape, *, history_runs: int = 0, history_fraction: float = 0.01,
             seed: int = 0) -> Populated:
    """Write a fully up-to-date store for ``shape`` (plus ``history_runs`` earlier runs) at ``store``."""
    from assetflow.lineage_store import LineageStore

    assert shape.partitions, "populate() is for partitioned projects"
    codes = current_code_versions(project, f"bench_project_{shape.name}")
    names, keys = shape.names(), shape.partition_keys()
    n_assets, n_parts = len(names), len(keys)
    total = n_assets * n_parts
    gids = np.arange(total, dtype=np.int64)
    asset_of, part_of = gids // n_parts, gids % n_parts
    assets_col, parts_col = _take(names, asset_of), _take(keys, part_of)
    code_col = _take([codes[n] for n in names], asset_of)
    down, up = _edge_arrays(shape)
    rng = np.random.default_rng(seed)
    base = dt.datetime(2024, 12, 31, tzinfo=dt.UTC)

    if store.exists():
        store.unlink()
    for suffix in (".wal", ".lock"):
        Path(str(store) + suffix).unlink(missing_ok=True)
    store.parent.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, object]] = []
    mats = inputs = 0
    with _schema_v1_connection(store) as con:
        next_id = 1
        for r in range(history_runs):
            chosen = np.sort(rng.choice(total, size=max(1, int(total * history_fraction)), replace=False))
            run_id = f"history-{r:04d}"
            at = base - dt.timedelta(days=history_runs - r)
            ids = np.arange(next_id, next_id + len(chosen), dtype=np.int64)
            next_id += len(chosen)
            salt = f"history-{r}"
            take = pa.array(chosen)
            con.register("m", _materializations(ids, pa.array([run_id] * len(ids)), assets_col.take(take),
                                                parts_col.take(take), code_col.take(take), _versions(chosen, salt), at))
            history_inputs = _inputs(ids, down, up, n_parts, names, keys, salt, chosen)
            con.register("i", history_inputs)
            con.execute("INSERT INTO materializations BY NAME SELECT * FROM m")
            con.execute("INSERT INTO inputs BY NAME SELECT * FROM i")
            mats += len(ids)
            inputs += history_inputs.num_rows
            runs.append(_run_row(run_id, at, len(ids)))
        # The current state: one run that built everything.
        run_id = "populate-current"
        ids = np.arange(next_id, next_id + total, dtype=np.int64)
        versions = _versions(gids, "current")
        run_col = pa.array([run_id] * total, pa.string())
        con.register("m", _materializations(ids, run_col, assets_col, parts_col, code_col, versions, base))
        current_inputs = _inputs(ids, down, up, n_parts, names, keys, "current", gids)
        con.register("i", current_inputs)
        con.register("h", pa.table({
            "asset": assets_col, "partition": parts_col, "mat_id": pa.array(ids), "code_version": code_col,
            "config_hash": pa.nulls(total, pa.string()), "data_version": versions, "path": pa.nulls(total, pa.string()),
            "format": pa.nulls(total, pa.string()), "materialized_at": pa.array([base] * total, pa.timestamp("us", tz="UTC")),
            "run_id": run_col, "failed": pa.array(np.zeros(total, bool)),
        }))
        runs.append(_run_row(run_id, base, total))
        con.register("r", pa.Table.from_pylist(runs))
        con.execute("BEGIN")
        con.execute("INSERT INTO materializations BY NAME SELECT * FROM m")
        con.execute("INSERT INTO inputs BY NAME SELECT * FROM i")
        con.execute("INSERT INTO heads BY NAME SELECT * FROM h")
        con.execute("INSERT INTO runs BY NAME SELECT * FROM r")
        con.execute("COMMIT")
        mats += total
        inputs += current_inputs.num_rows
        con.execute("CHECKPOINT")
    # assetflow migrates the version-1 store to its current schema, deriving whatever it derives
    # (e.g. ``head_inputs``) from the rows above with its own code.
    with LineageStore(store).connect(write=True):
        pass
    return Populated(store, total, inputs, mats, len(runs))


def stale_dates(shape: Shape, fraction: float, seed: int = 1) -> list[str]:
    """``ceil(fraction × partitions)`` random partition keys (none for fraction 0)."""
    if fraction <= 0:
        return []
    keys = shape.partition_keys()
    count = min(len(keys), max(1, int(np.ceil(fraction * len(keys)))))
    return sorted(random.Random(seed).sample(keys, count))


def make_stale(source: Path, target: Path, shape: Shape, fraction: float) -> int:
    """Copy ``source`` to ``target`` and edit first-layer heads so ``fraction`` of partitions are stale.
    Returns the number of asset-partitions expected to be stale."""
    import duckdb

    shutil.copyfile(source, target)
    dates = stale_dates(shape, fraction)
    if dates:
        con = duckdb.connect(str(target))
        try:
            first = shape.first_layer()
            con.execute(
                f"UPDATE heads SET code_version = ? WHERE asset IN ({','.join('?' * len(first))}) "
                f"AND partition IN ({','.join('?' * len(dates))})", [EDITED_CODE_VERSION, *first, *dates])
            con.execute("CHECKPOINT")
        finally:
            con.close()
    return len(dates) * shape.assets
