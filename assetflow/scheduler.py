"""The coordinator: runs a plan's steps in dependency order under concurrency and pool limits, with
retries, timeouts, early cutoff and failure propagation, recording lineage in batches.

It is a single-threaded event loop over *units* (one step, or a contiguous range of partitions of a
``single_run`` asset). Workers report on a queue; waiting for a retry is a timer, never a held slot.
Lineage goes to a background :class:`~assetflow.recorder.Recorder` in batches — only results whose
values are already written are ever in a batch, so a crash loses at most some records, never
consistency.
"""

from __future__ import annotations

import heapq
import json
import queue
import random
import signal
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from . import arrays
from .clock import Clock
from .definitions import AssetDef, SourceDef
from .errors import Interrupted
from .gcpause import without_gc_pauses
from .executors import Executor
from .lineage_store import ATTEMPT_SCHEMA, BATCH_INPUT_SCHEMA, CHECK_SCHEMA, Batch, LineageStore
from .planner import Plan, external
from .rebuilder import Reason
from .recorder import Recorder
from .retry import retry_delay, should_retry
from .values import ValueStore
from .worker import AttemptResult, InputSpec, StepTask

TICK_S = 0.5
"""Longest the loop sleeps without a worker result (it also checks Ctrl-C, timers and the recorder)."""
FLUSH_ROWS = 20_000


@dataclass(slots=True)
class StepReport:
    """How one (asset, partition) ended in a run (the contract's ``materialize`` step)."""

    asset: str
    partition: str | None
    outcome: str
    attempts: int = 0
    data_version: str | None = None
    duration_s: float = 0.0
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _Input:
    """One upstream edge of an asset, resolved once per run for every step of that asset."""

    upstream: str
    up_first: int  # global id of the upstream's first partition
    up_keys: tuple[str, ...]
    source: SourceDef | None
    param: str | None  # None: order-only
    many: bool  # the parameter receives {partition: value}
    indptr: list[int]  # the upstream indices of downstream index i are ups[indptr[i]:indptr[i + 1]]
    ups: list[int]


@dataclass(slots=True)
class _Unit:
    gids: list[int]
    asset: str
    pool: str | None
    first: int  # global id of the asset's first partition: gid - first indexes its keys
    timeout: float | None  # the asset's, per attempt
    attempt: int = 0
    consumed: list[tuple[int, str, str, str | None]] | tuple[()] = ()  # set per attempt (see _task)
    deadline: float | None = None
    started_at: Any = None
    t0: float = 0.0


class _Buffer:
    """Lineage rows waiting for the next batched write, as tuples in their schema's column order.
    ``headed`` marks the global ids that have a heads row (in the snapshot, or from a row of this run);
    ``new_heads`` stays true while no buffered success is of such an id (see ``Batch.new_heads``)."""

    def __init__(self, headed: np.ndarray) -> None:
        self.attempts: list[tuple[Any, ...]] = []
        self.inputs: list[tuple[Any, ...]] = []
        self.checks: list[tuple[Any, ...]] = []
        self.headed = headed
        self.new_heads = True

    def heads_move(self, gid: int, outcome: str) -> None:
        """Note an attempt row of ``gid``: a success moves its head, a failure may flag it."""
        if outcome == "materialized" or outcome == "failed" or outcome == "check_failed":
            if self.headed[gid] and outcome == "materialized":
                self.new_heads = False
            self.headed[gid] = True

    def __len__(self) -> int:
        return len(self.attempts) + len(self.inputs)

    def take(self) -> Batch:
        batch = Batch(
            arrays.table(self.attempts, ATTEMPT_SCHEMA),
            arrays.table(self.inputs, BATCH_INPUT_SCHEMA),
            arrays.table(self.checks, CHECK_SCHEMA),
            self.new_heads,
        )
        self.attempts, self.inputs, self.checks = [], [], []
        self.new_heads = True
        return batch


def _headed(plan: Plan) -> np.ndarray:
    """Which global ids of the plan's layout have a heads row in the snapshot it was planned from."""
    gid = arrays.to_numpy(plan.snapshot.heads.column("gid"))
    headed = np.zeros(plan.layout.size, dtype=bool)
    headed[gid[gid >= 0]] = True
    return headed


class Coordinator:
    """Executes one plan. Construct, then call :meth:`run` once."""

    def __init__(self, *, plan: Plan, executor: Executor, values: ValueStore, store: LineageStore, run_id: str,
                 clock: Clock, max_concurrency: int, pools: Mapping[str, int], stale: bool,
                 config: Mapping[str, Any], code_versions: Mapping[str, str], config_hashes: Mapping[str, str],
                 mat_id_base: int, rand: Callable[[], float] = random.random,
                 progress: Callable[[int, int], None] | None = None) -> None:
        self.plan, self.layout, self.graph = plan, plan.layout, plan.layout.graph
        self.executor, self.values, self.store, self.run_id, self.clock = executor, values, store, run_id, clock
        self.max_concurrency, self.pools, self.stale = max(1, max_concurrency), dict(pools), stale
        self.config, self.code_versions, self.config_hashes = config, code_versions, config_hashes
        self.rand, self.progress = rand, progress
        self._next_mat_id = mat_id_base
        self.buffer = _Buffer(_headed(plan))
        self.reports: dict[int, StepReport] = {}
        self.check_results: list[dict[str, Any]] = []
        self.produced: dict[int, tuple[str, str | None, str | None]] = {}
        self._build_units()

    # ---- structure ----------------------------------------------------------------------------------

    @without_gc_pauses  # ~10^5 small objects, no cycles, no user code
    def _build_units(self) -> None:
        layout, gids = self.layout, self.plan.step_gids
        nodes = layout.node_of(gids)
        # A unit is one step, or a run of consecutive partitions of one single_run asset.
        single = np.array([getattr(self.graph.nodes[n], "backfill", None) == "single_run" for n in layout.names], bool)
        starts = np.ones(len(gids), dtype=bool)
        starts[1:] = ~(single[nodes[1:]] & (nodes[1:] == nodes[:-1]) & (gids[1:] == gids[:-1] + 1))
        bounds = np.flatnonzero(starts).tolist() + [len(gids)]
        gid_list, node_list = gids.tolist(), nodes.tolist()
        about: dict[int, tuple[str, str | None, int, float | None]] = {}
        self.units: list[_Unit] = []
        for lo, hi in zip(bounds, bounds[1:]):
            node = node_list[lo]
            facts = about.get(node)
            if facts is None:
                name = layout.names[node]
                asset = self.graph.nodes[name]
                facts = about[node] = (name, asset.pool, int(layout.offsets[node]), getattr(asset, "timeout", None))
            self.units.append(_Unit(gid_list[lo:hi], *facts))
        unit_of = np.full(layout.size, -1, dtype=np.int64)
        unit_of[gids] = np.cumsum(starts) - 1
        self.unit_of = unit_of
        downs, ups = [], []
        for name in {layout.names[n] for n in np.unique(nodes).tolist()}:
            for ge in layout.edges[name]:
                both = (unit_of[ge.down] >= 0) & (unit_of[ge.up] >= 0)
                downs.append(unit_of[ge.down[both]])
                ups.append(unit_of[ge.up[both]])
        down = np.concatenate(downs) if downs else np.zeros(0, np.int64)
        up = np.concatenate(ups) if ups else np.zeros(0, np.int64)
        keep = down != up
        # Distinct (up, down) unit pairs, sorted by up: as one int64 key each (a 2-D unique sorts rows
        # as structured records, several times slower).
        n = len(self.units)
        pair = np.unique(up[keep] * n + down[keep])
        parents, kids = pair // n, pair % n
        # Python lists: the loop reads and decrements them one element at a time, which numpy scalars
        # make several times slower.
        self.pending: list[int] = np.bincount(kids, minlength=n).tolist()
        self.child_ptr: list[int] = np.searchsorted(parents, np.arange(n + 1)).tolist()
        self.children: list[int] = kids.tolist()
        self._inputs: dict[str, tuple[_Input, ...]] = {}

    # ---- main loop ----------------------------------------------------------------------------------

    def run(self) -> list[StepReport]:
        """Run every unit to an outcome; returns one report per step, in plan order. Records are flushed
        in batches while it runs; the rest is left for :meth:`final_batch`."""
        self.ready: dict[str | None, list[tuple[int, int]]] = {}
        self.running: dict[int, int] = {}  # job (one per attempt) -> unit index
        self._jobs = 0
        self.pool_running: dict[str | None, int] = {}
        self.retries: list[tuple[float, int]] = []
        self.remaining = len(self.units)
        self.done_steps = 0
        self._last_flush = time.monotonic()
        self.recorder = Recorder(self.store, self.values)
        if self.progress is not None:
            self.progress(0, len(self.plan.step_gids))  # the total is known before the first step ends
        self.executor.start(self.max_concurrency)
        self._interrupted = False
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            for index in [i for i, count in enumerate(self.pending) if count == 0]:
                self._make_ready(index)
            while self.remaining:
                if self._interrupted:
                    raise KeyboardInterrupt
                self._dispatch()
                self._wait()
                self._fire_timers()
                self._maybe_flush()
        except KeyboardInterrupt:
            for job in list(self.running):
                self.executor.abandon(job)
            raise Interrupted("interrupted") from None
        except BaseException:
            # Ending on an error: the writer finishes what it was given (durable values only) and
            # stops, so nothing is written after the caller gives up the run lock.
            with suppress(Exception):
                self.recorder.close()
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            self.executor.close()
        return [self.reports[g] for g in self.plan.step_gids.tolist()]

    def final_batch(self) -> Batch:
        """The records not written yet — after every earlier batch is committed: the caller commits them
        together with the run's end, once their values are durable (``LineageStore.write``'s
        ``make_durable``)."""
        self.recorder.close()
        return self.buffer.take()

    def _on_sigint(self, signum: int, frame: object) -> None:
        # First Ctrl-C: stop scheduling at the next loop turn (at most one flush interval away) and
        # record what finished. A second one stops at once.
        if self._interrupted:
            raise KeyboardInterrupt
        self._interrupted = True

    def _make_ready(self, index: int) -> None:
        unit = self.units[index]
        if self.stale and self._cut_off(unit):
            for gid in unit.gids:
                recorded = self._recorded(gid)
                self._report(unit, gid, "skipped", 0, recorded[0])
                self.produced[gid] = recorded
                self._row(unit, gid, "skipped", None, data_version=recorded[0])
            self._finish(index)
            return
        heapq.heappush(self.ready.setdefault(unit.pool, []), (unit.gids[0], index))

    def _cut_off(self, unit: _Unit) -> bool:
        """Early cutoff: a step stale only because its inputs were going to change, whose inputs came out
        identical, is up to date. The rebuilder decides, as it did for the plan."""
        if any(int(self.plan.reasons[g]) != Reason.upstream_stale for g in unit.gids):
            return False
        return not self.plan.recheck(np.array(unit.gids), lambda g: self._current(g)[0]).any()

    def _free(self, pool: str | None, index: int) -> bool:
        # Attempts beyond the slots wait in the executor's queue (see Executor.queue_ahead) — except
        # one with a timeout, whose clock starts at submit: it goes only where a slot is free now.
        limit = self.max_concurrency
        if self.units[index].timeout is None:
            limit += self.executor.queue_ahead
        if len(self.running) >= limit:
            return False
        # A pool counts its queued attempts too: they are bound to start before any later one.
        return pool is None or self.pool_running.get(pool, 0) < self.pools.get(pool, self.max_concurrency)

    def _dispatch(self) -> None:
        while len(self.running) < self.max_concurrency + self.executor.queue_ahead:
            candidates = [(heap[0], pool) for pool, heap in self.ready.items() if heap and self._free(pool, heap[0][1])]
            if not candidates:
                return
            (_, index), pool = min(candidates)
            heapq.heappop(self.ready[pool])
            self._start(index)

    def _start(self, index: int) -> None:
        unit = self.units[index]
        unit.attempt += 1
        task, missing = self._task(unit)
        unit.started_at, unit.t0 = self.clock.now(), time.perf_counter()
        if missing:
            self._complete(index, AttemptResult("failed", 0.0, error=missing, retryable=False))
            return
        # A job number per attempt: a late result of an abandoned attempt can never pass for its retry's.
        job = self._jobs = self._jobs + 1
        self.running[job] = index
        self.pool_running[unit.pool] = self.pool_running.get(unit.pool, 0) + 1
        self.executor.submit(job, task)
        # The timeout clock starts once the executor has the attempt (a process executor may first
        # wait for a replacement worker to boot).
        unit.deadline = time.monotonic() + unit.timeout if unit.timeout else None

    def _wait(self) -> None:
        timeout = TICK_S
        now = time.monotonic()
        if self.retries:
            timeout = min(timeout, self.retries[0][0] - now)
        deadlines = [self.units[i].deadline for i in self.running.values() if self.units[i].deadline is not None]
        if deadlines:
            timeout = min(timeout, min(deadlines) - now)
        if not self.running and not self.retries:
            return
        try:
            job, result = self.executor.results.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return
        self._on_result(job, result)
        while True:  # drain whatever else finished, before scheduling again
            try:
                job, result = self.executor.results.get_nowait()
            except queue.Empty:
                return
            self._on_result(job, result)

    def _on_result(self, job: int, result: AttemptResult | BaseException) -> None:
        index = self.running.pop(job, None)
        if index is None:
            return  # abandoned earlier
        unit = self.units[index]
        self.pool_running[unit.pool] -= 1
        if isinstance(result, BaseException):
            result = AttemptResult("failed", time.perf_counter() - unit.t0, error=f"{type(result).__name__}: {result}")
        self._complete(index, result)

    def _fire_timers(self) -> None:
        now = time.monotonic()
        while self.retries and self.retries[0][0] <= now:
            _, index = heapq.heappop(self.retries)
            heapq.heappush(self.ready.setdefault(self.units[index].pool, []), (self.units[index].gids[0], index))
        for job, index in list(self.running.items()):
            unit = self.units[index]
            if unit.deadline is not None and unit.deadline <= now:
                self.executor.abandon(job)
                del self.running[job]
                self.pool_running[unit.pool] -= 1
                timeout = self.graph.nodes[unit.asset].timeout
                self._complete(index, AttemptResult("failed", time.perf_counter() - unit.t0,
                                                    error=f"timed_out: attempt exceeded {timeout:g}s"))

    # ---- outcomes -----------------------------------------------------------------------------------

    def _complete(self, index: int, result: AttemptResult) -> None:
        unit = self.units[index]
        asset = self.graph.nodes[unit.asset]
        assert isinstance(asset, AssetDef)
        if result.outcome == "materialized":
            for gid, stored in zip(unit.gids, result.stored):
                self.produced[gid] = (stored.data_version, stored.path, stored.format)
                mat_id, key = self._row(unit, gid, "materialized", result, stored=stored)
                self.buffer.inputs.extend((mat_id, up_asset, up_key, dv, unit.asset, key)  # BATCH_INPUT_SCHEMA order
                                          for down, up_asset, up_key, dv in unit.consumed if down == gid)
                self._report(unit, gid, "materialized", unit.attempt, stored.data_version, result.duration_s)
            self._checks(result)
            self._finish(index)
            return
        for gid in unit.gids:
            self._row(unit, gid, result.outcome, result)
        self._checks(result)
        if result.outcome == "failed" and should_retry(asset.retry, unit.attempt, result.retryable):
            delay = retry_delay(asset.retry, unit.attempt, self.rand())
            heapq.heappush(self.retries, (time.monotonic() + delay, index))
            return
        for gid in unit.gids:
            self._report(unit, gid, result.outcome, unit.attempt, None, result.duration_s, result.error)
        self._fail_downstream(index, result.outcome)
        self._finish(index)

    def _checks(self, result: AttemptResult) -> None:
        if not result.checks:
            return
        at = self.clock.now()
        for c in result.checks:
            self.check_results.append({"asset": self.graph.defs.checks[c.name].asset, "partition": external(c.partition),
                                       "check": c.name, "passed": c.passed, "blocking": c.blocking, "error": c.error})
            self.buffer.checks.append((  # CHECK_SCHEMA order
                self.run_id, self.graph.defs.checks[c.name].asset, c.partition, c.name, c.passed, c.blocking,
                c.error, json.dumps(dict(c.metadata), default=str), at))

    def _fail_downstream(self, index: int, outcome: str) -> None:
        todo = self.children[self.child_ptr[index]:self.child_ptr[index + 1]]
        while todo:
            child = todo.pop()
            unit = self.units[child]
            if unit.gids[0] in self.reports:
                continue
            for gid in unit.gids:
                self._report(unit, gid, "upstream_failed", 0, None)
                self._row(unit, gid, "upstream_failed", None)
            self.pending[child] = -1  # never becomes ready
            self.remaining -= 1
            todo.extend(self.children[self.child_ptr[child]:self.child_ptr[child + 1]])

    def _finish(self, index: int) -> None:
        self.remaining -= 1
        pending = self.pending
        for child in self.children[self.child_ptr[index]:self.child_ptr[index + 1]]:
            if pending[child] > 0:
                pending[child] -= 1
                if pending[child] == 0:
                    self._make_ready(child)
        if self.progress is not None:
            self.progress(len(self.reports), len(self.plan.step_gids))

    def _report(self, unit: _Unit, gid: int, outcome: str, attempts: int, dv: str | None, duration: float = 0.0,
                error: str | None = None) -> None:
        key = self.layout.keys[unit.asset][gid - unit.first]
        self.reports[gid] = StepReport(unit.asset, external(key), outcome, attempts, dv, round(duration, 6), error)

    def _row(self, unit: _Unit, gid: int, outcome: str, result: AttemptResult | None, stored: Any = None, data_version: str | None = None) -> tuple[int, str]:
        mat_id = self._next_mat_id
        self._next_mat_id += 1
        key = self.layout.keys[unit.asset][gid - unit.first]
        asset, started = unit.asset, unit.started_at or self.clock.now()
        code_version, config_hash = self.code_versions.get(asset), self.config_hashes.get(asset)
        if stored is not None:
            data_version, path, fmt, size = stored.data_version, stored.path, stored.format, stored.size
        else:
            path = fmt = size = None
        if result is None:
            duration, error, trace, logs, metadata = 0.0, None, None, None, None
        else:
            duration, error, trace, logs = result.duration_s, result.error, result.traceback, result.logs
            metadata = json.dumps(dict(result.metadata), default=str) if result.metadata else None
        self.buffer.heads_move(gid, outcome)
        self.buffer.attempts.append((  # ATTEMPT_SCHEMA order
            mat_id, self.run_id, asset, key, unit.attempt, outcome, started, duration, error, trace, logs,
            code_version, config_hash, data_version, path, fmt, size, metadata))
        return mat_id, key  # the key too: a success's input rows carry it (BATCH_INPUT_SCHEMA)

    # ---- tasks --------------------------------------------------------------------------------------

    @cached_property
    def _recorded_columns(self) -> tuple[list[str | None], list[str | None], list[str | None]]:
        # As Python lists once, on first use: a run with nothing to do never pays for 10^5 strings.
        aligned = self.plan.aligned
        return (aligned.column("data_version").to_pylist(), aligned.column("path").to_pylist(),
                aligned.column("format").to_pylist())

    def _recorded(self, gid: int) -> tuple[str | None, str | None, str | None]:
        """(data version, path, format) of the value recorded for ``gid`` before this run."""
        versions, paths, formats = self._recorded_columns
        return versions[gid], paths[gid], formats[gid]

    def _current(self, gid: int) -> tuple[str | None, str | None, str | None]:
        got = self.produced.get(gid)
        return got if got is not None else self._recorded(gid)

    def _inputs_of(self, name: str) -> tuple[_Input, ...]:
        """The upstream edges of ``name``, resolved once per run (every step of the asset reuses them)."""
        found = self._inputs.get(name)
        if found is None:
            layout, asset = self.layout, self.graph.nodes[name]
            found = []
            for ge in layout.edges[name]:
                upstream = self.graph.nodes[ge.edge.upstream]
                # A single-run range receives every partition of its range, so even a one-to-one input
                # arrives as {partition: value}.
                many = ge.edge.mapping.many(asset.partitions, upstream.partitions) or (
                    asset.backfill == "single_run" and upstream.partitions is not None)
                found.append(_Input(
                    upstream.name, layout.span(upstream.name)[0], layout.keys[upstream.name],
                    upstream if isinstance(upstream, SourceDef) else None, ge.edge.param, many,
                    ge.local.indptr.tolist(), ge.local.up.tolist()))
            found = self._inputs[name] = tuple(found)
        return found

    def _task(self, unit: _Unit) -> tuple[StepTask, str | None]:
        first, current = unit.first, self._current
        consumed: list[tuple[int, str, str, str | None]] = []
        unit.consumed = consumed
        inputs = []
        missing = None
        for edge in self._inputs_of(unit.asset):
            up_first, up_keys, indptr, ups = edge.up_first, edge.up_keys, edge.indptr, edge.ups
            wanted: list[int] = []
            for gid in unit.gids:
                local = gid - first
                for local_up in ups[indptr[local]:indptr[local + 1]]:
                    dv = current(up_first + local_up)[0]
                    consumed.append((gid, edge.upstream, up_keys[local_up], dv))
                    wanted.append(local_up)
                    if dv is None and missing is None:
                        key = external(up_keys[local_up])
                        missing = (f"source '{edge.upstream}' partition {key!r} is absent" if edge.source
                                   else f"input '{edge.upstream}' partition {key!r} has no value")
            if edge.param is None:
                continue
            entries = []
            for local_up in sorted(set(wanted)):
                key = up_keys[local_up]
                if edge.source is not None:
                    entries.append((key, edge.source.path_for(key or None) if edge.source.path else key, None))
                else:
                    _, path, fmt = current(up_first + local_up)
                    entries.append((key, path, fmt))
            inputs.append(InputSpec(edge.param, edge.upstream, edge.many, edge.source is not None, tuple(entries)))
        keys = self.layout.keys[unit.asset]
        partitions = tuple(keys[g - first] for g in unit.gids)
        task = StepTask(unit.asset, partitions, self.run_id, unit.attempt, tuple(inputs), self.config.get(unit.asset), self.values)
        return task, missing

    def _maybe_flush(self) -> None:
        due = time.monotonic() - self._last_flush >= self.recorder.interval
        if (len(self.buffer) or self.buffer.checks) and (due or len(self.buffer) >= FLUSH_ROWS):
            self._last_flush = time.monotonic()
            self.recorder.submit(self.buffer.take)
