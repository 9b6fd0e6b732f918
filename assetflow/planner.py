"""The planner: a pure function of (graph, what the edge observed, clock) → which (asset, partition)
pairs to build and why.

It works set-at-a-time: records are aligned with the graph's global ids by vectorized lookups
(:mod:`alignment`), the rebuilder judges every partition at once, and a walk over *nodes* (not
partitions) in topological order propagates ``upstream_stale`` and waiting with numpy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .arrays import numbers, strings, to_numpy
from .gcpause import without_gc_pauses
from .layout import Layout
from .alignment import align_pairs, align_records
from .lineage_store import StoreSnapshot
from .ranges import PartitionFilter, select_partitions
from .rebuilder import BIT, Current, InputPairs, Reason, Records, reason_names, why_stale


@dataclass(frozen=True, slots=True)
class Cause:
    """The upstream (asset, partition) behind one of a step's input reasons."""

    asset: str
    partition: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Step:
    """One (asset, partition) the plan would build, with why."""

    asset: str
    partition: str | None
    reasons: tuple[str, ...]
    causes: tuple[Cause, ...]


C = TypeVar("C")
S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class Waiting:
    """A stale (asset, partition) that cannot run because an input does not exist yet."""

    asset: str
    partition: str | None
    source: str


@dataclass(frozen=True)
class Observed:
    """Everything the edge read for one plan: it is the planner's whole view of the world."""

    snapshot: StoreSnapshot
    code_versions: Mapping[str, str]
    config_hashes: Mapping[str, str]
    present_paths: frozenset[str] = frozenset()
    source_versions: pa.Table | None = None  # (source, partition, version); version null = absent


@dataclass(frozen=True)
class PlanRequest:
    """What the user asked for: a selection, partition filters, and whether only stale work counts."""

    select: frozenset[str]
    filters: tuple[PartitionFilter, ...] = ()
    stale: bool = False


_REASON_NAME: dict[int, str] = {int(r): str(r.name) for r in Reason}


def external(partition: str) -> str | None:
    """Unpartitioned assets use ``""`` inside; users see ``None`` (JSON null)."""
    return partition or None


class Plan:
    """The result of planning. ``steps`` are in dependency order; the arrays behind them stay available
    to the executor (current versions, recorded inputs) so it can re-judge steps for early cutoff."""

    def __init__(self, layout: Layout, request: PlanRequest, snapshot: StoreSnapshot, aligned: pa.Table, pairs: pa.Table,
                 versions: tuple[pa.Array, pa.Array], reasons: np.ndarray, causes: tuple[np.ndarray, np.ndarray, np.ndarray],
                 step_gids: np.ndarray, waiting: list[Waiting], up_to_date: int, stale_mask: np.ndarray) -> None:
        self.layout = layout
        self.request = request
        self.snapshot = snapshot
        self.aligned = aligned
        self.pairs = pairs
        self.versions = versions
        self.reasons = reasons
        self._causes = causes
        self.step_gids = step_gids
        self.waiting = waiting
        self.up_to_date = up_to_date
        self.stale_mask = stale_mask

    @cached_property
    @without_gc_pauses
    def steps(self) -> list[Step]:
        """The steps, built on first use (plans over many partitions are mostly consumed as arrays)."""
        return self.assemble(Cause, lambda asset, partition, reasons, causes: Step(asset, partition, reasons, tuple(causes)))

    def assemble(self, cause: Callable[[str, str | None, str], C], step: Callable[[str, str | None, tuple[str, ...], list[C]], S]) -> list[S]:
        """Build one ``step(asset, partition, reasons, causes)`` per step, in order, where each cause is
        ``cause(asset, partition, reason)``. A cause shared by many steps (an upstream partition several
        downstream partitions wait on) is built once: ``plan.steps`` builds dataclasses with this, and
        ``plan --json`` plain dicts, without either paying for the other."""
        layout, gids = self.layout, self.step_gids
        target, upstream, code = self._causes
        is_step = np.zeros(layout.size, dtype=bool)
        is_step[gids] = True
        keep = is_step[target]
        target, upstream, code = target[keep], upstream[keep], code[keep].astype(np.int64)
        order = np.lexsort((upstream, target))
        target, upstream, code = target[order], upstream[order], code[order]
        bounds = np.searchsorted(target, gids).tolist() + [len(target)]
        distinct, which = np.unique(upstream * 256 + code, return_inverse=True)  # reason bits fit in a byte
        made = [cause(name, partition, _REASON_NAME[reason]) for name, partition, reason
                in zip(*self._names(distinct // 256), (distinct % 256).tolist())]
        causes = [made[i] for i in which.tolist()]
        reason_names_of: dict[int, tuple[str, ...]] = {}
        return [step(name, partition, reason_names_of.get(mask) or reason_names_of.setdefault(mask, reason_names(mask)),
                     causes[lo:hi])
                for name, partition, mask, lo, hi in zip(*self._names(gids), self.reasons[gids].tolist(), bounds, bounds[1:])]

    @without_gc_pauses
    def document(self) -> dict[str, Any]:
        """``plan --json``: ``{"steps": [{"asset", "partition", "reasons", "causes": [{"asset", "partition",
        "reason"}]}], "waiting": [{"asset", "partition", "source"}], "summary": {"steps", "assets",
        "up_to_date"}}``. Plain dicts straight from the arrays: a plan over a year of partitions has
        ~10^5 causes, which would gain nothing from passing through :class:`Step` objects first."""
        return {
            "steps": self.assemble(
                lambda asset, partition, reason: {"asset": asset, "partition": partition, "reason": reason},
                lambda asset, partition, reasons, causes: {"asset": asset, "partition": partition,
                                                           "reasons": list(reasons), "causes": causes}),
            "waiting": [{"asset": w.asset, "partition": w.partition, "source": w.source} for w in self.waiting],
            "summary": self.summary(),
        }

    def _names(self, ids: np.ndarray) -> tuple[list[str], list[str | None]]:
        """(asset, partition as users see it) of each global id, or of each consumed input that went
        away, given as -(its row in the snapshot's inputs + 1)."""
        layout = self.layout
        gids = np.maximum(ids, 0)
        nodes = layout.node_of(gids)
        locals_ = (gids - layout.offsets[nodes]).tolist()
        names = [layout.names[n] for n in nodes.tolist()]
        keys = layout.keys
        partitions = [external(keys[name][local]) for name, local in zip(names, locals_)]
        gone = np.flatnonzero(ids < 0)
        if len(gone):
            rows = numbers(-1 - ids[gone])
            inputs = self.snapshot.inputs
            for i, name, key in zip(gone.tolist(), inputs.column("gone_asset").take(rows).to_pylist(),
                                    inputs.column("gone_partition").take(rows).to_pylist()):
                names[i], partitions[i] = name, external(key)
        return names, partitions

    @property
    def assets(self) -> list[str]:
        """Assets with at least one step, in dependency order."""
        nodes = self.layout.node_of(self.step_gids)  # ascending, as step ids are
        first = np.flatnonzero(np.diff(nodes, prepend=-1))
        return [self.layout.names[i] for i in nodes[first].tolist()]

    @cached_property
    def _pairs_by_down(self) -> tuple[np.ndarray, np.ndarray]:
        """Pair rows ordered by downstream id, and the downstream ids in that order."""
        down = _np(self.pairs.column("down"))
        order = np.argsort(down, kind="stable")
        return order, down[order]

    def recheck(self, gids: np.ndarray, version_of: Callable[[int], str | None]) -> np.ndarray:
        """Judge ``gids`` again with the upstream versions ``version_of`` gives now — the executor's call
        for early cutoff. Returns a reason bitmask per gid."""
        order, down = self._pairs_by_down
        lo = np.searchsorted(down, gids, side="left")
        hi = np.searchsorted(down, gids, side="right")
        rows = np.concatenate([order[a:b] for a, b in zip(lo.tolist(), hi.tolist())]) if len(gids) else np.zeros(0, np.int64)
        pairs = self.pairs.take(numbers(rows))
        ups = _np(pairs.column("up")).tolist()
        current = strings([version_of(u) if u >= 0 else None for u in ups])
        records, versions = _records(self.aligned.take(numbers(gids)), self.versions, self.layout.node_of(gids))
        target = np.repeat(np.arange(len(gids)), hi - lo)
        return why_stale(records, versions, _input_pairs(self.layout, pairs, target, current)).reasons

    def summary(self) -> dict[str, int]:
        """Counts for the contract's ``summary`` object."""
        return {"steps": len(self.step_gids), "assets": len(self.assets), "up_to_date": self.up_to_date}


def _np(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return to_numpy(column)


def _records(aligned: pa.Table, versions: tuple[pa.Array, pa.Array], nodes: np.ndarray) -> tuple[Records, Current]:
    records = Records(
        recorded=_np(aligned.column("recorded")),
        failed=_np(aligned.column("failed")),
        artifact_present=_np(aligned.column("present")),
        code_version=aligned.column("code_version"),
        config_hash=aligned.column("config_hash"),
    )
    return records, Current(versions[0], versions[1], nodes)


def current_versions(layout: Layout, observed: Observed) -> tuple[pa.Array, pa.Array]:
    """Code and config version of every node now, in layout order."""
    return (strings([observed.code_versions.get(n) for n in layout.names]),
            strings([observed.config_hashes.get(n) for n in layout.names]))


def _input_pairs(layout: Layout, pairs: pa.Table, target: np.ndarray, current_version: pa.Array) -> InputPairs:
    up = _np(pairs.column("up")).astype(np.int64)
    has_up = up >= 0
    return InputPairs(
        target=target.astype(np.int64),
        # The cause id: the upstream's global id, or -(row + 1) for a consumed input that went away.
        upstream=np.where(has_up, up, -1 - _np(pairs.column("row"))),
        expected=_np(pairs.column("expected")),
        from_source=layout.is_source[layout.node_of(np.where(has_up, up, 0))] & has_up,
        recorded_version=pairs.column("recorded_version"),
        current_version=current_version,
    )


def judge(layout: Layout, aligned: pa.Table, pairs: pa.Table,
          versions: tuple[pa.Array, pa.Array]) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Run the rebuilder over every global id at once."""
    up = _np(pairs.column("up"))
    # A null index takes a null: recorded inputs whose upstream no longer exists have no current version.
    current = pc.take(aligned.column("data_version"), numbers(up, mask=up < 0))
    records, versions = _records(aligned, versions, layout.node_of(np.arange(layout.size)))
    verdict = why_stale(records, versions, _input_pairs(layout, pairs, _np(pairs.column("down")), current))
    return verdict.reasons, (verdict.cause_target, verdict.cause_upstream, verdict.cause_reason)


def _propagate(layout: Layout, reasons: np.ndarray, absent: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Walk the graph level by level (:attr:`Layout.levels`): a partition whose input is stale is ``upstream_stale``; a stale
    partition whose input is waiting, absent or not yet in existence waits. Returns stale and
    blocked-by (node index, -1 = not blocked) masks and the upstream_stale causes."""
    stale = np.zeros(layout.size, dtype=bool)
    blocked_by = np.full(layout.size, -1, dtype=np.int64)
    blocked_by[absent] = layout.node_of(np.flatnonzero(absent))
    waiting = absent.copy()
    cause_down: list[np.ndarray] = []
    cause_up: list[np.ndarray] = []
    for level in layout.levels:  # a level's inputs are all final before it is visited
        hit = stale[level.up]
        if hit.any():
            reasons[level.down[hit]] |= BIT[Reason.upstream_stale]
            cause_down.append(level.down[hit])
            cause_up.append(level.up[hit])
        if len(level.block_target):
            from_up = level.block_source >= 0
            source = np.where(from_up, level.block_source, 0)
            held = ~from_up | waiting[source]
            # In edge order, so a later edge's blocker wins, as it would visiting edges one by one.
            blocked_by[level.block_target[held]] = np.where(from_up, blocked_by[source], level.block_node)[held]
        g = level.gids
        stale[g] = reasons[g] != 0
        waiting[g] = stale[g] & (blocked_by[g] >= 0)
    empty = np.zeros(0, np.int64)
    causes = (np.concatenate(cause_down) if cause_down else empty, np.concatenate(cause_up) if cause_up else empty)
    blocked_by[~waiting] = -1
    return stale, blocked_by, causes


def _selected(layout: Layout, request: PlanRequest) -> np.ndarray:
    mask = np.zeros(layout.size, dtype=bool)
    for name in request.select:
        lo, hi = layout.span(name)
        chosen = select_partitions(request.filters, layout.graph.nodes[name].partitions, layout.now) if request.filters else None
        mask[lo:hi] = True if chosen is None else chosen
    return mask


def _check_numbering(layout: Layout, snapshot: StoreSnapshot) -> None:
    theirs, ours = snapshot.catalogue, layout.catalogue
    if theirs is not ours and not (theirs.nodes.equals(ours.nodes) and theirs.keys.equals(ours.keys)):
        raise ValueError("the store snapshot was read for another layout of the graph")


@without_gc_pauses
def plan(layout: Layout, observed: Observed, request: PlanRequest) -> Plan:
    """Plan the work for ``request`` over ``layout`` (the graph at the clock reading): pure,
    deterministic, and set-at-a-time. ``observed.snapshot`` must be numbered by ``layout.catalogue``."""
    _check_numbering(layout, observed.snapshot)
    aligned = align_records(layout, observed.snapshot, observed.source_versions, observed.present_paths)
    pairs = align_pairs(layout, observed.snapshot)
    versions = current_versions(layout, observed)
    reasons, (ct, cu, cr) = judge(layout, aligned, pairs, versions)
    source_gids = layout.is_source[layout.node_of(np.arange(layout.size))]
    reasons[source_gids] = 0
    absent = source_gids & ~_np(aligned.column("data_version").is_valid())
    stale, blocked_by, (sd, su) = _propagate(layout, reasons, absent)
    selected = _selected(layout, request)
    waiting_mask = selected & (blocked_by >= 0) & ~source_gids
    runnable = selected & ~waiting_mask
    step_mask = runnable & stale if request.stale else runnable
    waiting = []
    for gid in np.flatnonzero(waiting_mask).tolist():
        name, key = layout.locate(gid)
        waiting.append(Waiting(name, external(key), layout.names[int(blocked_by[gid])]))
    causes = (
        np.concatenate((ct, sd)),
        np.concatenate((cu, su)),
        np.concatenate((cr, np.full(len(sd), BIT[Reason.upstream_stale], np.uint16))),
    )
    up_to_date = int((selected & ~stale & ~source_gids).sum())
    return Plan(layout, request, observed.snapshot, aligned, pairs, versions, reasons, causes, np.flatnonzero(step_mask), waiting,
                up_to_date, stale)
