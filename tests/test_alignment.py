"""Aligning a store snapshot with the layout: the result is the same whatever order the store hands
its rows in, and whether or not every (asset, partition) has a head."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pytest

import assetflow as af
from assetflow.alignment import align_records
from assetflow.graph import AssetGraph
from assetflow.layout import Layout
from assetflow.lineage_store import HEAD_INPUT_SCHEMA, HEAD_SCHEMA, StoreSnapshot

NOW = datetime(2024, 1, 4, tzinfo=timezone.utc)  # daily partitions 2024-01-01 .. 2024-01-03


@af.asset(partitions=af.DailyPartitions(start="2024-01-01"))
def up() -> bytes:
    return b""


@af.asset(partitions=af.DailyPartitions(start="2024-01-01"))
def down(up: bytes) -> bytes:
    return up


LAYOUT = Layout(AssetGraph(af.Definitions(assets=[up, down])), NOW)


def snapshot(gids: list[int]) -> StoreSnapshot:
    """Heads for ``gids`` in the order given, each with versions named after its id."""
    heads = pa.table({
        "gid": gids, "mat_id": [g + 100 for g in gids], "code_version": [f"c{g}" for g in gids],
        "config_hash": [None] * len(gids), "data_version": [f"d{g}" for g in gids], "path": [None] * len(gids),
        "format": [None] * len(gids), "materialized_at": [NOW] * len(gids), "failed": [False] * len(gids),
    }, schema=HEAD_SCHEMA)
    return StoreSnapshot(LAYOUT.catalogue, heads, HEAD_INPUT_SCHEMA.empty_table())


def aligned(gids: list[int]) -> dict[str, list]:
    table = align_records(LAYOUT, snapshot(gids), None, frozenset())
    return {name: table.column(name).to_pylist() for name in ("recorded", "code_version", "data_version")}


@pytest.mark.parametrize("order", [[0, 1, 2, 3, 4, 5], [5, 3, 1, 0, 2, 4], [-1, 0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5, -1]])
def test_a_complete_store_aligns_the_same_in_any_row_order(order):
    assert LAYOUT.size == 6
    assert aligned(order) == {"recorded": [True] * 6, "code_version": [f"c{g}" for g in range(6)],
                              "data_version": [f"d{g}" for g in range(6)]}


@pytest.mark.parametrize("order", [[4, 0, 2], [0, 2, 4], [-1, 2, 4, 0]])
def test_partitions_without_a_head_align_as_not_recorded(order):
    expected = {g: g in order for g in range(6)}
    assert aligned(order) == {
        "recorded": [expected[g] for g in range(6)],
        "code_version": [f"c{g}" if expected[g] else None for g in range(6)],
        "data_version": [f"d{g}" if expected[g] else None for g in range(6)],
    }


def test_layout_and_catalogue_number_pairs_alike():
    offsets = LAYOUT.catalogue.nodes.column("off").to_pylist()
    assert offsets == np.asarray(LAYOUT.offsets[:-1]).tolist()
