"""The CLI's ``--partitions RANGE`` syntax, parsed into small values and applied as boolean masks.

Forms (bounds inclusive), each optionally prefixed by a dimension name (``date=…``, ``region=…``)::

    2024-01-01..2024-01-31   2024-01-01..   ..2024-01-31      time range (dates or hours)
    apac..us                                                  key range in a static key order
    eu,us   2024-01-05   2024-01-01|eu                        explicit keys (whole multi keys too)
    last:7                                                    the last N existing partitions

Parsing is context-free so that every mistake that can be caught early is (bad dates, ``last:0``,
``lo > hi``). Meaning needs a definition: date-like bounds become instants in *that* definition's
timezone, at the bound's own granularity (a day bound covers the whole day), and a time definition
selects the periods whose start lies in ``[lo, end of hi)``. So one range reads the same over
hourly, daily and monthly assets and crosses DST like a wall clock does.

Which filters apply where: a dimension-named filter applies to that dimension of a multi
definition (it must fit, else PartitionError) and, by kind, to single-dimension definitions;
an unnamed filter applies wherever it fits (time forms to time definitions, keys to definitions
that hold them, ``last:N`` everywhere but only to the time dimension of a multi). Filters on the
same dimension are OR-ed; dimensions are AND-ed. ``None`` means no filter applies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable, Literal, Sequence

import numpy as np

from assetflow.errors import PartitionError
from assetflow.partitions import (
    MultiPartitions,
    PartitionsDefinition,
    StaticPartitions,
    TimePartitions,
    period_bounds,
)

__all__ = [
    "PartitionFilter", "parse_partition_filter", "parse_partition_filters", "select_partitions",
    "filter_applies", "unmatched_filters", "filters_match_anything",
]

_BOUND_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}))?")
_DATE_KEY_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:T(\d{2})(?:\+1)?)?")
_NAMED_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", re.DOTALL)
_COUNT_RE = re.compile(r"[0-9]+")

Kind = Literal["range", "keys", "last"]


@dataclass(frozen=True, slots=True)
class PartitionFilter:
    """One parsed ``--partitions`` occurrence.

    ``kind`` is "range" (``lo``/``hi``, either may be None for an open end), "keys" (``keys``) or
    "last" (``last_n``); ``dimension`` is the ``name=`` prefix or None; ``text`` is what the user
    typed, kept for error messages."""

    text: str
    kind: Kind
    dimension: str | None = None
    lo: str | None = None
    hi: str | None = None
    keys: tuple[str, ...] = ()
    last_n: int | None = None

    @property
    def temporal(self) -> bool:
        """True when the bounds or keys are dates/hours (meaningful for time partitions)."""
        if self.kind == "range":
            return _BOUND_RE.fullmatch(self.lo or self.hi or "") is not None
        return self.kind == "keys" and all(_DATE_KEY_RE.fullmatch(k) for k in self.keys)

    @property
    def whole_keys(self) -> bool:
        """True when the keys are complete multi-partition keys such as ``2024-01-01|eu``."""
        return self.kind == "keys" and "|" in self.keys[0]


# --- parsing --------------------------------------------------------------------------------


def _bound_wall(bound: str, text: str) -> tuple[datetime, str]:
    """(wall time, granularity "daily"/"hourly") of a date-like bound; PartitionError if invalid."""
    m = _DATE_KEY_RE.fullmatch(bound)
    assert m is not None
    year, month, day, hour = m.groups()
    try:
        return datetime(int(year), int(month), int(day), int(hour or 0)), "hourly" if hour else "daily"
    except ValueError:
        raise PartitionError(f"invalid date '{bound}' in partition range '{text}'") from None


def _check_dates(tokens: Iterable[str], text: str) -> None:
    """Reject date-shaped tokens that are not real dates/hours, before any definition is seen."""
    for token in tokens:
        for part in token.split("|"):
            if _DATE_KEY_RE.fullmatch(part):
                _bound_wall(part, text)


def _parse_range(body: str, text: str, dimension: str | None) -> PartitionFilter:
    """Parse ``LO..HI``: both bounds dates/hours (checked, and ordered) or both keys."""
    if body.count("..") != 1:
        raise PartitionError(f"invalid partition range '{text}': expected LO..HI with one '..'")
    lo, hi = (part.strip() or None for part in body.split(".."))
    bounds = [b for b in (lo, hi) if b is not None]
    if not bounds:
        raise PartitionError(f"invalid partition range '{text}': give at least one bound")
    for bound in bounds:
        if "|" in bound:
            raise PartitionError(f"invalid partition range '{text}': range each dimension with NAME=LO..HI")
        if _DATE_KEY_RE.fullmatch(bound) and not _BOUND_RE.fullmatch(bound):
            raise PartitionError(f"invalid bound '{bound}' in partition range '{text}': expected YYYY-MM-DD[THH]")
    dated = [_BOUND_RE.fullmatch(b) is not None for b in bounds]
    if any(dated) and not all(dated):
        raise PartitionError(f"invalid partition range '{text}': mixes a date with a partition key")
    walls = [_bound_wall(b, text) for b in bounds] if all(dated) else []
    if len(walls) == 2 and walls[0][0] >= _next(*walls[1]):  # lo starts after hi's day/hour ends
        raise PartitionError(f"empty partition range '{text}': '{lo}' is after '{hi}'")
    return PartitionFilter(text=text, kind="range", dimension=dimension, lo=lo, hi=hi)


def _next(wall: datetime, grain: str) -> datetime:
    """Wall start of the day/hour after the one starting at ``wall``."""
    return wall + (timedelta(hours=1) if grain == "hourly" else timedelta(days=1))


def parse_partition_filter(text: str) -> PartitionFilter:
    """Parse one RANGE; PartitionError with a one-line message naming ``text`` if it is invalid."""
    if not isinstance(text, str):
        raise PartitionError(f"invalid partition range {text!r}: expected text")
    body, dimension = text.strip(), None
    named = _NAMED_RE.fullmatch(body)
    if named:
        dimension, body = named.group(1), named.group(2).strip()
    if not body:
        raise PartitionError(f"empty partition range '{text}'")
    if body.startswith("last:"):
        count = body[len("last:"):].strip()
        if not _COUNT_RE.fullmatch(count) or int(count) < 1:
            raise PartitionError(f"invalid count '{count}' in partition range '{text}': expected last:N with N >= 1")
        return PartitionFilter(text=text, kind="last", dimension=dimension, last_n=int(count))
    if ".." in body:
        return _parse_range(body, text, dimension)
    keys = tuple(dict.fromkeys(k.strip() for k in body.split(",")))  # dedupe, keep order
    if "" in keys:
        raise PartitionError(f"invalid partition range '{text}': empty key in list")
    whole = ["|" in k for k in keys]
    if any(whole) and (not all(whole) or dimension is not None):
        raise PartitionError(f"invalid partition range '{text}': mix of whole multi keys (a|b) and single keys")
    _check_dates(keys, text)
    return PartitionFilter(text=text, kind="keys", dimension=dimension, keys=keys)


def parse_partition_filters(texts: Sequence[str]) -> tuple[PartitionFilter, ...]:
    """Parse every ``--partitions`` occurrence, in order."""
    if isinstance(texts, str):
        texts = [texts]
    return tuple(parse_partition_filter(t) for t in texts)


# --- applicability --------------------------------------------------------------------------


def _fits(f: PartitionFilter, definition: PartitionsDefinition) -> bool:
    """Whether filter ``f`` is meant for single-dimension ``definition`` (names aside)."""
    if f.whole_keys or isinstance(definition, MultiPartitions):
        return False
    if f.kind == "last":
        return True
    if isinstance(definition, TimePartitions):
        return f.temporal
    held = set(definition.keys_) if isinstance(definition, StaticPartitions) else set()
    wanted = (f.lo, f.hi) if f.kind == "range" else f.keys
    return not (f.kind == "range" and f.temporal) and any(k in held for k in wanted)


def _fits_whole(f: PartitionFilter, definition: MultiPartitions) -> bool:
    """Whether whole multi keys are meant for ``definition``: right arity, static parts held."""
    for key in f.keys:
        parts = key.split("|")
        if len(parts) == len(definition.dimensions) and all(
            not isinstance(d, StaticPartitions) or part in d.keys_
            for part, (_, d) in zip(parts, definition.dimensions)
        ):
            return True
    return False


def _dimension_filters(filters: Sequence[PartitionFilter], name: str, dim: PartitionsDefinition) -> list[PartitionFilter]:
    """Filters for one dimension of a multi definition: named ones, then unnamed ones that fit
    (unnamed ``last:N`` only on the time dimension: "the last 7 days", not "the last 7 regions")."""
    own = [f for f in filters if f.dimension == name and not f.whole_keys]
    own += [
        f for f in filters
        if f.dimension is None and _fits(f, dim) and (f.kind != "last" or isinstance(dim, TimePartitions))
    ]
    return own


def filter_applies(f: PartitionFilter, definition: PartitionsDefinition | None) -> bool:
    """Whether ``f`` would constrain the partitions of ``definition``."""
    if definition is None:
        return False
    if isinstance(definition, MultiPartitions):
        if f.whole_keys:
            return _fits_whole(f, definition)
        return any(f in _dimension_filters([f], name, dim) for name, dim in definition.dimensions)
    return _fits(f, definition)


def unmatched_filters(filters: Sequence[PartitionFilter], definitions: Iterable[PartitionsDefinition | None]) -> tuple[PartitionFilter, ...]:
    """The filters that apply to none of ``definitions``: the CLI should reject them rather than
    silently materialize every partition."""
    definitions = list(definitions)
    return tuple(f for f in filters if not any(filter_applies(f, d) for d in definitions))


def filters_match_anything(filters: Sequence[PartitionFilter], definitions: Iterable[PartitionsDefinition | None]) -> bool:
    """True when at least one filter applies to at least one of ``definitions``."""
    definitions = list(definitions)
    return any(filter_applies(f, d) for f in filters for d in definitions)


# --- selection ------------------------------------------------------------------------------


def _time_mask(f: PartitionFilter, definition: TimePartitions, now: datetime) -> np.ndarray:
    """Periods whose start lies in [start of lo, end of hi) in the definition's timezone."""
    starts, _ = definition.windows(now)
    mask = np.ones(len(starts), dtype=bool)
    if f.lo is not None:
        wall, grain = _bound_wall(f.lo, f.text)
        mask &= starts >= period_bounds(grain, wall, definition.timezone)[0]
    if f.hi is not None:
        wall, grain = _bound_wall(f.hi, f.text)
        mask &= starts < period_bounds(grain, wall, definition.timezone)[1]
    return mask


def _key_index(definition: StaticPartitions, key: str, f: PartitionFilter) -> int:
    """Position of ``key`` in the static order; PartitionError naming it and ``f`` if absent."""
    try:
        return definition.keys_.index(key)
    except ValueError:
        raise PartitionError(f"unknown partition key '{key}' in partition range '{f.text}' ({definition.describe()})") from None


def _mask(f: PartitionFilter, definition: PartitionsDefinition, now: datetime) -> np.ndarray:
    """The keys of ``definition`` at ``now`` that ``f`` selects; PartitionError if ``f`` cannot mean
    anything for it (wrong kind, unknown or invalid keys)."""
    keys = definition.keys(now)
    mask = np.zeros(len(keys), dtype=bool)
    if f.kind == "last":
        mask[max(0, len(keys) - f.last_n):] = True  # type: ignore[operator]
        return mask
    if f.kind == "keys":
        for key in f.keys:
            if isinstance(definition, StaticPartitions):
                _key_index(definition, key, f)
                continue
            try:
                definition.validate_key(key)
            except PartitionError as error:
                hint = f"; to select by time use {key}..{key}" if _BOUND_RE.fullmatch(key) else ""
                raise PartitionError(f"{error} (in partition range '{f.text}'{hint})") from None
        wanted = set(f.keys)
        return np.fromiter((k in wanted for k in keys), dtype=bool, count=len(keys))
    if f.temporal:
        if not isinstance(definition, TimePartitions):
            raise PartitionError(f"partition range '{f.text}' is a time range but the partitions are {definition.describe()}")
        return _time_mask(f, definition, now)
    if not isinstance(definition, StaticPartitions):
        raise PartitionError(f"partition range '{f.text}' is a key range but the partitions are {definition.describe()}")
    lo = 0 if f.lo is None else _key_index(definition, f.lo, f)
    hi = len(keys) - 1 if f.hi is None else _key_index(definition, f.hi, f)
    if lo > hi:
        raise PartitionError(f"empty partition range '{f.text}': '{f.lo}' comes after '{f.hi}' in {definition.describe()}")
    mask[lo:hi + 1] = True
    return mask


def _union(masks: list[np.ndarray]) -> np.ndarray:
    """Element-wise OR: several filters on one dimension add up."""
    return np.logical_or.reduce(masks) if len(masks) > 1 else masks[0]


def _select_multi(filters: Sequence[PartitionFilter], definition: MultiPartitions, now: datetime) -> np.ndarray | None:
    """AND across dimensions of the OR of each dimension's filters, then whole-key filters."""
    whole = [f for f in filters if f.whole_keys and _fits_whole(f, definition)]
    per_dimension = [(dim, _dimension_filters(filters, name, dim)) for name, dim in definition.dimensions]
    if not whole and not any(own for _, own in per_dimension):
        return None
    shape = [len(dim.keys(now)) for dim, _ in per_dimension]
    mask = np.ones(shape, dtype=bool)
    for axis, (dim, own) in enumerate(per_dimension):
        if own:
            view = [1] * len(shape)
            view[axis] = -1
            mask &= _union([_mask(f, dim, now) for f in own]).reshape(view)
    mask = mask.ravel()  # C order: the first dimension varies slowest, as in keys()
    if whole:
        mask &= _union([_mask(f, definition, now) for f in whole])
    return mask


def select_partitions(filters: Sequence[PartitionFilter], definition: PartitionsDefinition | None, now: datetime) -> np.ndarray | None:
    """Boolean mask aligned with ``definition.keys(now)`` of the partitions ``filters`` select, or
    None when no filter applies to ``definition`` (always None for unpartitioned assets)."""
    if definition is None or not filters:
        return None
    if isinstance(definition, MultiPartitions):
        return _select_multi(filters, definition, now)
    own = [f for f in filters if _fits(f, definition)]
    return _union([_mask(f, definition, now) for f in own]) if own else None
