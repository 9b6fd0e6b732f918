"""The Dask executor: attempts run on a Dask distributed cluster (``--dask-address tcp://…`` or
``ASSETFLOW_DASK_ADDRESS``; a ``LocalCluster`` of worker processes when none is given).

Dask is only the transport. Scheduling, concurrency and pool limits, retries, timeouts, early cutoff
and failure propagation stay in assetflow's coordinator, exactly as with the local executors. Workers
re-import the definitions, compute, and write values straight to the data root; only the small attempt
result returns, and the coordinator alone writes lineage.

Dask's own resubmission of tasks lost with a dead worker is turned off (``allowed-failures = 0``): a
worker killed mid-step surfaces as a failed attempt and the asset's retry policy decides.
"""

from __future__ import annotations

import os
import queue
import threading
import uuid
from typing import Any

from .definitions import Definitions
from .errors import UsageError
from .processes import Locator
from .worker import AttemptResult, StepTask, run_attempt

_LOADED: dict[Locator, tuple[Definitions, dict[str, list[Any]]]] = {}
_LOAD_LOCK = threading.Lock()


def _run_on_worker(locator: Locator, task: StepTask) -> AttemptResult:
    """Executed on a Dask worker: load the definitions once per version of the project's code (a
    long-lived cluster outlives edits), then run one attempt."""
    with _LOAD_LOCK:
        if locator not in _LOADED:
            for old in [k for k in _LOADED if k.root == locator.root]:
                del _LOADED[old]
            # Modules of every project this worker served may shadow ours by name (two projects with a
            # `pipeline` or `helpers` module): import ours afresh. Loaded definitions keep their own.
            for other in list(_LOADED):
                other.forget_project_modules()
            locator.forget_project_modules()
            defs = locator.load()
            checks: dict[str, list[Any]] = {}
            for check in defs.checks.values():
                checks.setdefault(check.asset, []).append(check)
            _LOADED[locator] = (defs, checks)
    defs, checks = _LOADED[locator]
    return run_attempt(task, defs.assets[task.asset], checks.get(task.asset, []))  # type: ignore[arg-type]


class DaskExecutor:
    """Submits attempts to a Dask cluster."""

    def __init__(self, defs: Definitions, address: str | None = None, n_workers: int | None = None) -> None:
        try:
            import dask
            from distributed import Client, LocalCluster
        except ImportError:
            raise UsageError("--executor dask needs the extra: pip install 'assetflow[dask]'") from None
        self.locator = Locator.of(defs)
        self.results: queue.Queue[tuple[int, Any]] = queue.Queue()
        self.queue_ahead = 0  # Dask would run queued attempts at once: never more than the slots
        self._futures: dict[int, Any] = {}
        self._abandoned: set[int] = set()
        address = address or os.environ.get("ASSETFLOW_DASK_ADDRESS")
        dask.config.set({"distributed.scheduler.allowed-failures": 0})
        self._cluster = None
        if address:
            self.client = Client(address)
            # A scheduler we did not start has its own config: make it surface a lost worker as a
            # failed attempt instead of resubmitting behind our back.
            self.client.run_on_scheduler(_no_resubmission)
        else:
            # Dashboard on a free port: a fixed one clashes with any other cluster on the machine.
            self._cluster = LocalCluster(n_workers=n_workers or 2, threads_per_worker=1, processes=True,
                                         dashboard_address=":0")
            self.client = Client(self._cluster)

    def start(self, slots: int) -> None:
        """Nothing to start: the cluster's workers are the slots; the coordinator bounds submissions."""

    def submit(self, job: int, task: StepTask) -> None:
        """Submit one attempt; its result (or exception) arrives on ``results``."""
        future = self.client.submit(_run_on_worker, self.locator, task, pure=False,
                                    key=f"assetflow-{task.asset}-{job}-{uuid.uuid4().hex[:8]}")
        self._futures[job] = future
        future.add_done_callback(lambda f, job=job: self._done(job, f))

    def _done(self, job: int, future: Any) -> None:
        self._futures.pop(job, None)
        if job in self._abandoned:
            return
        try:
            result = future.result()
        except BaseException as exc:  # KilledWorker, CancelledError, errors in transport
            result = exc
        self.results.put((job, result))

    def abandon(self, job: int) -> None:
        """Cancel the future; a task already running finishes on its worker and is ignored."""
        self._abandoned.add(job)
        future = self._futures.pop(job, None)
        if future is not None:
            future.cancel()

    def close(self) -> None:
        """Disconnect, and stop the LocalCluster if we started one."""
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


def _no_resubmission(dask_scheduler: Any) -> None:
    """Runs on the scheduler: tasks lost with a worker are not retried by Dask."""
    dask_scheduler.allowed_failures = 0
