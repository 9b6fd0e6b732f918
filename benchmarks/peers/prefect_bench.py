"""Prefect side of the workloads: ``python -m benchmarks.peers.prefect_bench SPEC_JSON`` (in the Prefect venv).

Runs against Prefect's ephemeral API server with its SQLite database in a fresh ``PREFECT_HOME``
(``spec["home"]``, an empty folder the harness deletes afterwards), default logging. The server is started by one untimed
trivial flow first, so the timed figure is the flow call alone; the process wall time (measured by the
harness) includes startup.

Operations (``op``):

* ``called``: one flow calling ``tasks`` no-op tasks (``return b"x"``, no caching, results not persisted);
* ``submitted``: the same with ``task.submit()`` (default task runner) and waiting for every result;
* ``cached``: tasks with ``cache_policy=INPUTS`` and persisted results; the flow runs once (untimed, fills
  the cache) and is timed on the rerun, where every task is a cache hit (counted from the states).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from typing import Any

from benchmarks.measure import emit


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Execute one operation and return its figures."""
    os.environ["PREFECT_HOME"] = spec.get("home") or tempfile.mkdtemp(prefix="bench-prefect-")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    t0 = time.perf_counter()
    import prefect
    from prefect import flow, task
    from prefect.cache_policies import INPUTS, NO_CACHE

    import_s = time.perf_counter() - t0
    n = int(spec["tasks"])

    @task(cache_policy=NO_CACHE, persist_result=False)
    def noop(i: int) -> bytes:
        return b"x"

    @task(cache_policy=INPUTS, persist_result=True)
    def cached(i: int) -> bytes:
        return b"x"

    @flow
    def warmup() -> int:
        return 1

    @flow
    def called() -> list[Any]:
        return [noop(i, return_state=True) for i in range(n)]

    @flow
    def submitted() -> list[Any]:
        futures = [noop.submit(i) for i in range(n)]
        for future in futures:
            future.wait()
        return [future.state for future in futures]

    @flow
    def cached_flow() -> list[Any]:
        return [cached(i, return_state=True) for i in range(n)]

    t0 = time.perf_counter()
    warmup()
    startup_s = time.perf_counter() - t0
    op = spec["op"]
    target = {"called": called, "submitted": submitted, "cached": cached_flow}[op]
    if op == "cached":
        target()  # fills the cache
    t0 = time.perf_counter()
    states = target()
    seconds = time.perf_counter() - t0
    names: dict[str, int] = {}
    for state in states:
        names[state.name] = names.get(state.name, 0) + 1
    return {"seconds": seconds, "tasks": n, "states": names, "startup_s": startup_s, "import_s": import_s,
            "version": prefect.__version__}


def main(argv: list[str]) -> int:
    """Run the spec in ``argv[1]`` and print the result line."""
    emit(run(json.loads(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
