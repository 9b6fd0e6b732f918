"""Specification of the --partitions RANGE syntax (assetflow.ranges), as tables: what each form
parses to, what it selects on each kind of definition, and which inputs are rejected and how."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest

from assetflow.errors import PartitionError
from assetflow.partitions import (
    DailyPartitions,
    HourlyPartitions,
    MonthlyPartitions,
    MultiPartitions,
    PartitionsDefinition,
    StaticPartitions,
    WeeklyPartitions,
)
from assetflow.ranges import (
    PartitionFilter,
    filter_applies,
    filters_match_anything,
    parse_partition_filter,
    parse_partition_filters,
    select_partitions,
    unmatched_filters,
)

NOW = datetime(2024, 6, 1, tzinfo=UTC)  # daily keys 2024-01-01 … 2024-05-31 exist
DAILY = DailyPartitions(start="2024-01-01")
HOURLY = HourlyPartitions(start="2024-01-01")
WEEKLY = WeeklyPartitions(start="2024-01-01")
MONTHLY = MonthlyPartitions(start="2024-01-01")
BERLIN_HOURLY = HourlyPartitions(start="2024-01-01", timezone="Europe/Berlin")
BERLIN_DAILY = DailyPartitions(start="2024-01-01", timezone="Europe/Berlin")
NY_HOURLY = HourlyPartitions(start="2024-01-01", timezone="America/New_York")
REGIONS = StaticPartitions(["apac", "eu", "us"])
MULTI = MultiPartitions(date=DAILY, region=REGIONS)  # at NOW: 152 dates × 3 regions
MULTI_NOW = datetime(2024, 1, 4, tzinfo=UTC)  # dates 2024-01-01 … 2024-01-03
TIERS = MultiPartitions(region=REGIONS, tier=StaticPartitions(["gold", "free"]))


def days(first: str, count: int) -> list[str]:
    start = date.fromisoformat(first)
    return [(start + timedelta(days=i)).isoformat() for i in range(count)]


def hours(first: str, count: int) -> list[str]:
    start = datetime.fromisoformat(first)
    return [(start + timedelta(hours=i)).isoformat(timespec="hours") for i in range(count)]


def cross(dates: list[str], regions: list[str]) -> list[str]:
    return [f"{d}|{r}" for d in dates for r in regions]


def selected(texts: list[str], definition: PartitionsDefinition | None, now: datetime) -> list[str] | None:
    """The keys ``texts`` select on ``definition`` at ``now`` (None: no filter applies)."""
    mask = select_partitions(parse_partition_filters(texts), definition, now)
    if mask is None:
        return None
    keys = definition.keys(now)  # type: ignore[union-attr]
    assert mask.dtype == np.bool_ and mask.shape == (len(keys),)
    return [key for key, chosen in zip(keys, mask) if chosen]


# --- parsing ----------------------------------------------------------------------------------

PARSED = [
    ("2024-01-01..2024-01-31", PartitionFilter("2024-01-01..2024-01-31", "range", lo="2024-01-01", hi="2024-01-31")),
    ("2024-01-01..", PartitionFilter("2024-01-01..", "range", lo="2024-01-01")),
    ("..2024-01-31T05", PartitionFilter("..2024-01-31T05", "range", hi="2024-01-31T05")),
    ("date=2024-01-01..2024-01-07", PartitionFilter("date=2024-01-01..2024-01-07", "range", "date", "2024-01-01", "2024-01-07")),
    ("apac..eu", PartitionFilter("apac..eu", "range", lo="apac", hi="eu")),
    ("a,b,c", PartitionFilter("a,b,c", "keys", keys=("a", "b", "c"))),
    (" eu , us,eu ", PartitionFilter(" eu , us,eu ", "keys", keys=("eu", "us"))),
    ("region=eu,us", PartitionFilter("region=eu,us", "keys", "region", keys=("eu", "us"))),
    ("2024-01-05", PartitionFilter("2024-01-05", "keys", keys=("2024-01-05",))),
    ("2024-10-27T02+1", PartitionFilter("2024-10-27T02+1", "keys", keys=("2024-10-27T02+1",))),
    ("2024-01-01|eu", PartitionFilter("2024-01-01|eu", "keys", keys=("2024-01-01|eu",))),
    ("last:7", PartitionFilter("last:7", "last", last_n=7)),
    ("region=last:2", PartitionFilter("region=last:2", "last", "region", last_n=2)),
]


@pytest.mark.parametrize(("text", "expected"), PARSED)
def test_parse_partition_filter(text: str, expected: PartitionFilter) -> None:
    parsed = parse_partition_filter(text)
    assert parsed == expected
    assert hash(parsed) == hash(expected)  # a value: usable as a cache key


def test_temporal_and_whole_key_forms_are_recognised() -> None:
    assert [parse_partition_filter(t).temporal for t in ("2024-01-01..", "apac..eu", "2024-01-05,2024-01-06", "eu", "last:3")] == [
        True, False, True, False, False,
    ]
    assert parse_partition_filter("2024-01-01|eu").whole_keys and not parse_partition_filter("eu").whole_keys


BAD_TEXT = [
    # text, message fragment (every message quotes the bad text)
    ("2024-13-01..", "invalid date '2024-13-01' in partition range '2024-13-01..'"),
    ("..2024-02-30", "invalid date '2024-02-30' in partition range '..2024-02-30'"),
    ("2024-02-30", "invalid date '2024-02-30' in partition range '2024-02-30'"),
    ("eu,2023-02-29", "invalid date '2023-02-29'"),
    ("2024-01-01T24..", "invalid date '2024-01-01T24'"),
    ("last:0", "invalid count '0' in partition range 'last:0'"),
    ("last:x", "invalid count 'x' in partition range 'last:x'"),
    ("last:-1", "invalid count '-1'"),
    ("last:", "invalid count ''"),
    ("2024-01-05..2024-01-01", "empty partition range '2024-01-05..2024-01-01'"),
    ("2024-01-01T05..2024-01-01T04", "empty partition range '2024-01-01T05..2024-01-01T04'"),
    ("..", "partition range '..'"),
    ("a..b..c", "partition range 'a..b..c'"),
    ("2024-01-01..us", "mixes a date"),
    ("2024-10-27T02+1..", "invalid bound '2024-10-27T02+1'"),
    ("2024-01-01|eu..", "NAME=LO..HI"),
    ("", "empty partition range ''"),
    ("date=", "empty partition range 'date='"),
    ("eu,,us", "empty key"),
    ("date=2024-01-01|eu", "partition range 'date=2024-01-01|eu'"),
    ("2024-01-01|eu,us", "mix of whole multi keys"),
]


@pytest.mark.parametrize(("text", "fragment"), BAD_TEXT)
def test_bad_ranges_fail_at_parse_time(text: str, fragment: str) -> None:
    with pytest.raises(PartitionError) as raised:
        parse_partition_filter(text)
    assert fragment in str(raised.value)
    assert "\n" not in str(raised.value)


def test_parse_partition_filters_keeps_order() -> None:
    parsed = parse_partition_filters(["region=eu", "last:2"])
    assert [f.kind for f in parsed] == ["keys", "last"]


# --- selection --------------------------------------------------------------------------------

SELECTIONS = [
    # RANGE texts, definition, now, selected keys
    # time ranges: each bound at its own granularity, in the definition's timezone
    (["2024-01-01..2024-01-31"], DAILY, NOW, days("2024-01-01", 31)),
    (["2024-01-01..2024-01-31"], HOURLY, NOW, hours("2024-01-01T00", 744)),
    (["2024-01-01..2024-01-31"], MONTHLY, NOW, ["2024-01-01"]),
    (["2024-01-15..2024-02-15"], MONTHLY, NOW, ["2024-02-01"]),  # months that start inside the range
    (["2024-01-01..2024-01-31"], WEEKLY, NOW, ["2024-01-01", "2024-01-08", "2024-01-15", "2024-01-22", "2024-01-29"]),
    (["2024-01-01T22..2024-01-02T01"], HOURLY, NOW, hours("2024-01-01T22", 4)),
    (["2024-01-01T22..2024-01-02"], HOURLY, NOW, hours("2024-01-01T22", 26)),  # a day bound ends at midnight
    (["2024-01-01T12..2024-01-03T00"], DAILY, NOW, ["2024-01-02", "2024-01-03"]),
    (["2024-05-30.."], DAILY, NOW, ["2024-05-30", "2024-05-31"]),  # open end: up to the last existing
    (["..2024-01-03"], DAILY, NOW, days("2024-01-01", 3)),
    (["2024-07-01.."], DAILY, NOW, []),  # not existing yet
    (["2023-01-01..2023-12-31"], DAILY, NOW, []),  # before start
    # timezones and DST
    (["2024-03-30T22..2024-03-31T04"], BERLIN_HOURLY, NOW,
     ["2024-03-30T22", "2024-03-30T23", "2024-03-31T00", "2024-03-31T01", "2024-03-31T03", "2024-03-31T04"]),
    (["2024-10-27T01..2024-10-27T03"], BERLIN_HOURLY, datetime(2024, 11, 1, tzinfo=UTC),
     ["2024-10-27T01", "2024-10-27T02", "2024-10-27T02+1", "2024-10-27T03"]),
    (["2024-03-10..2024-03-10"], NY_HOURLY, NOW, hours("2024-03-10T00", 2) + hours("2024-03-10T03", 21)),  # 23 h day
    (["2024-03-31..2024-03-31"], BERLIN_DAILY, NOW, ["2024-03-31"]),
    # explicit keys and last:N
    (["2024-01-05"], DAILY, NOW, ["2024-01-05"]),
    (["2024-01-07,2024-01-05"], DAILY, NOW, ["2024-01-05", "2024-01-07"]),  # in key order
    (["2024-06-15"], DAILY, NOW, []),  # valid, but not complete yet
    (["2024-10-27T02+1"], BERLIN_HOURLY, datetime(2024, 11, 1, tzinfo=UTC), ["2024-10-27T02+1"]),
    (["last:3"], DAILY, NOW, ["2024-05-29", "2024-05-30", "2024-05-31"]),
    (["last:1000"], DAILY, NOW, days("2024-01-01", 152)),
    (["last:2"], HOURLY, NOW, ["2024-05-31T22", "2024-05-31T23"]),
    (["2024-01-01..2024-01-02", "2024-01-05"], DAILY, NOW, ["2024-01-01", "2024-01-02", "2024-01-05"]),  # OR-ed
    # static definitions
    (["eu"], REGIONS, NOW, ["eu"]),
    (["us,apac"], REGIONS, NOW, ["apac", "us"]),
    (["apac..eu"], REGIONS, NOW, ["apac", "eu"]),
    (["eu.."], REGIONS, NOW, ["eu", "us"]),
    (["..eu"], REGIONS, NOW, ["apac", "eu"]),
    (["last:2"], REGIONS, NOW, ["eu", "us"]),
    (["region=eu"], REGIONS, NOW, ["eu"]),  # a named filter applies to a single definition of its kind
    (["date=2024-01-02..2024-01-03"], DAILY, NOW, ["2024-01-02", "2024-01-03"]),
    # multi: each dimension takes its own filters (OR-ed), dimensions are AND-ed
    (["date=2024-01-02..2024-01-03", "region=eu"], MULTI, MULTI_NOW, ["2024-01-02|eu", "2024-01-03|eu"]),
    (["region=eu,us"], MULTI, MULTI_NOW, cross(days("2024-01-01", 3), ["eu", "us"])),
    (["2024-01-02"], MULTI, MULTI_NOW, cross(["2024-01-02"], ["apac", "eu", "us"])),
    (["eu"], MULTI, MULTI_NOW, cross(days("2024-01-01", 3), ["eu"])),
    (["apac..eu", "date=2024-01-03"], MULTI, MULTI_NOW, ["2024-01-03|apac", "2024-01-03|eu"]),
    (["2024-01-01", "2024-01-03.."], MULTI, MULTI_NOW, cross(["2024-01-01", "2024-01-03"], ["apac", "eu", "us"])),
    (["last:1"], MULTI, MULTI_NOW, cross(["2024-01-03"], ["apac", "eu", "us"])),  # unnamed last:N → time dimension
    (["region=last:1"], MULTI, MULTI_NOW, cross(days("2024-01-01", 3), ["us"])),
    (["2024-01-02|eu,2024-01-03|us"], MULTI, MULTI_NOW, ["2024-01-02|eu", "2024-01-03|us"]),
    (["2024-01-02|eu", "region=eu"], MULTI, MULTI_NOW, ["2024-01-02|eu"]),
    (["tier=gold", "us"], TIERS, NOW, ["us|gold"]),
]


@pytest.mark.parametrize(("texts", "definition", "now", "expected"), SELECTIONS)
def test_select_partitions(texts: list[str], definition: PartitionsDefinition, now: datetime, expected: list[str]) -> None:
    assert selected(texts, definition, now) == expected


NOT_APPLICABLE = [
    # RANGE texts, definition: no filter applies → None ("all partitions" is the caller's call)
    (["2024-01-01.."], None),
    (["last:3"], None),
    ([], DAILY),
    (["2024-01-01.."], REGIONS),  # time forms apply to time definitions only
    (["eu"], DAILY),  # keys apply where they are held or validate
    (["apac..eu"], DAILY),
    (["xx"], REGIONS),
    (["region=eu"], DAILY),
    (["tier=gold"], MULTI),  # no such dimension
    (["last:2"], TIERS),  # unnamed last:N needs a time dimension in a multi
    (["2024-01-01|xx"], MULTI),  # whole keys whose static parts are not held
    (["eu"], MultiPartitions(date=DAILY, tier=StaticPartitions(["gold"]))),
]


@pytest.mark.parametrize(("texts", "definition"), NOT_APPLICABLE)
def test_select_partitions_returns_none_when_no_filter_applies(texts: list[str], definition: PartitionsDefinition | None) -> None:
    assert select_partitions(parse_partition_filters(texts), definition, NOW) is None


BAD_FOR_DEFINITION = [
    # RANGE text, definition, message fragment (quotes the bad key and the range)
    ("apac..xx", REGIONS, "unknown partition key 'xx' in partition range 'apac..xx'"),
    ("eu,xx", REGIONS, "unknown partition key 'xx' in partition range 'eu,xx'"),
    ("us..apac", REGIONS, "empty partition range 'us..apac'"),
    ("region=xx", MULTI, "unknown partition key 'xx' in partition range 'region=xx'"),
    ("2023-12-31", DAILY, "invalid partition key '2023-12-31' for daily partitions: before start"),
    ("2024-01-05,2024-01-03", WEEKLY, "invalid partition key '2024-01-05' for weekly partitions: not a Monday"),
    ("2024-01-05", HOURLY, "invalid partition key '2024-01-05' for hourly partitions"),
    ("2024-03-31T02", BERLIN_HOURLY, "'2024-03-31T02'"),
    ("region=2024-01-01..", MULTI, "partition range 'region=2024-01-01..' is a time range"),
    ("date=apac..eu", MULTI, "partition range 'date=apac..eu' is a key range"),
    ("date=eu", MULTI, "invalid partition key 'eu' for daily partitions"),
    ("2023-01-01|eu", MULTI, "invalid partition key '2023-01-01|eu'"),
]


@pytest.mark.parametrize(("text", "definition", "fragment"), BAD_FOR_DEFINITION)
def test_bad_ranges_for_a_definition_raise(text: str, definition: PartitionsDefinition, fragment: str) -> None:
    with pytest.raises(PartitionError) as raised:
        select_partitions([parse_partition_filter(text)], definition, MULTI_NOW)
    assert fragment in str(raised.value)
    assert text in str(raised.value)


# --- applicability helpers --------------------------------------------------------------------

APPLIES = [
    # RANGE text, definition, applies?
    ("2024-01-01..", DAILY, True),
    ("2024-01-01..", REGIONS, False),
    ("2024-01-01..", MULTI, True),
    ("eu", REGIONS, True),
    ("eu", DAILY, False),
    ("eu", MULTI, True),
    ("region=eu", MULTI, True),
    ("tier=gold", MULTI, False),
    ("last:2", TIERS, False),
    ("last:2", REGIONS, True),
    ("2024-01-01|eu", MULTI, True),
    ("2024-01-01|eu", DAILY, False),
    ("2024-01-01..", None, False),
]


@pytest.mark.parametrize(("text", "definition", "expected"), APPLIES)
def test_filter_applies(text: str, definition: PartitionsDefinition | None, expected: bool) -> None:
    assert filter_applies(parse_partition_filter(text), definition) is expected


def test_unmatched_filters_and_filters_match_anything() -> None:
    filters = parse_partition_filters(["2024-01-01..", "tier=gold", "xx"])
    assert [f.text for f in unmatched_filters(filters, [DAILY, MULTI, None])] == ["tier=gold", "xx"]
    assert filters_match_anything(filters, [DAILY])
    assert not filters_match_anything(filters, [None, REGIONS])
