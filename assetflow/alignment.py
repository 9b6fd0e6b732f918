"""Aligning what the store recorded with the graph as it is now, set-at-a-time.

The planner computes in global ids (:mod:`layout`). The store's snapshot already arrives in them (it
joins its rows to the layout's :class:`~assetflow.lineage_store.Catalogue`; rows that no longer fit the
graph, such as a removed asset or a partition before a new ``start``, stay behind), so aligning is
integer work: heads are scattered to their ids, and consumed-input pairs are matched to the graph's
expected pairs by sorting int64 pair keys. Source observations, which the edge makes in Python, are
numbered here with one Arrow ``index_in`` per column.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .arrays import bools, fill_null, numbers, strings, to_numpy
from .layout import Layout, key_array
from .lineage_store import StoreSnapshot


def global_ids(layout: Layout, assets: pa.Array | pa.ChunkedArray, partitions: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Global id of each (asset, partition) row; -1 where the graph has no such partition."""
    n = len(assets)
    gid = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return gid
    aid = to_numpy(fill_null(pc.index_in(assets, value_set=layout.names_array), -1))
    group_of_row = np.where(aid >= 0, layout.group_of_node[np.maximum(aid, 0)], -1)
    for group, definition_aids in enumerate(layout.definition_groups.values()):
        rows = np.flatnonzero(group_of_row == group)
        if not len(rows):
            continue
        keys = key_array(layout.keys[layout.names[definition_aids[0]]])
        local = to_numpy(fill_null(pc.index_in(partitions.take(numbers(rows)), value_set=keys), -1))
        hit = local >= 0
        gid[rows[hit]] = layout.offsets[aid[rows[hit]]] + local[hit]
    return gid


def _scatter(layout: Layout, gid: np.ndarray) -> pa.Array:
    """Take-indices that place row i at global id gid[i] (null where a global id has no row)."""
    position = np.full(layout.size, -1, dtype=np.int64)
    keep = gid >= 0
    position[gid[keep]] = np.flatnonzero(keep)
    return numbers(position, mask=position < 0)


def _head_columns(layout: Layout, heads: pa.Table) -> Callable[[str], pa.ChunkedArray]:
    """Each heads column laid out by global id. When the store's rows already are that layout (every
    id has a head and they came in id order, as a store written in order returns them), columns are
    used as they came instead of copied: tens of MB of strings on 10^5 partitions."""
    gid = to_numpy(heads.column("gid"))
    if np.array_equal(gid, np.arange(layout.size)):
        return heads.column
    take = _scatter(layout, gid)
    return lambda name: heads.column(name).take(take)


def align_records(layout: Layout, snapshot: StoreSnapshot, source_versions: pa.Table | None,
                  present_paths: frozenset[str]) -> pa.Table:
    """One row per global id: the head's record (nulls when none), the current data version (a
    source's observation for sources), and whether the recorded value is still stored."""
    column = _head_columns(layout, snapshot.heads)
    mat_id = column("mat_id")
    recorded = pc.is_valid(mat_id)
    path = column("path")
    # A recorded value of None has no path and nothing to lose; any other path must still be stored.
    stored = pc.is_in(path, value_set=strings(list(present_paths)))
    present = fill_null(pc.or_kleene(pc.is_null(path), stored), False)
    data_version = column("data_version")
    if mat_id.null_count:  # partitions without a head, or whose every attempt failed, have no version
        data_version = pc.if_else(recorded, data_version, pa.nulls(layout.size, pa.string()))
    if source_versions is not None and source_versions.num_rows:
        observed = source_versions.column("version").take(
            _scatter(layout, global_ids(layout, source_versions.column("source"), source_versions.column("partition"))))
        data_version = pc.if_else(recorded, data_version, observed)
    return pa.table({
        "recorded": recorded,
        "failed": fill_null(column("failed"), False),
        "code_version": column("code_version"),
        "config_hash": column("config_hash"),
        "data_version": data_version,
        "path": path,
        "format": column("format"),
        "materialized_at": column("materialized_at"),
        "present": present,
    })


def align_pairs(layout: Layout, snapshot: StoreSnapshot) -> pa.Table:
    """Every input pair, consumed or expected: first the consumed ones, in the order of
    ``snapshot.inputs`` (so their recorded versions are the store's column as it came, not a copy),
    then the pairs the graph expects that were never consumed. ``expected`` says whether the graph
    wants the pair now, ``recorded_version`` what was consumed (null: not consumed last time), ``row``
    the consumed pair's row in ``snapshot.inputs`` (-1: not consumed). ``up`` is -1 for a consumed
    partition that no longer exists. Not sorted: early cutoff sorts the few rows it rechecks."""
    inputs = snapshot.inputs
    rec_down, rec_up = to_numpy(inputs.column("down")), to_numpy(inputs.column("up"))
    exp_down, exp_up = layout.expected_pairs
    # One int64 per pair, ordered like (down, up); a pair of a head the graph no longer has is -1.
    # Arrays here are as long as the store's inputs (10^5-10^6): computed in place, copied only if need be.
    width = layout.size + 1
    kept = rec_down >= 0
    rec_key = _pair_keys(rec_down, rec_up, width)
    rec_key[~kept] = -1
    order = np.argsort(rec_key, kind="stable")  # the store's rows come nearly sorted: cheap
    rec_sorted = rec_key[order]
    del rec_key
    exp_key = _pair_keys(exp_down, exp_up, width)
    at = np.searchsorted(rec_sorted, exp_key)
    np.minimum(at, max(len(rec_sorted) - 1, 0), out=at)
    found = rec_sorted[at] == exp_key if len(rec_sorted) else np.zeros(len(exp_key), bool)
    del rec_sorted, exp_key
    consumed_expected = np.zeros(len(rec_down), dtype=bool)
    consumed_expected[order[at[found]]] = True
    del order, at
    version = inputs.column("data_version")
    rows: np.ndarray | None = None  # None: every row is kept
    if not kept.all():  # inputs of heads the graph no longer has drop out
        rows = np.flatnonzero(kept)
        rec_down, rec_up, consumed_expected = rec_down[rows], rec_up[rows], consumed_expected[rows]
        version = version.take(numbers(rows))
    new = ~found
    n_new = int(np.count_nonzero(new))
    row = np.arange(len(rec_down)) if rows is None else rows
    if n_new:
        rec_down = np.concatenate((rec_down, exp_down[new]))
        rec_up = np.concatenate((rec_up, exp_up[new]))
        consumed_expected = np.concatenate((consumed_expected, np.ones(n_new, bool)))
        row = np.concatenate((row, np.full(n_new, -1, np.int64)))
    return pa.table({
        "down": numbers(rec_down),
        "up": numbers(rec_up),
        "expected": bools(consumed_expected),
        "recorded_version": pa.chunked_array([*_chunks(version), pa.nulls(n_new, pa.string())], pa.string()),
        "row": numbers(row),
    })


def _pair_keys(down: np.ndarray, up: np.ndarray, width: int) -> np.ndarray:
    """``down * width + up + 1`` in one new array: sorts like (down, up), with up = -1 first."""
    key = np.multiply(down, width, dtype=np.int64)
    key += up
    key += 1
    return key


def _chunks(values: pa.Array | pa.ChunkedArray) -> list[pa.Array]:
    return list(values.chunks) if isinstance(values, pa.ChunkedArray) else [values]
