"""Where attempts run. The coordinator owns scheduling, limits and retries; an executor only runs what it
is handed on a fixed number of slots and reports results on a queue.

Abandoning an attempt (timeout, Ctrl-C) hands its slot to a fresh worker at once: a thread cannot be
killed, so the abandoned one finishes in the background and its result is dropped before anything is
written; a worker process is killed.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Protocol

from .definitions import AssetDef, CheckDef
from .worker import Abandoned, AttemptResult, StepTask, run_attempt

Resolver = Callable[[str], tuple[AssetDef, list[CheckDef]]]
Result = tuple[int, "AttemptResult | BaseException"]


class Executor(Protocol):
    """The interface every executor implements."""

    results: queue.Queue[Result] | queue.SimpleQueue[Result] | BatchedResults
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


QUEUE_AHEAD_PER_SLOT = 8
"""Attempts queued per worker thread beyond the one it runs, so that a run of short attempts goes from
one to the next without a round trip through the coordinator."""
SLOW_S = 0.005
"""An attempt running this long is real work: its result wakes the coordinator at once, and the thread
executor puts all its threads to work (see :class:`ThreadExecutor`)."""
WAITED_S = 0.001
"""An attempt that spent this long waiting rather than computing (I/O, a sleep, a lock) puts all the
thread executor's threads to work: other attempts can run meanwhile."""
BUSY_S = 0.001
"""Attempts averaging this long (a moving average over the last several) put all the thread
executor's threads to work, however they spend it: a thread's CPU time cannot tell computing under
the GIL from computing without it (hashing, compression, numpy, Arrow), and only the second runs side
by side. Below it, a step's own cost is mostly the engine's bookkeeping, which holds the GIL anyway."""
_BUSY_WEIGHT = 0.125
"""Weight of the latest attempt in that moving average (~the last eight count): one slow outlier
among no-op steps (a collection, a cold cache) does not open the lanes, a run of 1 ms attempts does
within a few."""


class BatchedResults:
    """The thread executor's result queue, which wakes the coordinator once per batch of short attempts.

    Every wake-up is a GIL hand-off between two runnable threads, and every syscall of a worker is then
    a chance to wait for the GIL to come back: waking the coordinator for each no-op attempt made a
    200-step run spend more time switching threads than stepping. So the coordinator sleeps until a
    worker is about to go idle (its queue ran dry: there is work to hand out), or an attempt took at
    least :data:`SLOW_S` (real work is acted on at once), or its own timeout passes — and then takes
    every result there is. While ``watch`` says so, it also looks in every :data:`SLOW_S` to call it.
    """

    def __init__(self, watch: Callable[[], bool]) -> None:
        self._items: queue.SimpleQueue[Result] = queue.SimpleQueue()
        self._ready = threading.Event()
        self._watch = watch

    def put(self, item: Result, wake: bool = True) -> None:
        """Add a result; ``wake`` the coordinator now (else at the next wake-up)."""
        self._items.put(item)
        if wake:
            self._ready.set()

    def wake(self) -> None:
        """Wake the coordinator (it takes whatever results are there)."""
        self._ready.set()

    def get(self, timeout: float | None = None) -> Result:
        """The next result, once a wake-up says there is something to act on (or ``timeout`` passes
        with results waiting); ``queue.Empty`` after ``timeout`` without any."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            watching = self._watch()
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return self._items.get_nowait()
            if self._ready.wait(SLOW_S if watching and (left is None or left > SLOW_S) else left):
                self._ready.clear()  # before taking: a wake-up after this is for results not taken yet
                try:
                    return self._items.get_nowait()
                except queue.Empty:
                    continue  # a worker went idle with nothing done (one that has just started)

    def get_nowait(self) -> Result:
        """The next result if there is one; ``queue.Empty`` otherwise."""
        return self._items.get_nowait()

    def empty(self) -> bool:
        """Whether no result is waiting."""
        return self._items.empty()


class ThreadExecutor:
    """Runs attempts on worker threads in this process (the default).

    Narrow until proven slow: a run starts with one *lane* (one thread takes attempts; the others wait
    for a lane, not for work) and opens every lane once an attempt has run for :data:`SLOW_S`, or
    waited for :data:`WAITED_S` (I/O, a sleep), or attempts average :data:`BUSY_S`, or one has a
    timeout. Threads only help attempts that release the GIL for a while; for no-op-sized ones, each
    extra runnable thread turns every syscall of every worker into a GIL hand-off (W1's 200 no-op
    steps: ~8 % of the run). A run of real work loses at most :data:`SLOW_S` (or a few attempts of
    :data:`BUSY_S` and more) of concurrency at its start; only attempts averaging under :data:`BUSY_S`
    run one at a time — mostly the engine's own bookkeeping, which would hold the GIL anyway.
    """

    def __init__(self, resolve: Resolver) -> None:
        self.resolve = resolve
        self.results = BatchedResults(self._watch)
        self._inbox: queue.SimpleQueue[tuple[int, StepTask] | None] = queue.SimpleQueue()
        # Abandoned jobs; a set rather than an Event per job, which costs more than a no-op step.
        self._abandoned: set[int] = set()
        self._slots: list[_Slot] = []
        self.queue_ahead = 0
        self._lanes = threading.Semaphore(1)
        self._closed_lanes = 0  # lanes still to open (all of them at once, see _open_lanes)
        self._mean_s = 0.0  # moving average of attempt durations while the lanes are closed (see BUSY_S)
        self._lock = threading.Lock()

    def start(self, slots: int) -> None:
        """Start ``slots`` worker threads (which take queued attempts in order: ``queue_ahead`` of them
        may wait), on one lane to begin with."""
        self.queue_ahead = QUEUE_AHEAD_PER_SLOT * slots
        self._closed_lanes = slots - 1
        for _ in range(slots):
            self._spawn()

    def _spawn(self) -> None:
        slot = _Slot()
        slot.thread = threading.Thread(target=self._loop, args=(slot,), name="assetflow-worker", daemon=True)
        self._slots.append(slot)
        slot.thread.start()

    def _open_lanes(self, extra: int = 0) -> None:
        """Open every lane still closed, and ``extra`` more (one per abandoned attempt, which keeps its own)."""
        with self._lock:
            opening, self._closed_lanes = self._closed_lanes + extra, 0
        for _ in range(opening):
            self._lanes.release()

    def _watch(self) -> bool:
        """Called by the waiting coordinator: open the lanes if an attempt has run for SLOW_S; whether
        to keep watching (lanes are still closed)."""
        if not self._closed_lanes:
            return False
        now = time.perf_counter()
        if any(slot.started and now - slot.started >= SLOW_S for slot in self._slots):
            self._open_lanes()
            return False
        return True

    def _loop(self, slot: _Slot) -> None:
        # A lane first, then work: a thread without a lane waits on the lanes, so the coordinator's
        # submits never wake it (a thread woken only to wait again would cost the lane's holder the GIL).
        self._lanes.acquire()
        try:
            while True:
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    self.results.wake()  # going idle: the coordinator has results to act on, or work to hand out
                    item = self._inbox.get()
                if item is None:
                    return
                job, task = item
                slot.job = job
                if not self._run(slot, job, task):
                    return  # abandoned: a replacement worker already holds this slot
        finally:
            self._lanes.release()

    def _run(self, slot: _Slot, job: int, task: StepTask) -> bool:
        """Run one attempt and report it; False if it was abandoned."""
        abandoned = self._abandoned
        if job in abandoned:  # given up while still queued: never start it
            abandoned.discard(job)
            return False
        result: AttemptResult | BaseException | None
        slot.started = started = time.perf_counter()
        cpu = time.thread_time()
        try:
            asset, checks = self.resolve(task.asset)
            result = run_attempt(task, asset, checks, lambda: job in abandoned)
        except Abandoned:
            result = None
        except BaseException as exc:  # a bug must surface as a failed attempt, not a hung run
            result = exc
        slot.started = 0.0
        took = time.perf_counter() - started
        if self._closed_lanes:  # then this is the one thread taking attempts: no race on the average
            self._mean_s += (took - self._mean_s) * _BUSY_WEIGHT
            if took >= SLOW_S or took - (time.thread_time() - cpu) >= WAITED_S or self._mean_s >= BUSY_S:
                self._open_lanes()  # real work, or work that waits: the other threads can help
        if job in abandoned:
            abandoned.discard(job)
            return False
        slot.job = -1  # idle before the coordinator hears of it: close() then waits for this thread
        # A short attempt's result waits for the worker to go idle (or for a slow one) to wake the
        # coordinator: see BatchedResults.
        self.results.put((job, result), wake=took >= SLOW_S)  # type: ignore[arg-type]
        return True

    def submit(self, job: int, task: StepTask) -> None:
        """Queue one attempt (one with a timeout opens every lane: its clock is already running)."""
        if self._closed_lanes and self.resolve(task.asset)[0].timeout is not None:
            self._open_lanes()
        self._inbox.put((job, task))

    def abandon(self, job: int) -> None:
        """Drop ``job``'s result and replace its worker (with a lane of its own: the abandoned attempt
        may keep one until it ends)."""
        if job not in self._abandoned:
            self._abandoned.add(job)
            self._open_lanes(extra=1)
            self._spawn()

    def close(self) -> None:
        """Stop the workers, and wait for the idle ones so that none is left to wake while the
        interpreter exits. One still inside an attempt (abandoned, or the run is ending on an error)
        finishes on its own."""
        self._open_lanes()  # a worker holding a queued attempt must get to see the stop
        for _ in self._slots:
            self._inbox.put(None)
        for slot in self._slots:
            if slot.job < 0:
                slot.thread.join()


class _Slot:
    """One worker thread and the job it is running (-1 when idle)."""

    __slots__ = ("thread", "job", "started")

    def __init__(self) -> None:
        self.thread: threading.Thread
        self.job = -1
        self.started = 0.0  # perf_counter() when its current attempt started; 0 between attempts
