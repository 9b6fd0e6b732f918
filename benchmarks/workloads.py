"""The workloads W1–W6 of the benchmark issue, measured against assetflow.

Each workload writes its projects under ``benchmarks/.work/projects/``, prepares state before every
run (fresh or copied stores — outside the timed part) and measures:

* **cli** — the whole ``assetflow ...`` process, wall clock from fork to exit (interpreter start,
  imports, loading the project, the command, writing its JSON to a file);
* **in-process** — only the API call inside a fresh process (see :mod:`benchmarks.inproc`).

Every figure is the median of ``runs`` runs, each in a fresh process, after one untimed warm-up run
per command (full mode) so the OS page cache and the bytecode cache are warm, as on a user's machine.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import projects, trash
from benchmarks.measure import WORK, Sample, assetflow_cli, child_env, inproc_cmd, run_measured
from benchmarks.model import Measurement, Target
from benchmarks.populate import Populated, make_stale, populate
from benchmarks.projects import Shape

GIB = 1024**3
MIB = 1024**2


@dataclass
class Context:
    """Settings shared by all workloads of one invocation."""

    quick: bool
    runs: int
    timeout_s: float
    log: Callable[[str], None]
    work: Path = WORK
    populated: dict[str, Populated] = field(default_factory=dict)
    projects: dict[str, Path] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)
    """Every measured job by ``"W1.unpartitioned.cli"``-style key (for profiling reruns)."""

    @property
    def env(self) -> dict[str, str]:
        """Environment of assetflow processes."""
        return child_env({"ASSETFLOW_NOW": projects.NOW}, pythonpath=True)


@dataclass
class Workload:
    """A workload's description and its measurements."""

    id: str
    title: str
    shape: str
    method: str
    measurements: list[Measurement] = field(default_factory=list)


# ---- shapes -------------------------------------------------------------------------------------------

def w1_shapes(quick: bool) -> tuple[Shape, Shape]:
    """(unpartitioned, partitioned) W1 shapes."""
    if quick:
        return Shape("w1_unpartitioned_quick", 4, 5), Shape("w1_partitioned_quick", 4, 5, 10)
    return Shape("w1_unpartitioned", 20, 10), Shape("w1_partitioned", 20, 10, 100)


def w2_partitions(quick: bool) -> int:
    """Partitions of the W2 asset."""
    return 30 if quick else 365


def w3_shapes(quick: bool) -> list[Shape]:
    """W3 plan-scale shapes (the last is the one with targets, reused by W4 and W6)."""
    if quick:
        return [Shape("w3_10x30_quick", 2, 5, 30)]
    return [Shape("w3_100x365", 10, 10, 365), Shape("w3_1000x365", 20, 50, 365)]


STALE_FRACTIONS = (0.0, 0.01, 0.10)

QUICK_KEEP = ("W1.unpartitioned.cli", "W1.partitioned.inproc", "W1.*floor", "W2.per_partition.inproc",
              "W2.single_run.cli", "W3.*.0pct.inproc", "W3.*.10pct.cli", "W4.cli", "W5.*", "W6.*.inproc")
"""With ``--quick`` only these measurements run (every code path once: CLI and in-process, each workload)."""


# ---- helpers ------------------------------------------------------------------------------------------

def _project(ctx: Context, name: str, source: str) -> Path:
    if name not in ctx.projects:
        ctx.projects[name] = projects.write_project(ctx.work / "projects" / name, source)
    return ctx.projects[name]


def _cli(project: Path, *args: str, store: Path, data: Path) -> list[str]:
    return [*assetflow_cli(), "-f", project.name, "--store", str(store), "--data", str(data), *args, "--json"]


def _reset(folder: Path) -> None:
    """An empty ``folder``, its old contents moved aside, not deleted (see :mod:`benchmarks.trash`)."""
    trash.discard(folder)
    folder.mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class Prepare:
    """State set up before every run, outside the timed part: an emptied folder (its old contents moved
    into :mod:`benchmarks.trash`), optionally holding a
    fresh copy of a store. Declarative, so it is recorded in results.json and a later profiling run
    (``python -m benchmarks.profiling``) can repeat it."""

    reset: Path
    copy_from: Path | None = None
    copy_to: Path | None = None

    def __call__(self) -> None:
        """Set the state up."""
        _reset(self.reset)
        if self.copy_from is not None and self.copy_to is not None:
            shutil.copyfile(self.copy_from, self.copy_to)

    def to_json(self) -> dict[str, str | None]:
        """The JSON form stored in a measurement's ``extra["prepare"]``."""
        return {"reset": str(self.reset), "copy_from": self.copy_from and str(self.copy_from),
                "copy_to": self.copy_to and str(self.copy_to)}

    @staticmethod
    def from_json(data: dict[str, str | None]) -> Prepare:
        """Inverse of :meth:`to_json`."""
        return Prepare(Path(data["reset"] or "."), data.get("copy_from") and Path(data["copy_from"]),
                       data.get("copy_to") and Path(data["copy_to"]))


def _check_materialize(expected: int, counts_key: str = "materialized") -> Callable[[Sample], str | None]:
    def check(sample: Sample) -> str | None:
        document = sample.payload or _json(sample.stdout)
        if document is None:
            return "no JSON result"
        counts = document.get("counts", {})
        if counts.get(counts_key, 0) != expected or document.get("status") != "success":
            return f"expected {expected} {counts_key}, got status={document.get('status')} counts={counts}"
        return None
    return check


def _check_plan(expected: int) -> Callable[[Sample], str | None]:
    def check(sample: Sample) -> str | None:
        document = sample.payload or _json(sample.stdout)
        if document is None:
            return "no JSON result"
        steps = document["steps"] if isinstance(document.get("steps"), int) else len(document.get("steps", []))
        return None if steps == expected else f"plan has {steps} steps, expected {expected}"
    return check


def _json(text: str) -> dict[str, Any] | None:
    try:
        return json.loads(text)
    except ValueError:
        return None


@dataclass
class Job:
    """One command to measure into one :class:`Measurement`."""

    m: Measurement
    cmd: list[str]
    cwd: Path
    prepare: Prepare | None = None
    check: Callable[[Sample], str | None] | None = None


def _record(m: Measurement, sample: Sample) -> None:
    if m.mode == "in-process":
        assert sample.payload is not None
        m.runs_s.append(sample.payload["seconds"])
        m.cpu_s.append(sample.payload["cpu_s"])
        for key in ("import_s", "plan_s", "steps_s", "bytes"):
            if key in sample.payload:
                m.extra.setdefault(key + "_runs", []).append(sample.payload[key])
    else:
        m.runs_s.append(sample.wall_s)
        m.cpu_s.append(sample.cpu_s)
    m.process_wall_s.append(sample.wall_s)
    m.rss_mib.append(sample.peak_rss_mib)


def measure_group(ctx: Context, jobs: list[Job], *, warmup: bool = True) -> list[Measurement]:
    """Measure ``jobs`` round-robin — one run of each per round, so load changes on the machine hit them
    alike — with one untimed warm-up round first (full mode). A failing job stops (its error is kept)."""
    rounds = (1 if warmup and not ctx.quick else 0) + ctx.runs
    if ctx.quick:
        jobs = [j for j in jobs if any(fnmatch.fnmatchcase(f"{j.m.workload}.{j.m.key}", p) for p in QUICK_KEEP)]
    for job in jobs:
        job.m.command, job.m.cwd = job.cmd, str(job.cwd)
        if job.prepare is not None:
            job.m.extra["prepare"] = job.prepare.to_json()
        ctx.jobs[f"{job.m.workload}.{job.m.key}"] = job
    for i in range(rounds):
        for job in jobs:
            if job.m.error:
                continue
            if job.prepare:
                job.prepare()
            sample = run_measured(job.cmd, cwd=job.cwd, env=ctx.env, timeout_s=ctx.timeout_s)
            problem = None if sample.ok else sample.failure()
            if problem is None and job.check is not None:
                problem = job.check(sample)
            if problem is None and job.m.mode == "in-process" and sample.payload is None:
                problem = "in-process runner printed no result"
            if problem:
                job.m.error = problem
                ctx.log(f"  ! {job.m.workload} {job.m.key}: {problem}")
            elif i >= rounds - ctx.runs:
                _record(job.m, sample)
    for job in jobs:
        m = job.m
        if m.median_s is not None:
            ctx.log(f"  {m.workload} {m.key}: median {m.median_s:.3f} s"
                    + (f", {m.rate:,.1f} {m.rate_unit}" if m.rate else "") + f", peak RSS {m.peak_rss_mib:.0f} MiB")
    return [job.m for job in jobs]


def _both(ctx: Context, workload: str, key: str, label: str, items: int, unit: str, rate_unit: str,
          cli_cmd: list[str], spec: dict[str, Any], cwd: Path, *, cli_targets: list[Target],
          inproc_targets: list[Target], prepare: Prepare | None = None,
          cli_check: Callable[[Sample], str | None] | None = None,
          inproc_check: Callable[[Sample], str | None] | None = None) -> list[Job]:
    """Jobs measuring the same work as a whole CLI process and as an in-process API call."""
    cli = Measurement(workload, f"{key}.cli", label, "cli", items, unit, rate_unit, cli_targets)
    inproc = Measurement(workload, f"{key}.inproc", label, "in-process", items, unit, rate_unit, inproc_targets)
    return [Job(cli, cli_cmd, cwd, prepare, cli_check), Job(inproc, inproc_cmd(spec), cwd, prepare, inproc_check)]


# ---- W1 -----------------------------------------------------------------------------------------------

FLOOR_LABEL = "floor: Python loop + atomic file writes + one batched DuckDB write (no engine)"
DEPENDENCIES = ("duckdb", "pyarrow", "numpy", "pydantic", "rich", "xxhash", "fsspec", "orjson")
"""assetflow's runtime dependencies (pyproject.toml): what any ``assetflow`` command imports."""
CLI_FLOOR_LABEL = "CLI floor: a Python process that only imports assetflow's dependencies (no assetflow, no work)"


def _floor_job(shape: Shape, key: str, store: Path, data: Path, cwd: Path, prepare: Prepare) -> Job:
    """The W1 floor of ``shape`` (:mod:`benchmarks.floor`): no target of its own; it sits in W1's
    measure group so it runs round-robin with assetflow under the same load and the same folders."""
    m = Measurement("W1", f"{key}.floor", f"{shape.describe()} — {FLOOR_LABEL}", "in-process", shape.items,
                    "materializations", "mat/s")
    spec = {"op": "floor", "layers": shape.layers, "width": shape.width, "partitions": shape.partitions,
            "store": str(store), "data": str(data)}

    def check(sample: Sample) -> str | None:
        rows = (sample.payload or {}).get("rows")
        return None if rows == shape.items else f"floor recorded {rows} rows, expected {shape.items}"
    return Job(m, inproc_cmd(spec), cwd, prepare, check)


def _cli_floor_job(shape: Shape, key: str, cwd: Path) -> Job:
    """The least any ``assetflow`` process takes, whatever it does: start the interpreter and import the
    dependencies (:data:`DEPENDENCIES`). Its time over W1's items is the highest rate a whole CLI
    process could reach with them — the measurement that puts a CLI figure's target out of reach."""
    m = Measurement("W1", f"{key}.cli_floor", f"{shape.describe()} — {CLI_FLOOR_LABEL}", "cli", shape.items,
                    "materializations", "mat/s")
    return Job(m, [sys.executable, "-c", "import " + ", ".join(DEPENDENCIES)], cwd)


def _floor_ratios(group: list[Measurement]) -> None:
    """Record on each figure of one W1 shape its time over the floor of its mode (in-process: the
    engine-less materializations; CLI: the dependencies' imports)."""
    floors = {m.mode: m for m in group if m.key.endswith((".floor", ".cli_floor"))}
    for m in group:
        floor = floors.get(m.mode)
        if floor is not None and m is not floor and floor.median_s and m.median_s:
            m.extra["floor_s"] = floor.median_s
            m.extra["floor_ratio"] = m.median_s / floor.median_s


def w1(ctx: Context) -> Workload:
    """W1 overhead: no-op assets materialized in one run, unpartitioned and partitioned, next to their floor."""
    unpart, part = w1_shapes(ctx.quick)
    wl = Workload("W1", "overhead: no-op materializations in one run",
                  f"{unpart.describe()}; and {part.describe()} = {part.items:,} materializations",
                  'each asset returns b"x" (hashed, stored, lineage recorded); fresh store and data root per run; '
                  "rate = materializations / s. The floor rows do the same materializations with no engine "
                  "(benchmarks/floor.py: a Python loop, xxh3 + atomic writes to content-addressed paths, one "
                  "syncfs, one batched DuckDB insert), in the same folders, round-robin with assetflow's runs; "
                  "'× N floor' is the in-process time over the floor's. The CLI floor rows time a Python "
                  "process that only imports assetflow's dependencies: no CLI process can be faster")
    target = [Target("min_rate", 2000, "≥ 2,000 materializations/s")]
    for shape, key in ((unpart, "unpartitioned"), (part, "partitioned")):
        project = _project(ctx, shape.name, projects.layered_source(shape))
        run_dir = project.parent / "run"
        store, data = run_dir / "lineage.duckdb", run_dir / "data"
        jobs = _both(
            ctx, "W1", key, shape.describe(), shape.items, "materializations", "mat/s",
            _cli(project, "materialize", store=store, data=data),
            {"op": "materialize", "project": str(project), "store": str(store), "data": str(data)}, project.parent,
            cli_targets=target, inproc_targets=target, prepare=Prepare(run_dir),
            cli_check=_check_materialize(shape.items), inproc_check=_check_materialize(shape.items))
        jobs.append(_floor_job(shape, key, store, data, project.parent, Prepare(run_dir)))
        jobs.append(_cli_floor_job(shape, key, project.parent))
        group = measure_group(ctx, jobs)
        _floor_ratios(group)
        wl.measurements += group
    return wl


# ---- W2 -----------------------------------------------------------------------------------------------

def w2(ctx: Context) -> Workload:
    """W2 range: one daily asset, every partition in one ``materialize --partitions`` run."""
    n = w2_partitions(ctx.quick)
    rng = projects.range_arg(n)
    wl = Workload("W2", "range: one daily asset, all partitions in one run",
                  f"1 daily asset × {n} partitions, `materialize --partitions {rng}`; per partition and backfill='single_run'",
                  'no-op per partition (b"x"; the single_run function returns {key: b"x"} for its range); fresh store per run. '
                  "Target ≤ 0.3 s is judged on the run itself (in-process); the CLI figure adds interpreter start and imports")
    target = [Target("max_s", 0.3, "≤ 0.3 s")]
    for single, key in ((False, "per_partition"), (True, "single_run")):
        name = f"w2_{key}" + ("_quick" if ctx.quick else "")
        project = _project(ctx, name, projects.range_source(n, single))
        run_dir = project.parent / "run"
        store, data = run_dir / "lineage.duckdb", run_dir / "data"
        wl.measurements += measure_group(ctx, _both(
            ctx, "W2", key, f"{n} partitions, backfill={'single_run' if single else 'per_partition'}", n,
            "partitions", "partitions/s",
            _cli(project, "materialize", "--partitions", rng, store=store, data=data),
            {"op": "materialize", "project": str(project), "store": str(store), "data": str(data), "partitions": rng},
            project.parent, cli_targets=[], inproc_targets=target, prepare=Prepare(run_dir),
            cli_check=_check_materialize(n), inproc_check=_check_materialize(n)))
    return wl


# ---- W3, W4, W6: populated stores ---------------------------------------------------------------------

def populated(ctx: Context, shape: Shape, *, history_runs: int = 0) -> tuple[Path, Populated]:
    """The project and an up-to-date store for ``shape`` (verified: ``af.plan(stale=True)`` has 0 steps)."""
    project = _project(ctx, shape.name, projects.layered_source(shape))
    key = f"{shape.name}+h{history_runs}"
    if key not in ctx.populated:
        store = project.parent / "stores" / (f"history{history_runs}.duckdb" if history_runs else "fresh.duckdb")
        ctx.log(f"  populating {shape.describe()}" + (f" + {history_runs} history runs" if history_runs else "") + " …")
        result = populate(project, store, shape, history_runs=history_runs)
        spec = {"op": "plan", "project": str(project), "store": str(store), "data": str(project.parent / "data")}
        sample = run_measured(inproc_cmd(spec), cwd=project.parent, env=ctx.env, timeout_s=ctx.timeout_s)
        if not sample.ok or sample.payload is None:
            raise RuntimeError(f"verifying the populated store failed: {sample.failure()}")
        if sample.payload["steps"] != 0:
            raise RuntimeError(f"populated store of {shape.name} is not up to date: plan has "
                               f"{sample.payload['steps']} steps ({sample.payload['reasons']})")
        ctx.log(f"  verified: af.plan(stale=True) = 0 steps, {sample.payload['summary']['up_to_date']:,} up to date")
        ctx.populated[key] = result
    return project, ctx.populated[key]


def _plan_pair(ctx: Context, workload: str, key: str, label: str, shape: Shape, project: Path, store: Path,
               expected: int, *, cli_targets: list[Target], inproc_targets: list[Target]) -> list[Job]:
    data = project.parent / "data"
    return _both(ctx, workload, key, label, shape.items, "asset-partitions", "asset-partitions/s",
                 _cli(project, "plan", "--stale", store=store, data=data),
                 {"op": "plan", "project": str(project), "store": str(store), "data": str(data)}, project.parent,
                 cli_targets=cli_targets, inproc_targets=inproc_targets,
                 cli_check=_check_plan(expected), inproc_check=_check_plan(expected))


def w3_targets(shape: Shape, quick: bool) -> tuple[list[Target], list[Target]]:
    """(cli, in-process) targets: only the 1,000 × 365 shape has them."""
    if quick or shape.items < 365_000:
        return [], []
    rss = Target("max_rss_mib", 1024, "peak RSS < 1 GiB")
    return [Target("max_s", 2.0, "< 2 s whole process"), rss], [Target("max_s", 1.0, "< 1 s in-process"), rss]


def w3(ctx: Context) -> Workload:
    """W3 plan scale: ``plan --stale`` over fully populated stores with 0 %, 1 % and 10 % stale."""
    shapes = w3_shapes(ctx.quick)
    wl = Workload("W3", "plan scale: plan --stale on a fully populated store",
                  "; ".join(s.describe() for s in shapes),
                  "store bulk-populated with the schema of assetflow/lineage_store.py and assetflow's own code versions "
                  "(verified: 0 steps before timing). Stale: for ceil(f × partitions) random dates the heads of "
                  "every first-layer asset get another code_version (code_changed), which makes every downstream "
                  "partition of those dates upstream_stale. The in-process figure includes building plan.steps")
    for shape in shapes:
        project, pop = populated(ctx, shape)
        cli_t, inproc_t = w3_targets(shape, ctx.quick)
        for fraction in STALE_FRACTIONS if not ctx.quick else (0.0, 0.10):
            pct = f"{fraction * 100:g}pct"
            store = pop.store.with_name(f"stale_{pct}.duckdb")
            expected = make_stale(pop.store, store, shape, fraction)
            wl.measurements += measure_group(ctx, _plan_pair(ctx, "W3", f"{shape.assets}x{shape.partitions}.{pct}",
                                          f"{shape.assets} × {shape.partitions}, {fraction:.0%} stale ({expected:,} steps)",
                                          shape, project, store, expected, cli_targets=cli_t, inproc_targets=inproc_t))
    return wl


def w4(ctx: Context) -> Workload:
    """W4 no-op CI: ``materialize --stale`` on the fully up-to-date biggest W3 project."""
    shape = w3_shapes(ctx.quick)[-1]
    project, pop = populated(ctx, shape)
    wl = Workload("W4", "no-op CI: materialize --stale when everything is up to date", shape.describe(),
                  "whole process; a fresh copy of the up-to-date store per run (copied before timing); "
                  "rate = up-to-date asset-partitions confirmed per second")
    run_dir = project.parent / "w4"
    store, data = run_dir / "lineage.duckdb", run_dir / "data"

    prepare = Prepare(run_dir, pop.store, store)
    m = Measurement("W4", "cli", shape.describe(), "cli", shape.items, "asset-partitions", "asset-partitions/s",
                    [] if ctx.quick else [Target("max_s", 2.0, "< 2 s whole process")])
    wl.measurements += measure_group(ctx, [Job(m, _cli(project, "materialize", "--stale", store=store, data=data),
                                               project.parent, prepare, _check_materialize(0))])
    return wl


def w6(ctx: Context) -> Workload:
    """W6 history: W3's biggest plan after 100 earlier runs, against the same store without history."""
    shape = w3_shapes(ctx.quick)[-1]
    history = 5 if ctx.quick else 100
    project, fresh = populated(ctx, shape)
    _, old = populated(ctx, shape, history_runs=history)
    wl = Workload("W6", f"history: plan --stale after {history} earlier runs", shape.describe(),
                  f"{history} earlier runs, each re-materializing a random 1 % of all asset-partitions, recorded "
                  f"before the current heads ({old.materializations:,} materializations, {old.inputs:,} input rows vs "
                  f"{fresh.materializations:,} / {fresh.inputs:,}); heads unchanged. Measured next to the same plan "
                  "without history (0 % stale); target: with history ≤ 1.2 × without")
    jobs: list[Job] = []
    for key, pop in (("no_history", fresh), ("history", old)):
        jobs += _plan_pair(ctx, "W6", key, f"{shape.assets} × {shape.partitions}, {key.replace('_', ' ')}",
                           shape, project, pop.store, 0, cli_targets=[], inproc_targets=[])
    wl.measurements += measure_group(ctx, jobs)
    if not ctx.quick:
        base = {m.mode: m for m in wl.measurements if m.key.startswith("no_history")}
        for m in wl.measurements:
            if m.key.startswith("history.") and base[m.mode].median_s is not None:
                m.targets.append(Target("max_ratio", 1.2, "≤ 1.2 × without history", base[m.mode].median_s))
    return wl


# ---- W5 -----------------------------------------------------------------------------------------------

def w5(ctx: Context) -> Workload:
    """W5 hashing: ``assetflow.hashing.data_version`` of a ~1 GiB Arrow table."""
    size = 16 * MIB if ctx.quick else GIB
    wl = Workload("W5", "hashing: data version of an Arrow table",
                  f"~{size / MIB:,.0f} MiB table: 4 int64 + 2 float64 columns and one ~18-char string column, 8 chunks",
                  "in-process: the table is built in the measured process, then only data_version(table) is timed; "
                  "rate = table.nbytes / 1e9 / s (GB/s)")
    m = Measurement("W5", "data_version.inproc", "data_version(table)", "in-process", size, "bytes", "GB/s",
                    [] if ctx.quick else [Target("min_rate", 1.0, "≥ 1 GB/s")], rate_scale=1e-9)
    folder = ctx.work / "projects" / "w5"
    folder.mkdir(parents=True, exist_ok=True)
    wl.measurements += measure_group(ctx, [Job(m, inproc_cmd({"op": "hash", "bytes": size}), folder)])
    if m.extra.get("bytes_runs"):
        m.items = int(statistics.median(m.extra["bytes_runs"]))
    return wl


WORKLOADS: dict[str, Callable[[Context], Workload]] = {"W1": w1, "W2": w2, "W3": w3, "W4": w4, "W5": w5, "W6": w6}
