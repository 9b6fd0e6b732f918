"""The verifying-trace rebuilder: *given what was recorded and the current versions, why is it stale?*

In "Build Systems à la Carte" terms assetflow is a topological scheduler with a verifying-trace
rebuilder. This module is that rebuilder and nothing else: one pure function over arrays. The planner
calls it once for every (asset, partition) of the graph; the executor calls it again for a single step
once its upstreams have finished, with their fresh data versions — if nothing differs any more, the
step is skipped (early cutoff).

What it does not decide: ``upstream_stale`` is transitive (an upstream that will be rebuilt has no
current version yet), so the planner derives it by walking the graph; and ``missing`` sources are not
staleness but waiting, also the planner's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .arrays import fill_null, to_numpy


class Reason(IntFlag):
    """Why an (asset, partition) is stale. The names are the contract's stable strings."""

    missing = 1
    code_changed = 2
    config_changed = 4
    upstream_changed = 8
    upstream_stale = 16
    failed = 32
    artifact_missing = 64
    source_changed = 128


REASON_ORDER: tuple[Reason, ...] = tuple(Reason)
BIT: dict[Reason, np.uint16] = {r: np.uint16(r) for r in Reason}
"""Each reason as a numpy scalar, so in-place ORs keep the uint16 dtype."""


def reason_names(mask: int) -> tuple[str, ...]:
    """The reason strings of a bitmask, in the contract's order."""
    return tuple(r.name for r in REASON_ORDER if mask & r)  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class Records:
    """What the store says about each target, aligned arrays of one length."""

    recorded: np.ndarray  # bool: a successful materialization exists
    failed: np.ndarray  # bool: the latest final attempt failed
    artifact_present: np.ndarray  # bool: the recorded value is still in the data store
    code_version: pa.Array | pa.ChunkedArray  # recorded code version (null when none)
    config_hash: pa.Array | pa.ChunkedArray


@dataclass(frozen=True, slots=True)
class Current:
    """The definitions' versions now: one per asset, and for each target the asset it belongs to
    (a version is per asset, so it is never repeated per partition)."""

    code_version: pa.Array
    config_hash: pa.Array
    asset: np.ndarray  # per target: index into the two arrays above


@dataclass(frozen=True, slots=True)
class InputPairs:
    """Upstream partitions a target consumed last time and/or consumes now, one row per pair.

    ``expected`` pairs come from the current graph, the rest only from the record; ``recorded_version``
    is null when the pair was not consumed last time, ``current_version`` null when the upstream has no
    value now.
    """

    target: np.ndarray  # int index into the targets
    upstream: np.ndarray  # opaque upstream id, passed through into causes
    expected: np.ndarray  # bool
    from_source: np.ndarray  # bool: the upstream is a source asset
    recorded_version: pa.Array | pa.ChunkedArray
    current_version: pa.Array | pa.ChunkedArray


@dataclass(frozen=True, slots=True)
class Verdict:
    """Reasons per target as bitmasks, and the (target, upstream, reason) pairs behind input reasons."""

    reasons: np.ndarray  # uint16 per target; 0 = up to date
    cause_target: np.ndarray
    cause_upstream: np.ndarray
    cause_reason: np.ndarray  # uint16 Reason value per cause


def _mask(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(to_numpy(array), dtype=bool)


def _differs(recorded: pa.Array | pa.ChunkedArray, current: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Element-wise ``recorded IS DISTINCT FROM current``."""
    equal = pc.equal(recorded, current)
    both_null = pc.and_(pc.is_null(recorded), pc.is_null(current))
    return ~_mask(pc.or_kleene(fill_null(equal, False), both_null))


def _differs_from_asset(recorded: pa.Array | pa.ChunkedArray, per_asset: pa.Array, asset: np.ndarray) -> np.ndarray:
    """Element-wise ``recorded IS DISTINCT FROM per_asset[asset]``, compared as codes into the few
    distinct current versions: one hash lookup per row, and integer work after that however many
    partitions (assets may share a version, so codes index the distinct values, not the assets)."""
    distinct = pc.unique(per_asset)
    codes = to_numpy(fill_null(pc.index_in(recorded, value_set=distinct), -1))
    wanted = to_numpy(pc.index_in(per_asset, value_set=distinct))  # every value is in its own uniques
    return codes != wanted[asset]


def why_stale(records: Records, current: Current, pairs: InputPairs) -> Verdict:
    """Why each target is stale, as a pure function of its record and the current versions."""
    reasons = np.zeros(len(records.recorded), dtype=np.uint16)
    recorded = records.recorded
    reasons[~recorded] |= BIT[Reason.missing]
    reasons[records.failed] |= BIT[Reason.failed]
    reasons[recorded & _differs_from_asset(records.code_version, current.code_version, current.asset)] |= BIT[Reason.code_changed]
    reasons[recorded & _differs_from_asset(records.config_hash, current.config_hash, current.asset)] |= BIT[Reason.config_changed]
    reasons[recorded & ~records.artifact_present] |= BIT[Reason.artifact_missing]

    # An input changed when a pair was consumed at another version, or when the set of pairs changed:
    # a new period arrived for an all-partitions downstream or a window grew (expected, never consumed),
    # or a consumed partition is no longer an input. A consumed pair whose upstream has no value now is
    # not a change by itself: that upstream is missing, reported as upstream_stale or waiting.
    has_current = ~_mask(pc.is_null(pairs.current_version))
    never_consumed = _mask(pc.is_null(pairs.recorded_version))
    changed = has_current & _differs(pairs.recorded_version, pairs.current_version)
    changed |= pairs.expected & never_consumed
    changed |= ~pairs.expected
    changed &= recorded[pairs.target]
    reason = np.where(pairs.from_source, BIT[Reason.source_changed], BIT[Reason.upstream_changed])
    cause_target = pairs.target[changed]
    cause_reason = reason[changed].astype(np.uint16)
    np.bitwise_or.at(reasons, cause_target, cause_reason)
    return Verdict(reasons, cause_target, pairs.upstream[changed], cause_reason)
