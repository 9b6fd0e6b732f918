"""Backfills and range runs, as a user drives them.

* Every ``--partitions RANGE`` form selects exactly the intended partitions: what ``plan`` shows and what
  ``materialize`` builds (daily, hourly across Berlin's DST changes, multi-dimensional).
* A run with ``--partitions`` is a backfill: its kind and ``--tag``s are recorded and filterable.
* Without ``--stale`` a backfill rebuilds everything in range; with ``--stale`` only what is stale.
* A ``backfill="single_run"`` asset is called once for a contiguous range, with ``ctx.partition_keys``,
  and still records (and goes stale) per partition, for both documented return styles.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import assetflow as af
from project_kit import cli, cli_many, load_defs, write_project

# --- helpers: a throwaway project in tmp_path, driven through the API and the CLI -----------------


def cli_json(root: Path, *args: str, now: str, expect: int = 0) -> dict:
    done = cli(root, *args, "--json", now=now)
    assert done.returncode == expect, done.stderr
    return json.loads(done.stdout)


def days(first: str, last: str) -> list[str]:
    from datetime import date, timedelta

    lo, hi = date.fromisoformat(first), date.fromisoformat(last)
    return [(lo + timedelta(days=i)).isoformat() for i in range((hi - lo).days + 1)]


def hours(day: str, *hs: str) -> list[str]:
    return [f"{day}T{h}" for h in hs]


def stale_pairs(defs: af.Definitions, **kwargs) -> list[tuple[str, str | None]]:
    return [(s.asset, s.partition) for s in af.plan(defs, stale=True, **kwargs).steps]


# --- RANGE forms ------------------------------------------------------------------------------------

RANGES_PIPELINE = """
    import assetflow as af
    import pyarrow as pa

    daily = af.DailyPartitions(start="2024-01-01", end="2024-01-11")          # 2024-01-01 … 2024-01-10
    berlin = af.HourlyPartitions(start="2024-03-30T00", end="2024-10-28T00", timezone="Europe/Berlin")
    grid = af.MultiPartitions(date=daily, region=af.StaticPartitions(["eu", "us", "apac"]))

    @af.asset(partitions=daily)
    def events(ctx: af.Context) -> pa.Table:
        return pa.table({"key": [ctx.partition_key]})

    @af.asset(partitions=berlin)
    def meter(ctx: af.Context) -> pa.Table:
        return pa.table({"key": [ctx.partition_key]})

    @af.asset(partitions=grid)
    def sales(ctx: af.Context) -> pa.Table:
        return pa.table({"key": [ctx.partition_key]})

    defs = af.Definitions(assets=[events, meter, sales])
"""
RANGES_NOW = "2024-11-01T00:00:00Z"

RANGE_CASES = [
    # (asset, --partitions values, exactly the partitions selected)
    ("events", ["2024-01-03..2024-01-05"], days("2024-01-03", "2024-01-05")),
    ("events", ["2024-01-08.."], days("2024-01-08", "2024-01-10")),
    ("events", ["..2024-01-02"], days("2024-01-01", "2024-01-02")),
    ("events", ["2024-01-02,2024-01-05,2024-01-09"], ["2024-01-02", "2024-01-05", "2024-01-09"]),
    ("events", ["last:3"], days("2024-01-08", "2024-01-10")),
    ("events", ["2024-01-04"], ["2024-01-04"]),
    # Berlin springs forward on 2024-03-31: 02:00 local does not exist, so no partition is keyed T02.
    ("meter", ["2024-03-31T00..2024-03-31T04"], hours("2024-03-31", "00", "01", "03", "04")),
    ("meter", ["2024-03-31..2024-03-31"], hours("2024-03-31", "00", "01", *(f"{h:02d}" for h in range(3, 24)))),
    # … and falls back on 2024-10-27: 02:00 local happens twice; the second one is keyed T02+1.
    ("meter", ["2024-10-27T01..2024-10-27T03"], hours("2024-10-27", "01", "02", "02+1", "03")),
    ("meter", ["2024-10-27..2024-10-27"], hours("2024-10-27", "00", "01", "02", "02+1", *(f"{h:02d}" for h in range(3, 24)))),
    ("meter", ["last:2"], hours("2024-10-27", "22", "23")),
    ("sales", ["date=2024-01-02..2024-01-03", "region=eu,us"],
     ["2024-01-02|eu", "2024-01-02|us", "2024-01-03|eu", "2024-01-03|us"]),
    ("sales", ["date=last:1"], ["2024-01-10|eu", "2024-01-10|us", "2024-01-10|apac"]),
    ("sales", ["2024-01-05|apac"], ["2024-01-05|apac"]),
]


@pytest.fixture(scope="module")
def ranges_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ranges")
    write_project(root, RANGES_PIPELINE)
    return root


@pytest.mark.parametrize(("asset", "ranges", "expected"), RANGE_CASES,
                         ids=[f"{a}:{' '.join(r)}" for a, r, _ in RANGE_CASES])
def test_each_range_form_plans_exactly_its_partitions(
        ranges_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        asset: str, ranges: list[str], expected: list[str]) -> None:
    monkeypatch.setenv("ASSETFLOW_NOW", RANGES_NOW)
    defs = load_defs(ranges_project)
    planned = af.plan(defs, [asset], partitions=ranges, store=str(tmp_path / "lineage.duckdb"), data=str(tmp_path / "data"))
    assert [(s.asset, s.partition, s.reasons) for s in planned.steps] == [(asset, key, ("missing",)) for key in expected]


def test_materialize_builds_exactly_the_range_across_the_autumn_dst_change(
        ranges_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSETFLOW_NOW", RANGES_NOW)
    defs = load_defs(ranges_project)
    where = {"store": str(tmp_path / "lineage.duckdb"), "data": str(tmp_path / "data")}
    expected = hours("2024-10-27", "01", "02", "02+1", "03")

    result = af.materialize(defs, ["meter"], partitions="2024-10-27T01..2024-10-27T03", **where)
    assert result.kind == "backfill"
    assert [(s.partition, s.outcome) for s in result.steps] == [(key, "materialized") for key in expected]
    status = af.status(defs, ["meter"], **where).assets[0]
    assert (status.up_to_date, status.missing) == (4, status.partitions - 4)
    # The repeated 02:00 hour is a partition of its own, with its own value.
    assert af.load(defs, "meter", partition="2024-10-27T02+1", **where).column("key").to_pylist() == ["2024-10-27T02+1"]


# --- backfill runs: kind, tags, --stale ---------------------------------------------------------------

BACKFILL_PIPELINE = """
    from pathlib import Path

    import assetflow as af
    import pyarrow as pa

    HERE = Path(__file__).parent
    daily = af.DailyPartitions(start="2024-01-01")

    @af.asset(partitions=daily, code_version="1")
    def orders(ctx: af.Context) -> pa.Table:
        # A late correction for one day arrives as a file; the code does not change.
        fix = HERE / f"correction-{ctx.partition_key}.txt"
        return pa.table({"day": [ctx.partition_key], "fix": [fix.read_text() if fix.exists() else ""]})

    @af.asset(partitions=daily)
    def revenue(orders: pa.Table) -> pa.Table:
        return orders

    # Each (date, region) partition reads its date's orders.
    @af.asset(partitions=af.MultiPartitions(date=daily, region=af.StaticPartitions(["eu", "us", "apac"])))
    def regional(ctx: af.Context, orders: pa.Table) -> pa.Table:
        return orders.append_column("key", pa.array([ctx.partition_key]))

    defs = af.Definitions(assets=[orders, revenue, regional])
"""
NOW = "2024-01-11T00:00:00Z"  # partitions 2024-01-01 … 2024-01-10


def test_backfill_run_is_kind_backfill_with_tags_recorded_and_filterable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_project(tmp_path, BACKFILL_PIPELINE)
    monkeypatch.setenv("ASSETFLOW_NOW", NOW)
    defs = load_defs(tmp_path)
    manual = af.materialize(defs, ["orders"])
    assert manual.kind == "manual"

    # A multi-dimensional backfill from the command line: dates 3-4 × regions eu, us.
    backfill = cli_json(tmp_path, "materialize", "regional", "--partitions", "date=2024-01-03..2024-01-04",
                        "--partitions", "region=eu,us", "--tag", "team=ml", "--tag", "ticket=42", now=NOW)
    assert backfill["kind"] == "backfill"
    assert backfill["status"] == "success"
    assert [(s["partition"], s["outcome"]) for s in backfill["steps"]] == [
        (key, "materialized") for key in ("2024-01-03|eu", "2024-01-03|us", "2024-01-04|eu", "2024-01-04|us")]
    assert af.load(defs, "regional", partition="2024-01-04|us").column("day").to_pylist() == ["2024-01-04"]

    other = af.materialize(defs, ["revenue"], partitions="last:2", tags={"team": "data"})
    assert other.kind == "backfill"

    by_kind, by_team = cli_many(tmp_path, (NOW, ["runs", "--tag", "kind=backfill", "--json"]),
                                (NOW, ["runs", "--tag", "team=ml", "--json"]))
    assert by_kind.returncode == by_team.returncode == 0, by_kind.stderr + by_team.stderr
    backfills = json.loads(by_kind.stdout)["runs"]
    # Both backfills, not the manual run. (All runs share the pinned clock, so their order is not asserted.)
    assert sorted(r["run_id"] for r in backfills) == sorted([other.run_id, backfill["run_id"]])
    assert all(r["kind"] == "backfill" for r in backfills)
    ml = json.loads(by_team.stdout)["runs"]
    assert [r["run_id"] for r in ml] == [backfill["run_id"]]
    assert ml[0]["tags"] == {"team": "ml", "ticket": "42", "kind": "backfill"}
    assert ml[0]["counts"]["materialized"] == 4

    # The Python API filters the same way.
    assert [r.run_id for r in af.runs(defs, tags={"team": "ml", "kind": "backfill"})] == [backfill["run_id"]]


def test_backfill_with_stale_builds_only_stale_partitions_in_range_and_without_it_rebuilds_all(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_project(tmp_path, BACKFILL_PIPELINE)
    monkeypatch.setenv("ASSETFLOW_NOW", NOW)
    defs = load_defs(tmp_path)
    af.materialize(defs, ["orders", "revenue"])
    # A correction for 2024-01-05 lands; orders[2024-01-05] is rebuilt by itself, so revenue[2024-01-05]
    # (and only it) is now stale.
    (tmp_path / "correction-2024-01-05.txt").write_text("refund")
    af.materialize(defs, ["orders"], partitions="2024-01-05")
    assert stale_pairs(defs, select=["orders", "revenue"]) == [("revenue", "2024-01-05")]

    only_stale = af.materialize(defs, ["revenue"], stale=True, partitions="2024-01-04..2024-01-06")
    assert only_stale.kind == "backfill"
    assert [(s.partition, s.outcome) for s in only_stale.steps] == [("2024-01-05", "materialized")]
    assert af.load(defs, "revenue", partition="2024-01-05").column("fix").to_pylist() == ["refund"]
    assert stale_pairs(defs, select=["orders", "revenue"]) == []

    everything = af.materialize(defs, ["revenue"], partitions="2024-01-04..2024-01-06")
    assert everything.kind == "backfill"
    assert [(s.partition, s.outcome) for s in everything.steps] == [
        (day, "materialized") for day in days("2024-01-04", "2024-01-06")]
    assert everything.counts["materialized"] == 3
    assert stale_pairs(defs, select=["orders", "revenue"]) == []


# --- range runs: backfill="single_run" -----------------------------------------------------------------

SINGLE_RUN_PIPELINE = """
    from pathlib import Path

    import assetflow as af
    import pyarrow as pa

    HERE = Path(__file__).parent
    daily = af.DailyPartitions(start="2024-01-01", end="2024-01-31")    # 30 partitions

    @af.asset(partitions=daily, code_version="1")
    def raw(ctx: af.Context) -> pa.Table:
        fix = HERE / f"correction-{ctx.partition_key}.txt"
        return pa.table({"day": [ctx.partition_key], "fix": [fix.read_text() if fix.exists() else ""]})

    def record_call(ctx: af.Context) -> None:
        with open(HERE / "calls.txt", "a") as calls:
            calls.write(",".join(ctx.partition_keys) + "\\n")

    # Warehouse-style: the range is computed in one query that reads `raw` itself (an order-only dep).
    @af.asset(partitions=daily, deps=["raw"], backfill="single_run")
    def warehouse_dict(ctx: af.Context) -> dict:
        record_call(ctx)
        return {key: pa.table({"day": [key], "n": [i]}) for i, key in enumerate(ctx.partition_keys)}

    @af.asset(partitions=daily, deps=["raw"], backfill="single_run")
    def warehouse_table(ctx: af.Context) -> pa.Table:
        record_call(ctx)
        keys = ctx.partition_keys
        return pa.table({"partition": keys * 2, "n": list(range(2 * len(keys)))})

    defs = af.Definitions(assets=[raw, warehouse_dict, warehouse_table])
"""
MONTH = days("2024-01-01", "2024-01-30")
FEB = "2024-02-01T00:00:00Z"


def calls(root: Path) -> list[list[str]]:
    path = root / "calls.txt"
    return [line.split(",") for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("asset", ["warehouse_dict", "warehouse_table"])
def test_single_run_asset_is_called_once_for_the_range_yet_recorded_and_stale_per_partition(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, asset: str) -> None:
    write_project(tmp_path, SINGLE_RUN_PIPELINE)
    monkeypatch.setenv("ASSETFLOW_NOW", FEB)
    defs = load_defs(tmp_path)
    af.materialize(defs, ["raw"])

    result = af.materialize(defs, [asset])
    assert calls(tmp_path) == [MONTH]  # one call, with all 30 keys in order
    assert [(s.partition, s.outcome) for s in result.steps] == [(key, "materialized") for key in MONTH]
    versions = {s.partition: s.data_version for s in result.steps}
    assert len(set(versions.values())) == 30  # each partition has its own value

    status = af.status(defs, [asset]).assets[0]
    assert (status.partitions, status.up_to_date, status.stale, status.missing) == (30, 30, 0, 0)
    record = af.lineage(defs, asset, partition="2024-01-07")
    assert record.data_version == versions["2024-01-07"]
    assert [(i.asset, i.partition) for i in record.inputs] == [("raw", "2024-01-07")]
    value = af.load(defs, asset, partition="2024-01-07")
    if asset == "warehouse_dict":
        assert value.to_pydict() == {"day": ["2024-01-07"], "n": [6]}
    else:  # the rows of that partition only
        assert value.to_pydict() == {"partition": ["2024-01-07", "2024-01-07"], "n": [6, 36]}

    # Later one upstream partition changes: exactly that partition of the range asset is stale.
    (tmp_path / "correction-2024-01-12.txt").write_text("late rows")
    af.materialize(defs, ["raw"], partitions="2024-01-12")
    plan = af.plan(defs, [asset], stale=True)
    assert [(s.asset, s.partition, s.reasons) for s in plan.steps] == [(asset, "2024-01-12", ("upstream_changed",))]
    assert [(c.asset, c.partition) for c in plan.steps[0].causes] == [("raw", "2024-01-12")]

    rerun = af.materialize(defs, [asset], stale=True)
    assert calls(tmp_path) == [MONTH, ["2024-01-12"]]
    assert [(s.partition, s.outcome) for s in rerun.steps] == [("2024-01-12", "materialized")]
    assert stale_pairs(defs, select=["raw", asset]) == []


def test_single_run_backfill_calls_once_per_contiguous_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_project(tmp_path, SINGLE_RUN_PIPELINE)
    monkeypatch.setenv("ASSETFLOW_NOW", FEB)
    defs = load_defs(tmp_path)
    af.materialize(defs, ["raw"])
    result = af.materialize(defs, ["warehouse_dict"], partitions=["2024-01-02..2024-01-04", "2024-01-10"])
    assert result.kind == "backfill"
    # one call per contiguous range; the two ranges may run concurrently, in either order
    assert sorted(calls(tmp_path)) == [["2024-01-02", "2024-01-03", "2024-01-04"], ["2024-01-10"]]
    assert [s.partition for s in result.steps if s.outcome == "materialized"] == [
        "2024-01-02", "2024-01-03", "2024-01-04", "2024-01-10"]


def test_single_run_asset_receives_its_upstream_range_as_a_dict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_project(tmp_path, """
        import assetflow as af
        import pyarrow as pa

        daily = af.DailyPartitions(start="2024-01-01", end="2024-01-06")

        @af.asset(partitions=daily)
        def raw(ctx: af.Context) -> pa.Table:
            return pa.table({"day": [ctx.partition_key]})

        @af.asset(partitions=daily, backfill="single_run")
        def rollup(ctx: af.Context, raw: dict[str, pa.Table]) -> dict:
            assert list(raw) == ctx.partition_keys, f"got {type(raw).__name__}"
            return {key: pa.table({"rows": [raw[key].num_rows]}) for key in ctx.partition_keys}

        defs = af.Definitions(assets=[raw, rollup])
    """)
    monkeypatch.setenv("ASSETFLOW_NOW", FEB)
    defs = load_defs(tmp_path)
    result = af.materialize(defs)
    assert result.status == "success", [s.error for s in result.steps if s.error]
    assert af.load(defs, "rollup", partition="2024-01-03").to_pydict() == {"rows": [1]}
