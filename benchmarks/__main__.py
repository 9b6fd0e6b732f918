"""``python -m benchmarks [--quick] [--peers] [--only W1,W3] [--peer-venv PATH] [--profile]``.

Runs the workloads of the benchmark issue (W1–W6) against assetflow — and, with ``--peers``, the same
work in Dagster and Prefect — prints a table and writes ``benchmarks/results.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks import trash
from benchmarks.measure import REPO, WORK, work_lock
from benchmarks.model import Measurement
from benchmarks.workloads import WORKLOADS, Context, Workload


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[1])
    parser.add_argument("--quick", action="store_true", help="tiny shapes, 1 run, no peers (< 60 s; the test suite runs it)")
    parser.add_argument("--peers", action="store_true", help="also run Dagster and Prefect (virtualenvs created on demand)")
    parser.add_argument("--only", metavar="W1,W3", help="comma-separated workload ids (default: all)")
    parser.add_argument("--peer-venv", action="append", default=[], metavar="PATH",
                        help="an existing virtualenv with dagster and/or prefect (repeatable)")
    parser.add_argument("--runs", type=int,
                        help="timed runs per assetflow figure (default 5: medians of 5 ride out a noisy host; 1 with --quick)")
    parser.add_argument("--peer-runs", type=int, help="runs per peer figure (default 3, or --runs if lower)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds before one assetflow run is killed")
    parser.add_argument("--peer-timeout", type=float, default=300.0, help="seconds before one peer run is killed")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results.json", help="results file")
    parser.add_argument("--work", type=Path, default=WORK,
                        help="scratch folder for generated projects and stores (default benchmarks/.work)")
    parser.add_argument("--markdown", type=Path, metavar="PATH", help="also write a draft '## Performance' section")
    parser.add_argument("--profile", action="store_true",
                        help="profile every missed target with py-spy into benchmarks/.work/profiles/")
    parser.add_argument("--py-spy", metavar="PATH", help="py-spy executable for --profile")
    args = parser.parse_args(argv)
    if args.quick and args.peers:
        parser.error("--quick runs no peers; drop --peers")
    args.runs = args.runs or (1 if args.quick else 5)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    # Peer runs take minutes each; the issue asks for medians of at least 3.
    args.peer_runs = args.peer_runs or min(3, args.runs)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the selected workloads and report (holding the scratch folder's lock throughout)."""
    args = parse_args(argv)
    with work_lock(args.work.resolve(), lambda text: print(text, file=sys.stderr, flush=True)):
        try:
            return run(args)
        finally:
            trash.empty()  # scratch folders moved aside between runs, deleted once nothing is timed


def run(args: argparse.Namespace) -> int:
    """Run the selected workloads and report."""
    from benchmarks import report

    wanted = [w.strip().upper() for w in args.only.split(",")] if args.only else list(WORKLOADS)
    unknown = [w for w in wanted if w not in WORKLOADS]
    if unknown:
        print(f"unknown workload(s): {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}", file=sys.stderr)
        return 2

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    ctx = Context(quick=args.quick, runs=args.runs, timeout_s=args.timeout, log=log, work=args.work.resolve())
    meta = {"started_at": report.stamp(), "command": report.command_line(), "quick": args.quick, "runs": args.runs,
            "peer_runs": args.peer_runs,
            "machine": report.machine(), "errors": {}, "assetflow_source_digest": report.source_digest()}
    workloads: list[Workload] = []
    t0 = time.perf_counter()
    for wid in wanted:
        log(f"{wid} …")
        try:
            workloads.append(WORKLOADS[wid](ctx))
        except Exception as exc:  # one broken workload must not lose the others' figures
            log(f"  ! {wid} failed: {type(exc).__name__}: {exc}")
            meta["errors"][wid] = f"{type(exc).__name__}: {exc}"
    measurements = [m for wl in workloads for m in wl.measurements]
    if args.peers:
        from benchmarks.peers.run import PeerSettings, run_peers

        log("peers …")
        settings = PeerSettings(args.peer_runs, args.peer_timeout, args.quick, log,
                                [Path(p).absolute() for p in args.peer_venv])
        meta["peers"] = run_peers(measurements, settings)
    if args.profile:
        meta["profiles"] = _profile(ctx, measurements, args.py_spy, log)
    meta["finished_at"] = report.stamp()
    meta["elapsed_s"] = time.perf_counter() - t0
    meta["machine"]["loadavg_end"] = os.getloadavg()
    if report.source_digest() != meta["assetflow_source_digest"]:
        meta["warning"] = "assetflow's source changed during this run: figures mix code states"
        log(f"  ! {meta['warning']}")
    report.print_table(workloads, args.peers)
    document = report.results_document(workloads, meta)
    report.write_json(args.out, document)
    log(f"results: {args.out}")
    if args.markdown:
        args.markdown.write_text(report.markdown(workloads, meta, meta["command"]))
        log(f"markdown: {args.markdown}")
    return 1 if meta["errors"] or any(m.error for m in measurements) else 0


def _profile(ctx: Context, measurements: list[Measurement], py_spy_path: str | None,
             log: Callable[[str], None]) -> dict[str, str]:
    """py-spy profiles of every measurement that missed a target; returns {key: summary path}."""
    from benchmarks.profiling import find_py_spy, profile

    py_spy = find_py_spy(py_spy_path)
    missed = [m for m in measurements if m.met() is False]
    if not missed:
        return {}
    if py_spy is None:
        log("  ! --profile: py-spy not found (pip install py-spy, or --py-spy PATH)")
        return {"error": "py-spy not found"}
    done = {}
    for m in missed:
        key = f"{m.workload}.{m.key}"
        log(f"  profiling {key} …")
        job = ctx.jobs.get(key)
        summary = profile(m, ctx.env, py_spy, job.prepare if job else None)
        done[key] = str(summary)
    return done


if __name__ == "__main__":
    sys.exit(main())
