"""How a run's batches move heads: a plain insert when none of the batch's partitions has a head yet
(``Batch.new_heads``), the upsert otherwise — and the heads and head inputs come out the same.

Real runs through the Python API on a real DuckDB file, with a spy that only records what each
``LineageStore.write`` was handed.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

import assetflow as af
import assetflow.scheduler as scheduler
from assetflow.lineage_store import LineageStore
from project_kit import load_defs, write_project

PIPELINE = '''
import pathlib

import assetflow as af

HERE = pathlib.Path(__file__).resolve().parent


@af.asset(partitions=af.DailyPartitions(start="2024-01-01"))
def days(ctx: af.Context) -> bytes:
    return ctx.partition_key.encode()


@af.asset(retries=af.Retry(max_attempts=2, delay=0.01, jitter=0))
def flaky() -> bytes:
    fail_once = HERE / "fail_once"
    if fail_once.exists():
        fail_once.unlink()
        raise RuntimeError("first attempt fails")
    return (HERE / "flaky_value").read_text().encode()


@af.asset
def after(flaky: bytes) -> bytes:
    return flaky + b"!"


defs = af.Definitions(assets=[days, flaky, after], root=HERE)
'''


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_project(tmp_path, PIPELINE)
    (tmp_path / "flaky_value").write_text("v1")
    monkeypatch.setenv("ASSETFLOW_NOW", "2024-01-04T00:00:00Z")
    return tmp_path


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bool, list[tuple[str, str, str]]]]:
    """(new_heads, [(asset, partition, outcome)]) of every batch written, in order."""
    seen: list[tuple[bool, list[tuple[str, str, str]]]] = []
    write = LineageStore.write

    def spy(self, batch, **kwargs):
        rows = batch.attempts.select(["asset", "partition", "outcome"]).to_pylist()
        seen.append((batch.new_heads, [(r["asset"], r["partition"], r["outcome"]) for r in rows]))
        return write(self, batch, **kwargs)

    monkeypatch.setattr(LineageStore, "write", spy)
    return seen


def _heads(root: Path) -> list[tuple]:
    with duckdb.connect(str(root / ".assetflow" / "lineage.duckdb"), read_only=True) as con:
        heads = con.execute("SELECT asset, partition, data_version IS NOT NULL, failed FROM heads "
                            "ORDER BY asset, partition").fetchall()
        inputs = con.execute("SELECT asset, up_asset, data_version FROM head_inputs ORDER BY asset").fetchall()
    return heads + inputs


def test_first_materialization_inserts_heads_and_a_rebuild_upserts_them(project: Path, batches) -> None:
    defs = load_defs(project)
    assert af.materialize(defs).status == "success"
    assert [new for new, _ in batches] == [True]

    (project / "flaky_value").write_text("v2")
    assert af.materialize(defs, ["flaky", "after"]).status == "success"
    assert [new for new, _ in batches] == [True, False]
    # the rebuild replaced the head inputs of `after` instead of adding to them
    flaky_version = af.load(defs, "flaky")
    assert flaky_version == b"v2"
    rows = _heads(project)
    assert [r for r in rows if r[0] == "after" and len(r) == 3] == [("after", "flaky", rows[-1][2])]
    assert af.plan(defs, stale=True).steps == []


def test_new_partitions_of_an_asset_with_heads_are_still_new(project: Path, batches) -> None:
    defs = load_defs(project)
    assert af.materialize(defs, ["days"], partitions="2024-01-01..2024-01-02").status == "success"
    assert af.materialize(defs, ["days"], partitions="2024-01-03").status == "success"
    assert [new for new, _ in batches] == [True, True]
    assert [r[:2] for r in _heads(project)] == [("days", "2024-01-01"), ("days", "2024-01-02"), ("days", "2024-01-03")]


def test_a_retry_whose_failure_was_already_written_upserts_the_flagged_head(
        project: Path, batches, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every loop turn flushes: the failed first attempt is written (flagging the head) before the retry.
    monkeypatch.setattr(scheduler, "FLUSH_ROWS", 1)
    (project / "fail_once").touch()
    defs = load_defs(project)

    result = af.materialize(defs, ["flaky", "after"])

    assert result.status == "success", result.steps
    flushed_failure = next(i for i, (_, rows) in enumerate(batches) if ("flaky", "", "failed") in rows)
    success = next(i for i, (_, rows) in enumerate(batches) if ("flaky", "", "materialized") in rows)
    assert flushed_failure < success
    assert batches[flushed_failure][0] is True and batches[success][0] is False
    assert ("flaky", "", True, False) in _heads(project)  # the head moved and is no longer flagged failed
    assert af.plan(defs, ["flaky", "after"], stale=True).steps == []
