"""Partition mappings: which upstream partitions each downstream partition consumes.

A mapping is resolved once per (mapping, downstream definition, upstream definition, clock) into
:class:`EdgePairs` — two aligned integer arrays of (downstream index, upstream index) into the two
definitions' key tuples. Everything that needs dependencies (planner, executor, lineage) works from
those arrays, so a year of daily partitions over a thousand assets is a handful of numpy operations
rather than millions of dictionary lookups. Definitions are shared by many assets, so results are
cached by value.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

import numpy as np

from .errors import DefinitionError
from .partitions import MultiPartitions, PartitionsDefinition, StaticPartitions, TimePartitions

UNPARTITIONED = ("",)
"""Key tuple of an unpartitioned asset: one value, keyed by the empty string internally."""


def keys_of(definition: PartitionsDefinition | None, now: datetime) -> tuple[str, ...]:
    """The ordered keys of ``definition`` at ``now``; one empty key for an unpartitioned asset."""
    return UNPARTITIONED if definition is None else definition.keys(now)


@dataclass(frozen=True, slots=True)
class EdgePairs:
    """Dependency pairs of one edge, sorted by downstream index then upstream index.

    ``unsatisfied`` marks downstream partitions that need an upstream partition which does not
    exist (yet): they cannot run and are reported as waiting.
    """

    down: np.ndarray
    up: np.ndarray
    unsatisfied: np.ndarray
    indptr: np.ndarray  # CSR offsets: the pairs of downstream i are [indptr[i], indptr[i+1])


def _pairs(down: np.ndarray, up: np.ndarray, n_down: int, unsatisfied: np.ndarray | None = None) -> EdgePairs:
    order = np.lexsort((up, down))
    mask = np.zeros(n_down, dtype=bool) if unsatisfied is None else unsatisfied
    down = down[order].astype(np.int64)
    return EdgePairs(down, up[order].astype(np.int64), mask, np.searchsorted(down, np.arange(n_down + 1)))


def _expand_ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each i, the pairs (i, j) for j in [lo[i], hi[i]) — vectorized."""
    counts = np.maximum(hi - lo, 0)
    down = np.repeat(np.arange(len(lo)), counts)
    starts = np.repeat(lo - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
    return down, starts + np.arange(counts.sum())


def _match_keys(down_keys: tuple[str, ...], up_keys: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if down_keys == up_keys:
        idx = np.arange(len(down_keys))
        return idx, idx, np.zeros(len(down_keys), dtype=bool)
    position = {k: i for i, k in enumerate(up_keys)}
    found = np.array([position.get(k, -1) for k in down_keys], dtype=np.int64)
    hit = found >= 0
    return np.flatnonzero(hit), found[hit], ~hit


class PartitionMapping:
    """Base of all mappings. Subclasses are frozen values usable as cache keys."""

    def check(self, down: PartitionsDefinition | None, up: PartitionsDefinition | None) -> None:
        """Raise ``DefinitionError`` (without asset names; the caller adds them) if this mapping cannot
        apply between the two definitions."""

    def pairs(self, down: PartitionsDefinition | None, up: PartitionsDefinition | None, now: datetime) -> EdgePairs:
        """The dependency pairs at ``now``."""
        raise NotImplementedError

    def many(self, down: PartitionsDefinition | None, up: PartitionsDefinition | None) -> bool:
        """Whether a downstream partition may consume several upstream partitions; if so its function
        receives ``{partition: value}`` (even when only one exists yet), else the value itself."""
        return False


@dataclass(frozen=True, slots=True)
class Identity(PartitionMapping):
    """Each partition depends on the upstream partition with the same key."""

    def check(self, down: PartitionsDefinition | None, up: PartitionsDefinition | None) -> None:
        if (down is None) != (up is None):
            raise DefinitionError("Identity() needs both assets partitioned or both unpartitioned")
        if down is not None and up is not None and down.kind != up.kind:
            raise DefinitionError(f"Identity() cannot map {down.describe()} to {up.describe()}")

    def pairs(self, down, up, now):
        down_keys, up_keys = keys_of(down, now), keys_of(up, now)
        d, u, missing = _match_keys(down_keys, up_keys)
        return _pairs(d, u, len(down_keys), missing)


@dataclass(frozen=True, slots=True)
class AllPartitions(PartitionMapping):
    """Each partition depends on every upstream partition (the default into an unpartitioned asset)."""

    def many(self, down, up):
        return up is not None

    def pairs(self, down, up, now):
        n, m = len(keys_of(down, now)), len(keys_of(up, now))
        return _pairs(np.repeat(np.arange(n), m), np.tile(np.arange(m), n), n)


def _time_bounds(definition: TimePartitions, now: datetime, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (epoch seconds) of each partition's period shifted by ``offset`` periods; shifts
    that leave the existing partitions extrapolate by the nominal period length."""
    starts, ends = definition.windows(now)
    n = len(starts)
    if n == 0:
        return starts, ends
    idx = np.arange(n) + offset
    inside = np.clip(idx, 0, n - 1)
    step = definition.period_seconds_hint
    extra = (idx - inside) * step
    return starts[inside] + extra, ends[inside] + extra


@dataclass(frozen=True, slots=True)
class Window(PartitionMapping):
    """A rolling window of time partitions: ``Window(-6, 0)`` is this period and the six before it.

    Offsets are in periods of the downstream asset's cadence; the upstream partitions whose periods lie
    inside the window are consumed, so a daily window over an hourly upstream works too. A window that
    reaches before the first partition is clipped to the partitions that exist.
    """

    start: int
    end: int = 0

    def many(self, down, up):
        return True

    def __post_init__(self) -> None:
        if self.start > self.end:
            raise DefinitionError(f"Window(start={self.start}, end={self.end}): start must be <= end")

    def check(self, down, up):
        if not isinstance(down, TimePartitions) or not isinstance(up, TimePartitions):
            raise DefinitionError("Window() needs time-partitioned assets on both sides")

    def pairs(self, down, up, now):
        lo, _ = _time_bounds(down, now, self.start)
        _, hi = _time_bounds(down, now, self.end)
        up_starts, up_ends = up.windows(now)
        first = np.searchsorted(up_starts, lo, side="left")
        last = np.searchsorted(up_ends, hi, side="right")
        d, u = _expand_ranges(first, last)
        return _pairs(d, u, len(lo))


@dataclass(frozen=True, slots=True)
class Containment(PartitionMapping):
    """Time partitions of different cadences map by containment: a daily partition consumes its 24
    hourly ones; an hourly partition consumes the day it lies in (and waits until that day exists)."""

    def many(self, down, up):
        return up.period_seconds_hint < down.period_seconds_hint

    def check(self, down, up):
        if not isinstance(down, TimePartitions) or not isinstance(up, TimePartitions):
            raise DefinitionError("containment mapping needs time-partitioned assets on both sides")

    def pairs(self, down, up, now):
        starts, ends = down.windows(now)
        up_starts, up_ends = up.windows(now)
        if up.period_seconds_hint <= down.period_seconds_hint:
            first = np.searchsorted(up_starts, starts, side="left")
            last = np.searchsorted(up_ends, ends, side="right")
            d, u = _expand_ranges(first, last)
            return _pairs(d, u, len(starts))
        holder = np.searchsorted(up_starts, starts, side="right") - 1
        ok = (holder >= 0) & (holder < len(up_starts))
        ok[ok] &= up_ends[holder[ok]] >= ends[ok]
        return _pairs(np.flatnonzero(ok), holder[ok], len(starts), ~ok)


@dataclass(frozen=True, slots=True)
class OnDimension(PartitionMapping):
    """Between a multi-partitioned asset and a single-dimension one, match on the named dimension
    (applying ``inner`` between that dimension and the other side). Works in both directions: a
    (date, region) partition consumes its date's upstream; a daily partition consumes every region of
    its date."""

    dimension: str
    inner: PartitionMapping = Identity()

    def many(self, down, up):
        if isinstance(up, MultiPartitions):
            return True
        return self.inner.many(down.dimension(self.dimension), up)

    def _split(self, down, up):
        multi, single = (down, up) if isinstance(down, MultiPartitions) else (up, down)
        if not isinstance(multi, MultiPartitions) or single is None or isinstance(single, MultiPartitions):
            raise DefinitionError("OnDimension() maps between a multi-partitioned and a single-dimension asset")
        names = [n for n, _ in multi.dimensions]
        if self.dimension not in names:
            raise DefinitionError(f"OnDimension('{self.dimension}'): no such dimension in {multi.describe()}")
        return multi, single

    def check(self, down, up):
        multi, single = self._split(down, up)
        dim = multi.dimension(self.dimension)
        self.inner.check(dim, single) if multi is down else self.inner.check(single, dim)

    def pairs(self, down, up, now):
        multi, single = self._split(down, up)
        dim = multi.dimension(self.dimension)
        dim_keys = keys_of(dim, now)
        position = {k: i for i, k in enumerate(dim_keys)}
        multi_keys = keys_of(multi, now)
        projected = np.array([position.get(multi.split(k)[self.dimension], -1) for k in multi_keys], dtype=np.int64)
        if multi is down:
            inner = edge_pairs(self.inner, dim, single, now)
            lo = np.searchsorted(inner.down, projected, side="left")
            hi = np.searchsorted(inner.down, projected, side="right")
            d, offsets = _expand_ranges(lo, hi)
            return _pairs(d, inner.up[offsets], len(multi_keys), inner.unsatisfied[projected])
        inner = edge_pairs(self.inner, single, dim, now)
        by_dim: dict[int, list[int]] = {}
        for i, p in enumerate(projected.tolist()):
            by_dim.setdefault(p, []).append(i)
        down_idx: list[int] = []
        up_idx: list[int] = []
        for d_i, u_dim in zip(inner.down.tolist(), inner.up.tolist()):
            members = by_dim.get(u_dim, ())
            down_idx.extend([d_i] * len(members))
            up_idx.extend(members)
        return _pairs(np.array(down_idx, dtype=np.int64), np.array(up_idx, dtype=np.int64), len(keys_of(single, now)), inner.unsatisfied)


def default_mapping(down: PartitionsDefinition | None, up: PartitionsDefinition | None) -> PartitionMapping:
    """The mapping used when ``deps`` gives none, or ``DefinitionError`` if there is no sensible one."""
    if down is None or up is None:
        return AllPartitions()
    if down == up:
        return Identity()
    if isinstance(down, TimePartitions) and isinstance(up, TimePartitions):
        return Identity() if down.cadence == up.cadence else Containment()
    if isinstance(down, StaticPartitions) and isinstance(up, StaticPartitions):
        return Identity()
    multi, single = (down, up) if isinstance(down, MultiPartitions) else (up, down)
    if isinstance(multi, MultiPartitions) and not isinstance(single, MultiPartitions):
        for name, dim in multi.dimensions:
            if dim == single:
                return OnDimension(name)
        for name, dim in multi.dimensions:
            if isinstance(dim, TimePartitions) and isinstance(single, TimePartitions):
                return OnDimension(name, Containment())
    raise DefinitionError(f"no default partition mapping from {up.describe()} to {down.describe()}; give one in deps=")


@lru_cache(maxsize=4096)
def edge_pairs(mapping: PartitionMapping, down: PartitionsDefinition | None, up: PartitionsDefinition | None, now: datetime) -> EdgePairs:
    """Cached :meth:`PartitionMapping.pairs`; arrays are shared, so callers must not modify them."""
    result = mapping.pairs(down, up, now)
    for array in (result.down, result.up, result.unsatisfied, result.indptr):
        array.flags.writeable = False
    return result
