"""Read-side commands: ``status`` (the plan's view of time and health), ``lineage``, ``runs``/``run``,
and ``gc``. None of them take the run lock except ``gc``, which deletes values."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from .api import build_request, observe, open_project
from .arrays import latest_per_span
from .config import ConfigSource
from .definitions import AssetDef, Definitions
from .errors import SelectionError, UsageError
from .partitions import TimePartitions
from .planner import external, plan as make_plan
from .rebuilder import Reason
from .results import (
    AssetStatusModel,
    AttemptModel,
    CheckStatusModel,
    FreshnessModel,
    InputModel,
    LineageResult,
    RunDetailModel,
    RunStepModel,
    RunSummaryModel,
    StatusResult,
)


def _freshness(asset: AssetDef, now: datetime, up_to_date: np.ndarray, last_materialized: datetime | None,
               layout_keys: tuple[str, ...]) -> FreshnessModel:
    """Time-partitioned: lag since the end of the newest up-to-date partition. Otherwise: lag since the
    last successful materialization."""
    reference: datetime | None = None
    if isinstance(asset.partitions, TimePartitions):
        fresh = np.flatnonzero(up_to_date)
        if len(fresh):
            _, end = asset.partitions.window(layout_keys[int(fresh[-1])])
            reference = end
    else:
        reference = last_materialized
    lag = None if reference is None else max(0.0, (now - reference).total_seconds())
    overdue = asset.freshness is not None and (lag is None or lag > asset.freshness)
    return FreshnessModel(max_lag_s=asset.freshness, lag_s=lag, overdue=overdue)


def status(defs: Definitions, select: Sequence[str] | str | None = None, *, store: str | None = None,
           data: str | None = None, config: ConfigSource = None,
           storage_options: Mapping[str, Any] | None = None) -> StatusResult:
    """Per asset: up-to-date, stale, missing and failed partition counts, last materialization and freshness."""
    project = open_project(defs, store=store, data=data, storage_options=storage_options)
    request = build_request(project.graph, select, True, None, project.now)
    observed, _ = observe(project, config)
    the_plan = make_plan(project.layout, observed, request)
    layout, aligned = the_plan.layout, the_plan.aligned
    stamps = latest_per_span(aligned.column("materialized_at"), layout.offsets)
    blocked = {(w.asset, w.partition) for w in the_plan.waiting}
    checks = _check_summary(project.store.last_checks(), project.graph)
    assets = []
    for node in project.graph.assets():
        if node.name not in request.select:
            continue
        lo, hi = layout.span(node.name)
        reasons = the_plan.reasons[lo:hi]
        stale = the_plan.stale_mask[lo:hi]
        failed = (reasons & Reason.failed) != 0
        missing = ((reasons & Reason.missing) != 0) & ~failed
        last = stamps[layout.node_index[node.name]]
        assets.append(AssetStatusModel(
            asset=node.name, group=node.group, partitions=hi - lo, up_to_date=int((~stale).sum()),
            stale=int((stale & ~failed & ~missing).sum()), missing=int(missing.sum()), failed=int(failed.sum()),
            waiting=sum(1 for key in layout.keys[node.name] if (node.name, external(key)) in blocked),
            last_materialized_at=last,
            freshness=_freshness(node, project.now, ~stale, last, layout.keys[node.name]),
            checks=checks.get(node.name, []),
        ))
    running = [r for r in project.store.runs() if r["status"] == "running"]
    holder = project.state.holder()
    running = [_summary(r, holder) for r in running if holder and holder.get("run_id") == r["run_id"]]
    return StatusResult(assets=assets, running=[r.model_dump(mode="json") for r in running])


def _check_summary(rows: list[dict[str, Any]], graph) -> dict[str, list[CheckStatusModel]]:
    tally: dict[tuple[str, str], list[int]] = {}
    for row in rows:
        counts = tally.setdefault((row["asset"], row["check_name"]), [0, 0])
        counts[0 if row["passed"] else 1] += 1
    result: dict[str, list[CheckStatusModel]] = {}
    for (asset, name), (passed, failed) in sorted(tally.items()):
        check = graph.defs.checks.get(name)
        result.setdefault(asset, []).append(CheckStatusModel(
            check=name, blocking=bool(check and check.blocking), passed=passed, failed=failed))
    return result


def lineage(defs: Definitions, asset: str, partition: str | None = None, *, store: str | None = None,
            data: str | None = None, storage_options: Mapping[str, Any] | None = None) -> LineageResult:
    """Versions consumed and produced by the current materialization of one partition, and where it flows."""
    project = open_project(defs, store=store, data=data, storage_options=storage_options)
    node = project.graph.nodes.get(asset)
    if not isinstance(node, AssetDef):
        raise SelectionError(f"unknown asset '{asset}'")
    from .api import _partition_key

    key = _partition_key(node, partition)
    head = project.store.head(asset, key) or {}
    data_version = head.get("data_version") if head.get("mat_id") is not None else None
    consumers = project.store.consumers(asset, key, data_version) if data_version else []
    return LineageResult(
        asset=asset, partition=external(key), data_version=data_version, code_version=head.get("code_version"),
        config_hash=head.get("config_hash"), run_id=head.get("run_id"), materialized_at=head.get("materialized_at"),
        path=head.get("path"),
        inputs=[InputModel(asset=i["up_asset"], partition=external(i["up_partition"]), data_version=i["data_version"])
                for i in head.get("inputs", [])],
        downstream=[{"asset": c["asset"], "partition": external(c["partition"])} for c in consumers],
        upstream_assets=[e.upstream for e in project.graph.upstream[asset]],
        downstream_assets=[e.downstream for e in project.graph.downstream[asset]],
    )


def _summary(row: Mapping[str, Any], holder: Mapping[str, Any] | None) -> RunSummaryModel:
    state = row["status"]
    if state == "running" and not (holder and holder.get("run_id") == row["run_id"]):
        state = "crashed"  # its process is gone: the kernel released its lock
    return RunSummaryModel(
        run_id=row["run_id"], kind=row["kind"], status=state, tags=row["tags"], started_at=row["started_at"],
        finished_at=row["finished_at"],
        counts={k: int(row[k] or 0) for k in ("materialized", "skipped", "failed", "upstream_failed")},
    )


def runs(defs: Definitions, limit: int | None = None, tags: Mapping[str, str] | None = None, *,
         store: str | None = None, data: str | None = None, storage_options: Mapping[str, Any] | None = None) -> list[RunSummaryModel]:
    """Run history, newest first."""
    project = open_project(defs, store=store, data=data, storage_options=storage_options)
    holder = project.state.holder()
    return [_summary(r, holder) for r in project.store.runs(limit, dict(tags or {}))]


def run(defs: Definitions, run_id: str, *, store: str | None = None, data: str | None = None,
        storage_options: Mapping[str, Any] | None = None) -> RunDetailModel:
    """One run: its steps with every attempt, errors, tracebacks and captured logs."""
    project = open_project(defs, store=store, data=data, storage_options=storage_options)
    row = project.store.run(run_id)
    if row is None:
        raise UsageError(f"unknown run '{run_id}'")
    steps: dict[tuple[str, str], RunStepModel] = {}
    for a in row["attempts"]:
        key = (a["asset"], a["partition"])
        step = steps.get(key)
        if step is None:
            step = steps[key] = RunStepModel(asset=a["asset"], partition=external(a["partition"]), outcome=a["outcome"],
                                             data_version=None, attempts=[], logs="")
        step.outcome = a["outcome"]
        step.data_version = a["data_version"] or step.data_version
        if a["attempt"]:
            step.attempts.append(AttemptModel(number=a["attempt"], outcome=a["outcome"], error=a["error"],
                                              traceback=a["traceback"], duration_s=a["duration_s"], started_at=a["started_at"]))
        if a["logs"]:
            step.logs = (step.logs + "\n" if step.logs else "") + f"[attempt {a['attempt']}]\n{a['logs']}"
    summary = _summary(row, project.state.holder())
    checks = [{k: c[k] for k in ("asset", "partition", "check_name", "passed", "blocking", "error")} for c in row["checks"]]
    return RunDetailModel(**summary.model_dump(), steps=list(steps.values()), checks=checks)


def gc(defs: Definitions, keep: int = 1, dry_run: bool = False, *, store: str | None = None,
       data: str | None = None, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Delete stored values no lineage row still needs, keeping the newest ``keep`` versions of every
    partition and every current value. Holds the run lock so no run writes meanwhile."""
    if keep < 1:
        raise UsageError(f"--keep {keep} must be at least 1 (the current value is always kept)")
    project = open_project(defs, store=store, data=data, storage_options=storage_options)
    lock = project.state.lock("gc")
    try:
        store = project.state.writer()
        kept: set[str] = set()
        seen: dict[tuple[str, str], set[str]] = {}
        for row in store.value_paths():
            versions = seen.setdefault((row["asset"], row["partition"]), set())
            if row["is_head"] or (row["path"] not in versions and len(versions) < keep):
                kept.add(row["path"])
            versions.add(row["path"])
        assets = sorted({a.name for a in project.graph.assets()} | {a for a, _ in seen})
        present = project.values.list_paths(assets)
        doomed = sorted(present - kept)
        freed = sum(project.values.size(p) for p in doomed) if dry_run else sum(project.values.delete(p) for p in doomed)
    finally:
        lock.release()
    return {"deleted": len(doomed), "bytes_freed": freed, "kept": len(present) - len(doomed), "dry_run": dry_run,
            "paths": doomed}


def unlock(defs: Definitions, *, store: str | None = None, data: str | None = None,
           storage_options: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """Clear the lock of a remote store left by a dead runner; returns the holder that was removed.
    Local stores need no unlock: the OS releases a dead process's lock."""
    project = open_project(defs, store=store, data=data, storage_options=storage_options)
    clear = getattr(project.state, "unlock", None)
    if clear is None:
        raise UsageError(f"store {project.state.url} is local: its lock is released when its holder exits")
    return clear()
