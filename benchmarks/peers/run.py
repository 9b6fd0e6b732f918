"""Running the peers: virtualenvs on demand, bounded runs, and figures attached next to assetflow's.

Virtualenvs live under ``benchmarks/.work/peers/{dagster,prefect}`` (created with ``python -m venv``
and pip, latest releases), or are given with ``--peer-venv PATH`` (a venv holding either or both).
Prefect's server is installed with ``fastapi<0.160``: Prefect 3.8's API routes use ``Body(min_items=)``,
which newer FastAPI releases reject at import time.

Every peer run is a fresh process with a time limit; a failing or slow peer gives "—" and a reason,
never an exception in the harness. Where a peer is sampled and extrapolated, the figure says so.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import trash
from benchmarks.measure import WORK, Sample, child_env, run_measured
from benchmarks.model import Measurement, PeerFigure

PEERS_DIR = WORK / "peers"
INSTALL = {"dagster": ["dagster"], "prefect": ["prefect", "fastapi<0.160"]}
MODULE = {"dagster": "benchmarks.peers.dagster_bench", "prefect": "benchmarks.peers.prefect_bench"}

# Why a peer has no figure for a measurement (workload id, measurement key prefix) → reason.
GAPS: dict[str, dict[str, str]] = {
    "dagster": {
        "W4.": "no single call that materializes only stale partitions (UI 'materialize stale' aside); "
               "its staleness cost is W3",
        "W5.": "no content hashing of values (data versions are user-supplied or code-based)",
        "W6.": "not measured (W3 sampling already costs minutes)",
    },
    "prefect": {
        "W1.partitioned": "no partitions: per-partition work is N tasks, see W1 unpartitioned",
        "W2.": "no partitions or range runs",
        "W3.": "no staleness model (only per-task cache keys)",
        "W5.": "no content hashing of values (cache keys hash inputs)",
        "W6.": "no staleness model",
    },
}


@dataclass
class PeerSettings:
    """How peers run."""

    runs: int
    timeout_s: float
    quick_shapes: bool
    log: Callable[[str], None]
    venvs: list[Path] = field(default_factory=list)


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _has(python: Path, module: str) -> bool:
    if not python.exists():
        return False
    probe = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, timeout=300, check=False)
    return probe.returncode == 0


def ensure_venv(peer: str, settings: PeerSettings) -> tuple[Path | None, str]:
    """A python with ``peer`` installed (given venvs first, else our own, created on demand)."""
    for venv in settings.venvs:
        if _has(_python(venv), peer):
            return _python(venv), ""
    venv = PEERS_DIR / peer
    if _has(_python(venv), peer):
        return _python(venv), ""
    settings.log(f"  creating {venv} and installing {' '.join(INSTALL[peer])} (a few minutes) …")
    try:
        if not _python(venv).exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
        subprocess.run([str(_python(venv)), "-m", "pip", "install", "--quiet", *INSTALL[peer]], check=True,
                       capture_output=True, timeout=1800)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        tail = getattr(exc, "stderr", b"") or b""
        return None, f"could not install {peer}: {tail.decode(errors='replace').strip().splitlines()[-1:] or exc}"
    return (_python(venv), "") if _has(_python(venv), peer) else (None, f"{peer} not importable after install")


@dataclass
class PeerRuns:
    """The runs of one peer operation."""

    samples: list[Sample]
    error: str | None

    def payloads(self) -> list[dict[str, Any]]:
        """The result documents of the successful runs."""
        return [s.payload for s in self.samples if s.payload]

    def median(self, key: str) -> float:
        """Median of a payload field."""
        return statistics.median(p[key] for p in self.payloads())

    def median_wall(self) -> float:
        """Median process wall time."""
        return statistics.median(s.wall_s for s in self.samples)

    def rss(self) -> float:
        """Largest peak RSS."""
        return max(s.peak_rss_mib for s in self.samples)


def run_op(peer: str, python: Path, spec: dict[str, Any], settings: PeerSettings, runs: int | None = None) -> PeerRuns:
    """Run one peer operation ``runs`` times in fresh processes; stop at the first failure."""
    samples: list[Sample] = []
    for _ in range(runs or settings.runs):
        home = PEERS_DIR / "tmp" / peer
        trash.discard(home)  # a leftover of an interrupted invocation; see benchmarks.trash
        home.mkdir(parents=True)
        cmd = [str(python), "-m", MODULE[peer], json.dumps({**spec, "home": str(home)})]
        sample = run_measured(cmd, cwd=home, env=child_env(pythonpath=True), timeout_s=settings.timeout_s)
        trash.discard(home)  # deleted with the rest once the invocation is done measuring
        if not sample.ok or sample.payload is None:
            reason = sample.failure() if not sample.ok else "no result printed"
            settings.log(f"  ! {peer} {spec['op']}: {reason}")
            return PeerRuns(samples, reason)
        samples.append(sample)
        settings.log(f"  {peer} {spec['op']}: {sample.payload['seconds']:.2f} s timed, {sample.wall_s:.1f} s process")
    return PeerRuns(samples, None)


def _ratio(m: Measurement, figure: PeerFigure) -> float | None:
    """How many times faster assetflow is, by items per second."""
    if m.rate is None or figure.rate is None:
        return None
    return (m.items / m.median_s) / figure.rate if m.median_s else None


def _attach(m: Measurement, figure: PeerFigure) -> None:
    figure.ratio = _ratio(m, figure)
    m.peers.append(figure)


def _failed(peer: str, version: str, reason: str, items: int | None = None) -> PeerFigure:
    return PeerFigure(f"{peer} {version}".strip(), None, items, f"— {reason}")


def run_peers(measurements: list[Measurement], settings: PeerSettings) -> dict[str, Any]:
    """Run every peer workload that has an assetflow counterpart in ``measurements`` and attach figures.
    Returns peer metadata (versions, errors) for results.json."""
    by_key = {f"{m.workload}.{m.key}": m for m in measurements}
    meta: dict[str, Any] = {}
    for peer in ("dagster", "prefect"):
        python, problem = ensure_venv(peer, settings)
        meta[peer] = {"python": str(python) if python else None, "error": problem or None}
        if python is None:
            settings.log(f"  ! {peer}: {problem}")
            for m in measurements:
                m.peers.append(_failed(peer, "", problem))
            continue
        (dagster_figures if peer == "dagster" else prefect_figures)(python, by_key, settings, meta[peer])
        for m in measurements:
            if not any(f.peer.startswith(peer) for f in m.peers):
                reason = next((r for prefix, r in GAPS[peer].items() if f"{m.workload}.{m.key}".startswith(prefix) and r),
                              "not measured for this mode (see the in-process row)")
                m.peers.append(_failed(peer, meta[peer].get("version", ""), reason))
    return meta


def _w1_shape(settings: PeerSettings) -> dict[str, int]:
    return {"layers": 4, "width": 5} if settings.quick_shapes else {"layers": 20, "width": 10}


def dagster_figures(python: Path, by_key: dict[str, Measurement], settings: PeerSettings, meta: dict[str, Any]) -> None:
    """Dagster: W1 (one run, and sampled partition runs), W2 (sampled partition runs, one range run), W3 status."""
    name = "dagster"

    def version(runs: PeerRuns) -> str:
        payloads = runs.payloads()
        if payloads:
            meta["version"] = payloads[0]["version"]
        return f"dagster {meta.get('version', '')}".strip()

    def attach(keys: tuple[str, str], runs: PeerRuns, items: int, call_s: Callable[[], float], note: str,
               extrapolated: bool = False) -> None:
        inproc, cli = (by_key.get(k) for k in keys)
        if runs.error or not runs.payloads():
            for m in (inproc, cli):
                if m:
                    _attach(m, _failed(name, version(runs), runs.error or "no result", items))
            return
        seconds = call_s()
        startup = statistics.median(s.wall_s - s.payload["seconds"] for s in runs.samples if s.payload)
        calls = [p["seconds"] for p in runs.payloads()]
        if inproc:
            _attach(inproc, PeerFigure(version(runs), seconds, items, note, extrapolated, runs_s=calls,
                                       peak_rss_mib=runs.rss()))
        if cli:
            _attach(cli, PeerFigure(version(runs), seconds + startup, items,
                                    note + f"; whole process = timed part + measured startup/teardown ({startup:.1f} s)",
                                    extrapolated, runs_s=[s.wall_s for s in runs.samples], peak_rss_mib=runs.rss()))

    shape = _w1_shape(settings)
    assets = shape["layers"] * shape["width"]
    if "W1.unpartitioned.cli" in by_key or "W1.unpartitioned.inproc" in by_key:
        runs = run_op(name, python, {"op": "w1", **shape}, settings)
        attach(("W1.unpartitioned.inproc", "W1.unpartitioned.cli"), runs, assets, lambda: runs.median("seconds"),
               f"{assets} no-op assets, materialize() in one run, SQLite instance")
    part = by_key.get("W1.partitioned.inproc") or by_key.get("W1.partitioned.cli")
    if part:
        partitions = part.items // assets
        sample = 2
        runs = run_op(name, python, {"op": "w1_partitioned", **shape, "partitions": partitions, "sample": sample}, settings)
        attach(("W1.partitioned.inproc", "W1.partitioned.cli"), runs, part.items,
               lambda: runs.median("seconds") / sample * partitions,
               f"{sample} partition runs of {assets} assets timed, extrapolated ×{partitions / sample:g} "
               f"to {part.items:,} materializations", extrapolated=True)
    per = by_key.get("W2.per_partition.inproc") or by_key.get("W2.per_partition.cli")
    if per:
        sample = min(10, per.items)
        runs = run_op(name, python, {"op": "w2_runs", "partitions": per.items, "sample": sample}, settings)
        attach(("W2.per_partition.inproc", "W2.per_partition.cli"), runs, per.items,
               lambda: runs.median("seconds") / sample * per.items,
               f"{sample} partition runs timed (one run per partition), extrapolated ×{per.items / sample:g}",
               extrapolated=True)
    single = by_key.get("W2.single_run.inproc") or by_key.get("W2.single_run.cli")
    if single:
        runs = run_op(name, python, {"op": "w2_range", "partitions": single.items}, settings)
        attach(("W2.single_run.inproc", "W2.single_run.cli"), runs, single.items, lambda: runs.median("seconds"),
               "BackfillPolicy.single_run(), one run over the range (asset returns None: the default IO manager "
               "cannot store one output for many partitions)")
    w3 = [m for k, m in by_key.items() if k.startswith("W3.") and m.mode == "in-process"]
    if w3:
        spec = {"op": "w3_status", "layers": 2, "width": 5, "partitions": 10 if settings.quick_shapes else 30}
        runs = run_op(name, python, spec, settings)
        sampled = spec["layers"] * spec["width"] * spec["partitions"]
        for m in w3:
            if runs.error or not runs.payloads():
                _attach(m, _failed(name, version(runs), runs.error or "no result", m.items))
                continue
            per_item = runs.median("seconds") / sampled
            _attach(m, PeerFigure(version(runs), per_item * m.items, m.items,
                                  f"stale status + causes of {sampled} asset-partitions ({spec['layers'] * spec['width']} "
                                  f"assets × {spec['partitions']}) timed: {per_item * 1e3:.1f} ms each, extrapolated "
                                  f"to {m.items:,}", True, runs_s=[p["seconds"] for p in runs.payloads()],
                                  peak_rss_mib=runs.rss()))
    for m in by_key.values():
        if m.workload == "W3" and m.mode == "cli":
            m.peers.append(_failed(name, meta.get("version", ""), "in-process figure only (see the in-process row)"))


def prefect_figures(python: Path, by_key: dict[str, Measurement], settings: PeerSettings, meta: dict[str, Any]) -> None:
    """Prefect: W1 as N no-op tasks in one flow (called, submitted); W4's analogue: N cache hits on rerun."""
    name = "prefect"
    tasks = 50 if settings.quick_shapes else 1000
    results: dict[str, PeerRuns] = {}
    wanted = {"called": ("W1.unpartitioned.inproc", "W1.unpartitioned.cli"),
              "submitted": ("W1.unpartitioned.inproc", "W1.unpartitioned.cli"), "cached": ("W4.cli",)}
    for op, keys in wanted.items():
        if not any(k in by_key for k in keys):
            continue
        runs = results[op] = run_op(name, python, {"op": op, "tasks": tasks}, settings)
        if runs.payloads():
            meta["version"] = runs.payloads()[0]["version"]
        label = f"prefect {meta.get('version', '')}".strip()
        for key in keys:
            m = by_key.get(key)
            if m is None:
                continue
            if runs.error or not runs.payloads():
                _attach(m, _failed(name, meta.get("version", ""), f"{op}: {runs.error or 'no result'}", tasks))
                continue
            states = runs.payloads()[0]["states"]
            calls = [p["seconds"] for p in runs.payloads()]
            if op == "cached":
                _attach(m, PeerFigure(f"{label} (cache hits)", statistics.median(calls), tasks,
                                      f"rerun of a flow of {tasks} cached tasks (states {states}); flow call only, "
                                      "server startup excluded", runs_s=calls, peak_rss_mib=runs.rss()))
            elif m.mode == "in-process":
                _attach(m, PeerFigure(f"{label} ({op})", statistics.median(calls), tasks,
                                      f"{tasks} no-op tasks {op} in one flow (states {states}); flow call only",
                                      runs_s=calls, peak_rss_mib=runs.rss()))
            else:
                walls = [s.wall_s for s in runs.samples]
                _attach(m, PeerFigure(f"{label} ({op})", statistics.median(walls), tasks,
                                      f"{tasks} no-op tasks {op} in one flow; whole process incl. ephemeral server "
                                      "startup", runs_s=walls, peak_rss_mib=runs.rss()))
