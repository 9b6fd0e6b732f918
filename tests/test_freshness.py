"""Freshness policies and ``status --check``, with the clock moved by ``ASSETFLOW_NOW``.

* Time-partitioned asset: lag = now − end of the newest up-to-date partition.
* Unpartitioned asset: lag = now − its last successful materialization.
* ``status --check`` exits 0 while every selected asset's lag is within its policy and nothing failed,
  and 1 as soon as one lag passes its policy, or a selected asset has a failed partition.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import assetflow as af
from project_kit import cli_many, load_defs, write_project

# --- helpers ------------------------------------------------------------------------------------------


def freshness_of(done: subprocess.CompletedProcess[str], asset: str) -> dict:
    document = json.loads(done.stdout)
    return next(a for a in document["assets"] if a["asset"] == asset)["freshness"]


PIPELINE = """
    import assetflow as af
    import pyarrow as pa

    daily = af.DailyPartitions(start="2024-01-01")

    @af.asset(partitions=daily, freshness="26h")
    def events(ctx: af.Context) -> pa.Table:
        return pa.table({"day": [ctx.partition_key]})

    @af.asset(freshness="2h")
    def model() -> bytes:
        return b"weights"

    @af.asset(partitions=daily)
    def exports(ctx: af.Context) -> pa.Table:
        if ctx.partition_key == "2024-01-02":
            raise af.Failure("the export API is down", retry=False)
        return pa.table({"day": [ctx.partition_key]})

    defs = af.Definitions(assets=[events, model, exports])
"""
T = "2024-01-04T00:00:00Z"  # events 2024-01-01 … 2024-01-03 materialized; the newest ends at T
MODEL_AT = "2024-01-05T00:00:00Z"  # model materialized 24h later: both policies run out at 2024-01-05T02:00Z
DAY_POLICY, HOUR_POLICY = 26 * 3600, 2 * 3600


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("freshness")
    write_project(root, PIPELINE)
    previous = os.environ.get("ASSETFLOW_NOW")
    os.environ["ASSETFLOW_NOW"] = T
    try:
        defs = load_defs(root)
        assert af.materialize(defs, ["events"]).status == "success"
        assert af.materialize(defs, ["exports"]).status == "failed"
        os.environ["ASSETFLOW_NOW"] = MODEL_AT
        assert af.materialize(defs, ["model"]).status == "success"
    finally:
        if previous is None:
            del os.environ["ASSETFLOW_NOW"]
        else:
            os.environ["ASSETFLOW_NOW"] = previous
    return root


def test_status_check_flips_exactly_when_lag_passes_the_policy(project: Path) -> None:
    # A second before the policies run out both assets are within them; just after, each is overdue.
    within, events_late, model_late = cli_many(
        project,
        ("2024-01-05T01:59:59Z", ["status", "events", "model", "--check", "--json"]),
        ("2024-01-05T02:00:01Z", ["status", "events", "--check", "--json"]),
        # model's lag runs from the end of its materialization (a few ms after MODEL_AT): allow it 10s.
        ("2024-01-05T02:00:10Z", ["status", "model", "--check", "--json"]),
    )
    for done in (within, events_late, model_late):
        assert done.stderr == ""

    assert within.returncode == 0
    assert freshness_of(within, "events") == {"max_lag_s": DAY_POLICY, "lag_s": DAY_POLICY - 1, "overdue": False}
    fresh = freshness_of(within, "model")
    assert fresh["max_lag_s"] == HOUR_POLICY and fresh["overdue"] is False
    assert HOUR_POLICY - 10 <= fresh["lag_s"] <= HOUR_POLICY - 1  # counted from the materialization at ~MODEL_AT

    assert events_late.returncode == 1
    assert freshness_of(events_late, "events") == {"max_lag_s": DAY_POLICY, "lag_s": DAY_POLICY + 1, "overdue": True}
    assert model_late.returncode == 1
    late = freshness_of(model_late, "model")
    assert late["overdue"] is True and HOUR_POLICY < late["lag_s"] <= HOUR_POLICY + 10
    # `exports` has a failed partition all along: status --check only judges the selected assets.


def test_status_check_fails_on_a_failed_partition(project: Path) -> None:
    (failed,) = cli_many(project, (T, ["status", "exports", "--check", "--json"]))
    assert failed.returncode == 1
    exports = json.loads(failed.stdout)["assets"][0]
    assert (exports["asset"], exports["failed"], exports["up_to_date"]) == ("exports", 1, 2)
    assert exports["freshness"]["overdue"] is False  # no policy: failing, not overdue


def test_status_reports_freshness_through_the_api(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSETFLOW_NOW", "2024-01-05T12:00:00Z")
    defs = load_defs(project)
    by_name = {a.asset: a for a in af.status(defs, ["events", "model"]).assets}
    assert by_name["events"].freshness.model_dump() == {"max_lag_s": DAY_POLICY, "lag_s": 36 * 3600, "overdue": True}
    assert by_name["model"].freshness.overdue is True  # 12h since its materialization, policy 2h
    assert by_name["model"].freshness.lag_s == pytest.approx(12 * 3600, abs=5)
    assert by_name["model"].last_materialized_at is not None


def test_a_newer_up_to_date_partition_resets_the_lag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_project(tmp_path, PIPELINE)
    monkeypatch.setenv("ASSETFLOW_NOW", T)
    defs = load_defs(tmp_path)
    af.materialize(defs, ["events"])
    monkeypatch.setenv("ASSETFLOW_NOW", "2024-01-05T03:00:00Z")  # 27h after 2024-01-03 ended: overdue
    assert af.status(defs, ["events"]).assets[0].freshness.overdue is True
    af.materialize(defs, ["events"], stale=True)  # builds 2024-01-04, which ended 3h ago
    fresh = af.status(defs, ["events"]).assets[0].freshness
    assert (fresh.lag_s, fresh.overdue) == (3 * 3600, False)


def test_unpartitioned_lag_counts_from_its_last_successful_materialization(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_project(tmp_path, """
        from pathlib import Path

        import assetflow as af
        import pyarrow as pa

        daily = af.DailyPartitions(start="2024-01-01")

        @af.asset(partitions=daily)
        def events(ctx: af.Context) -> pa.Table:
            return pa.table({"day": [ctx.partition_key]})

        @af.asset(freshness="2h")
        def summary(events: dict[str, pa.Table]) -> bytes:
            if (Path(__file__).parent / "broken").exists():
                raise af.Failure("warehouse unreachable", retry=False)
            return str(len(events)).encode()

        defs = af.Definitions(assets=[events, summary])
    """)
    monkeypatch.setenv("ASSETFLOW_NOW", "2024-01-04T23:00:00Z")
    defs = load_defs(tmp_path)
    af.materialize(defs)
    # 90 minutes later the 2024-01-04 partition of events exists, so summary is stale; but it was last
    # successfully materialized 1.5h ago, within its 2h policy.
    monkeypatch.setenv("ASSETFLOW_NOW", "2024-01-05T00:30:00Z")
    fresh = af.status(defs, ["summary"]).assets[0].freshness
    assert fresh.lag_s == pytest.approx(90 * 60, abs=5)
    assert fresh.overdue is False
    # A failed rebuild does not count as fresh: the lag still runs from the last success.
    (tmp_path / "broken").write_text("")
    assert af.materialize(defs, stale=True).status == "failed"
    monkeypatch.setenv("ASSETFLOW_NOW", "2024-01-05T01:30:00Z")
    fresh = af.status(defs, ["summary"]).assets[0].freshness
    assert fresh.lag_s == pytest.approx(150 * 60, abs=5)
    assert fresh.overdue is True
