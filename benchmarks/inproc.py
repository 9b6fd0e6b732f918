"""The in-process runner: ``python -m benchmarks.inproc SPEC_JSON``.

Runs in a fresh process per measurement. It imports assetflow and the project (timed separately as
``import_s`` / ``load_s``), then times only the API call, and prints one result line. Operations:

* ``materialize``: ``af.materialize(defs, select, stale=, partitions=, store=, data=)``;
* ``plan``: ``af.plan(defs, stale=True, store=, data=)`` and then ``plan.steps`` (steps are built lazily;
  both are inside the timed figure, split out as ``plan_s`` / ``steps_s``);
* ``hash``: build an Arrow table of ``bytes`` size (numeric columns + one string column), then time
  ``assetflow.hashing.data_version`` of it;
* ``floor``: the same materializations as W1 with no engine at all (:mod:`benchmarks.floor`), in the
  same ``store`` / ``data`` paths; the row count is verified after the timer.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.measure import emit


def _warm_imports() -> None:
    """Pay one-off library costs before the timer: pyarrow imports pandas (when installed) on the first
    array it builds, ~0.5 s here, and assetflow imports its pydantic result models on first use (so
    that `plan` never does). The in-process figure measures the work; the CLI figure carries
    interpreter start and imports."""
    import pyarrow as pa

    import assetflow.results  # noqa: F401

    pa.array([0])


def _load_defs(project: str) -> Any:
    _warm_imports()
    path = Path(project).resolve()
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module.defs


def _timed(fn: Any) -> tuple[Any, float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    value = fn()
    return value, time.perf_counter() - t0, time.process_time() - c0


def run_materialize(spec: dict[str, Any]) -> dict[str, Any]:
    """Time one ``af.materialize`` call."""
    import assetflow as af

    defs = _load_defs(spec["project"])
    result, seconds, cpu = _timed(lambda: af.materialize(
        defs, spec.get("select"), stale=spec.get("stale", False), partitions=spec.get("partitions"),
        store=spec.get("store"), data=spec.get("data")))
    return {"seconds": seconds, "cpu_s": cpu, "status": result.status, "counts": dict(result.counts),
            "steps": len(result.steps)}


def run_plan(spec: dict[str, Any]) -> dict[str, Any]:
    """Time one ``af.plan(stale=True)`` call and the construction of its steps."""
    import assetflow as af

    defs = _load_defs(spec["project"])
    plan, plan_s, plan_cpu = _timed(lambda: af.plan(defs, stale=True, store=spec.get("store"), data=spec.get("data")))
    steps, steps_s, steps_cpu = _timed(lambda: plan.steps)
    reasons: dict[str, int] = {}
    for step in steps[:100_000]:
        for reason in step.reasons:
            reasons[reason] = reasons.get(reason, 0) + 1
    return {"seconds": plan_s + steps_s, "cpu_s": plan_cpu + steps_cpu, "plan_s": plan_s, "steps_s": steps_s,
            "steps": len(steps), "summary": plan.summary(), "reasons": reasons}


def make_table(size_bytes: int) -> Any:
    """An Arrow table of about ``size_bytes``: four int64, two float64 and one string column, 8 chunks."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    per_row = 6 * 8 + 4 + 16  # numeric + string offset + ~16 string bytes
    rows = max(1024, size_bytes // per_row)
    rng = np.random.default_rng(0)
    batches = []
    chunks = 8
    for _ in range(chunks):
        n = rows // chunks
        ints = rng.integers(0, 2**62, size=n, dtype=np.int64)
        columns = {f"i{k}": pa.array(np.roll(ints, k)) for k in range(4)}
        columns.update({f"f{k}": pa.array(rng.random(n)) for k in range(2)})
        # 16-character strings: the hex of a random 64-bit integer, left-padded.
        columns["s"] = pc.utf8_lpad(pc.cast(pa.array(ints >> 3), pa.string()), 16, "0")
        batches.append(pa.RecordBatch.from_pydict(columns))
    return pa.Table.from_batches(batches)


def run_hash(spec: dict[str, Any]) -> dict[str, Any]:
    """Time ``data_version`` of a table of ``spec["bytes"]``."""
    from assetflow.hashing import data_version

    table = make_table(int(spec["bytes"]))
    version, seconds, cpu = _timed(lambda: data_version(table))
    return {"seconds": seconds, "cpu_s": cpu, "bytes": table.nbytes, "rows": table.num_rows,
            "columns": table.num_columns, "chunks": table.column(0).num_chunks, "version": version}


def run_floor(spec: dict[str, Any]) -> dict[str, Any]:
    """Time :func:`benchmarks.floor.materialize` of a layered shape (W1's floor)."""
    import duckdb  # noqa: F401  (imports before the timer, as for the other operations)
    import xxhash  # noqa: F401

    from benchmarks import floor
    from benchmarks.projects import Shape

    _warm_imports()
    work = floor.items(Shape("floor", int(spec["layers"]), int(spec["width"]), spec.get("partitions")))
    store, data = Path(spec["store"]), Path(spec["data"])
    written, seconds, cpu = _timed(lambda: floor.materialize(work, data, store))
    return {"seconds": seconds, "cpu_s": cpu, "items": len(work), "rows": floor.count_rows(store), **written}


OPERATIONS = {"materialize": run_materialize, "plan": run_plan, "hash": run_hash, "floor": run_floor}


def main(argv: list[str]) -> int:
    """Run the operation named in the JSON spec ``argv[1]`` and print its result line."""
    spec = json.loads(argv[1])
    t0 = time.perf_counter()
    if spec["op"] != "floor":  # the floor runs no assetflow code, and must not depend on its state
        import assetflow  # noqa: F401  (import cost reported separately from the timed call)
    import_s = time.perf_counter() - t0
    result = OPERATIONS[spec["op"]](spec)
    result["import_s"] = import_s
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
