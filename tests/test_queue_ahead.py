"""Attempts queued ahead in the thread executor.

A worker thread takes its next attempt from the executor's queue the moment it finishes one, instead of
sleeping until the coordinator hears of the result and hands it another (a thread wake-up costs about as
much as a no-op step). The rules that keep this safe:

* the queue ahead is bounded (``QUEUE_AHEAD_PER_SLOT`` attempts per slot), and only the slots run at once;
* an attempt with a timeout is handed over only when a slot is free, since its clock starts then;
* an attempt given up while still queued (Ctrl-C) never starts.

The executor here is the real :class:`ThreadExecutor`, subclassed only to count what it was handed.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import assetflow as af
from assetflow import api
from assetflow import executors
from assetflow.executors import BatchedResults, ThreadExecutor
from assetflow.values import ValueStore
from assetflow.worker import StepTask
from project_kit import load_defs, write_project

NOW = "2024-01-11T00:00:00Z"


class CountingThreads(ThreadExecutor):
    """The thread executor, counting attempts handed over and not yet reported back."""

    instances: list[CountingThreads] = []

    def __init__(self, resolve: Any) -> None:
        super().__init__(resolve)
        self.lock = threading.Lock()
        self.outstanding = 0
        self.peak = 0
        self.outstanding_at_submit: dict[str, int] = {}
        executor = self

        class Reported(BatchedResults):
            def put(self, item: Any, wake: bool = True) -> None:
                with executor.lock:
                    executor.outstanding -= 1
                super().put(item, wake)

        self.results = Reported(self._watch)
        CountingThreads.instances.append(self)

    def submit(self, job: int, task: StepTask) -> None:
        with self.lock:
            self.outstanding += 1
            self.peak = max(self.peak, self.outstanding)
            self.outstanding_at_submit[task.asset] = self.outstanding
        super().submit(job, task)


PIPELINE = '''
import threading
import time

import assetflow as af

RUNNING = [0]
PEAK = [0]
LOCK = threading.Lock()


def work():
    with LOCK:
        RUNNING[0] += 1
        PEAK[0] = max(PEAK[0], RUNNING[0])
    time.sleep(0.2)  # long enough that the coordinator fills the queue before any attempt ends
    with LOCK:
        RUNNING[0] -= 1
    return b"x"


@af.asset
def a0() -> bytes:
    return work()


@af.asset
def a1() -> bytes:
    return work()


@af.asset
def a2() -> bytes:
    return work()


@af.asset
def a3() -> bytes:
    return work()


@af.asset
def a4() -> bytes:
    return work()


@af.asset
def a5() -> bytes:
    return work()


@af.asset(timeout=60)
def b_timed() -> bytes:
    return work()


defs = af.Definitions(assets=[a0, a1, a2, a3, a4, a5, b_timed])
'''


@pytest.fixture()
def counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, CountingThreads]:
    write_project(tmp_path, PIPELINE)
    monkeypatch.setenv("ASSETFLOW_NOW", NOW)
    monkeypatch.setattr(api, "ThreadExecutor", CountingThreads)
    monkeypatch.setattr(executors, "QUEUE_AHEAD_PER_SLOT", 1)  # a bound these seven attempts reach
    CountingThreads.instances.clear()
    defs = load_defs(tmp_path)
    result = af.materialize(defs, max_concurrency=2, store=str(tmp_path / "lineage.duckdb"),
                            data=str(tmp_path / "data"))
    assert result.status == "success"
    assert result.counts["materialized"] == 7
    (executor,) = CountingThreads.instances
    return defs, executor


def test_workers_find_their_next_attempt_already_queued(counted: tuple[Any, CountingThreads]) -> None:
    _, executor = counted
    assert executor.peak == 4  # two running and two waiting in the executor's queue


def test_only_the_slots_run_at_once_however_many_are_queued(counted: tuple[Any, CountingThreads]) -> None:
    defs, _ = counted
    module = __import__(defs.module_name)
    assert module.PEAK[0] == 2


def test_an_attempt_with_a_timeout_is_handed_over_only_to_a_free_slot(counted: tuple[Any, CountingThreads]) -> None:
    _, executor = counted
    assert executor.outstanding_at_submit["b_timed"] <= 2


def test_an_attempt_abandoned_while_queued_never_starts(tmp_path: Path) -> None:
    started: list[str] = []
    release = threading.Event()

    @af.asset
    def first() -> bytes:
        started.append("first")
        release.wait(30)
        return b"1"

    @af.asset
    def second() -> bytes:
        started.append("second")
        return b"2"

    assets = {"first": first, "second": second}
    executor = ThreadExecutor(lambda name: (assets[name], []))
    executor.start(1)
    values = ValueStore(str(tmp_path / "data"))
    for job, name in ((1, "first"), (2, "second")):
        executor.submit(job, StepTask(name, ("",), "run", 1, (), None, values))
    executor.abandon(2)  # Ctrl-C while "second" still waits behind "first"
    release.set()
    job, result = executor.results.get(timeout=30)
    executor.close()
    assert (job, result.outcome) == (1, "materialized")
    assert started == ["first"]
    assert executor.results.empty()
