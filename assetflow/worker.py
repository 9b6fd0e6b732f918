"""One attempt of one step, wherever it runs (a thread, a worker process, a Dask worker).

The worker loads its inputs from the data store, calls the asset function, writes the value
(content-addressed, atomically) and runs the asset's checks. Only a small :class:`AttemptResult`
travels back to the coordinator, which alone writes lineage. A value is durable before its result
exists, so the coordinator can never record a row pointing at a value that is not there.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .context import Context, StepLog, captured
from .definitions import AssetDef, CheckDef, Failure, Output
from .hashing import data_version
from .values import ValueStore

# The records below are made once or more per attempt: plain slotted dataclasses, read-only by
# convention. A frozen one costs four times as much to construct (a guarded setattr per field), which
# on 10^4 no-op steps was a tenth of the coordinator's time.


@dataclass(slots=True)
class InputSpec:
    """Where one parameter's value comes from: ``(partition, path, format)`` entries, in partition
    order. ``many`` parameters receive ``{partition: value}``; source parameters receive paths."""

    param: str
    upstream: str
    many: bool
    is_source: bool
    entries: tuple[tuple[str, str | None, str | None], ...]


@dataclass(slots=True)
class StepTask:
    """Everything a worker needs for one attempt; small and picklable."""

    asset: str
    partitions: tuple[str, ...]  # one key; several for a single-run range; ("",) when unpartitioned
    run_id: str
    attempt: int
    inputs: tuple[InputSpec, ...]
    config: Any
    values: ValueStore


@dataclass(slots=True)
class StoredPartition:
    """The value one partition produced."""

    partition: str
    data_version: str
    path: str | None
    format: str | None
    size: int


@dataclass(slots=True)
class CheckOutcome:
    """The result of one check on one partition's value."""

    name: str
    partition: str
    passed: bool
    blocking: bool
    error: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class AttemptResult:
    """What came of an attempt: ``outcome`` is ``materialized``, ``failed`` or ``check_failed``."""

    outcome: str
    duration_s: float
    stored: tuple[StoredPartition, ...] = ()
    checks: tuple[CheckOutcome, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    traceback: str | None = None
    retryable: bool = True
    logs: str = ""


class Abandoned(Exception):
    """The coordinator gave up on this attempt (timeout, cancellation): its result must not be written."""


def _load(values: ValueStore, spec: InputSpec) -> Any:
    """One parameter's value: a source's path (or key), a stored value, or None where none was stored."""
    if spec.many:
        return {partition: _one(values, spec.is_source, path, fmt) for partition, path, fmt in spec.entries}
    if not spec.entries:
        return None
    _, path, fmt = spec.entries[0]
    return _one(values, spec.is_source, path, fmt)


def _one(values: ValueStore, is_source: bool, path: str | None, fmt: str | None) -> Any:
    if is_source:
        return path
    return None if path is None else values.get(path, fmt or "pickle")


def _split_range(asset: AssetDef, value: Any, partitions: tuple[str, ...]) -> dict[str, Any]:
    """A single-run asset returns ``{partition: value}`` or one table with a ``partition`` column."""
    if isinstance(value, Mapping):
        missing = [p for p in partitions if p not in value]
        if missing:
            raise Failure(f"asset '{asset.name}' single-run result lacks partitions {missing[:3]}", retry=False)
        return {p: value[p] for p in partitions}
    if hasattr(value, "column_names") and "partition" in value.column_names:
        import pyarrow.compute as pc

        return {p: value.filter(pc.equal(value["partition"], p)) for p in partitions}
    raise Failure(f"asset '{asset.name}' is single_run: return {{partition: value}} or a table with a 'partition' column", retry=False)


def _run_checks(checks: list[CheckDef], partition: str, value: Any) -> list[CheckOutcome]:
    results = []
    for check in checks:
        try:
            verdict = check.fn(value)
            metadata: Mapping[str, Any] = {}
            if isinstance(verdict, tuple):
                verdict, metadata = verdict
            results.append(CheckOutcome(check.name, partition, bool(verdict), check.blocking, None, dict(metadata)))
        except Exception as exc:
            results.append(CheckOutcome(check.name, partition, False, check.blocking, f"{type(exc).__name__}: {exc}"))
    return results


def run_attempt(task: StepTask, asset: AssetDef, checks: list[CheckDef], cancelled: Callable[[], bool] = lambda: False) -> AttemptResult:
    """Execute one attempt. Raises :class:`Abandoned` if ``cancelled()`` turns true before the write."""
    t0 = time.perf_counter()
    single = asset.backfill == "single_run"
    sig = asset.signature
    assert sig is not None
    metadata: dict[str, Any] = {}
    log = None
    with captured() as out:
        try:
            kwargs = {spec.param: _load(task.values, spec) for spec in task.inputs}
            if sig.context:  # built only for functions that ask for it: most never do
                log = StepLog(asset.name, ",".join(task.partitions) or None)
                kwargs[sig.context] = Context(asset.name, task.partitions[0] or None,
                                              list(task.partitions) if single else None, task.run_id,
                                              task.attempt, log, metadata)
            if sig.config:
                kwargs[sig.config[0]] = task.config
            result = asset.fn(**kwargs)
            override = None
            if isinstance(result, Output):
                metadata.update(result.metadata or {})
                override, result = result.data_version, result.value
            by_partition = _split_range(asset, result, task.partitions) if single else {task.partitions[0]: result}
            if cancelled():
                raise Abandoned()
            stored, check_results = [], []
            for partition, value in by_partition.items():
                if value is None:
                    stored.append(StoredPartition(partition, override or data_version(None), None, None, 0))
                else:
                    put = task.values.put(asset.name, value)
                    stored.append(StoredPartition(partition, override or put.content_hash, put.path, put.format, put.size))
                check_results.extend(_run_checks(checks, partition, value))
            blocked = any(c.blocking and not c.passed for c in check_results)
            failed_checks = [c.name for c in check_results if c.blocking and not c.passed]
            return AttemptResult(
                "check_failed" if blocked else "materialized", time.perf_counter() - t0, tuple(stored),
                tuple(check_results), dict(metadata),
                error=f"blocking check failed: {', '.join(failed_checks)}" if blocked else None,
                retryable=False, logs=_logs(log, out.getvalue()),
            )
        except Abandoned:
            raise
        except Exception as exc:
            return AttemptResult(
                "failed", time.perf_counter() - t0, error=f"{type(exc).__name__}: {exc}",
                traceback=traceback.format_exc(), retryable=not (isinstance(exc, Failure) and not exc.retry),
                logs=_logs(log, out.getvalue()),
            )


def _logs(log: StepLog | None, printed: str) -> str:
    parts = list(log.lines) if log is not None else []
    if printed:
        parts.append(printed.rstrip("\n"))
    return "\n".join(parts)
