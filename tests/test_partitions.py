"""Specification of assetflow.partitions, as tables: which keys exist when, how periods follow the
local calendar (DST included), how keys validate, and that definitions behave as values."""

from __future__ import annotations

import dataclasses
import pickle
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assetflow.errors import PartitionError, UsageError
from assetflow.partitions import (
    DailyPartitions,
    HourlyPartitions,
    MonthlyPartitions,
    MultiPartitions,
    PartitionsDefinition,
    StaticPartitions,
    TimePartitions,
    WeeklyPartitions,
)

BERLIN = "Europe/Berlin"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def days(first: str, count: int) -> list[str]:
    """``count`` consecutive day keys from ``first``."""
    start = date.fromisoformat(first)
    return [(start + timedelta(days=i)).isoformat() for i in range(count)]


DAILY = DailyPartitions(start="2024-01-01")
REGIONS = StaticPartitions(["eu", "us", "apac"])

# --- which keys exist at `now` ---------------------------------------------------------------

KEYS_AT_NOW = [
    # definition, now, expected keys
    (DAILY, utc(2024, 1, 10), days("2024-01-01", 9)),  # Jan 10 is not complete at its first instant
    (DAILY, utc(2024, 1, 10, 23, 59), days("2024-01-01", 9)),
    (DAILY, utc(2024, 1, 2), ["2024-01-01"]),
    (DAILY, utc(2024, 1, 1, 23, 59, 59), []),
    (DAILY, utc(2023, 6, 1), []),
    (DailyPartitions(start="2024-01-01", end="2024-01-05"), utc(2024, 2, 1), days("2024-01-01", 4)),
    (DailyPartitions(start="2024-01-01", end="2024-01-05T12:00"), utc(2024, 2, 1), days("2024-01-01", 4)),
    (DailyPartitions(start="2024-01-01", end="2024-01-05"), utc(2024, 1, 3), days("2024-01-01", 2)),
    (DailyPartitions(start="2024-01-01T06:00"), utc(2024, 1, 4), ["2024-01-02", "2024-01-03"]),  # rounds up
    (HourlyPartitions(start="2024-01-01"), utc(2024, 1, 1, 3, 30), ["2024-01-01T00", "2024-01-01T01", "2024-01-01T02"]),
    (HourlyPartitions(start="2024-01-01T05:30"), utc(2024, 1, 1, 8), ["2024-01-01T06", "2024-01-01T07"]),
    (HourlyPartitions(start="2024-01-01", end="2024-01-01T02"), utc(2025, 1, 1), ["2024-01-01T00", "2024-01-01T01"]),
    # weekly: ISO weeks keyed by Monday; a Wednesday start rounds up to the next Monday
    (WeeklyPartitions(start="2024-01-03"), utc(2024, 2, 1), ["2024-01-08", "2024-01-15", "2024-01-22"]),
    (WeeklyPartitions(start="2024-01-01"), utc(2024, 1, 8), ["2024-01-01"]),
    (WeeklyPartitions(start="2024-01-01"), utc(2024, 1, 7, 23), []),
    # monthly: keyed by the 1st; a start on the 2nd rounds up to the next month
    (MonthlyPartitions(start="2024-01-02"), utc(2024, 5, 1), ["2024-02-01", "2024-03-01", "2024-04-01"]),
    (MonthlyPartitions(start="2024-01-01"), utc(2024, 3, 15), ["2024-01-01", "2024-02-01"]),
    (MonthlyPartitions(start="2023-11-01"), utc(2024, 2, 1), ["2023-11-01", "2023-12-01", "2024-01-01"]),
    # local days: Berlin's Jan 1 ends at 23:00 UTC, New York's at 05:00 UTC the next day
    (DailyPartitions(start="2024-01-01", timezone=BERLIN), utc(2024, 1, 1, 22, 59), []),
    (DailyPartitions(start="2024-01-01", timezone=BERLIN), utc(2024, 1, 1, 23), ["2024-01-01"]),
    (DailyPartitions(start="2024-01-01", timezone="America/New_York"), utc(2024, 1, 2, 4, 59), []),
    (DailyPartitions(start="2024-01-01", timezone="America/New_York"), utc(2024, 1, 2, 5), ["2024-01-01"]),
    # now in another zone is the same instant
    (DAILY, datetime(2024, 1, 3, 0, 30, tzinfo=ZoneInfo(BERLIN)), ["2024-01-01"]),  # 23:30 UTC
    (REGIONS, utc(2024, 1, 1), ["eu", "us", "apac"]),
]


@pytest.mark.parametrize(("definition", "now", "expected"), KEYS_AT_NOW)
def test_keys_exist_once_their_period_is_complete(definition: PartitionsDefinition, now: datetime, expected: list[str]) -> None:
    assert definition.keys(now) == tuple(expected)


def test_keys_reject_a_naive_now() -> None:
    with pytest.raises(PartitionError, match="timezone-aware"):
        DAILY.keys(datetime(2024, 1, 10))


def test_windows_are_aligned_read_only_epoch_seconds() -> None:
    starts, ends = DAILY.windows(utc(2024, 1, 4))
    assert starts.dtype == ends.dtype == np.int64
    assert starts.tolist() == [int(utc(2024, 1, d).timestamp()) for d in (1, 2, 3)]
    assert ends.tolist() == [int(utc(2024, 1, d).timestamp()) for d in (2, 3, 4)]
    with pytest.raises(ValueError):
        starts[0] = 0  # shared with the cache


# --- local calendar periods and DST -----------------------------------------------------------

WINDOWS = [
    # definition, key, expected [start, end) in UTC
    (DailyPartitions(start="2024-01-01", timezone=BERLIN), "2024-03-30", (utc(2024, 3, 29, 23), utc(2024, 3, 30, 23))),
    (DailyPartitions(start="2024-01-01", timezone=BERLIN), "2024-03-31", (utc(2024, 3, 30, 23), utc(2024, 3, 31, 22))),  # 23 h
    (DailyPartitions(start="2024-01-01", timezone=BERLIN), "2024-10-27", (utc(2024, 10, 26, 22), utc(2024, 10, 27, 23))),  # 25 h
    (DailyPartitions(start="2024-01-01", timezone="America/New_York"), "2024-03-10", (utc(2024, 3, 10, 5), utc(2024, 3, 11, 4))),
    (HourlyPartitions(start="2024-01-01", timezone=BERLIN), "2024-03-31T03", (utc(2024, 3, 31, 1), utc(2024, 3, 31, 2))),
    (HourlyPartitions(start="2024-01-01", timezone=BERLIN), "2024-10-27T02", (utc(2024, 10, 27, 0), utc(2024, 10, 27, 1))),
    (HourlyPartitions(start="2024-01-01", timezone=BERLIN), "2024-10-27T02+1", (utc(2024, 10, 27, 1), utc(2024, 10, 27, 2))),
    (HourlyPartitions(start="2024-01-01", timezone="Asia/Kolkata"), "2024-01-01T00", (utc(2023, 12, 31, 18, 30), utc(2023, 12, 31, 19, 30))),
    (WeeklyPartitions(start="2024-01-01"), "2024-01-08", (utc(2024, 1, 8), utc(2024, 1, 15))),
    (MonthlyPartitions(start="2024-01-01"), "2024-02-01", (utc(2024, 2, 1), utc(2024, 3, 1))),  # 29 days
    (DAILY, "2023-06-01", (utc(2023, 6, 1), utc(2023, 6, 2))),  # windows exist before start too
]


@pytest.mark.parametrize(("definition", "key", "expected"), WINDOWS)
def test_window_is_the_local_calendar_period(definition: TimePartitions, key: str, expected: tuple[datetime, datetime]) -> None:
    assert definition.window(key) == expected


def test_hourly_spring_forward_hour_has_no_key() -> None:
    hourly = HourlyPartitions(start="2024-03-31", timezone=BERLIN)
    assert hourly.keys(utc(2024, 3, 31, 3)) == ("2024-03-31T00", "2024-03-31T01", "2024-03-31T03", "2024-03-31T04")
    assert len(DailyPartitions(start="2024-03-31", timezone=BERLIN).keys(utc(2024, 4, 1))) == 1


def test_hourly_fall_back_hour_repeats_with_a_suffix_in_time_order() -> None:
    hourly = HourlyPartitions(start="2024-10-27", timezone=BERLIN)
    keys = hourly.keys(utc(2024, 10, 27, 3))
    assert keys == ("2024-10-27T00", "2024-10-27T01", "2024-10-27T02", "2024-10-27T02+1", "2024-10-27T03")
    starts, ends = hourly.windows(utc(2024, 10, 27, 3))
    assert (np.diff(starts) == 3600).all() and (ends - starts == 3600).all()
    assert len(hourly.keys(utc(2024, 10, 27, 23))) == 25  # up to local midnight


KEY_AT = [
    # definition, instant, key of the period containing it
    (DAILY, utc(2024, 1, 5, 12), "2024-01-05"),
    (DAILY, utc(2020, 2, 29), "2020-02-29"),  # before start: still a key
    (DAILY, utc(2099, 1, 1), "2099-01-01"),  # after now
    (DailyPartitions(start="2024-01-01", timezone=BERLIN), utc(2024, 1, 5, 23, 30), "2024-01-06"),
    (HourlyPartitions(start="2024-01-01", timezone=BERLIN), utc(2024, 10, 27, 0, 30), "2024-10-27T02"),
    (HourlyPartitions(start="2024-01-01", timezone=BERLIN), utc(2024, 10, 27, 1, 30), "2024-10-27T02+1"),
    (HourlyPartitions(start="2024-01-01", timezone=BERLIN), utc(2024, 3, 31, 1), "2024-03-31T03"),
    (WeeklyPartitions(start="2024-01-01"), utc(2024, 1, 14, 23, 59), "2024-01-08"),
    (MonthlyPartitions(start="2024-01-01"), utc(2024, 12, 31, 23), "2024-12-01"),
    (MonthlyPartitions(start="2024-01-01", timezone=BERLIN), utc(2024, 12, 31, 23), "2025-01-01"),
]


@pytest.mark.parametrize(("definition", "instant", "expected"), KEY_AT)
def test_key_at(definition: TimePartitions, instant: datetime, expected: str) -> None:
    assert definition.key_at(instant) == expected


# --- validate_key -----------------------------------------------------------------------------

HOURLY_BERLIN = HourlyPartitions(start="2024-01-01", timezone=BERLIN)
MULTI = MultiPartitions(date=DAILY, region=REGIONS)

INVALID_KEYS = [
    # definition, key, message fragment
    (DAILY, "2024-13-01", "invalid partition key '2024-13-01' for daily partitions"),
    (DAILY, "2024-02-30", "not a valid date"),
    (DAILY, "2024-1-01", "expected YYYY-MM-DD"),
    (DAILY, "2024-01-01T00", "expected YYYY-MM-DD"),
    (DAILY, "2023-12-31", "before start 2024-01-01"),
    (DailyPartitions(start="2024-01-01", end="2024-02-01"), "2024-02-01", "end 2024-02-01"),
    (WeeklyPartitions(start="2024-01-01"), "2024-01-03", "not a Monday"),
    (WeeklyPartitions(start="2024-01-03"), "2024-01-01", "before start"),  # start rounded up to Jan 8
    (MonthlyPartitions(start="2024-01-01"), "2024-01-15", "not the 1st"),
    (HourlyPartitions(start="2024-01-01"), "2024-01-01", "expected YYYY-MM-DDTHH"),
    (HourlyPartitions(start="2024-01-01"), "2024-01-01T24", "not a valid date"),
    (HourlyPartitions(start="2024-01-01"), "2024-10-27T02+1", "no such hourly period in UTC"),
    (HOURLY_BERLIN, "2024-03-31T02", "no such hourly period in Europe/Berlin"),
    (HOURLY_BERLIN, "2024-10-27T03+1", "no such hourly period"),
    (REGIONS, "xx", "invalid partition key 'xx' for static partitions: not one of eu, us, apac"),
    (MULTI, "2024-01-01", "expected 2 parts date|region"),
    (MULTI, "2024-01-01|xx", "region 'xx'"),
    (MULTI, "2023-01-01|eu", "date '2023-01-01': before start"),
]


@pytest.mark.parametrize(("definition", "key", "fragment"), INVALID_KEYS)
def test_validate_key_rejects(definition: PartitionsDefinition, key: str, fragment: str) -> None:
    with pytest.raises(PartitionError, match=fragment.replace("|", r"\|").replace("+", r"\+")):
        definition.validate_key(key)


VALID_KEYS = [
    (DAILY, "2024-01-01"),
    (DAILY, "2099-12-31"),  # validity does not depend on now
    (DailyPartitions(start="2024-01-01", end="2024-02-01"), "2024-01-31"),
    (WeeklyPartitions(start="2024-01-03"), "2024-01-08"),
    (MonthlyPartitions(start="2024-01-02"), "2024-02-01"),
    (HOURLY_BERLIN, "2024-10-27T02+1"),
    (HOURLY_BERLIN, "2024-03-31T03"),
    (REGIONS, "apac"),
    (MULTI, "2024-05-01|us"),
]


@pytest.mark.parametrize(("definition", "key"), VALID_KEYS)
def test_validate_key_accepts(definition: PartitionsDefinition, key: str) -> None:
    definition.validate_key(key)


def test_partition_errors_are_usage_errors() -> None:
    with pytest.raises(UsageError):
        DAILY.window("nope")


# --- construction -----------------------------------------------------------------------------

EQUAL_DEFINITIONS = [
    (DailyPartitions(start="2024-01-01"), DailyPartitions(start=date(2024, 1, 1))),
    (DailyPartitions(start="2024-01-01"), DailyPartitions(start=datetime(2024, 1, 1))),
    (DailyPartitions(start="2024-01-01"), DailyPartitions(start="2024-01-01T00")),
    (DailyPartitions(start="2024-01-01"), DailyPartitions("2024-01-01T00:00", None, "UTC")),
    (DailyPartitions(start="2024-01-01", timezone=BERLIN), DailyPartitions(start=utc(2023, 12, 31, 23), timezone=BERLIN)),
    (HourlyPartitions(start="2024-01-01T05"), HourlyPartitions(start="2024-01-01T05:00:00")),
    (StaticPartitions(["eu", "us"]), StaticPartitions(("eu", "us"))),
    (StaticPartitions(["eu", "us"]), StaticPartitions(k for k in ["eu", "us"])),
    (MultiPartitions(date=DAILY, region=REGIONS), MultiPartitions(date=DailyPartitions(start=date(2024, 1, 1)), region=StaticPartitions(["eu", "us", "apac"]))),
    (MultiPartitions(date=DAILY, region=REGIONS), MultiPartitions((("date", DAILY), ("region", REGIONS)))),
]


@pytest.mark.parametrize(("left", "right"), EQUAL_DEFINITIONS)
def test_equal_definitions_are_interchangeable_cache_keys(left: PartitionsDefinition, right: PartitionsDefinition) -> None:
    assert left == right and hash(left) == hash(right)
    assert {left: 1}[right] == 1
    assert pickle.loads(pickle.dumps(left)) == left
    assert dataclasses.replace(left) == left


UNEQUAL_DEFINITIONS = [
    (DailyPartitions(start="2024-01-01"), HourlyPartitions(start="2024-01-01")),
    (DailyPartitions(start="2024-01-01"), DailyPartitions(start="2024-01-01", timezone=BERLIN)),
    (DailyPartitions(start="2024-01-01"), DailyPartitions(start="2024-01-01", end="2025-01-01")),
    (StaticPartitions(["eu", "us"]), StaticPartitions(["us", "eu"])),  # order is meaning
    (MultiPartitions(date=DAILY, region=REGIONS), MultiPartitions(region=REGIONS, date=DAILY)),
]


@pytest.mark.parametrize(("left", "right"), UNEQUAL_DEFINITIONS)
def test_different_definitions_differ(left: PartitionsDefinition, right: PartitionsDefinition) -> None:
    assert left != right


NORMALIZED = [
    (DailyPartitions(start=date(2024, 1, 1)), "start", "2024-01-01"),
    (HourlyPartitions(start="2024-01-01T05"), "start", "2024-01-01T05:00"),
    (HourlyPartitions(start="2024-01-01 05:30:15"), "start", "2024-01-01T05:30:15"),
    (DailyPartitions(start="2024-01-01", end=date(2024, 2, 1)), "end", "2024-02-01"),
    (DailyPartitions(start="2024-01-01T00:00Z", timezone=BERLIN), "start", "2024-01-01T01:00"),
    (StaticPartitions(["eu"]), "keys_", ("eu",)),
]


@pytest.mark.parametrize(("definition", "field", "expected"), NORMALIZED)
def test_fields_are_stored_normalized(definition: PartitionsDefinition, field: str, expected: object) -> None:
    assert getattr(definition, field) == expected


BAD_CONSTRUCTIONS = [
    (lambda: DailyPartitions(start="2024-01-01", timezone="Mars/Olympus"), "unknown timezone 'Mars/Olympus'"),
    (lambda: DailyPartitions(start="2024-13-01"), "invalid start '2024-13-01' for daily partitions"),
    (lambda: DailyPartitions(start="yesterday"), "invalid start 'yesterday'"),
    (lambda: DailyPartitions(start="2024-01-01", end="2023-01-01"), "end '2023-01-01' is not after start '2024-01-01'"),
    (lambda: StaticPartitions([]), "at least one key"),
    (lambda: StaticPartitions(["eu", "eu"]), "duplicate static partition key 'eu'"),
    (lambda: StaticPartitions(["a|b"]), "'a|b'"),
    (lambda: StaticPartitions([""]), "non-empty string"),
    (lambda: StaticPartitions([1]), "non-empty string"),
    (lambda: StaticPartitions("eu"), "list of strings"),
    (lambda: MultiPartitions(date=DAILY), "at least two dimensions"),
    (lambda: MultiPartitions(day=DAILY, hour=HourlyPartitions(start="2024-01-01")), "at most one time dimension"),
    (lambda: MultiPartitions(a=REGIONS, b=MULTI), "dimension 'b' must be time or static"),
    (lambda: MultiPartitions((("a b", REGIONS), ("c", REGIONS))), "invalid dimension name 'a b'"),
    (lambda: MultiPartitions((("a", REGIONS), ("a", REGIONS))), "duplicate dimension 'a'"),
]


@pytest.mark.parametrize(("build", "fragment"), BAD_CONSTRUCTIONS)
def test_invalid_definitions_raise_partition_error(build, fragment: str) -> None:
    with pytest.raises(PartitionError, match=fragment.replace("|", r"\|")):
        build()


def test_time_partitions_itself_is_abstract() -> None:
    with pytest.raises(TypeError):
        TimePartitions(start="2024-01-01")


DESCRIPTIONS = [
    (DAILY, "daily from 2024-01-01 (UTC)"),
    (HourlyPartitions(start="2024-01-01", end="2024-02-01", timezone=BERLIN), "hourly from 2024-01-01 until 2024-02-01 (Europe/Berlin)"),
    (REGIONS, "static: eu, us, apac"),
    (StaticPartitions([f"k{i}" for i in range(20)]), "static: k0, k1, k2, k3, k4, k5, k6, k7, … (20 keys)"),
    (MULTI, "date × region"),
]


@pytest.mark.parametrize(("definition", "expected"), DESCRIPTIONS)
def test_describe(definition: PartitionsDefinition, expected: str) -> None:
    assert definition.describe() == expected


def test_kinds_and_period_hints_order_cadences() -> None:
    cadences = [MonthlyPartitions, WeeklyPartitions, DailyPartitions, HourlyPartitions]
    hints = [c(start="2024-01-01").period_seconds_hint for c in cadences]
    assert hints == [2_592_000, 604_800, 86_400, 3_600]
    assert (DAILY.kind, DAILY.cadence, REGIONS.kind, MULTI.kind) == ("time", "daily", "static", "multi")


# --- multi partitions -------------------------------------------------------------------------


def test_multi_keys_vary_the_first_dimension_slowest() -> None:
    assert MULTI.keys(utc(2024, 1, 3)) == (
        "2024-01-01|eu", "2024-01-01|us", "2024-01-01|apac",
        "2024-01-02|eu", "2024-01-02|us", "2024-01-02|apac",
    )
    tiers = MultiPartitions(region=REGIONS, tier=StaticPartitions(["gold", "free"]))
    assert tiers.keys(utc(2024, 1, 1))[:3] == ("eu|gold", "eu|free", "us|gold")


def test_multi_split_join_and_dimension() -> None:
    assert MULTI.split("2024-01-02|us") == {"date": "2024-01-02", "region": "us"}
    assert MULTI.join({"region": "us", "date": "2024-01-02"}) == "2024-01-02|us"
    assert MULTI.dimension("region") is REGIONS
    assert MULTI.time_dimension == ("date", DAILY)
    with pytest.raises(PartitionError, match="unknown dimension 'tier'"):
        MULTI.dimension("tier")
    with pytest.raises(PartitionError, match="expected 2 parts"):
        MULTI.split("2024-01-02")
    with pytest.raises(PartitionError, match="do not match dimensions"):
        MULTI.join({"date": "2024-01-02"})


# --- caching and invariants ---------------------------------------------------------------


@pytest.mark.parametrize(("definition", "count"), [
    (DailyPartitions(start="2023-01-01"), 365),
    (HourlyPartitions(start="2023-01-01"), 8760),
    (DailyPartitions(start="2023-01-01", timezone=BERLIN), 365),
    (HourlyPartitions(start="2023-01-01", timezone=BERLIN), 8760),
])
def test_a_year_of_keys_is_counted_and_cached(definition: TimePartitions, count: int) -> None:
    now = datetime(2024, 1, 1, 0, 0, 7, tzinfo=ZoneInfo(definition.timezone))
    keys = definition.keys(now)
    assert len(keys) == count
    assert definition.keys(now + timedelta(seconds=2)) is keys  # same boundary, same cached tuple


ZONES = ["UTC", BERLIN, "America/New_York", "America/Sao_Paulo", "Asia/Beirut", "Australia/Lord_Howe", "Asia/Kolkata"]
CADENCES = [HourlyPartitions, DailyPartitions, WeeklyPartitions, MonthlyPartitions]


@settings(max_examples=60, deadline=None)
@given(
    cadence=st.sampled_from(CADENCES),
    zone=st.sampled_from(ZONES),
    start=st.dates(min_value=date(2015, 1, 1), max_value=date(2024, 12, 31)),
    span=st.integers(min_value=0, max_value=24 * 100),
)
def test_time_partitions_tile_time_and_round_trip(cadence, zone: str, start: date, span: int) -> None:
    definition = cadence(start=start, timezone=zone)
    hours = span // 24 if cadence is HourlyPartitions else span * (7 if cadence is MonthlyPartitions else 1)
    now = datetime(start.year, start.month, start.day, tzinfo=UTC) + timedelta(hours=hours)
    keys = definition.keys(now)
    starts, ends = definition.windows(now)
    assert len(set(keys)) == len(keys) == len(starts) == len(ends)
    assert (starts < ends).all() and (ends <= now.timestamp()).all()
    assert (starts[1:] == ends[:-1]).all()  # contiguous: no gaps, no overlaps
    for key, begin, end in list(zip(keys, starts.tolist(), ends.tolist()))[:200]:
        definition.validate_key(key)
        assert definition.window(key) == (datetime.fromtimestamp(begin, UTC), datetime.fromtimestamp(end, UTC))
        assert definition.key_at(datetime.fromtimestamp(begin, UTC)) == key
        assert definition.key_at(datetime.fromtimestamp(end - 1, UTC)) == key
    if keys:  # the period after the last key is not complete yet
        following = definition.key_at(datetime.fromtimestamp(int(ends[-1]), UTC))
        assert definition.window(following)[1] > now
