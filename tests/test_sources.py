"""Source assets: external files (or anything a function can observe) that the pipeline reads but does
not build.

* An absent source partition blocks its downstream partitions: ``plan`` lists them as waiting — not as
  steps, not as failures — and ``materialize --stale`` leaves them alone.
* A file landing makes exactly its downstream partitions stale; a changed file makes them stale with
  ``source_changed`` and a cause naming the source partition.
* ``version="content"`` hashes the bytes, so touching a file is not a change; the default
  ``version="auto"`` (size + mtime here) sees a rewrite that changes the size.
* ``observe=`` takes a function returning the source's version (None = absent).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import assetflow as af
from project_kit import cli, load_defs, steps, write_project

# --- helpers ------------------------------------------------------------------------------------------


PIPELINE = """
    from pathlib import Path

    import assetflow as af
    import pyarrow as pa
    import pyarrow.csv as csv

    HERE = Path(__file__).parent
    daily = af.DailyPartitions(start="2024-01-01")

    landing = af.source("landing", path=str(HERE / "landing" / "{partition}.csv"), partitions=daily, version="content")
    drops = af.source("drops", path=str(HERE / "drops" / "{partition}.csv"), partitions=daily)  # version="auto"


    def rates_version(_partition):
        marker = HERE / "rates.version"          # e.g. an HTTP ETag a real observer would fetch
        return marker.read_text() if marker.exists() else None


    rates = af.source("rates", observe=rates_version)

    @af.asset(partitions=daily)
    def clean(landing: str) -> pa.Table:
        assert landing.endswith(".csv")
        return csv.read_csv(landing)

    @af.asset(partitions=daily)
    def report(clean: pa.Table) -> pa.Table:
        return clean

    @af.asset(partitions=daily)
    def dropped(drops: str) -> pa.Table:
        return csv.read_csv(drops)

    @af.asset(deps=["rates"])
    def fx() -> bytes:
        return (HERE / "rates.version").read_bytes()

    defs = af.Definitions(assets=[landing, drops, rates, clean, report, dropped, fx])
"""
NOW = "2024-01-04T00:00:00Z"  # partitions 2024-01-01 … 2024-01-03


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_project(tmp_path, PIPELINE)
    for folder in ("landing", "drops"):
        (tmp_path / folder).mkdir()
    monkeypatch.setenv("ASSETFLOW_NOW", NOW)
    return tmp_path


def land(root: Path, folder: str, day: str, text: str) -> Path:
    path = root / folder / f"{day}.csv"
    path.write_text(text)
    return path


def test_a_missing_file_blocks_its_downstream_partitions_and_a_landing_file_unblocks_exactly_them(project: Path) -> None:
    land(project, "landing", "2024-01-01", "n\n1\n")
    land(project, "landing", "2024-01-03", "n\n3\n")

    planned = cli(project, "plan", "clean", "report", "--stale", "--json", now=NOW)
    assert planned.returncode == 0, planned.stderr
    document = json.loads(planned.stdout)
    assert [(s["asset"], s["partition"]) for s in document["steps"]] == [
        ("clean", "2024-01-01"), ("clean", "2024-01-03"), ("report", "2024-01-01"), ("report", "2024-01-03")]
    assert sorted((w["asset"], w["partition"], w["source"]) for w in document["waiting"]) == [
        ("clean", "2024-01-02", "landing"), ("report", "2024-01-02", "landing")]

    defs = load_defs(project)
    run = af.materialize(defs, ["clean", "report"], stale=True)
    assert run.status == "success"  # waiting is not failing
    assert sorted((s.asset, s.partition, s.outcome) for s in run.steps) == [
        ("clean", "2024-01-01", "materialized"), ("clean", "2024-01-03", "materialized"),
        ("report", "2024-01-01", "materialized"), ("report", "2024-01-03", "materialized")]
    after = af.plan(defs, ["clean", "report"], stale=True)
    assert steps(after) == []
    assert [(w.asset, w.partition) for w in after.waiting] == [("clean", "2024-01-02"), ("report", "2024-01-02")]
    clean = next(a for a in af.status(defs, ["clean"]).assets)
    assert (clean.up_to_date, clean.failed) == (2, 0)

    land(project, "landing", "2024-01-02", "n\n2\n")
    landed = af.plan(defs, ["clean", "report"], stale=True)
    assert steps(landed) == [("clean", "2024-01-02", ("missing",)), ("report", "2024-01-02", ("missing", "upstream_stale"))]
    assert landed.waiting == []
    af.materialize(defs, ["clean", "report"], stale=True)
    assert af.load(defs, "report", partition="2024-01-02").column("n").to_pylist() == [2]
    assert steps(af.plan(defs, ["clean", "report"], stale=True)) == []


def test_content_versioned_source_sees_rewrites_but_not_touches(project: Path) -> None:
    paths = {day: land(project, "landing", day, f"n\n{i}\n") for i, day in enumerate(["2024-01-01", "2024-01-02", "2024-01-03"])}
    defs = load_defs(project)
    af.materialize(defs, ["clean", "report"])

    # Touching a file (a sync tool re-copying it, say) changes its mtime, not its content.
    os.utime(paths["2024-01-02"], (1_900_000_000, 1_900_000_000))
    paths["2024-01-03"].write_text("n\n2\n")  # rewritten with identical bytes
    assert steps(af.plan(defs, ["clean", "report"], stale=True)) == []

    paths["2024-01-02"].write_text("n\n9\n")  # same size, new content
    changed = af.plan(defs, ["clean", "report"], stale=True)
    assert steps(changed) == [("clean", "2024-01-02", ("source_changed",)), ("report", "2024-01-02", ("upstream_stale",))]
    assert [(c.asset, c.partition, c.reason) for c in changed.steps[0].causes] == [("landing", "2024-01-02", "source_changed")]
    assert [(c.asset, c.partition) for c in changed.steps[1].causes] == [("clean", "2024-01-02")]

    af.materialize(defs, ["clean", "report"], stale=True)
    assert af.load(defs, "report", partition="2024-01-02").column("n").to_pylist() == [9]
    assert steps(af.plan(defs, ["clean", "report"], stale=True)) == []


def test_auto_versioned_source_sees_a_rewrite_that_changes_the_size(project: Path) -> None:
    for day in ("2024-01-01", "2024-01-02", "2024-01-03"):
        land(project, "drops", day, "n\n1\n")
    defs = load_defs(project)
    af.materialize(defs, ["dropped"])
    assert steps(af.plan(defs, ["dropped"], stale=True)) == []

    land(project, "drops", "2024-01-03", "n\n1\n2\n3\n")
    changed = af.plan(defs, ["dropped"], stale=True)
    assert steps(changed) == [("dropped", "2024-01-03", ("source_changed",))]
    assert [(c.asset, c.partition) for c in changed.steps[0].causes] == [("drops", "2024-01-03")]


def test_function_observed_source_waits_then_tracks_the_observed_version(project: Path) -> None:
    defs = load_defs(project)
    absent = af.plan(defs, ["fx"], stale=True)
    assert steps(absent) == []
    assert [(w.asset, w.partition, w.source) for w in absent.waiting] == [("fx", None, "rates")]
    assert af.materialize(defs, ["fx"], stale=True).steps == []

    (project / "rates.version").write_text("etag-1")
    assert steps(af.plan(defs, ["fx"], stale=True)) == [("fx", None, ("missing",))]
    af.materialize(defs, ["fx"], stale=True)
    assert af.load(defs, "fx") == b"etag-1"
    assert steps(af.plan(defs, ["fx"], stale=True)) == []

    (project / "rates.version").write_text("etag-2")
    changed = af.plan(defs, ["fx"], stale=True)
    assert steps(changed) == [("fx", None, ("source_changed",))]
    assert [(c.asset, c.partition, c.reason) for c in changed.steps[0].causes] == [("rates", None, "source_changed")]
