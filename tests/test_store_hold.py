"""A run holds its lineage store: one DuckDB open for a short run, released for other processes after
``HOLD_S``, and no half-done transaction left behind when an operation fails while held."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

import assetflow as af
from assetflow import lineage_store
from assetflow.errors import StoreError
from assetflow.lineage_store import ATTEMPT_SCHEMA, BATCH_INPUT_SCHEMA, CHECK_SCHEMA, Batch, Catalogue, LineageStore, _sql

from project_kit import load_defs, write_project

T0 = datetime(2024, 1, 5, tzinfo=timezone.utc)
CATALOGUE = Catalogue.build(["a", "b"], [0, 0], [["2024-01-01", "2024-01-02"]])

PIPELINE = """
import assetflow as af

@af.asset
def first() -> bytes:
    return b"1"

@af.asset
def second(first: bytes) -> bytes:
    return first + b"2"

@af.asset
def third(second: bytes, first: bytes) -> bytes:
    return second + first

defs = af.Definitions(assets=[first, second, third])
"""

# Another process that opens the store read-only once per line it reads (a path): answers "open" or
# the lock error's first line. Started ahead, so that its interpreter start and imports (longer than a
# short linger time on a loaded machine) are not inside the window being probed.
PROBE = """
import sys, duckdb
print("ready", flush=True)
for line in sys.stdin:
    try:
        duckdb.connect(line.strip(), read_only=True).close()
        print("open", flush=True)
    except duckdb.Error as exc:
        print(str(exc).splitlines()[0], flush=True)
"""


@pytest.fixture
def probe() -> Iterator[Callable[[Path], str]]:
    """Ask another process to open a store file: returns what it says."""
    proc = subprocess.Popen([sys.executable, "-c", PROBE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline().strip() == "ready"

    def ask(path: Path) -> str:
        proc.stdin.write(f"{path}\n")
        proc.stdin.flush()
        return proc.stdout.readline().strip()

    try:
        yield ask
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)


def _success(mat_id: int, asset: str, partition: str, version: str) -> dict:
    return {"mat_id": mat_id, "run_id": "r1", "asset": asset, "partition": partition, "attempt": 1,
            "outcome": "materialized", "started_at": T0, "duration_s": 0.1, "code_version": "c1",
            "data_version": version, "size": 0}


def _batch(*attempts: dict) -> Batch:
    return Batch(pa.Table.from_pylist(list(attempts), ATTEMPT_SCHEMA), BATCH_INPUT_SCHEMA.empty_table(),
                 CHECK_SCHEMA.empty_table())


@pytest.fixture
def opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every DuckDB database this process opens from here on (the real connect, counted)."""
    seen: list[str] = []
    real = duckdb.connect

    def counting(database: str = ":memory:", *args, **kwargs):
        seen.append(str(database))
        return real(database, *args, **kwargs)

    monkeypatch.setattr(lineage_store.duckdb, "connect", counting)
    return seen


def test_a_short_run_opens_its_store_once_new_or_existing(tmp_path: Path, opens: list[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSETFLOW_NOW", "2024-01-05T00:00:00Z")
    write_project(tmp_path, PIPELINE)
    defs = load_defs(tmp_path)
    store = tmp_path / "lineage.duckdb"

    first = af.materialize(defs, store=str(store), data=str(tmp_path / "data"))
    assert first.status == "success" and first.counts["materialized"] == 3
    assert opens == [str(store)]

    opens.clear()
    again = af.materialize(defs, store=str(store), data=str(tmp_path / "data"))
    assert again.counts["materialized"] == 3  # not --stale: everything again, into the existing store
    assert opens == [str(store)]
    assert [r["status"] for r in LineageStore(store).runs()] == ["success", "success"]


def test_a_held_store_is_released_to_other_processes_after_its_linger_time(tmp_path: Path, probe) -> None:
    store = LineageStore(tmp_path / "s.duckdb")
    with store.held(linger_s=0.5):
        store.begin_run("r1", "manual", {}, [], T0, CATALOGUE)
        assert [r["run_id"] for r in store.runs()] == ["r1"]  # the new file's run record is written
        assert "lock" in probe(store.path).lower()  # held: another process must wait
        time.sleep(1.0)
        assert probe(store.path) == "open"  # linger time over: the file is closed between operations
        store.write(_batch(_success(1, "a", "2024-01-01", "v1")))  # later operations open their own
        assert probe(store.path) == "open"
    heads = store.snapshot(CATALOGUE).heads.to_pylist()
    assert [(h["gid"], h["data_version"]) for h in heads] == [(0, "v1")]


def test_an_operation_that_fails_while_held_is_rolled_back_and_ends_the_hold(tmp_path: Path) -> None:
    store = LineageStore(tmp_path / "s.duckdb")
    with store.held():
        store.begin_run("r1", "manual", {}, [], T0, CATALOGUE)
        with pytest.raises(RuntimeError, match="midway"):
            with store.connect(write=True) as con:
                _sql(con, "BEGIN")
                _sql(con, "INSERT INTO runs (run_id, status) VALUES ('half', 'running')")
                raise RuntimeError("midway")
        # The next operation starts clean: no transaction left open, nothing of the failed one kept.
        store.write(_batch(_success(1, "a", "2024-01-01", "v1")))
        assert [r["run_id"] for r in store.runs()] == ["r1"]
    assert [r["run_id"] for r in store.runs()] == ["r1"]


def test_a_store_that_cannot_be_opened_fails_the_first_operation_of_a_hold(tmp_path: Path) -> None:
    (tmp_path / "s.duckdb").mkdir()
    store = LineageStore(tmp_path / "s.duckdb")
    with store.held():
        with pytest.raises(StoreError, match="is a directory"):
            store.begin_run("r1", "manual", {}, [], T0, CATALOGUE)


def test_a_new_store_first_written_by_another_operation_is_read_by_the_next_run(tmp_path: Path) -> None:
    # Only the operation that created the file may take its heads to be empty.
    for hold in (False, True):
        store = LineageStore(tmp_path / f"s-{hold}.duckdb")
        with store.held() if hold else contextlib.nullcontext():
            store.write(_batch(_success(1, "b", "2024-01-02", "vb")))
            _, snapshot = store.begin_run("r2", "manual", {}, [], T0, CATALOGUE)
        assert [(h["gid"], h["data_version"]) for h in snapshot.heads.to_pylist()] == [(3, "vb")], hold


def test_store_objects_of_one_file_share_its_hold(tmp_path: Path, opens: list[str]) -> None:
    path = tmp_path / "s.duckdb"
    writer, reader = LineageStore(path), LineageStore(path)
    with writer.held():
        writer.begin_run("r1", "manual", {}, [], T0, CATALOGUE)
        writer.write(_batch(_success(1, "a", "2024-01-01", "v1")))
        assert [h["data_version"] for h in reader.heads()] == ["v1"]
    assert opens == [str(path)]


class SlowOpen:
    """DuckDB opens of this process wait until :attr:`go` is set (or 10 s pass): a stand-in for the tens
    of milliseconds an instance takes to create, stretched so that a test need not race it.
    :attr:`opened` is set once an open has completed."""

    def __init__(self) -> None:
        self.go, self.opened = threading.Event(), threading.Event()


@pytest.fixture
def slow_open(monkeypatch: pytest.MonkeyPatch) -> SlowOpen:
    slow = SlowOpen()
    real = duckdb.connect

    def waiting(database: str = ":memory:", *args, **kwargs):
        slow.go.wait(timeout=10)
        con = real(database, *args, **kwargs)
        slow.opened.set()
        return con

    monkeypatch.setattr(lineage_store.duckdb, "connect", waiting)
    return slow


def test_the_first_run_on_a_new_store_starts_without_waiting_for_duckdb(tmp_path: Path, slow_open: SlowOpen) -> None:
    store = LineageStore(tmp_path / "new" / "s.duckdb")
    with store.held():
        base, snapshot = store.begin_run("r1", "manual", {}, [], T0, CATALOGUE)
        returned_before_the_open = not slow_open.opened.is_set()
        slow_open.go.set()
        assert (base, snapshot.heads.num_rows, snapshot.inputs.num_rows) == (1, 0, 0)
        store.write(_batch(_success(base, "a", "2024-01-01", "v1")))  # waits for the run record first
    assert returned_before_the_open
    assert [(r["run_id"], r["status"]) for r in LineageStore(store.path).runs()] == [("r1", "running")]
    assert [h["data_version"] for h in LineageStore(store.path).heads()] == ["v1"]


def test_a_new_stores_run_record_that_fails_fails_the_next_operation_and_writes_nothing_of_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(self: LineageStore, *args) -> None:
        with self.connect(write=True):
            raise StoreError("disk full (injected)")

    monkeypatch.setattr(LineageStore, "_record_start", failing)
    store = LineageStore(tmp_path / "s.duckdb")
    with store.held():
        store.begin_run("r1", "manual", {}, [], T0, CATALOGUE)  # returns before the record is written
        with pytest.raises(StoreError, match="injected"):
            store.write(_batch(_success(1, "a", "2024-01-01", "v1")))
    assert LineageStore(store.path).heads() == []


def test_an_existing_store_is_read_before_the_run_starts(tmp_path: Path, slow_open: SlowOpen) -> None:
    store = LineageStore(tmp_path / "s.duckdb")
    slow_open.go.set()
    store.write(_batch(_success(1, "a", "2024-01-01", "v1")))
    slow_open.go.clear()
    slow_open.opened.clear()
    with store.held():
        threading.Timer(0.2, slow_open.go.set).start()
        base, snapshot = store.begin_run("r2", "manual", {}, [], T0, CATALOGUE)
        assert slow_open.opened.is_set()  # it waited for the file to open: there was something to read
    assert (base, [h["data_version"] for h in snapshot.heads.to_pylist()]) == (2, ["v1"])


def test_a_new_store_whose_folder_cannot_be_made_fails_the_run_start_itself(tmp_path: Path) -> None:
    # Not in the background: the error must come before any step runs, naming the file in the way.
    (tmp_path / "afile").write_text("")
    store = LineageStore(tmp_path / "afile" / "sub" / "s.duckdb")
    with store.held():
        with pytest.raises(StoreError, match=r"afile is a file, not a folder"):
            store.begin_run("r1", "manual", {}, [], T0, CATALOGUE)
