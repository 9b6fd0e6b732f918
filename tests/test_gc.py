"""``gc``: delete stored values that no lineage row still needs, keeping the newest N versions of every
partition — never a current value — and report the bytes freed. ``--dry-run`` deletes nothing.

The project here is rebuilt three times, each time after a code change that changes every output, so
each generation leaves its own set of value files behind.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import assetflow as af
from project_kit import cli, load_defs, write_project

# --- helpers ------------------------------------------------------------------------------------------


def value_files(root: Path) -> dict[str, int]:
    """Stored values (path relative to the data root → size in bytes)."""
    data = root / ".assetflow" / "data"
    return {p.relative_to(data).as_posix(): p.stat().st_size for p in data.rglob("*") if p.is_file()}


PIPELINE = """
    import assetflow as af
    import pyarrow as pa

    GENERATION = {generation}
    daily = af.DailyPartitions(start="2024-01-01")

    @af.asset(partitions=daily, code_version="gen-{generation}")
    def features(ctx: af.Context) -> pa.Table:
        return pa.table({{"day": [ctx.partition_key] * 50, "generation": [GENERATION] * 50}})

    @af.asset(partitions=daily)
    def daily_stats(features: pa.Table) -> pa.Table:
        return features.slice(0, 10)

    @af.asset(code_version="gen-{generation}")
    def model(features: dict[str, pa.Table]) -> bytes:
        return f"model trained by generation {{GENERATION}}".encode() * 20

    defs = af.Definitions(assets=[features, daily_stats, model])
"""
NOW = "2024-01-04T00:00:00Z"  # partitions 2024-01-01 … 2024-01-03
DAYS = ["2024-01-01", "2024-01-02", "2024-01-03"]
GENERATIONS = (1, 2, 3)


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, dict[str, int]]]:
    """A project rebuilt once per generation; and the value files each generation added."""
    root = tmp_path_factory.mktemp("rebuilt")
    previous = os.environ.get("ASSETFLOW_NOW")
    os.environ["ASSETFLOW_NOW"] = NOW
    added: dict[int, dict[str, int]] = {}
    try:
        for generation in GENERATIONS:
            write_project(root, PIPELINE.format(generation=generation))
            before = value_files(root) if (root / ".assetflow").exists() else {}
            result = af.materialize(load_defs(root), stale=True)
            assert result.counts["materialized"] == 7  # 3 features, 3 daily_stats, 1 model
            added[generation] = {p: s for p, s in value_files(root).items() if p not in before}
            assert len(added[generation]) == 7
    finally:
        if previous is None:
            del os.environ["ASSETFLOW_NOW"]
        else:
            os.environ["ASSETFLOW_NOW"] = previous
    return root, added


@pytest.fixture
def project(rebuilt, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[int, dict[str, int]]]:
    template, added = rebuilt
    root = tmp_path / "project"
    shutil.copytree(template, root)
    monkeypatch.setenv("ASSETFLOW_NOW", NOW)
    return root, added


def test_gc_keep_1_frees_old_versions_and_every_current_value_still_loads(project) -> None:
    root, added = project
    old = {**added[1], **added[2]}

    dry = cli(root, "gc", "--keep", "1", "--dry-run", "--json", now=NOW)
    assert dry.returncode == 0, dry.stderr
    would = json.loads(dry.stdout)
    assert would["dry_run"] is True
    assert would["deleted"] == len(old) and sorted(would["paths"]) == sorted(old)
    assert would["bytes_freed"] == sum(old.values()) > 0
    assert value_files(root) == {**added[1], **added[2], **added[3]}  # nothing deleted

    defs = load_defs(root)
    report = af.gc(defs, keep=1)
    assert report["dry_run"] is False
    assert report["bytes_freed"] == would["bytes_freed"]
    assert value_files(root) == added[3]

    for day in DAYS:
        assert af.load(defs, "features", partition=day).column("generation").to_pylist() == [3] * 50
        assert af.load(defs, "daily_stats", partition=day).num_rows == 10
    assert af.load(defs, "model") == b"model trained by generation 3" * 20
    assert af.plan(defs, stale=True).steps == []

    again = af.gc(defs, keep=1)
    assert (again["deleted"], again["bytes_freed"]) == (0, 0)


def test_gc_keep_2_keeps_the_previous_version_of_each_partition(project) -> None:
    root, added = project
    defs = load_defs(root)
    report = af.gc(defs, keep=2)
    assert report["deleted"] == 7
    assert report["bytes_freed"] == sum(added[1].values())
    assert value_files(root) == {**added[2], **added[3]}
    assert af.load(defs, "model") == b"model trained by generation 3" * 20
    assert af.plan(defs, stale=True).steps == []
