"""How a command ends: its exit status is the command's, whatever threads a step leaves running inside
native code; it still does what a Python process does on the way out; and a run in a program leaves
none of assetflow's own threads behind."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest

import assetflow as af
from assetflow.executors import ThreadExecutor
from assetflow.lineage_store import Catalogue, LineageStore
from assetflow.values import ValueStore
from assetflow.worker import StepTask

from conftest import run_cli
from project_kit import load_defs, write_project

CATALOGUE = Catalogue.build(["a"], [0], [["2024-01-01"]])

# A step that leaves threads querying DuckDB for as long as the process lives, as a client library's
# background thread might. Before Python 3.14, one of them waking while the interpreter finalizes
# aborts the process (SIGABRT, "FATAL: exception not rethrown") after the run has succeeded.
BUSY_THREADS = """
import threading

import duckdb

import assetflow as af


def _query_forever() -> None:
    con = duckdb.connect()
    while True:
        con.execute("SELECT sum(i) FROM range(200000) t(i)").fetchall()


@af.asset
def prefetched() -> bytes:
    for _ in range(4):
        threading.Thread(target=_query_forever, daemon=True).start()
    return b"ok"


defs = af.Definitions(assets=[prefetched])
"""

# A step that relies on the usual ways out of a Python process: an atexit handler, a non-daemon
# thread that finishes its work first, and a thread pool nobody shut down (its idle workers must be
# told to stop, or the process would wait for them for ever).
EXIT_DUTIES = """
import atexit
import concurrent.futures
import pathlib
import threading
import time

import assetflow as af

HERE = pathlib.Path(__file__).resolve().parent


def _late_write() -> None:
    time.sleep(0.3)
    (HERE / "thread-finished").write_text("yes")


@af.asset
def dutiful() -> bytes:
    atexit.register(lambda: (HERE / "atexit-ran").write_text("yes"))
    threading.Thread(target=_late_write, daemon=False).start()  # (a step thread would make it a daemon)
    pool = concurrent.futures.ThreadPoolExecutor(2)
    pool.submit(time.sleep, 0.01).result()
    return b"ok"


defs = af.Definitions(assets=[dutiful])
"""


def test_a_step_thread_still_inside_duckdb_when_the_command_ends_does_not_change_its_exit_status(
        tmp_path: Path) -> None:
    write_project(tmp_path, BUSY_THREADS)
    for selection in ("prefetched", "prefetched+"):  # two runs: the abort came in most runs, not every one
        result = run_cli(tmp_path, "materialize", selection, "--json", target=())
        assert result.returncode == 0, result.describe()
        assert "terminate called" not in result.stderr and "FATAL" not in result.stderr, result.describe()
        assert result.json()["status"] == "success"


def test_the_console_script_ends_the_same_way(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("assetflow")
    if not script.exists():
        pytest.skip("the assetflow console script is not installed next to this interpreter")

    write_project(tmp_path, BUSY_THREADS)
    proc = subprocess.run([str(script), "materialize", "--json"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "FATAL" not in proc.stderr


def test_a_command_still_runs_atexit_handlers_and_waits_for_non_daemon_threads(tmp_path: Path) -> None:
    write_project(tmp_path, EXIT_DUTIES)
    result = run_cli(tmp_path, "materialize", "--json", target=())
    assert result.returncode == 0, result.describe()
    assert (tmp_path / "atexit-ran").read_text() == "yes"
    assert (tmp_path / "thread-finished").read_text() == "yes"


def test_an_error_exit_keeps_its_status(tmp_path: Path) -> None:
    write_project(tmp_path, BUSY_THREADS)
    result = run_cli(tmp_path, "materialize", "nothing_like_this", target=())
    assert result.returncode == 2, result.describe()
    assert result.stderr.startswith("assetflow: error:"), result.describe()


def _assetflow_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("assetflow-") and t.is_alive()}


def test_closing_the_thread_executor_ends_its_idle_workers_before_it_returns(tmp_path: Path) -> None:
    @af.asset
    def quick() -> bytes:
        return b"q"

    before = _assetflow_threads()
    executor = ThreadExecutor(lambda name: (quick, []))
    executor.start(3)
    executor.submit(1, StepTask("quick", ("",), "run", 1, (), None, ValueStore(str(tmp_path / "data"))))
    job, result = executor.results.get(timeout=30)
    assert (job, result.outcome) == (1, "materialized")
    executor.close()
    # At once, not eventually: a worker still waking up here could be the one the interpreter's
    # finalization catches.
    assert not _assetflow_threads() - before  # (threads of earlier tests may end meanwhile: not equality)


def test_closing_the_thread_executor_does_not_wait_for_an_abandoned_attempt(tmp_path: Path) -> None:
    release = threading.Event()

    started = threading.Event()

    @af.asset
    def stuck() -> bytes:
        started.set()
        release.wait(30)
        return b"late"

    before = _assetflow_threads()
    executor = ThreadExecutor(lambda name: (stuck, []))
    executor.start(2)
    executor.submit(1, StepTask("stuck", ("",), "run", 1, (), None, ValueStore(str(tmp_path / "data"))))
    assert started.wait(30)
    executor.abandon(1)  # a timeout: a replacement takes the slot
    try:
        executor.close()
        left = _assetflow_threads() - before
        assert len(left) == 1  # the one still inside the attempt; the idle one and the replacement ended
    finally:
        release.set()
    for thread in left:
        thread.join(30)
    assert executor.results.empty()  # an abandoned attempt's result is dropped


def test_a_held_store_leaves_no_helper_thread_behind(tmp_path: Path) -> None:
    store = LineageStore(tmp_path / "lineage.duckdb")
    for run_id in ("r1", "r2", None):  # a new file, an existing one, and a block that never used it
        before = set(threading.enumerate())
        with store.held(linger_s=30):
            if run_id is not None:
                store.begin_run(run_id, "manual", {}, [], datetime(2024, 1, 1, tzinfo=timezone.utc), CATALOGUE)
        left = {t for t in threading.enumerate() if t.is_alive()} - before
        assert not left, left  # the opener and the linger timer both ended


def test_a_run_whose_step_timed_out_returns_without_waiting_for_that_step(tmp_path: Path) -> None:
    write_project(tmp_path, """
import pathlib
import time

import assetflow as af

RELEASE = pathlib.Path(__file__).resolve().parent / "release"

@af.asset(timeout=0.2)
def stuck() -> bytes:
    while not RELEASE.exists():
        time.sleep(0.005)
    return b"late"

@af.asset
def quick() -> bytes:
    return b"q"

defs = af.Definitions(assets=[stuck, quick])
""")
    defs = load_defs(tmp_path)
    before = _assetflow_threads()
    try:
        result = af.materialize(defs, store=str(tmp_path / "lineage.duckdb"), data=str(tmp_path / "data"),
                                max_concurrency=3)
        assert result.counts["failed"] == 1 and result.counts["materialized"] == 1
        # The abandoned attempt's worker runs on; every idle worker has ended.
        left = _assetflow_threads() - before
        assert [t.name for t in left] == ["assetflow-worker"]
    finally:
        (tmp_path / "release").write_text("")
    for thread in left:
        thread.join(30)
    assert not any(t.is_alive() for t in left)
