"""Human output (rich tables, a progress bar) and ``--json`` output for every command.

Each function prints one command's result and returns the exit code it implies. With ``--json``
exactly one JSON document goes to stdout and nothing else does.
"""

from __future__ import annotations

import sys
import time
from functools import cache
from typing import TYPE_CHECKING, Any

import orjson

from .api import Project
from .planner import Plan, external

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress as RichProgress
    from rich.table import Table

    from .results import LineageResult, RunDetailModel, RunResult, RunSummaryModel, StatusResult


# rich is imported on first human output only: a --json command (scripts, CI) never pays for it.
@cache
def _console() -> Console:
    from rich.console import Console

    # Off a terminal rich assumes 80 columns; tables of asset names and versions need more to stay legible.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def _table(title: str) -> Table:
    from rich.table import Table

    return Table(title=title)


# Datetimes pass through to ``str`` as they always have; keys may be non-strings (partition indexes).
_JSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE


def _json(document: Any) -> None:
    if hasattr(document, "model_dump"):
        document = document.model_dump(mode="json")
    data = orjson.dumps(document, default=str, option=_JSON_OPTIONS)
    binary = getattr(sys.stdout, "buffer", None)
    if binary is None:  # a text-only stream (a caller's StringIO)
        sys.stdout.write(data.decode())
    else:
        sys.stdout.flush()
        binary.write(data)
    sys.stdout.flush()


def _partition(value: str | None) -> str:
    return "—" if value is None else value


def listing(project: Project, as_json: bool) -> int:
    """``list``: every asset with its partitions, group and upstreams."""
    layout_keys = {}
    rows = []
    for name in project.graph.order:
        node = project.graph.nodes[name]
        from .mappings import keys_of

        keys = keys_of(node.partitions, project.now)
        layout_keys[name] = keys
        rows.append({
            "asset": name, "kind": "source" if node.is_source else "asset", "group": node.group,
            "partitions": None if node.partitions is None else node.partitions.describe(),
            "partition_count": 0 if node.partitions is None else len(keys),
            "upstream": [e.upstream for e in project.graph.upstream[name]],
            "checks": [c.name for c in project.graph.checks.get(name, [])],
            "tags": dict(node.tags),
        })
    if as_json:
        _json({"assets": rows})
        return 0
    table = _table("assets")
    for column in ("asset", "group", "partitions", "count", "upstream", "checks"):
        table.add_column(column)
    for row in rows:
        name = row["asset"] + (" (source)" if row["kind"] == "source" else "")
        table.add_row(name, row["group"], row["partitions"] or "unpartitioned", str(row["partition_count"] or 1),
                      ", ".join(row["upstream"]), ", ".join(row["checks"]))
    _console().print(table)
    return 0


def plan(the_plan: Plan, as_json: bool) -> int:
    """``plan``: steps with reasons and causes, waiting partitions, summary."""
    if as_json:
        _json(the_plan.document())
        return 0
    summary = the_plan.summary()
    if not summary["steps"] and not the_plan.waiting:
        _console().print(f"Nothing to do: {summary['up_to_date']} (asset, partition) pairs up to date.")
        return 0
    table = _table(f"plan: {summary['steps']} steps over {summary['assets']} assets "
                        f"({summary['up_to_date']} up to date)")
    for column in ("asset", "partition", "reasons", "caused by"):
        table.add_column(column)
    shown = the_plan.steps[:500]
    for step in shown:
        causes = ", ".join(f"{c.asset}[{_partition(c.partition)}]" for c in step.causes[:3])
        if len(step.causes) > 3:
            causes += f" (+{len(step.causes) - 3})"
        table.add_row(step.asset, _partition(step.partition), ", ".join(step.reasons), causes)
    _console().print(table)
    if len(the_plan.steps) > len(shown):
        _console().print(f"… and {len(the_plan.steps) - len(shown)} more steps (use --json for all)")
    if the_plan.waiting:
        _console().print(f"{len(the_plan.waiting)} waiting for inputs that do not exist yet, e.g. "
                       + ", ".join(f"{w.asset}[{_partition(w.partition)}] ← {w.source}" for w in the_plan.waiting[:3]))
    return 0


class Progress:
    """A rich progress bar with done/total and ETA, only when enabled (a terminal, no --json)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: RichProgress | None = None
        self._task: Any = None
        self._last = 0.0

    def __enter__(self) -> Progress:
        if self.enabled:
            # Bound to the terminal now: during the run sys.stdout routes each step's prints to its logs.
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            terminal = Console(file=sys.stdout, force_terminal=True)
            self._bar = RichProgress(TextColumn("materializing"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=terminal)
            self._bar.__enter__()
            self._task = self._bar.add_task("steps", total=None)
        return self

    def update(self, done: int, total: int) -> None:
        """Report progress; throttled so fast runs are not slowed by rendering."""
        if self._bar is None:
            return
        now = time.monotonic()
        if done in (0, total) or now - self._last > 0.05:
            self._last = now
            self._bar.update(self._task, completed=done, total=total)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)


def run_result(result: RunResult, as_json: bool) -> int:
    """``materialize``: outcome counts and failures; exit 1 when anything failed."""
    code = 0 if result.status == "success" else 1
    if as_json:
        _json(result)
        return code
    counts = result.counts
    _console().print(f"run {result.run_id} ({result.kind}): [bold]{result.status}[/bold] — "
                   f"{counts['materialized']} materialized, {counts['skipped']} skipped, "
                   f"{counts['failed']} failed, {counts['upstream_failed']} upstream failed")
    failed = [s for s in result.steps if s.outcome in ("failed", "check_failed")]
    if failed:
        table = _table("failures")
        for column in ("asset", "partition", "outcome", "attempts", "error"):
            table.add_column(column)
        for step in failed[:50]:
            table.add_row(step.asset, _partition(step.partition), step.outcome, str(step.attempts), step.error or "")
        _console().print(table)
        _console().print(f"details: assetflow run {result.run_id}")
    return code


def status(result: StatusResult, as_json: bool) -> int:
    """``status``: one line per asset."""
    if as_json:
        _json(result)
        return 0
    table = _table("status")
    for column in ("asset", "partitions", "up to date", "stale", "missing", "failed", "last materialized", "freshness"):
        table.add_column(column)
    for a in result.assets:
        fresh = a.freshness
        if fresh.max_lag_s is None:
            freshness = "—"
        else:
            lag = "never" if fresh.lag_s is None else f"{fresh.lag_s / 3600:.1f}h"
            freshness = f"{'[red]OVERDUE[/red] ' if fresh.overdue else ''}lag {lag} / {fresh.max_lag_s / 3600:.1f}h"
        table.add_row(a.asset, str(a.partitions), str(a.up_to_date), str(a.stale), str(a.missing),
                      f"[red]{a.failed}[/red]" if a.failed else "0",
                      a.last_materialized_at.isoformat(timespec="seconds") if a.last_materialized_at else "never", freshness)
    _console().print(table)
    for run in result.running:
        _console().print(f"running: {run['run_id']} ({run['kind']}) since {run['started_at']}")
    return 0


def lineage(result: LineageResult, as_json: bool) -> int:
    """``lineage``: what one partition consumed and who consumed it."""
    if as_json:
        _json(result)
        return 0
    _console().print(f"[bold]{result.asset}[/bold] [{_partition(result.partition)}] data {result.data_version} "
                   f"code {result.code_version} run {result.run_id} at {result.materialized_at}")
    table = _table("inputs")
    for column in ("asset", "partition", "data version"):
        table.add_column(column)
    for i in result.inputs:
        table.add_row(i.asset, _partition(i.partition), i.data_version or "")
    _console().print(table)
    _console().print("downstream: " + (", ".join(f"{d['asset']}[{_partition(d['partition'])}]" for d in result.downstream) or "none"))
    return 0


def runs(result: list[RunSummaryModel], as_json: bool) -> int:
    """``runs``: newest first."""
    if as_json:
        _json({"runs": [r.model_dump(mode="json") for r in result]})
        return 0
    table = _table("runs")
    for column in ("run", "kind", "status", "started", "materialized", "skipped", "failed", "tags"):
        table.add_column(column)
    for r in result:
        table.add_row(r.run_id, r.kind, r.status, str(r.started_at), str(r.counts["materialized"]),
                      str(r.counts["skipped"]), str(r.counts["failed"] + r.counts["upstream_failed"]),
                      ", ".join(f"{k}={v}" for k, v in r.tags.items()))
    _console().print(table)
    return 0


def run_detail(result: RunDetailModel, as_json: bool) -> int:
    """``run RUN_ID``: steps, attempts, errors and logs."""
    if as_json:
        _json(result)
        return 0
    _console().print(f"run {result.run_id} ({result.kind}) {result.status} {result.counts}")
    for step in result.steps:
        _console().print(f"[bold]{step.asset}[/bold] [{_partition(step.partition)}] {step.outcome}")
        for attempt in step.attempts:
            line = f"  attempt {attempt.number}: {attempt.outcome} in {attempt.duration_s or 0:.3f}s"
            _console().print(line + (f" — {attempt.error}" if attempt.error else ""), markup=False)
            if attempt.traceback:
                _console().print("    " + attempt.traceback.rstrip().replace("\n", "\n    "), markup=False)
        if step.logs:
            _console().print("    " + step.logs.replace("\n", "\n    "), markup=False)
    for check in result.checks:
        state = "passed" if check["passed"] else "FAILED"
        _console().print(f"check {check['check_name']} on {check['asset']}[{_partition(external(check['partition'] or ''))}]: {state}")
    return 0


def gc(result: dict[str, Any], as_json: bool) -> int:
    """``gc``: what was (or would be) deleted."""
    if as_json:
        _json(result)
        return 0
    verb = "would delete" if result["dry_run"] else "deleted"
    _console().print(f"{verb} {result['deleted']} values, {result['bytes_freed']} bytes; kept {result['kept']}")
    return 0


def unlocked(holder: dict[str, Any] | None, as_json: bool) -> int:
    """``unlock``: who held the lock that was cleared."""
    if as_json:
        _json({"unlocked": holder is not None, "holder": holder})
        return 0
    if holder is None:
        _console().print("no lock was held")
    else:
        print(f"assetflow: warning: cleared the lock of run {holder.get('run_id')} on {holder.get('host')} "
              f"(pid {holder.get('pid')}); if that runner is still alive, two runners may now write", file=sys.stderr)
    return 0
