"""The process executor: attempts run in worker processes, for CPU-bound assets (no GIL contention) and
for timeouts that really stop the work (a timed-out worker is killed and replaced).

Workers re-import the user's definitions from the module or file that built them, so the asset
functions never cross the process boundary — only small :class:`~assetflow.worker.StepTask` and
:class:`~assetflow.worker.AttemptResult` values do. Workers write values to the data root themselves;
the coordinating process alone writes lineage.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import multiprocessing
import queue
import signal
import sys
import threading
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from .codeversion import project_modules
from .context import routed_output
from .definitions import Definitions
from .errors import UsageError
from .versioncache import project_fingerprint
from .worker import AttemptResult, StepTask, run_attempt


@dataclass(frozen=True, slots=True)
class Locator:
    """How a worker process finds the definitions: import ``module``, or execute ``file``; ``root`` and
    ``fingerprint`` identify the project's code as it is now."""

    module: str | None
    file: str | None
    path: tuple[str, ...]
    root: str
    fingerprint: str

    @staticmethod
    def of(defs: Definitions) -> Locator:
        """Where ``defs`` came from; raises if it cannot be re-imported in another process."""
        if defs.source_file is None or defs.module_name is None:
            raise UsageError("this executor needs definitions built at module level in a file")
        module = defs.module_name if defs.module_name != "__main__" else None
        return Locator(module, str(defs.source_file), tuple(sys.path), str(defs.root),
                       project_fingerprint(defs.root, [defs.source_file]))

    def forget_project_modules(self) -> None:
        """Drop the project's modules from ``sys.modules`` so the next load imports the code as it is now
        (for long-lived workers that already imported an older version)."""
        for name, _module in project_modules(self.root):
            if not name.startswith("assetflow"):
                del sys.modules[name]

    def load(self) -> Definitions:
        """Import the definitions (in the worker)."""
        sys.path[:] = list(self.path)
        loaded: Any = None
        same_file = self.module in sys.modules and self.file is not None and os.path.realpath(
            getattr(sys.modules[self.module], "__file__", "") or "") == os.path.realpath(self.file)
        if self.module and same_file:
            loaded = sys.modules[self.module]
        elif self.module and self.module not in sys.modules:
            try:
                loaded = importlib.import_module(self.module)
            except ImportError:
                loaded = None
            if loaded is not None and self.file and os.path.realpath(loaded.__file__ or "") != os.path.realpath(self.file):
                loaded = None  # another project's module of the same name: load ours from its file
        if loaded is None:
            assert self.file is not None
            name = self.module or Path(self.file).stem
            spec = importlib.util.spec_from_file_location(name, self.file)
            loaded = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            sys.modules[name] = loaded
            spec.loader.exec_module(loaded)  # type: ignore[union-attr]
        found = [v for v in vars(loaded).values() if isinstance(v, Definitions)]
        if not found:
            raise UsageError(f"no Definitions found in {self.module or self.file}")
        return getattr(loaded, "defs", None) if isinstance(getattr(loaded, "defs", None), Definitions) else found[0]


def _worker_main(conn: Connection, locator: Locator) -> None:
    """A worker process: receive tasks, run them, send results, until told to stop."""
    # Ctrl-C in a terminal reaches the whole process group; the coordinator handles it (and kills
    # workers), so a worker must not die half-way through reporting.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    defs = locator.load()
    conn.send(("ready", None))  # boot (imports) must not count against the first attempt's timeout
    checks: dict[str, list] = {}
    for check in defs.checks.values():
        checks.setdefault(check.asset, []).append(check)
    with routed_output():
        while True:
            try:
                item = conn.recv()
            except EOFError:
                return
            if item is None:
                return
            job, task = item
            try:
                result: Any = run_attempt(task, defs.assets[task.asset], checks.get(task.asset, []))  # type: ignore[arg-type]
            except BaseException as exc:  # never let a worker die on a bug: report it as a failed attempt
                result = AttemptResult("failed", 0.0, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
            try:
                conn.send((job, result))
            except Exception as exc:  # e.g. unpicklable metadata
                conn.send((job, AttemptResult("failed", 0.0, error=f"result could not be sent back: {exc}", retryable=False)))


@dataclass
class _Worker:
    process: Any
    conn: Connection
    job: int | None = None
    ready: threading.Event = field(default_factory=threading.Event)


class ProcessExecutor:
    """Runs attempts on a pool of worker processes; abandoned attempts are killed."""

    def __init__(self, defs: Definitions) -> None:
        self.locator = Locator.of(defs)
        self.results: queue.Queue[tuple[int, Any]] = queue.Queue()
        self.queue_ahead = 0  # each attempt goes to an idle worker process: none wait
        # forkserver: workers start from a clean interpreter, never from a fork of a multi-threaded one.
        self._ctx = multiprocessing.get_context("forkserver" if sys.platform != "win32" else "spawn")
        self._idle: list[_Worker] = []
        self._busy: dict[int, _Worker] = {}
        self._lock = threading.Lock()
        self._closed = False

    def start(self, slots: int) -> None:
        """Start ``slots`` worker processes and wait until they have loaded the definitions."""
        for _ in range(slots):
            self._idle.append(self._spawn())
        for worker in list(self._idle):
            worker.ready.wait(120)

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(target=_worker_main, args=(child, self.locator), daemon=True)
        process.start()
        child.close()
        worker = _Worker(process, parent)
        threading.Thread(target=self._read, args=(worker,), daemon=True, name="assetflow-proc-reader").start()
        return worker

    def _read(self, worker: _Worker) -> None:
        while True:
            try:
                job, result = worker.conn.recv()
                if job == "ready":
                    worker.ready.set()
                    continue
            except (EOFError, OSError):
                worker.ready.set()  # never leave a submitter waiting on a worker that died booting
                with self._lock:
                    job = worker.job
                    lost = job is not None and self._busy.get(job) is worker and not self._closed
                    if lost:
                        del self._busy[job]
                        self._idle.append(self._spawn())
                if lost:
                    code = worker.process.exitcode
                    self.results.put((job, RuntimeError(f"worker process died (exit code {code})")))
                return
            with self._lock:
                self._busy.pop(job, None)
                worker.job = None
                self._idle.append(worker)
            self.results.put((job, result))

    def submit(self, job: int, task: StepTask) -> None:
        """Send one attempt to an idle worker."""
        with self._lock:
            worker = self._idle.pop() if self._idle else self._spawn()
            worker.job = job
            self._busy[job] = worker
        # The coordinator starts the attempt's timeout clock now; a worker still booting (a fresh
        # replacement) is waited for first so its imports are not charged to the attempt.
        worker.ready.wait(120)
        worker.conn.send((job, task))

    def abandon(self, job: int) -> None:
        """Kill the worker running ``job`` and replace it."""
        with self._lock:
            worker = self._busy.pop(job, None)
            if worker is None:
                return
            worker.job = None
            self._idle.append(self._spawn())
        worker.process.kill()
        worker.process.join(5)

    def close(self) -> None:
        """Stop idle workers and kill busy ones."""
        with self._lock:
            self._closed = True
            idle, busy = list(self._idle), list(self._busy.values())
        for worker in idle:
            try:
                worker.conn.send(None)
            except OSError:
                pass
        for worker in busy:
            worker.process.kill()
        for worker in idle + busy:
            worker.process.join(5)
            if worker.process.is_alive():
                worker.process.kill()
