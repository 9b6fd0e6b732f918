"""The Python API and the edge of the system: here — and only here — the clock is read, the store and
data root are opened, code and sources are observed. Everything is then handed, as values, to the pure
planner and to the executor. The CLI is a thin layer over these functions."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .background import Background
from .clock import Clock, clock_from_env
from .codeversion import code_version
from .versioncache import cached_versions
from .config import ConfigSource, bind_config, read_config
from .context import routed_output
from .definitions import AssetDef, Definitions
from .errors import Interrupted, PartitionError, SelectionError, UsageError
from .executors import Executor, ThreadExecutor
from .gcpause import gc_paused, without_gc_pauses
from .graph import AssetGraph
from .layout import Layout
from .lineage_store import LineageStore, RunEnd, StoreSnapshot
from .planner import Observed, Plan, PlanRequest, plan as make_plan
from .ranges import parse_partition_filters, select_partitions, unmatched_filters
from .state import LocalState, RemoteState, open_state
from .scheduler import Coordinator
from .selection import select_assets
from .sources import observe_sources
from .values import ValueStore

if TYPE_CHECKING:
    from .results import RunResult

Partitions = str | Sequence[str] | None


@dataclass
class Project:
    """Definitions bound to lineage state, a data root and a clock: everything a command needs."""

    defs: Definitions
    graph: AssetGraph
    state: LocalState | RemoteState
    values: ValueStore
    clock: Clock

    @property
    def store(self) -> LineageStore:
        """The lineage store to read from (a downloaded copy for remote state)."""
        return self.state.reader()

    @property
    def now(self) -> datetime:
        """The clock reading for this command."""
        return self._now

    def __post_init__(self) -> None:
        self._now = self.clock.now()

    @cached_property
    def layout(self) -> Layout:
        """The graph's (asset, partition) pairs numbered at this command's clock reading."""
        return Layout(self.graph, self.now)


def open_project(defs: Definitions, *, store: str | os.PathLike[str] | None = None, data: str | None = None,
                 storage_options: Mapping[str, Any] | None = None, clock: Clock | None = None) -> Project:
    """Resolve the store and data locations (argument, then environment, then project default).
    ``storage_options`` go to fsspec for both a remote store and a remote data root."""
    if not isinstance(defs, Definitions):
        raise UsageError(f"expected af.Definitions, got {type(defs).__name__}")
    graph = AssetGraph(defs)
    root = defs.root
    store_path = store or os.environ.get("ASSETFLOW_STORE") or root / ".assetflow" / "lineage.duckdb"
    data_url = data or os.environ.get("ASSETFLOW_DATA") or str(root / ".assetflow" / "data")
    options = dict(storage_options or {})
    return Project(defs, graph, open_state(store_path, options), ValueStore(str(data_url), options), clock or clock_from_env())


def _is_asset(obj: object) -> bool:
    return isinstance(obj, AssetDef) or getattr(obj, "is_source", None) is not None


def code_versions(graph: AssetGraph) -> dict[str, str]:
    """Current code version of every buildable asset (``code_version=`` wins; the rest are hashed, or
    read from the version cache when the project's code is unchanged since they were)."""
    explicit = {a.name: a.code_version for a in graph.assets() if a.code_version}
    hashed = [a.name for a in graph.assets() if not a.code_version]
    root = graph.defs.root

    def compute(names: list[str]) -> dict[str, str]:
        return {n: code_version(graph.nodes[n].fn, project_root=root, exclude=_is_asset) for n in names}

    also = [graph.defs.source_file] if graph.defs.source_file else []
    return {**explicit, **(cached_versions(root, hashed, compute, also) if hashed else {})}


@without_gc_pauses
def observe(project: Project, config: ConfigSource = None, *, snapshot: StoreSnapshot | None = None,
            versions: Mapping[str, str] | None = None) -> tuple[Observed, dict[str, Any]]:
    """Read everything the planner needs (code, config, store snapshot, values present, sources);
    ``snapshot`` and ``versions`` when the caller has read them already.

    The store is read before the values are listed: a value is written before the lineage that names
    it, so a head read first is never missing from the listing.
    """
    instances, hashes = bind_config(project.graph, read_config(config))
    # DuckDB reads the snapshot without the GIL: code versions and the layout's arrays meanwhile.
    reading = None if snapshot is not None else Background("assetflow-read", project.store.snapshot,
                                                                 project.layout.catalogue)
    try:
        versions = versions if versions is not None else code_versions(project.graph)
        project.layout.prepare()
    except BaseException:
        if reading is not None:
            reading.wait()  # not left inside DuckDB behind the error
        raise
    snapshot = snapshot if reading is None else reading.result()
    present = frozenset(project.values.list_paths([a.name for a in project.graph.assets()]))
    sources = observe_sources(project.graph.sources(), project.now)
    return Observed(snapshot, versions, hashes, present, sources), instances


def build_request(graph: AssetGraph, select: Sequence[str] | str | None, stale: bool, partitions: Partitions,
                  now: datetime) -> PlanRequest:
    """Validate the selection and partition filters into a request (exit 2 on any mistake)."""
    chosen = select_assets(graph, select)
    texts = [partitions] if isinstance(partitions, str) else list(partitions or [])
    filters = parse_partition_filters(texts) if texts else ()
    if filters:
        # A filter that fits no selected asset is a typo, not "everything": refuse it.
        unmatched = unmatched_filters(filters, [graph.nodes[name].partitions for name in chosen])
        if unmatched:
            raise PartitionError(f"--partitions {unmatched[0].text} matches no partitions of the selected assets")
        for name in chosen:  # validates keys and bounds against each definition
            select_partitions(filters, graph.nodes[name].partitions, now)
    return PlanRequest(frozenset(chosen), tuple(filters), stale)


def plan(defs: Definitions, select: Sequence[str] | str | None = None, stale: bool = False,
         partitions: Partitions = None, *, store: str | None = None, data: str | None = None,
         config: ConfigSource = None, storage_options: Mapping[str, Any] | None = None) -> Plan:
    """What ``materialize`` would run, with reasons. Changes nothing."""
    project = open_project(defs, store=store, data=data, storage_options=storage_options)
    request = build_request(project.graph, select, stale, partitions, project.now)
    observed, _ = observe(project, config)
    return make_plan(project.layout, observed, request)


def _kind(stale: bool, partitions: Partitions) -> str:
    return "backfill" if partitions else "stale" if stale else "manual"


def new_run_id(now: datetime) -> str:
    """A unique run id that sorts by time."""
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def make_executor(kind: str, project: Project, **options: Any) -> Executor:
    """The executor named on the command line."""
    graph = project.graph

    def resolve(name: str):
        return graph.nodes[name], graph.checks.get(name, [])

    if kind == "threads":
        return ThreadExecutor(resolve)
    if kind == "processes":
        from .processes import ProcessExecutor

        return ProcessExecutor(project.defs)
    if kind == "dask":
        from .dask_executor import DaskExecutor

        return DaskExecutor(project.defs, **options)
    raise UsageError(f"unknown executor '{kind}': use threads, processes or dask")


def materialize(defs: Definitions, select: Sequence[str] | str | None = None, stale: bool = False,
                partitions: Partitions = None, *, max_concurrency: int | None = None,
                tags: Mapping[str, str] | None = None, config: ConfigSource = None, executor: str = "threads",
                store: str | None = None, data: str | None = None, wait: bool = False,
                progress: Callable[[int, int], None] | None = None, on_plan: Callable[[Plan], None] | None = None,
                executor_options: Mapping[str, Any] | None = None,
                storage_options: Mapping[str, Any] | None = None) -> RunResult:
    """Build the selected (asset, partition) pairs — only the stale ones with ``stale=True`` — and record
    their lineage. Returns the run's outcome; raises on usage errors before anything is written."""
    project = open_project(defs, store=store, data=data, storage_options=storage_options)
    request = build_request(project.graph, select, stale, partitions, project.now)
    if max_concurrency is not None and max_concurrency < 1:
        raise UsageError(f"--max-concurrency {max_concurrency} must be at least 1")
    bind_config(project.graph, read_config(config))  # invalid config: exit 2 before anything is written
    pool = make_executor(executor, project, **dict(executor_options or {}))
    kind = _kind(stale, partitions)
    run_tags = {**{str(k): str(v) for k, v in (tags or {}).items()}, "kind": kind}
    run_id = new_run_id(project.now)
    lock = project.state.lock(run_id, wait=wait)
    try:
        store = project.state.writer()
        with store.held():  # a short run opens the DuckDB file once (see LineageStore.held)
            return _run(project, store, pool, request, config, run_id=run_id, kind=kind, tags=run_tags,
                        stale=stale, max_concurrency=max_concurrency, progress=progress, on_plan=on_plan)
    finally:
        lock.release()


def _run(project: Project, store: LineageStore, pool: Executor, request: PlanRequest, config: ConfigSource, *,
         run_id: str, kind: str, tags: dict[str, str], stale: bool, max_concurrency: int | None,
         progress: Callable[[int, int], None] | None, on_plan: Callable[[Plan], None] | None) -> RunResult:
    """Record, plan, execute and record the end of one run (under the run lock)."""
    from .results import RunResult, StepResultModel  # pydantic: imported by the commands that return models
    # Code versions and the layout's arrays first: the store is still opening in the background
    # meanwhile (LineageStore.held).
    versions = code_versions(project.graph)
    project.layout.prepare()
    # Under the lock, the run is recorded and the store read in one go: another run may have
    # finished while we waited for it.
    mat_id_base, snapshot = store.begin_run(run_id, kind, tags, list(request.select), project.clock.now(),
                                            project.layout.catalogue)
    observed, instances = observe(project, config, snapshot=snapshot, versions=versions)
    the_plan = make_plan(project.layout, observed, request)
    if on_plan is not None:
        on_plan(the_plan)
    if observed.source_versions is not None and observed.source_versions.num_rows:
        store.record_observations(_stamped(observed.source_versions, project.now))
    coordinator = Coordinator(
        plan=the_plan, executor=pool, values=project.values, store=store, run_id=run_id,
        clock=project.clock, max_concurrency=max_concurrency or os.cpu_count() or 1, pools=project.defs.pools,
        stale=stale, config=instances, code_versions=observed.code_versions,
        config_hashes=observed.config_hashes, mat_id_base=mat_id_base, progress=progress,
    )
    interrupted = False
    try:
        with routed_output():  # each step's print()/stderr goes to its own record, not the terminal
            reports = coordinator.run()
    except Interrupted:
        interrupted = True
        reports = list(coordinator.reports.values())
    counts = _counts(reports)
    status = "cancelled" if interrupted else (
        "success" if counts["failed"] == 0 and counts["upstream_failed"] == 0 else "failed")
    # The last batch and the run's end commit together.
    store.write(coordinator.final_batch(), finish=RunEnd(run_id, status, counts, project.clock.now(),
                                                          "interrupted by SIGINT" if interrupted else None),
                make_durable=project.values.sync)
    _sync(project, store)
    if interrupted:
        raise Interrupted("interrupted: the run was recorded as cancelled")
    with gc_paused():
        # Built from the coordinator's own records: no need to validate 100k of them again.
        steps = [StepResultModel.model_construct(
            asset=r.asset, partition=r.partition, outcome=r.outcome, attempts=r.attempts,
            data_version=r.data_version, duration_s=r.duration_s, error=r.error) for r in reports]
    return RunResult(run_id=run_id, kind=kind, status=status, counts=counts, tags=tags,
                     checks=coordinator.check_results, steps=steps)


def _sync(project: Project, store: LineageStore) -> None:
    """Push the final state of a remote store (a no-op for local files)."""
    flush = getattr(project.state, "flush", None)
    if flush is not None:
        flush(store)


def _stamped(observations, now: datetime):
    import pyarrow as pa

    from .arrays import timestamps

    return observations.append_column("observed_at", timestamps([now] * observations.num_rows, pa.timestamp("us", tz="UTC")))


def _counts(reports) -> dict[str, int]:
    counts = {"materialized": 0, "skipped": 0, "failed": 0, "upstream_failed": 0}
    for r in reports:
        key = "failed" if r.outcome == "check_failed" else r.outcome
        counts[key] = counts.get(key, 0) + 1
    return counts


def load(defs: Definitions, asset: str, partition: str | None = None, *, store: str | None = None,
         data: str | None = None, storage_options: Mapping[str, Any] | None = None) -> Any:
    """The current value of one (asset, partition)."""
    project = open_project(defs, store=store, data=data, storage_options=storage_options)
    node = project.graph.nodes.get(asset)
    if not isinstance(node, AssetDef):
        raise SelectionError(f"unknown asset '{asset}'")
    key = _partition_key(node, partition)
    head = project.store.head(asset, key)
    if not head or head.get("mat_id") is None:
        raise UsageError(f"asset '{asset}'" + (f" partition '{partition}'" if partition else "") + " has no materialized value")
    if head["path"] is None:
        return None
    return project.values.get(head["path"], head["format"])


def _partition_key(node: AssetDef, partition: str | None) -> str:
    if node.partitions is None:
        if partition:
            raise PartitionError(f"asset '{node.name}' is not partitioned; drop the partition")
        return ""
    if not partition:
        raise PartitionError(f"asset '{node.name}' is partitioned: give a partition")
    node.partitions.validate_key(partition)
    return partition
