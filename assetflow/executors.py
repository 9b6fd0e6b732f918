"""Where attempts run. The coordinator owns scheduling, limits and retries; an executor only runs what it
is handed on a fixed number of slots and reports results on a queue.

Abandoning an attempt (timeout, Ctrl-C) hands its slot to a fresh worker at once: a thread cannot be
killed, so the abandoned one finishes in the background and its result is dropped before anything is
written; a worker process is killed.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Protocol

from .definitions import AssetDef, CheckDef
from .worker import Abandoned, AttemptResult, StepTask, run_attempt

Resolver = Callable[[str], tuple[AssetDef, list[CheckDef]]]
Result = tuple[int, "AttemptResult | BaseException"]


class Executor(Protocol):
    """The interface every executor implements."""

    results: queue.Queue[Result] | queue.SimpleQueue[Result]
    queue_ahead: int
    """How many attempts may wait in the executor beyond its busy slots, to start the moment a slot
    frees instead of after a round trip through the coordinator (a thread wake-up costs ~0.1 ms
    here, as much as a no-op step). 0 where waiting work would not be bounded by the slots."""

    def start(self, slots: int) -> None:
        """Start ``slots`` workers."""

    def submit(self, job: int, task: StepTask) -> None:
        """Run ``task``; its result arrives on ``results`` as ``(job, result)``."""

    def abandon(self, job: int) -> None:
        """Give up on ``job``: drop its result, never write its value, free its slot."""

    def close(self) -> None:
        """Stop the workers (abandoned ones are left to finish on their own)."""


class ThreadExecutor:
    """Runs attempts on worker threads in this process (the default)."""

    def __init__(self, resolve: Resolver) -> None:
        self.resolve = resolve
        # SimpleQueue (C): half the cost of queue.Queue per hand-off, and every step makes two.
        self.results: queue.SimpleQueue[Result] = queue.SimpleQueue()
        self._inbox: queue.SimpleQueue[tuple[int, StepTask] | None] = queue.SimpleQueue()
        # Abandoned jobs; a set rather than an Event per job, which costs more than a no-op step.
        self._abandoned: set[int] = set()
        self._slots: list[_Slot] = []
        self.queue_ahead = 0

    def start(self, slots: int) -> None:
        """Start ``slots`` worker threads (which take queued attempts in order: ``queue_ahead`` of them
        may wait)."""
        self.queue_ahead = slots
        for _ in range(slots):
            self._spawn()

    def _spawn(self) -> None:
        slot = _Slot()
        slot.thread = threading.Thread(target=self._loop, args=(slot,), name="assetflow-worker", daemon=True)
        self._slots.append(slot)
        slot.thread.start()

    def _loop(self, slot: _Slot) -> None:
        while True:
            item = self._inbox.get()
            if item is None:
                return
            job, task = item
            slot.job = job
            abandoned = self._abandoned
            if job in abandoned:  # given up while still queued: never start it
                abandoned.discard(job)
                return  # its replacement worker already holds this slot
            result: AttemptResult | BaseException | None
            try:
                asset, checks = self.resolve(task.asset)
                result = run_attempt(task, asset, checks, lambda: job in abandoned)
            except Abandoned:
                result = None
            except BaseException as exc:  # a bug must surface as a failed attempt, not a hung run
                result = exc
            if job in abandoned:
                abandoned.discard(job)
                return  # abandoned: a replacement worker already holds this slot
            slot.job = -1  # idle before the coordinator hears of it: close() then waits for this thread
            self.results.put((job, result))  # type: ignore[arg-type]

    def submit(self, job: int, task: StepTask) -> None:
        """Queue one attempt."""
        self._inbox.put((job, task))

    def abandon(self, job: int) -> None:
        """Drop ``job``'s result and replace its worker."""
        if job not in self._abandoned:
            self._abandoned.add(job)
            self._spawn()

    def close(self) -> None:
        """Stop the workers, and wait for the idle ones so that none is left to wake while the
        interpreter exits. One still inside an attempt (abandoned, or the run is ending on an error)
        finishes on its own."""
        for _ in self._slots:
            self._inbox.put(None)
        for slot in self._slots:
            if slot.job < 0:
                slot.thread.join()


class _Slot:
    """One worker thread and the job it is running (-1 when idle)."""

    __slots__ = ("thread", "job")

    def __init__(self) -> None:
        self.thread: threading.Thread
        self.job = -1
