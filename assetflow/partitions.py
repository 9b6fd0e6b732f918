"""Partitions definitions: which slices of an asset exist, and when.

An asset may be split into partitions, one run per slice. A definition is a *value*: two equal
definitions are interchangeable and hash alike, because the planner, the lineage store and the
range selector all use them as cache keys. That is why they are frozen, slotted dataclasses whose
fields are normalized in ``__post_init__`` (``DailyPartitions(start=date(2024, 1, 1))`` equals
``DailyPartitions(start="2024-01-01T00:00")``).

Time partitions are *local calendar periods* in ``timezone``. All period math goes through one
rule, so DST needs no special cases further up: a period that begins at wall time ``W`` spans
``[first instant whose wall time is >= W, first instant whose wall time is >= next W)``.
Consequences, all deliberate:

* a Berlin day is 23 h or 25 h long on DST days;
* the spring-forward hour (``2024-03-31T02`` in Berlin) is an empty period, so it has no key;
* the fall-back hour occurs twice: the first occurrence keeps ``2024-10-27T02`` and the second is
  keyed ``2024-10-27T02+1``, so keys stay unique and, in ``keys()`` order, sorted by time.

A partition exists once it is *complete*: its end is <= ``now`` (and <= ``end`` when given).
Key lists and their ``[start, end)`` epoch-second arrays are computed once per (definition,
boundary) and cached; the cached numpy arrays are read-only, copy them before modifying.
"""

from __future__ import annotations

import abc
import math
import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from functools import lru_cache
from itertools import product
from typing import Any, ClassVar, Iterable, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from assetflow.errors import PartitionError

__all__ = [
    "PartitionsDefinition", "TimePartitions", "HourlyPartitions", "DailyPartitions",
    "WeeklyPartitions", "MonthlyPartitions", "StaticPartitions", "MultiPartitions",
    "period_bounds",
]

_EPOCH = datetime(1970, 1, 1)
_SECOND = timedelta(seconds=1)
_DAY_KEY_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_HOUR_KEY_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2})(\+1)?")
_DIMENSION_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STEPS = {"hourly": timedelta(hours=1), "daily": timedelta(days=1), "weekly": timedelta(weeks=1)}
_HOUR_SUFFIXES = tuple(f"T{hour:02d}" for hour in range(24))
_SEPARATOR = "|"  # joins multi-partition keys; therefore forbidden inside static keys

Period = tuple[str, int, int]  # (key, start epoch second, end epoch second)


# --- wall-clock arithmetic: small pure functions over naive local datetimes ------------------


def _zone(name: str) -> tzinfo:
    """The tzinfo for an IANA name; ``datetime.UTC`` for "UTC" so UTC can take the fast path."""
    if name == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise PartitionError(f"unknown timezone '{name}'") from None


def _floor(cadence: str, wall: datetime) -> datetime:
    """Start (wall time) of the ``cadence`` period containing ``wall``."""
    if cadence == "hourly":
        return wall.replace(minute=0, second=0, microsecond=0)
    day = wall.replace(hour=0, minute=0, second=0, microsecond=0)
    if cadence == "weekly":
        return day - timedelta(days=day.weekday())  # ISO weeks begin on Monday
    if cadence == "monthly":
        return day.replace(day=1)
    return day


def _shift(cadence: str, wall: datetime, n: int) -> datetime:
    """The period start ``n`` periods after the aligned period start ``wall`` (n may be < 0)."""
    if cadence == "monthly":
        months = wall.year * 12 + wall.month - 1 + n
        return wall.replace(year=months // 12, month=months % 12 + 1)
    return wall + _STEPS[cadence] * n


def _ceil(cadence: str, wall: datetime) -> datetime:
    """First period start at or after ``wall``: starts that are mid-period round UP."""
    floor = _floor(cadence, wall)
    return floor if floor == wall else _shift(cadence, floor, 1)


def _key_of(cadence: str, wall: datetime) -> str:
    """Key of the period starting at ``wall`` (isoformat, not strftime: years < 1000 stay padded)."""
    return wall.isoformat(timespec="hours") if cadence == "hourly" else wall.date().isoformat()


def _naive_epoch(wall: datetime) -> int:
    """Epoch seconds of ``wall`` read as UTC (hot path: no ``replace``, which is slow)."""
    return (wall - _EPOCH) // _SECOND


def _offset(tz: tzinfo, wall: datetime, fold: int) -> int:
    """UTC offset in seconds that ``tz`` gives ``wall`` under PEP 495 ``fold``."""
    if wall.fold != fold:
        wall = wall.replace(fold=fold)
    return int(tz.utcoffset(wall).total_seconds())  # type: ignore[union-attr]


def _instant_offset(tz: tzinfo, instant: int) -> int:
    """UTC offset in seconds of ``tz`` at epoch second ``instant``."""
    return int(datetime.fromtimestamp(instant, tz).utcoffset().total_seconds())  # type: ignore[union-attr]


def _resolve(wall: datetime, tz: tzinfo) -> int:
    """Epoch second of the first instant whose local wall time in ``tz`` is >= ``wall``."""
    base = _naive_epoch(wall)
    if tz is UTC:
        return base
    before = _offset(tz, wall, 0)  # PEP 495: fold=0 is the first occurrence, or the pre-gap offset
    guess = base - before
    after = _instant_offset(tz, guess)
    if after == before:  # the wall time exists and ``guess`` is its first occurrence
        return guess
    # The wall time falls in a DST gap: the answer is the transition instant, in (lo, hi].
    lo, hi = base - after, guess
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _instant_offset(tz, mid) == before else (lo, mid)
    return hi


def _split(cadence: str, tz: tzinfo, wall: datetime, start: int, end: int) -> tuple[Period, ...]:
    """The keyed periods of wall period ``wall`` spanning ``[start, end)``: none if a DST gap
    swallowed it, two for a repeated (fall-back) hour, else one."""
    if start >= end:
        return ()
    key = _key_of(cadence, wall)
    if cadence == "hourly" and tz is not UTC:
        first, second = _offset(tz, wall, 0), _offset(tz, wall, 1)
        if first > second:  # the hour is ambiguous: its second occurrence gets the "+1" key
            repeat = _naive_epoch(wall) - second
            if start < repeat < end:
                return ((key, start, repeat), (key + "+1", repeat, end))
    return ((key, start, end),)


def _periods_of(cadence: str, tz: tzinfo, wall: datetime) -> tuple[Period, ...]:
    """Keyed periods of the wall period starting at ``wall``."""
    return _split(cadence, tz, wall, _resolve(wall, tz), _resolve(_shift(cadence, wall, 1), tz))


def _period_at(cadence: str, tz: tzinfo, instant: int) -> Period:
    """The keyed period containing epoch second ``instant``."""
    wall = _floor(cadence, datetime.fromtimestamp(instant, tz).replace(tzinfo=None, fold=0))
    # Neighbours too: in a fold at a period boundary the instant may belong to the next period.
    for candidate in (_shift(cadence, wall, -1), wall, _shift(cadence, wall, 1)):
        for period in _periods_of(cadence, tz, candidate):
            if period[1] <= instant < period[2]:
                return period
    raise AssertionError(f"no {cadence} period contains {instant}")  # pragma: no cover


def period_bounds(cadence: str, wall: datetime, timezone: str) -> tuple[int, int]:
    """Epoch seconds ``[start, end)`` of the local ``cadence`` period of ``timezone`` that begins at
    naive wall time ``wall`` (used by :mod:`assetflow.ranges` for range bounds; a bound inside a
    DST gap is allowed and yields an empty or shortened span rather than an error)."""
    tz = _zone(timezone)
    return _resolve(wall, tz), _resolve(_shift(cadence, wall, 1), tz)


def _parse_wall(value: Any, tz: tzinfo, what: str, cadence: str) -> datetime:
    """A naive wall time in ``tz`` from an ISO string ("2024-01-01", "2024-01-01T00",
    "2024-01-01T00:00", offsets allowed), a date or a datetime; seconds precision."""
    try:
        if isinstance(value, str):
            value = datetime.fromisoformat(value.strip())
        elif isinstance(value, date) and not isinstance(value, datetime):
            value = datetime(value.year, value.month, value.day)
        if not isinstance(value, datetime):
            raise TypeError
    except (ValueError, TypeError):
        raise PartitionError(f"invalid {what} '{value}' for {cadence} partitions") from None
    if value.tzinfo is not None:
        value = value.astimezone(tz).replace(tzinfo=None)
    return value.replace(microsecond=0, fold=0)


def _format_wall(wall: datetime) -> str:
    """The normalized text of a start/end: as short as the value allows."""
    if wall.time() == datetime.min.time():
        return wall.date().isoformat()
    return wall.isoformat(timespec="seconds" if wall.second else "minutes")


def _epoch_of(now: datetime) -> int:
    """Epoch second of an aware ``now`` (floored: period ends are whole seconds)."""
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise PartitionError(f"'now' must be a timezone-aware datetime, got {now!r}")
    return math.floor(now.timestamp())


# --- definitions ----------------------------------------------------------------------------


class PartitionsDefinition(abc.ABC):
    """How an asset is partitioned: the ordered keys that exist at a given instant."""

    __slots__ = ()
    kind: ClassVar[str]

    @abc.abstractmethod
    def keys(self, now: datetime) -> tuple[str, ...]:
        """Ordered keys of the partitions that exist at aware instant ``now``."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Short human text, e.g. ``daily from 2024-01-01 (UTC)``."""

    @abc.abstractmethod
    def _problem(self, key: str) -> str | None:
        """Why ``key`` can never be a key of this definition, or None if it can."""

    @property
    def _label(self) -> str:
        return self.kind

    def validate_key(self, key: str) -> None:
        """Raise PartitionError if ``key`` can never be a key here (format, start, end), any ``now``."""
        problem = self._problem(key) if isinstance(key, str) else "not a string"
        if problem is not None:
            raise PartitionError(f"invalid partition key '{key}' for {self._label} partitions: {problem}")


@dataclass(frozen=True, slots=True)
class TimePartitions(PartitionsDefinition):
    """Local calendar periods of one cadence from ``start`` (rounded up to a period start) to the
    last complete period, optionally capped by exclusive ``end``. Use a cadence subclass."""

    start: str
    end: str | None = None
    timezone: str = "UTC"
    kind: ClassVar[str] = "time"
    cadence: ClassVar[str]
    _hint: ClassVar[int]

    def __post_init__(self) -> None:
        if type(self) is TimePartitions:
            raise TypeError("TimePartitions is abstract: use Hourly/Daily/Weekly/MonthlyPartitions")
        if not isinstance(self.timezone, str):
            raise PartitionError(f"unknown timezone '{self.timezone}'")
        tz = _zone(self.timezone)
        start = _parse_wall(self.start, tz, "start", self.cadence)
        object.__setattr__(self, "start", _format_wall(start))
        if self.end is not None:
            end = _parse_wall(self.end, tz, "end", self.cadence)
            if end <= start:
                raise PartitionError(f"end '{_format_wall(end)}' is not after start '{self.start}'")
            object.__setattr__(self, "end", _format_wall(end))

    @property
    def _label(self) -> str:
        return self.cadence

    @property
    def period_seconds_hint(self) -> int:
        """Nominal period length in seconds, only for ordering cadences coarse to fine."""
        return self._hint

    def describe(self) -> str:
        """E.g. ``daily from 2024-01-01 (UTC)`` or ``hourly from 2024-01-01 until 2024-02-01 (Europe/Berlin)``."""
        until = f" until {self.end}" if self.end is not None else ""
        return f"{self.cadence} from {self.start}{until} ({self.timezone})"

    def keys(self, now: datetime) -> tuple[str, ...]:
        """Keys of the complete periods at ``now``, oldest first."""
        return _timeline(self, self._boundary(now))[0]

    def windows(self, now: datetime) -> tuple[np.ndarray, np.ndarray]:
        """Read-only int64 epoch seconds of each key's [start, end), aligned with ``keys(now)``."""
        _, starts, ends = _timeline(self, self._boundary(now))
        return starts, ends

    def window(self, key: str) -> tuple[datetime, datetime]:
        """Aware UTC ``[start, end)`` of ``key``'s period (need not lie between start and now)."""
        period, problem = self._locate(key)
        if period is None:
            raise PartitionError(f"invalid partition key '{key}' for {self.cadence} partitions: {problem}")
        return datetime.fromtimestamp(period[1], UTC), datetime.fromtimestamp(period[2], UTC)

    def key_at(self, t: datetime) -> str:
        """Key of the period containing instant ``t`` (may be before start or after now)."""
        return _period_at(self.cadence, _zone(self.timezone), _epoch_of(t))[0]

    def _problem(self, key: str) -> str | None:
        period, problem = self._locate(key)
        if period is None:
            return problem
        _, _, first, end = _geometry(self)
        if period[1] < first:
            return f"before start {self.start}"
        if end is not None and period[2] > end:
            return f"not complete before end {self.end}"
        return None

    def _locate(self, key: str) -> tuple[Period | None, str]:
        """The period keyed ``key`` regardless of start/end, or (None, why not)."""
        pattern = _HOUR_KEY_RE if self.cadence == "hourly" else _DAY_KEY_RE
        m = pattern.fullmatch(key) if isinstance(key, str) else None
        if m is None:
            return None, "expected YYYY-MM-DDTHH" if self.cadence == "hourly" else "expected YYYY-MM-DD"
        try:
            wall = datetime(*(int(g) for g in m.groups()[:4]))
        except ValueError:
            return None, "not a valid date"
        if _floor(self.cadence, wall) != wall:
            return None, "not a Monday" if self.cadence == "weekly" else "not the 1st of a month"
        for period in _periods_of(self.cadence, _zone(self.timezone), wall):
            if period[0] == key:
                return period, ""
        return None, f"no such {self.cadence} period in {self.timezone}"

    def _boundary(self, now: datetime) -> int:
        """Start of the period containing min(now, end): partitions are the periods ending by it.
        Caching on this rather than on ``now`` keeps the cache hot as the clock ticks."""
        tz, _, first, end = _geometry(self)
        cutoff = _epoch_of(now) if end is None else min(_epoch_of(now), end)
        return first if cutoff <= first else _period_at(self.cadence, tz, cutoff)[1]


class HourlyPartitions(TimePartitions):
    """One partition per local wall-clock hour, keyed ``2024-01-01T00``; a repeated fall-back hour
    is keyed ``2024-10-27T02`` then ``2024-10-27T02+1``; a skipped spring-forward hour has no key."""

    __slots__ = ()
    cadence: ClassVar[str] = "hourly"
    _hint: ClassVar[int] = 3600


class DailyPartitions(TimePartitions):
    """One partition per local calendar day, keyed ``2024-01-01``."""

    __slots__ = ()
    cadence: ClassVar[str] = "daily"
    _hint: ClassVar[int] = 86400


class WeeklyPartitions(TimePartitions):
    """One partition per ISO week (Monday to Monday), keyed by its Monday; start rounds up to a Monday."""

    __slots__ = ()
    cadence: ClassVar[str] = "weekly"
    _hint: ClassVar[int] = 604800


class MonthlyPartitions(TimePartitions):
    """One partition per calendar month, keyed by its 1st; start rounds up to a 1st."""

    __slots__ = ()
    cadence: ClassVar[str] = "monthly"
    _hint: ClassVar[int] = 2_592_000


@lru_cache(maxsize=None)
def _geometry(definition: TimePartitions) -> tuple[tzinfo, datetime, int, int | None]:
    """(tz, first period's wall start, its epoch, end epoch or None), parsed once per definition."""
    tz, cadence, end = _zone(definition.timezone), definition.cadence, definition.end
    first = _ceil(cadence, _parse_wall(definition.start, tz, "start", cadence))
    end_epoch = None if end is None else _resolve(_parse_wall(end, tz, "end", cadence), tz)
    return tz, first, _resolve(first, tz), end_epoch


@lru_cache(maxsize=256)
def _timeline(definition: TimePartitions, stop: int) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Keys, starts and ends of every period of ``definition`` that ends at or before ``stop``.
    The arrays are made read-only: they are shared by every caller of the cache."""
    tz, first, begin, _ = _geometry(definition)
    walk = _walk_hours if definition.cadence == "hourly" else _walk_periods
    keys, starts, ends = walk(definition.cadence, tz, first, stop)
    # The walks may overshoot on either side; periods are sorted by time, so trim by slicing.
    lo = bisect_left(starts, begin)
    hi = max(lo, bisect_right(ends, stop))
    arrays = np.array(starts[lo:hi], np.int64), np.array(ends[lo:hi], np.int64)
    for array in arrays:
        array.setflags(write=False)
    return tuple(keys[lo:hi]), *arrays


Columns = tuple[list[str], list[int], list[int]]  # keys, starts, ends


def _walk_periods(cadence: str, tz: tzinfo, first: datetime, stop: int) -> Columns:
    """Periods from ``first`` until ``stop``, one wall period at a time."""
    keys: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    wall, start = first, _resolve(first, tz)
    while start < stop:
        following = _shift(cadence, wall, 1)
        end = _resolve(following, tz)
        for key, a, b in _split(cadence, tz, wall, start, end):
            keys.append(key), starts.append(a), ends.append(b)
        wall, start = following, end
    return keys, starts, ends


def _walk_hours(cadence: str, tz: tzinfo, first: datetime, stop: int) -> Columns:
    """Hours, a local day at a time, from the day of ``first``: a day whose UTC offset is the same
    at both ends has 24 plain hours (no zoneinfo call per hour, the common case); only DST days
    go hour by hour through :func:`_split`."""
    keys: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    day = _floor("daily", first)
    start = _resolve(day, tz)
    while start < stop:
        following = day + _STEPS["daily"]
        end = _resolve(following, tz)
        if _naive_epoch(day) - start == _naive_epoch(following) - end:
            prefix = day.date().isoformat()
            keys.extend([prefix + suffix for suffix in _HOUR_SUFFIXES])
            starts.extend(range(start, end, 3600))
            ends.extend(range(start + 3600, end + 3600, 3600))
        else:
            for column, values in zip((keys, starts, ends), _walk_periods("hourly", tz, day, end)):
                column.extend(values)  # type: ignore[attr-defined]
        day, start = following, end
    return keys, starts, ends


@dataclass(frozen=True, slots=True)
class StaticPartitions(PartitionsDefinition):
    """A fixed, ordered set of keys, e.g. regions: ``StaticPartitions(["eu", "us", "apac"])``."""

    keys_: tuple[str, ...]
    kind: ClassVar[str] = "static"

    def __post_init__(self) -> None:
        if isinstance(self.keys_, str) or not isinstance(self.keys_, Iterable):
            raise PartitionError(f"static partition keys must be a list of strings, got {self.keys_!r}")
        keys = tuple(self.keys_)
        if not keys:
            raise PartitionError("static partitions need at least one key")
        seen: set[str] = set()
        for key in keys:
            if not isinstance(key, str) or not key:
                raise PartitionError(f"invalid static partition key {key!r}: expected a non-empty string")
            if _SEPARATOR in key:
                raise PartitionError(f"invalid static partition key '{key}': '|' is reserved for multi-partition keys")
            if key in seen:
                raise PartitionError(f"duplicate static partition key '{key}'")
            seen.add(key)
        object.__setattr__(self, "keys_", keys)

    def keys(self, now: datetime | None = None) -> tuple[str, ...]:
        """The declared keys, in declared order (``now`` is ignored)."""
        return self.keys_

    def describe(self) -> str:
        """E.g. ``static: eu, us, apac`` (long lists are abbreviated)."""
        return f"static: {self._listing()}"

    def _listing(self) -> str:
        shown = ", ".join(self.keys_[:8])
        return shown + (f", … ({len(self.keys_)} keys)" if len(self.keys_) > 8 else "")

    def _problem(self, key: str) -> str | None:
        return None if key in _static_index(self) else f"not one of {self._listing()}"


@lru_cache(maxsize=None)
def _static_index(definition: StaticPartitions) -> dict[str, int]:
    """Key -> position, so membership and range lookups are O(1)."""
    return {key: i for i, key in enumerate(definition.keys_)}


@dataclass(frozen=True, slots=True, init=False)
class MultiPartitions(PartitionsDefinition):
    """The product of named dimensions: ``MultiPartitions(date=daily, region=regions)``. Keys join
    the parts with "|" in declared order, the first dimension varying slowest."""

    dimensions: tuple[tuple[str, PartitionsDefinition], ...]
    kind: ClassVar[str] = "multi"

    def __init__(self, dimensions: Any = None, /, **named: PartitionsDefinition) -> None:
        # ``dimensions=`` as a tuple of pairs keeps dataclasses.replace() working.
        if dimensions is None and not isinstance(named.get("dimensions"), (PartitionsDefinition, type(None))):
            dimensions = named.pop("dimensions")
        pairs = tuple(tuple(pair) for pair in dimensions) if dimensions is not None else tuple(named.items())
        if dimensions is not None and named:
            raise PartitionError("pass dimensions either as a tuple of pairs or as keywords, not both")
        if len(pairs) < 2:
            raise PartitionError("multi partitions need at least two dimensions")
        names = [name for name, _ in pairs]
        for name, definition in pairs:
            if not isinstance(name, str) or not _DIMENSION_NAME_RE.fullmatch(name):
                raise PartitionError(f"invalid dimension name {name!r}")
            if not isinstance(definition, (TimePartitions, StaticPartitions)):
                raise PartitionError(f"dimension '{name}' must be time or static partitions, got {definition!r}")
            if names.count(name) > 1:
                raise PartitionError(f"duplicate dimension '{name}'")
        if sum(isinstance(d, TimePartitions) for _, d in pairs) > 1:
            raise PartitionError("multi partitions allow at most one time dimension")
        object.__setattr__(self, "dimensions", pairs)

    @property
    def names(self) -> tuple[str, ...]:
        """Dimension names in declared order."""
        return tuple(name for name, _ in self.dimensions)

    @property
    def time_dimension(self) -> tuple[str, TimePartitions] | None:
        """(name, definition) of the time dimension, if any."""
        for name, definition in self.dimensions:
            if isinstance(definition, TimePartitions):
                return name, definition
        return None

    def dimension(self, name: str) -> PartitionsDefinition:
        """The definition of dimension ``name``; PartitionError if there is none."""
        for own, definition in self.dimensions:
            if own == name:
                return definition
        raise PartitionError(f"unknown dimension '{name}' (have: {', '.join(self.names)})")

    def split(self, key: str) -> dict[str, str]:
        """``"2024-01-01|eu"`` -> ``{"date": "2024-01-01", "region": "eu"}`` (structure only)."""
        parts = key.split(_SEPARATOR) if isinstance(key, str) else []
        if len(parts) != len(self.dimensions):
            raise PartitionError(f"invalid partition key '{key}' for multi partitions: expected "
                                 f"{len(self.dimensions)} parts {'|'.join(self.names)}")
        return dict(zip(self.names, parts))

    def join(self, parts: Mapping[str, str]) -> str:
        """Inverse of :meth:`split`: exactly one part per dimension, none containing "|"."""
        if set(parts) != set(self.names):
            raise PartitionError(f"partition key parts {sorted(parts)} do not match dimensions {list(self.names)}")
        values = [parts[name] for name in self.names]
        if any(not isinstance(v, str) or _SEPARATOR in v for v in values):
            raise PartitionError(f"invalid partition key parts {dict(parts)!r}")
        return _SEPARATOR.join(values)

    def keys(self, now: datetime) -> tuple[str, ...]:
        """Product of the dimensions' keys at ``now``, first dimension slowest."""
        time = self.time_dimension
        return _multi_keys(self, None if time is None else time[1]._boundary(now))

    def describe(self) -> str:
        """E.g. ``date × region``."""
        return " × ".join(self.names)

    def _problem(self, key: str) -> str | None:
        try:
            parts = self.split(key)
        except PartitionError:
            return f"expected {len(self.dimensions)} parts {'|'.join(self.names)}"
        for name, definition in self.dimensions:
            problem = definition._problem(parts[name])
            if problem is not None:
                return f"{name} '{parts[name]}': {problem}"
        return None


@lru_cache(maxsize=64)
def _multi_keys(definition: MultiPartitions, token: int | None) -> tuple[str, ...]:
    """Cached product keys; ``token`` is the time dimension's boundary, None when all are static."""
    now = None if token is None else datetime.fromtimestamp(token, UTC)
    per_dimension = [d.keys(now) for _, d in definition.dimensions]
    return tuple(_SEPARATOR.join(parts) for parts in product(*per_dimension))
