"""Specification of LineageStore.held(): while a run holds the store, its first write connection stays
open so that the run's later connections reuse the open database; other processes are kept out for at
most ``linger_s``, and never once ``held()`` is left (also on an error). A store that uploads after
every commit (remote state) is never held.

Real DuckDB files; "another process" is a real Python subprocess that tries once to open the file
read-only, as ``status`` or ``plan`` would, and reports whether DuckDB let it in."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from assetflow import arrays
from assetflow.lineage import (
    ATTEMPT_SCHEMA,
    CHECK_SCHEMA,
    INPUT_SCHEMA,
    Batch,
    LineageStore,
    RunEnd,
)

STARTED = datetime(2024, 1, 6, tzinfo=UTC)
LONG = 600.0
"""A linger no test outlasts: the file stays held for as long as the test is inside ``held()``."""

_TRY_OPEN = """
import sys
import duckdb
try:
    duckdb.connect(sys.argv[1], read_only=True).close()
except duckdb.Error as exc:
    print("locked" if "lock" in str(exc).lower() else f"error: {exc}")
else:
    print("ok")
"""


def other_process_opens(path: Path) -> str:
    """``ok`` if another process can open the store file read-only right now, ``locked`` if DuckDB
    refuses it because this process holds the file."""
    done = subprocess.run([sys.executable, "-c", _TRY_OPEN, str(path)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def eventually_opens(path: Path, within_s: float = 10.0) -> bool:
    """Whether another process gets in at some point within ``within_s`` (polling, not timing)."""
    deadline = time.monotonic() + within_s
    while True:
        if other_process_opens(path) == "ok":
            return True
        if time.monotonic() > deadline:
            return False


def new_store(tmp_path: Path) -> LineageStore:
    store = LineageStore(tmp_path / ".assetflow" / "lineage.duckdb")
    with store.connect(write=True):
        pass  # the file exists (with its schema), closed
    return store


def begin(store: LineageStore, run_id: str = "r1") -> int:
    base, _ = store.begin_run(run_id, "stale", {"kind": "stale"}, ["up"], STARTED)
    return base


def finish(store: LineageStore, run_id: str = "r1", mat_id: int = 1, partition: str = "2024-01-01") -> None:
    """The run's last write: one materialized attempt of ``up`` and the run's end."""
    attempt = {"mat_id": mat_id, "run_id": run_id, "asset": "up", "partition": partition, "attempt": 1,
               "outcome": "materialized", "started_at": STARTED, "duration_s": 0.25, "code_version": "c1",
               "config_hash": "h1", "data_version": "v1", "path": f"up/{partition}.pkl", "format": "pickle",
               "size": 10}
    batch = Batch(arrays.table([attempt], ATTEMPT_SCHEMA), arrays.empty(INPUT_SCHEMA), arrays.empty(CHECK_SCHEMA))
    store.write(batch, finish=RunEnd(run_id, "success", {"materialized": 1}, STARTED + timedelta(seconds=1)))


# --- one process: later connections reuse the held database ---------------------------------------------


def test_connections_inside_held_see_each_others_commits(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    with store.held(linger_s=LONG):
        assert begin(store) == 1
        with store.connect(write=True) as con:  # a second write connection of the same process
            assert con.execute("SELECT run_id, status FROM runs").fetchall() == [("r1", "running")]
        finish(store)
        with store.connect(write=True) as con:
            assert con.execute("SELECT run_id, status, materialized FROM runs").fetchall() == [("r1", "success", 1)]
        # reads of the same process work while the file is held
        assert [(r["run_id"], r["status"]) for r in store.runs()] == [("r1", "success")]
        heads = store.snapshot().heads
        assert heads.select(["asset", "partition", "data_version"]).to_pylist() == [
            {"asset": "up", "partition": "2024-01-01", "data_version": "v1"}]
        assert store.head("up", "2024-01-01")["path"] == "up/2024-01-01.pkl"
        assert store.run("r1")["attempts"][0]["outcome"] == "materialized"
    assert [(r["run_id"], r["status"]) for r in store.runs()] == [("r1", "success")]


def test_a_run_can_start_inside_held_on_a_store_that_does_not_exist_yet(tmp_path: Path) -> None:
    store = LineageStore(tmp_path / ".assetflow" / "lineage.duckdb")
    with store.held(linger_s=LONG):
        assert store.snapshot().heads.num_rows == 0  # nothing to read yet: no file is created
        assert begin(store) == 1
        finish(store)
        assert store.runs()[0]["status"] == "success"
    assert other_process_opens(store.path) == "ok"


def test_the_store_is_usable_again_after_held(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    with store.held(linger_s=LONG):
        begin(store, "r1")
        finish(store, "r1", mat_id=1)
    with store.held(linger_s=LONG):  # a second run of the same process
        assert begin(store, "r2") == 2
        finish(store, "r2", mat_id=2, partition="2024-01-02")
    begin(store, "r3")  # and outside held()
    assert [r["run_id"] for r in store.runs()] == ["r3", "r2", "r1"]
    assert store.snapshot().heads.num_rows == 2


def test_another_store_object_of_the_same_process_can_read_while_held(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    with store.held(linger_s=LONG):
        begin(store)
        assert [r["run_id"] for r in LineageStore(store.path).runs()] == ["r1"]


# --- other processes ----------------------------------------------------------------------------------


def test_other_processes_are_kept_out_while_held_and_let_in_after(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    assert other_process_opens(store.path) == "ok"
    with store.held(linger_s=LONG):
        assert other_process_opens(store.path) == "ok"  # held() opens nothing by itself
        store.runs()
        assert other_process_opens(store.path) == "ok"  # nor does a read
        begin(store)
        finish(store)
        assert other_process_opens(store.path) == "locked"  # the first write stayed open
    assert other_process_opens(store.path) == "ok"


def test_other_processes_get_in_after_linger_while_still_held(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    with store.held(linger_s=0.2):
        begin(store)
        assert eventually_opens(store.path)
        # the rest of the run opens the file per connection again, and leaves it closed
        finish(store)
        assert other_process_opens(store.path) == "ok"
        assert store.runs()[0]["status"] == "success"
    assert other_process_opens(store.path) == "ok"


def test_a_store_that_uploads_after_every_commit_is_never_held(tmp_path: Path) -> None:
    commits: list[str] = []
    store = LineageStore(new_store(tmp_path).path, on_commit=lambda s: commits.append(other_process_opens(s.path)))
    with store.held(linger_s=LONG):
        begin(store)
        assert commits == ["ok"]  # right after the write, with the file closed, another process gets in
        finish(store)
        assert commits == ["ok", "ok"]
        assert store.runs()[0]["status"] == "success"


def test_an_error_inside_held_releases_the_store(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    with pytest.raises(RuntimeError, match="step blew up"), store.held(linger_s=LONG):
        begin(store)
        assert other_process_opens(store.path) == "locked"
        raise RuntimeError("step blew up")
    assert other_process_opens(store.path) == "ok"
    assert store.runs()[0]["status"] == "running"  # what was committed before the error stays
