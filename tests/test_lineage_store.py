"""The lineage store on its own: schema migrations, derived head tables, run bookkeeping."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from assetflow.errors import StoreError
from assetflow.lineage_store import (
    _MIGRATIONS,
    _SCHEMA_V1,
    ATTEMPT_SCHEMA,
    BATCH_INPUT_SCHEMA,
    CHECK_SCHEMA,
    SCHEMA_VERSION,
    Batch,
    Catalogue,
    LineageStore,
)

T0 = datetime(2024, 1, 5, tzinfo=timezone.utc)
# a and b share the daily keys (ids a: 0-1, b: 2-3); c is unpartitioned (id 4).
CATALOGUE = Catalogue.build(["a", "b", "c"], [0, 0, 1], [["2024-01-01", "2024-01-02"], [""]])


def _attempt(mat_id: int, asset: str, partition: str, outcome: str, data_version: str | None) -> dict:
    return {
        "mat_id": mat_id, "run_id": "r1", "asset": asset, "partition": partition, "attempt": 1, "outcome": outcome,
        "started_at": T0, "duration_s": 0.1, "error": None, "traceback": None, "logs": None, "code_version": "c1",
        "config_hash": None, "data_version": data_version, "path": None, "format": None, "size": 0, "metadata": None,
    }


def _batch(attempts: list[dict], inputs: list[dict]) -> Batch:
    # Input rows carry the pair of the attempt they belong to, as the coordinator writes them.
    pair = {a["mat_id"]: {"asset": a["asset"], "partition": a["partition"]} for a in attempts}
    rows = [{**i, **pair[i["mat_id"]]} for i in inputs]
    return Batch(pa.Table.from_pylist(attempts, ATTEMPT_SCHEMA), pa.Table.from_pylist(rows, BATCH_INPUT_SCHEMA),
                 CHECK_SCHEMA.empty_table())


def test_a_schema_1_store_is_migrated_on_first_read(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute(_SCHEMA_V1)
    con.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    con.execute("INSERT INTO heads (asset, partition, mat_id, data_version, failed) VALUES ('b', '2024-01-01', 7, 'vb', false)")
    con.execute("INSERT INTO inputs VALUES (7, 'a', '2024-01-01', 'va'), (6, 'a', '2023-12-31', 'old')")
    con.close()

    snapshot = LineageStore(path).snapshot(CATALOGUE)

    assert snapshot.inputs.to_pylist() == [
        {"down": 2, "up": 0, "data_version": "va", "gone_asset": None, "gone_partition": None}]
    with duckdb.connect(str(path), read_only=True) as check:
        assert check.execute("SELECT value FROM meta").fetchall() == [(str(SCHEMA_VERSION),)]
    assert 1 in _MIGRATIONS


def test_a_newer_schema_is_refused_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "future.duckdb"
    LineageStore(path).begin_run("r0", "manual", {}, [], T0, CATALOGUE)
    with duckdb.connect(str(path)) as con:
        con.execute("UPDATE meta SET value = '99'")
    with pytest.raises(StoreError, match="schema 99"):
        LineageStore(path).snapshot(CATALOGUE)


def test_a_file_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE x (a INT)")
    with pytest.raises(StoreError, match="not an assetflow store"):
        LineageStore(path).runs()


def test_a_batch_commits_only_once_its_values_are_durable(tmp_path: Path) -> None:
    # The data root's flush runs beside the batch's statements; the commit waits for it, and a flush
    # that fails leaves nothing behind that points at values which may not be on disk.
    store = LineageStore(tmp_path / "s.duckdb")
    store.begin_run("r1", "manual", {}, [], T0, CATALOGUE)
    batch = _batch([_attempt(1, "c", "", "materialized", "v1")], [])
    flushed: list[str] = []

    def failing_flush() -> None:
        raise OSError("the disk is gone")

    with pytest.raises(OSError, match="the disk is gone"):
        store.write(batch, make_durable=failing_flush)
    assert store.heads() == [] and store.run("r1")["attempts"] == []

    store.write(batch, make_durable=lambda: flushed.append("flushed"))
    assert flushed == ["flushed"]
    assert [(h["asset"], h["data_version"]) for h in store.heads()] == [("c", "v1")]


def test_head_inputs_follow_the_newest_materialization_only(tmp_path: Path) -> None:
    store = LineageStore(tmp_path / "s.duckdb")
    store.write(_batch([_attempt(1, "c", "", "materialized", "v1")],
                       [{"mat_id": 1, "up_asset": "a", "up_partition": "2024-01-01", "data_version": "a1"}]))
    store.write(_batch([_attempt(2, "c", "", "materialized", "v2")],
                       [{"mat_id": 2, "up_asset": "a", "up_partition": "2024-01-02", "data_version": "a2"}]))

    snapshot = store.snapshot(CATALOGUE)

    assert snapshot.heads.select(["gid", "data_version"]).to_pylist() == [{"gid": 4, "data_version": "v2"}]
    assert snapshot.inputs.select(["down", "up", "data_version"]).to_pylist() == [{"down": 4, "up": 1, "data_version": "a2"}]
    assert store.head("c", "")["inputs"] == [{"up_asset": "a", "up_partition": "2024-01-02", "data_version": "a2"}]


def _block_size(path: Path) -> int:
    with duckdb.connect(str(path), read_only=True) as con:
        return int(con.execute("SELECT block_size FROM pragma_database_size()").fetchone()[0])


def test_a_new_store_file_is_made_of_small_blocks(tmp_path: Path) -> None:
    # 16 KiB blocks: a small store's checkpoint (every run's close, every remote upload) writes a tenth
    # of what DuckDB's default 256 KiB blocks make it write.
    path = tmp_path / "new.duckdb"
    LineageStore(path).write(_batch([_attempt(1, "c", "", "materialized", "v1")], []))

    assert _block_size(path) == 16384
    assert path.stat().st_size < 1024 * 1024


def test_a_store_file_made_with_other_blocks_keeps_them(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    duckdb.connect(str(path)).close()  # DuckDB's default 256 KiB blocks, as older assetflow made its files
    store = LineageStore(path)
    store.write(_batch([_attempt(1, "c", "", "materialized", "v1")], []))

    assert _block_size(path) == 262144
    assert store.snapshot(CATALOGUE).heads.column("data_version").to_pylist() == ["v1"]


def test_a_snapshot_numbers_rows_outside_the_catalogue_minus_one(tmp_path: Path) -> None:
    store = LineageStore(tmp_path / "s.duckdb")
    store.write(_batch(
        [_attempt(1, "b", "2024-01-02", "materialized", "v1"), _attempt(2, "gone", "2024-01-01", "materialized", "g"),
         _attempt(3, "b", "2023-12-31", "materialized", "old")],
        [{"mat_id": 1, "up_asset": "a", "up_partition": "2024-01-02", "data_version": "a1"},
         {"mat_id": 1, "up_asset": "gone", "up_partition": "2024-01-01", "data_version": "g"},
         {"mat_id": 2, "up_asset": "a", "up_partition": "2024-01-01", "data_version": "a0"}]))

    snapshot = store.snapshot(CATALOGUE)

    assert sorted(snapshot.heads.column("gid").to_pylist()) == [-1, -1, 3]
    # A consumed partition the catalogue no longer has keeps its name: the plan names it as a cause.
    assert sorted(snapshot.inputs.to_pylist(), key=lambda r: (r["down"], r["up"])) == [
        {"down": -1, "up": 0, "data_version": "a0", "gone_asset": None, "gone_partition": None},
        {"down": 3, "up": -1, "data_version": "g", "gone_asset": "gone", "gone_partition": "2024-01-01"},
        {"down": 3, "up": 1, "data_version": "a1", "gone_asset": None, "gone_partition": None}]


def test_catalogue_numbers_assets_in_order_with_their_groups_keys() -> None:
    assert CATALOGUE.nodes.to_pylist() == [
        {"name": "a", "grp": 0, "off": 0}, {"name": "b", "grp": 0, "off": 2}, {"name": "c", "grp": 1, "off": 4}]
    assert CATALOGUE.keys.to_pylist() == [
        {"grp": 0, "key": "2024-01-01", "local": 0}, {"grp": 0, "key": "2024-01-02", "local": 1},
        {"grp": 1, "key": "", "local": 0}]


def test_a_later_failure_flags_the_head_but_keeps_its_value(tmp_path: Path) -> None:
    store = LineageStore(tmp_path / "s.duckdb")
    store.write(_batch([_attempt(1, "b", "p", "materialized", "v1")], []))
    store.write(_batch([_attempt(2, "b", "p", "failed", None)], []))

    head = store.heads()[0]

    assert (head["data_version"], head["failed"]) == ("v1", True)


def test_a_success_after_a_failure_in_one_batch_clears_the_flag(tmp_path: Path) -> None:
    store = LineageStore(tmp_path / "s.duckdb")
    store.write(_batch([_attempt(1, "b", "p", "failed", None), _attempt(2, "b", "p", "materialized", "v2")], []))

    head = store.heads()[0]

    assert (head["data_version"], head["failed"]) == ("v2", False)


def test_beginning_a_run_marks_runs_left_running_as_crashed(tmp_path: Path) -> None:
    store = LineageStore(tmp_path / "s.duckdb")
    store.begin_run("dead", "stale", {}, [], T0, CATALOGUE)
    store.begin_run("alive", "stale", {}, [], T0, CATALOGUE)

    statuses = {r["run_id"]: r["status"] for r in store.runs()}

    assert statuses == {"dead": "crashed", "alive": "running"}
    assert [r["run_id"] for r in store.runs()] == ["alive", "dead"]  # newest first, even with equal times


def test_materialization_ids_continue_after_earlier_runs(tmp_path: Path) -> None:
    store = LineageStore(tmp_path / "s.duckdb")
    assert store.begin_run("r1", "manual", {}, [], T0, CATALOGUE)[0] == 1
    store.write(_batch([_attempt(1, "b", "p", "materialized", "v1"), _attempt(2, "b", "q", "materialized", "v1")], []))
    assert store.begin_run("r2", "manual", {}, [], T0, CATALOGUE)[0] == 3


def test_connections_of_one_process_are_taken_one_at_a_time(tmp_path: Path) -> None:
    # DuckDB 2 races when threads of one process open and close connections to one file at once (the
    # coordinator's background recorder writes while the caller may read), so connect() serializes them.
    import threading

    store = LineageStore(tmp_path / "s.duckdb")
    store.begin_run("r1", "manual", {}, [], T0, CATALOGUE)
    entered = threading.Event()

    def second() -> None:
        with LineageStore(store.path).connect(write=False):
            entered.set()

    with store.connect(write=True):
        other = threading.Thread(target=second)
        other.start()
        assert not entered.wait(0.5), "a second connection opened while the first was still in use"
    other.join(10)
    assert entered.is_set()
