"""Acceptance: the core engine through the Python API (``import assetflow as af``).

Each test builds a tiny real project (``pyproject.toml`` + ``pipeline.py``) in a temporary folder,
materializes it into a real DuckDB store under ``.assetflow``, changes something a user would change —
code, a helper, a data file the asset reads, the clock, a stored file — and states exactly what
``af.plan(stale=True)`` must then report and what ``af.materialize`` must then do.

The clock is pinned at 2024-01-06T00:00Z, so daily partitions from 2024-01-01 are 2024-01-01..05.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

import assetflow as af
from conftest import ALL_STEPS, DAYS, PIPELINE, causes_of, outcomes_of, reasons_of, step_keys

pytestmark = pytest.mark.usefixtures("pinned_environment")


def stale_plan(project, **kwargs):
    return af.plan(project.defs(), stale=True, **kwargs)


def assert_up_to_date(project):
    plan = stale_plan(project)
    assert plan.steps == [], reasons_of(plan.steps)


# --- a fresh project ------------------------------------------------------------------------------


def test_fresh_project_materializes_everything_then_nothing(project):
    project.write(PIPELINE)
    plan = stale_plan(project)
    assert step_keys(plan.steps) == ALL_STEPS
    assert all("missing" in s.reasons for s in plan.steps)
    assert plan.summary() == {"steps": 11, "assets": 3, "up_to_date": 0}
    assert project.store_files() == {}, "planning must not create a store"

    first = af.materialize(project.defs(), stale=True)
    assert first.status == "success"
    assert first.kind == "stale"
    assert outcomes_of(first.steps) == {key: "materialized" for key in ALL_STEPS}
    assert first.counts == {"materialized": 11, "skipped": 0, "failed": 0, "upstream_failed": 0}

    second = af.materialize(project.defs(), stale=True)
    assert second.status == "success"
    assert second.steps == []
    assert second.counts == {"materialized": 0, "skipped": 0, "failed": 0, "upstream_failed": 0}

    plan = stale_plan(project)
    assert plan.steps == []
    assert plan.summary() == {"steps": 0, "assets": 0, "up_to_date": 11}


def test_lineage_is_not_committed_when_the_values_cannot_be_made_durable(project, monkeypatch):
    # The run's last batch commits only after the data root's flush (which runs beside its
    # statements): a flush that fails must leave no lineage pointing at values that may be lost.
    from assetflow.values import ValueStore

    project.write(PIPELINE)

    def failing_flush(self: ValueStore) -> None:
        raise OSError("flush failed")

    with monkeypatch.context() as patched, pytest.raises(OSError, match="flush failed"):
        patched.setattr(ValueStore, "sync", failing_flush)
        af.materialize(project.defs())
    assert step_keys(stale_plan(project).steps) == ALL_STEPS


# --- code versions --------------------------------------------------------------------------------


def test_logic_edit_marks_asset_code_changed_and_downstream_upstream_stale(built):
    built.edit('return pa.table({"day": [day], "value": [value]})',
               'return pa.table({"day": [day], "value": [value + 1]})')
    plan = stale_plan(built)
    expected = {("up", d): ("code_changed",) for d in DAYS}
    expected |= {("features", d): ("upstream_stale",) for d in DAYS}
    expected[("total", None)] = ("upstream_stale",)
    assert reasons_of(plan.steps) == expected
    by_key = {(s.asset, s.partition): s for s in plan.steps}
    for d in DAYS:
        assert causes_of(by_key[("up", d)]) == set()
        assert causes_of(by_key[("features", d)]) == {("up", d, "upstream_stale")}
    assert causes_of(by_key[("total", None)]) == {("features", d, "upstream_stale") for d in DAYS}


def test_comment_only_edit_keeps_asset_fresh(built):
    built.edit("""
        def up(ctx: af.Context) -> pa.Table:
            ctx.log.info("loading %s", ctx.partition_key)
    """, """
        # Ingest: one row per day.
        def up(ctx: af.Context) -> pa.Table:  # the context carries the partition
            # say what we load
            ctx.log.info("loading %s",   ctx.partition_key)   # (formatting is not logic either)

    """)
    built.edit("""
        def scale(x):
            return x * 10
    """, """
        def scale(x):
            # ten times, as agreed
            return x * 10  # see the spec
    """)
    assert_up_to_date(built)


def test_docstring_edit_keeps_asset_fresh(built):
    built.edit("""
        def features(up: pa.Table) -> pa.Table:
            return
    """, '''
        def features(up: pa.Table) -> pa.Table:
            """Doubled values, one row per day.

            Documented at length, which is not logic.
            """
            return
    ''')
    assert_up_to_date(built)


def test_editing_a_helper_in_the_same_module_marks_its_caller_code_changed(built):
    built.edit("return x * 10", "return x * 11")
    plan = stale_plan(built)
    reasons = reasons_of(plan.steps)
    assert {k: v for k, v in reasons.items() if k[0] == "up"} == {("up", d): ("code_changed",) for d in DAYS}
    assert all(v == ("upstream_stale",) for k, v in reasons.items() if k[0] != "up")
    assert step_keys(plan.steps) == ALL_STEPS


HELPER_MODULE = '''
    import pyarrow as pa
    import pyarrow.compute as pc


    def doubled(table: pa.Table) -> pa.Table:
        return table.append_column("double", pc.multiply(table["value"], 2))
'''


@pytest.mark.parametrize("style", ["from helpers import doubled", "import helpers"])
def test_editing_a_helper_in_another_project_module_marks_its_caller_code_changed(project, style):
    call = "doubled(up)" if style.startswith("from") else "helpers.doubled(up)"
    project.write(HELPER_MODULE, "helpers.py")
    project.write(PIPELINE.replace("import assetflow as af", f"import assetflow as af\n    {style}")
                  .replace('return up.append_column("double", pc.multiply(up["value"], 2))', f"return {call}"))
    assert af.materialize(project.defs(), stale=True).status == "success"
    project.edit('pc.multiply(table["value"], 2)', 'pc.multiply(table["value"], 3)', "helpers.py")
    plan = stale_plan(project)
    expected = {("features", d): ("code_changed",) for d in DAYS} | {("total", None): ("upstream_stale",)}
    assert reasons_of(plan.steps) == expected


# --- rebuilding one upstream partition ------------------------------------------------------------


def rebuild(project, asset: str, partition: str):
    result = af.materialize(project.defs(), select=[asset], partitions=partition)
    assert result.kind == "backfill"
    assert outcomes_of(result.steps) == {(asset, partition): "materialized"}
    return result


def test_rebuilt_partition_with_new_output_makes_its_identity_consumer_stale(built):
    built.write_json("settings.json", {"bump": {"2024-01-03": 5}})
    rebuild(built, "up", "2024-01-03")
    plan = stale_plan(built)
    assert reasons_of(plan.steps) == {("features", "2024-01-03"): ("upstream_changed",),
                                      ("total", None): ("upstream_stale",)}
    by_key = {(s.asset, s.partition): s for s in plan.steps}
    assert causes_of(by_key[("features", "2024-01-03")]) == {("up", "2024-01-03", "upstream_changed")}
    assert causes_of(by_key[("total", None)]) == {("features", "2024-01-03", "upstream_stale")}

    result = af.materialize(built.defs(), stale=True)
    assert outcomes_of(result.steps) == {("features", "2024-01-03"): "materialized", ("total", None): "materialized"}
    assert af.load(built.defs(), "total") == sum(20 * d for d in range(1, 6)) + 10


WINDOW_PIPELINE = '''
    import json
    from pathlib import Path

    import assetflow as af

    HERE = Path(__file__).parent
    daily = af.DailyPartitions(start="2024-01-01")


    @af.asset(partitions=daily)
    def up(ctx: af.Context) -> str:
        path = HERE / "settings.json"
        bump = json.loads(path.read_text()) if path.exists() else {}
        return f"{ctx.partition_key}:{bump.get(ctx.partition_key, 0)}"


    @af.asset(partitions=daily, deps={"up": af.Window(-2, 0)})
    def rolling(up: dict[str, str]) -> str:
        return "+".join(up.values())


    defs = af.Definitions(assets=[up, rolling])
'''


def test_rebuilt_partition_with_new_output_makes_its_window_consumers_stale(project):
    project.write(WINDOW_PIPELINE)
    assert af.materialize(project.defs(), stale=True).counts["materialized"] == 10
    project.write_json("settings.json", {"2024-01-03": 1})
    rebuild(project, "up", "2024-01-03")
    plan = stale_plan(project)
    # rolling[d] consumes up[d-2..d]: the three windows holding 2024-01-03, and no other.
    consumers = ["2024-01-03", "2024-01-04", "2024-01-05"]
    assert reasons_of(plan.steps) == {("rolling", d): ("upstream_changed",) for d in consumers}
    for step in plan.steps:
        assert causes_of(step) == {("up", "2024-01-03", "upstream_changed")}
    assert af.load(project.defs(), "rolling", partition="2024-01-02") == "2024-01-01:0+2024-01-02:0"


def test_changing_a_window_marks_exactly_the_partitions_whose_inputs_changed(project):
    project.write(WINDOW_PIPELINE)
    af.materialize(project.defs(), stale=True)
    project.edit("af.Window(-2, 0)", "af.Window(-1, 0)")  # the decorator is not code, the inputs are
    plan = stale_plan(project)
    # 01-01 and 01-02 consume the same partitions under both windows; the others lose one.
    assert reasons_of(plan.steps) == {("rolling", d): ("upstream_changed",) for d in DAYS[2:]}
    for step in plan.steps:
        dropped = DAYS[DAYS.index(step.partition) - 2]
        assert causes_of(step) == {("up", dropped, "upstream_changed")}


CONTAINMENT_PIPELINE = '''
    import json
    from pathlib import Path

    import assetflow as af

    HERE = Path(__file__).parent


    @af.asset(partitions=af.HourlyPartitions(start="2024-01-01T18"))
    def clicks(ctx: af.Context) -> str:
        path = HERE / "settings.json"
        bump = json.loads(path.read_text()) if path.exists() else {}
        return f"{ctx.partition_key}:{bump.get(ctx.partition_key, 0)}"


    @af.asset(partitions=af.DailyPartitions(start="2024-01-01"))
    def daily_clicks(clicks: dict[str, str]) -> int:
        return len(clicks)


    defs = af.Definitions(assets=[clicks, daily_clicks])
'''


def test_rebuilt_hourly_partition_makes_only_its_containing_day_stale(project, monkeypatch):
    monkeypatch.setenv("ASSETFLOW_NOW", "2024-01-03T00:00:00Z")  # 30 hours (from 01-01T18), 2 days
    project.write(CONTAINMENT_PIPELINE)
    assert af.materialize(project.defs(), stale=True).counts["materialized"] == 30 + 2
    assert af.load(project.defs(), "daily_clicks", partition="2024-01-01") == 6
    assert af.load(project.defs(), "daily_clicks", partition="2024-01-02") == 24
    project.write_json("settings.json", {"2024-01-02T05": 1})
    rebuild(project, "clicks", "2024-01-02T05")
    plan = stale_plan(project)
    assert reasons_of(plan.steps) == {("daily_clicks", "2024-01-02"): ("upstream_changed",)}
    assert causes_of(plan.steps[0]) == {("clicks", "2024-01-02T05", "upstream_changed")}


HOURLY_OF_DAILY_PIPELINE = '''
    import assetflow as af


    @af.asset(partitions=af.DailyPartitions(start="2024-01-01"))
    def calendar() -> str:
        return "day"


    @af.asset(partitions=af.HourlyPartitions(start="2024-01-01T00"))
    def hours(calendar: str) -> str:
        return calendar


    @af.asset(partitions=af.HourlyPartitions(start="2024-01-01T00"))
    def report(hours: str) -> str:
        return hours


    defs = af.Definitions(assets=[calendar, hours, report])
'''


def test_hours_of_a_day_not_yet_complete_wait_on_it_and_so_do_their_downstreams(project, monkeypatch):
    # At 01-02T03 the day 01-02 does not exist yet: its three hours, and what reads them, must wait.
    monkeypatch.setenv("ASSETFLOW_NOW", "2024-01-02T03:00:00Z")
    project.write(HOURLY_OF_DAILY_PIPELINE)
    plan = af.plan(project.defs(), stale=True)
    late = [f"2024-01-02T0{h}" for h in range(3)]
    assert sorted((w.asset, w.partition, w.source) for w in plan.waiting) == sorted(
        [("hours", k, "calendar") for k in late] + [("report", k, "calendar") for k in late])
    assert {(s.asset, s.partition) for s in plan.steps} == (
        {("calendar", "2024-01-01")} | {(a, f"2024-01-01T{h:02d}") for a in ("hours", "report") for h in range(24)})
    result = af.materialize(project.defs(), stale=True)
    assert result.status == "success" and result.counts["materialized"] == 1 + 48


def test_rebuilt_partition_with_identical_output_leaves_downstream_up_to_date(built):
    rebuild(built, "up", "2024-01-03")
    assert_up_to_date(built)


def test_code_change_with_identical_output_skips_downstream_by_early_cutoff(built):
    built.edit('value = scale(day) + conf.get("bump", {}).get(ctx.partition_key, 0)',
               'amount = scale(day) + conf.get("bump", {}).get(ctx.partition_key, 0)')
    built.edit('return pa.table({"day": [day], "value": [value]})',
               'return pa.table({"day": [day], "value": [amount]})')
    plan = stale_plan(built)
    assert step_keys(plan.steps) == ALL_STEPS
    result = af.materialize(built.defs(), stale=True)
    assert result.status == "success"
    expected = {("up", d): "materialized" for d in DAYS}
    expected |= {("features", d): "skipped" for d in DAYS}
    expected[("total", None)] = "skipped"
    assert outcomes_of(result.steps) == expected
    assert result.counts == {"materialized": 5, "skipped": 6, "failed": 0, "upstream_failed": 0}
    assert_up_to_date(built)


def test_early_cutoff_is_decided_per_partition(built):
    # New logic whose output differs for one day only: that day's downstream runs, the rest is skipped.
    built.edit('return pa.table({"day": [day], "value": [value]})',
               'return pa.table({"day": [day], "value": [value + (1 if day == 3 else 0)]})')
    result = af.materialize(built.defs(), stale=True)
    expected = {("up", d): "materialized" for d in DAYS}
    expected |= {("features", d): "skipped" for d in DAYS} | {("features", "2024-01-03"): "materialized"}
    expected[("total", None)] = "materialized"
    assert outcomes_of(result.steps) == expected
    assert af.load(built.defs(), "total") == sum(20 * d for d in range(1, 6)) + 2
    assert_up_to_date(built)


# --- the clock moves on ---------------------------------------------------------------------------


def test_new_period_makes_exactly_the_new_partitions_missing(built, monkeypatch):
    monkeypatch.setenv("ASSETFLOW_NOW", "2024-01-07T00:00:00Z")
    plan = stale_plan(built)
    assert reasons_of(plan.steps) == {
        ("up", "2024-01-06"): ("missing",),
        ("features", "2024-01-06"): ("missing", "upstream_stale"),
        # its set of inputs grew by a partition, which is not built yet
        ("total", None): ("upstream_changed", "upstream_stale"),
    }
    by_key = {(s.asset, s.partition): s for s in plan.steps}
    assert causes_of(by_key[("features", "2024-01-06")]) == {("up", "2024-01-06", "upstream_stale")}
    assert causes_of(by_key[("total", None)]) == {("features", "2024-01-06", "upstream_changed"),
                                                  ("features", "2024-01-06", "upstream_stale")}
    assert plan.summary() == {"steps": 3, "assets": 3, "up_to_date": 10}


def test_all_partitions_downstream_is_upstream_changed_once_the_new_partition_exists(built, monkeypatch):
    monkeypatch.setenv("ASSETFLOW_NOW", "2024-01-07T00:00:00Z")
    result = af.materialize(built.defs(), select=["+features"], stale=True)
    assert outcomes_of(result.steps) == {("up", "2024-01-06"): "materialized",
                                         ("features", "2024-01-06"): "materialized"}
    plan = stale_plan(built)
    assert reasons_of(plan.steps) == {("total", None): ("upstream_changed",)}
    assert causes_of(plan.steps[0]) == {("features", "2024-01-06", "upstream_changed")}


GONE = """
    import os
    import assetflow as af

    daily = af.DailyPartitions(start=os.environ.get("DEMO_START", "2024-01-01"))

    @af.asset(partitions=daily)
    def {name}(ctx: af.Context) -> bytes:
        return ctx.partition_key.encode()

    @af.asset(deps=["{name}"])
    def rollup() -> bytes:
        return b"total"

    defs = af.Definitions(assets=[{name}, rollup])
"""


def test_a_consumed_partition_that_no_longer_exists_is_named_as_the_cause(project, monkeypatch):
    project.write(GONE.format(name="events"))
    af.materialize(project.defs())
    monkeypatch.setenv("DEMO_START", "2024-01-02")  # the first day is no longer a partition

    plan = af.plan(project.defs(), stale=True)

    assert reasons_of(plan.steps) == {("rollup", None): ("upstream_changed",)}
    assert causes_of(plan.steps[0]) == {("events", "2024-01-01", "upstream_changed")}
    document = project.cli_json("plan", "--stale")
    assert document["steps"][0]["causes"] == [{"asset": "events", "partition": "2024-01-01", "reason": "upstream_changed"}]


def test_a_renamed_upstream_names_every_partition_it_no_longer_provides(project):
    project.write(GONE.format(name="events"))
    af.materialize(project.defs())
    project.write(GONE.format(name="clicks"))

    plan = af.plan(project.defs(), stale=True)

    by_key = {(s.asset, s.partition): s for s in plan.steps}
    assert by_key[("rollup", None)].reasons == ("upstream_changed", "upstream_stale")
    assert causes_of(by_key[("rollup", None)]) == (
        {("events", day, "upstream_changed") for day in DAYS}
        | {("clicks", day, "upstream_changed") for day in DAYS} | {("clicks", day, "upstream_stale") for day in DAYS})


# --- failures -------------------------------------------------------------------------------------


def test_failed_partition_fails_its_downstream_and_only_it_is_redone_after_the_fix(project):
    project.write(PIPELINE)
    project.write_json("settings.json", {"fail": ["2024-01-03"]})
    result = af.materialize(project.defs(), stale=True)
    assert result.status == "failed"
    outcomes = outcomes_of(result.steps)
    assert outcomes.pop(("up", "2024-01-03")) == "failed"
    assert outcomes.pop(("features", "2024-01-03")) == "upstream_failed"
    assert outcomes.pop(("total", None)) == "upstream_failed"
    assert set(outcomes.values()) == {"materialized"}
    assert len(outcomes) == 8
    failed = next(s for s in result.steps if s.outcome == "failed")
    assert "cannot load 2024-01-03" in failed.error
    assert result.counts == {"materialized": 8, "skipped": 0, "failed": 1, "upstream_failed": 2}

    plan = stale_plan(project)
    assert step_keys(plan.steps) == {("up", "2024-01-03"), ("features", "2024-01-03"), ("total", None)}
    assert "failed" in reasons_of(plan.steps)[("up", "2024-01-03")]
    status = {a.asset: (a.partitions, a.up_to_date, a.failed) for a in af.status(project.defs()).assets}
    assert status == {"up": (5, 4, 1), "features": (5, 4, 0), "total": (1, 0, 0)}
    (failed_step,) = [s for s in af.run(project.defs(), result.run_id).steps if s.outcome == "failed"]
    assert failed_step.attempts[0].error == "RuntimeError: cannot load 2024-01-03"
    assert "Traceback" in (failed_step.attempts[0].traceback or "")

    (project.root / "settings.json").unlink()  # the fix
    again = af.materialize(project.defs(), stale=True)
    assert again.status == "success"
    assert outcomes_of(again.steps) == {("up", "2024-01-03"): "materialized",
                                        ("features", "2024-01-03"): "materialized",
                                        ("total", None): "materialized"}
    assert_up_to_date(project)


# --- stored values --------------------------------------------------------------------------------


def test_deleted_stored_value_makes_its_partition_artifact_missing(built):
    head = af.lineage(built.defs(), "up", partition="2024-01-03")
    stored = built.data_dir / head.path
    assert stored.is_file()
    stored.unlink()
    plan = stale_plan(built)
    assert reasons_of(plan.steps) == {("up", "2024-01-03"): ("artifact_missing",),
                                      ("features", "2024-01-03"): ("upstream_stale",),
                                      ("total", None): ("upstream_stale",)}
    result = af.materialize(built.defs(), stale=True)
    assert outcomes_of(result.steps)[("up", "2024-01-03")] == "materialized"
    assert stored.is_file()


def test_load_returns_the_current_value(built):
    defs = built.defs()
    features = af.load(defs, "features", partition="2024-01-02")
    assert isinstance(features, pa.Table)
    assert features.to_pydict() == {"day": [2], "value": [20], "double": [40]}
    assert af.load(defs, "total") == sum(20 * d for d in range(1, 6))

    built.write_json("settings.json", {"bump": {"2024-01-02": 7}})
    af.materialize(built.defs(), select=["up+"], partitions="2024-01-02")
    assert af.load(built.defs(), "features", partition="2024-01-02").to_pydict() == {
        "day": [2], "value": [27], "double": [54]}


def test_load_of_an_unknown_asset_is_a_usage_error(built):
    with pytest.raises(af.UsageError):
        af.load(built.defs(), "nope", partition="2024-01-02")


# --- lineage --------------------------------------------------------------------------------------


def test_materialization_records_consumed_upstream_versions(built):
    defs = built.defs()
    up = af.lineage(defs, "up", partition="2024-01-04")
    features = af.lineage(defs, "features", partition="2024-01-04")
    assert [(i.asset, i.partition, i.data_version) for i in features.inputs] == [("up", "2024-01-04", up.data_version)]
    assert features.code_version and features.data_version
    assert {(d["asset"], d["partition"]) for d in up.downstream} == {("features", "2024-01-04")}
    total = af.lineage(defs, "total")
    assert {(i.asset, i.partition) for i in total.inputs} == {("features", d) for d in DAYS}


# --- definition errors ----------------------------------------------------------------------------


def test_cycle_in_the_definitions_is_a_definition_error_naming_the_assets(project):
    project.write('''
        import assetflow as af


        @af.asset(deps=["second"])
        def first() -> int:
            return 1


        @af.asset
        def second(first: int) -> int:
            return first


        defs = af.Definitions(assets=[first, second])
    ''')
    with pytest.raises(af.DefinitionError, match="first.*second|second.*first"):
        af.plan(project.defs(), stale=True)
    with pytest.raises(af.DefinitionError):
        af.materialize(project.defs(), stale=True)
    assert project.store_files() == {}


def test_load_of_a_partition_that_does_not_exist_is_a_partition_error(built):
    with pytest.raises(af.PartitionError):
        af.load(built.defs(), "features", partition="2024-13-01")


# --- selection ------------------------------------------------------------------------------------

SELECT_PIPELINE = '''
    import assetflow as af


    @af.asset(group="ingest", tags={"team": "ml"})
    def raw() -> int:
        return 1


    @af.asset(group="ingest")
    def other() -> int:
        return 2


    @af.asset(group="prep")
    def clean(raw: int) -> int:
        return raw


    @af.asset(group="prep", tags={"team": "ml", "tier": "gold"})
    def features(clean: int, other: int) -> int:
        return clean + other


    @af.asset(group="report", tags={"team": "bi"})
    def report(features: int) -> int:
        return features


    defs = af.Definitions(assets=[raw, other, clean, features, report])
'''


@pytest.mark.parametrize("select, expected", [
    (["clean"], {"clean"}),
    (["clean+"], {"clean", "features", "report"}),
    (["+clean"], {"raw", "clean"}),
    (["+features"], {"raw", "other", "clean", "features"}),
    (["+clean+"], {"raw", "clean", "features", "report"}),
    (["group:ingest"], {"raw", "other"}),
    (["tag:team=ml"], {"raw", "features"}),
    (["tag:tier=gold", "report"], {"features", "report"}),
    (None, {"raw", "other", "clean", "features", "report"}),
])
def test_select_syntax(project, select, expected):
    project.write(SELECT_PIPELINE)
    plan = af.plan(project.defs(), select=select)
    assert {s.asset for s in plan.steps} == expected


@pytest.mark.parametrize("select", [["nope"], ["nope+"], ["group:nope"], ["tag:team=nope"]])
def test_selecting_something_that_does_not_exist_is_a_usage_error(project, select):
    project.write(SELECT_PIPELINE)
    with pytest.raises(af.SelectionError):
        af.plan(project.defs(), select=select)


def test_partition_range_restricts_the_plan(built):
    plan = af.plan(built.defs(), select=["up"], partitions="2024-01-02..2024-01-03")
    assert step_keys(plan.steps) == {("up", "2024-01-02"), ("up", "2024-01-03")}
    with pytest.raises(af.PartitionError):
        af.plan(built.defs(), partitions="2024-13-01..")


# --- concurrency ----------------------------------------------------------------------------------

# Each step enters a gate, then waits until more steps than LIMIT are inside at once — which must
# never happen — or until GIVE_UP seconds pass. Without the limit the extra steps arrive, the wait
# ends at once and the peak exceeds LIMIT; with it, the peak is exactly LIMIT.
CONCURRENCY_PIPELINE = '''
    import threading

    import assetflow as af

    LIMIT = {limit}
    GIVE_UP = 0.25
    daily = af.DailyPartitions(start="2024-01-01")


    class Gate:
        def __init__(self):
            self.inside = 0
            self.peak = 0
            self.cond = threading.Condition()

        def __call__(self, key):
            with self.cond:
                self.inside += 1
                self.peak = max(self.peak, self.inside)
                self.cond.notify_all()
                self.cond.wait_for(lambda: self.inside > LIMIT, timeout=GIVE_UP)
                self.inside -= 1
            return key


    gate = Gate()


    @af.asset(partitions=daily{pool})
    def work(ctx: af.Context) -> str:
        return gate(ctx.partition_key)


    defs = af.Definitions(assets=[work]{pools})
'''


def test_max_concurrency_bounds_parallel_steps(project):
    project.write(CONCURRENCY_PIPELINE.format(limit=2, pool="", pools=""))
    module = project.module()
    result = af.materialize(module.defs, stale=True, max_concurrency=2)
    assert result.counts["materialized"] == 5
    assert module.gate.peak == 2


def test_pool_limit_bounds_parallel_steps_below_max_concurrency(project):
    project.write(CONCURRENCY_PIPELINE.format(limit=1, pool=', pool="p"', pools=', pools={"p": 1}'))
    module = project.module()
    result = af.materialize(module.defs, stale=True, max_concurrency=4)
    assert result.counts["materialized"] == 5
    assert module.gate.peak == 1
