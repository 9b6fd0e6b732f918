"""Dagster side of the workloads: ``python -m benchmarks.peers.dagster_bench SPEC_JSON`` (in the Dagster venv).

Instance: ``DagsterInstance.local_temp`` in a fresh temporary folder (SQLite run, event-log and schedule
storage — the "sqlite instance" of the issue's reference figures). Assets return ``b"x"`` through the
default filesystem IO manager, except single-run range assets, which return ``None``: Dagster's default
IO manager refuses to persist one output for several partitions.

Operations (``op`` in the spec):

* ``w1``: ``materialize`` the layered no-op graph (same shape rule as benchmarks/projects.py) in one run;
* ``w1_partitioned``: the same graph with daily partitions; ``sample`` partition runs (one run per
  partition is how Dagster runs per-partition work), timed one by one;
* ``w2_runs``: one daily asset; ``sample`` partition runs, timed one by one;
* ``w2_range``: one daily asset with ``BackfillPolicy.single_run()``, one run over every partition;
* ``w3_status``: a layered partitioned graph materialized for ``partitions`` partitions (one single-run
  range run, untimed), then stale status *and* stale causes of every asset-partition with a fresh
  ``CachingStaleStatusResolver`` — timed.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import tempfile
import time
from typing import Any

from benchmarks.measure import emit
from benchmarks.projects import START, Shape

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def _daily(dg: Any, partitions: int) -> Any:
    end = (dt.date.fromisoformat(START) + dt.timedelta(days=partitions)).isoformat()
    return dg.DailyPartitionsDefinition(start_date=START, end_date=end)


def _layered(dg: Any, shape: Shape, partitions_def: Any = None, single_run: bool = False) -> list[Any]:
    """The layered graph as Dagster assets (upstreams as ``deps``; each returns b"x")."""
    assets = []
    policy = dg.BackfillPolicy.single_run() if single_run else None
    for layer in range(shape.layers):
        for i in range(shape.width):
            deps = [shape.asset_name(layer - 1, u) for u in shape.upstream_indices(layer, i)]
            if single_run:
                def fn(context) -> None:  # noqa: ANN001 - Dagster inspects the annotation
                    return None
            else:
                def fn(context) -> bytes:  # noqa: ANN001
                    return b"x"
            assets.append(dg.asset(name=shape.asset_name(layer, i), deps=deps, partitions_def=partitions_def,
                                   backfill_policy=policy)(fn))
    return assets


def _count(result: Any) -> int:
    return len(result.get_asset_materialization_events())


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Execute one operation and return its figures."""
    t0 = time.perf_counter()
    import dagster as dg
    from dagster import DagsterInstance

    import_s = time.perf_counter() - t0
    op = spec["op"]
    out: dict[str, Any] = {"import_s": import_s, "version": dg.__version__}
    with tempfile.TemporaryDirectory(prefix="bench-dagster-") as tmp:
        instance = DagsterInstance.local_temp(tempdir=tmp)
        if op == "w1":
            assets = _layered(dg, Shape("w1", spec["layers"], spec["width"]))
            t0 = time.perf_counter()
            result = dg.materialize(assets, instance=instance)
            out.update(seconds=time.perf_counter() - t0, materializations=_count(result), success=result.success)
        elif op in ("w1_partitioned", "w2_runs"):
            daily = _daily(dg, spec["partitions"])
            if op == "w2_runs":
                assets = [dg.asset(name="day", partitions_def=daily)(lambda context: b"x")]
            else:
                assets = _layered(dg, Shape("w1p", spec["layers"], spec["width"]), daily)
            runs, count = [], 0
            for key in daily.get_partition_keys()[: spec["sample"]]:
                t0 = time.perf_counter()
                result = dg.materialize(assets, instance=instance, partition_key=key)
                runs.append(time.perf_counter() - t0)
                count += _count(result)
            out.update(seconds=sum(runs), runs_s=runs, materializations=count, success=True)
        elif op == "w2_range":
            daily = _daily(dg, spec["partitions"])
            keys = daily.get_partition_keys()

            @dg.asset(name="day", partitions_def=daily, backfill_policy=dg.BackfillPolicy.single_run())
            def day(context) -> None:  # noqa: ANN001
                return None

            t0 = time.perf_counter()
            result = dg.materialize([day], instance=instance, tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]})
            out.update(seconds=time.perf_counter() - t0, materializations=_count(result), success=result.success)
        elif op == "w3_status":
            out.update(_status(dg, instance, spec))
        else:
            raise ValueError(f"unknown op {op}")
    return out


def _status(dg: Any, instance: Any, spec: dict[str, Any]) -> dict[str, Any]:
    daily = _daily(dg, spec["partitions"])
    keys = daily.get_partition_keys()
    assets = _layered(dg, Shape("w3", spec["layers"], spec["width"]), daily, single_run=True)
    t0 = time.perf_counter()
    result = dg.materialize(assets, instance=instance, tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]})
    populate_s = time.perf_counter() - t0
    try:
        from dagster._utils.test.data_versions import get_stale_status_resolver
    except ImportError:  # the helper moved: build the resolver as the webserver does
        get_stale_status_resolver = None
    t0 = time.perf_counter()
    if get_stale_status_resolver is not None:
        resolver = get_stale_status_resolver(instance, assets)
    else:
        from dagster._core.definitions.data_version import CachingStaleStatusResolver

        resolver = CachingStaleStatusResolver(instance, dg.Definitions(assets=assets).resolve_asset_graph())
    statuses: dict[str, int] = {}
    causes = 0
    for asset in assets:
        for key in keys:
            status = resolver.get_status(asset.key, key)
            causes += len(resolver.get_stale_causes(asset.key, key))
            statuses[str(status)] = statuses.get(str(status), 0) + 1
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "asset_partitions": len(assets) * len(keys), "statuses": statuses, "causes": causes,
            "populate_s": populate_s, "materializations": _count(result), "success": result.success}


def main(argv: list[str]) -> int:
    """Run the spec in ``argv[1]`` and print the result line."""
    emit(run(json.loads(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
