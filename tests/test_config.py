"""Asset config: a parameter annotated with a pydantic model, filled from ``--config FILE`` (TOML or JSON,
one table per asset).

* The asset receives the validated values; their hash is part of its version.
* Changing a value makes exactly that asset ``config_changed`` and its downstream ``upstream_stale``;
  assets that do not depend on it stay up to date. TOML and JSON with the same values are the same config.
* An invalid value is a usage error: exit 2, one stderr line naming the field, nothing written.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import assetflow as af
from project_kit import cli, load_defs, steps, write_project

# --- helpers ------------------------------------------------------------------------------------------


def files_under(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every file below ``folder`` with its size, mtime and content hash."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


PIPELINE = """
    import assetflow as af
    import pyarrow as pa
    from pydantic import BaseModel

    daily = af.DailyPartitions(start="2024-01-01")


    class Scoring(BaseModel):
        threshold: float = 0.5
        model_name: str = "baseline"


    @af.asset(partitions=daily)
    def events(ctx: af.Context) -> pa.Table:
        return pa.table({"day": [ctx.partition_key], "score": [0.7]})

    @af.asset(partitions=daily)
    def scores(events: pa.Table, settings: Scoring) -> pa.Table:
        flagged = [s > settings.threshold for s in events.column("score").to_pylist()]
        return events.append_column("flagged", pa.array(flagged)).append_column("model", pa.array([settings.model_name]))

    @af.asset(partitions=daily)
    def alerts(scores: pa.Table) -> pa.Table:
        return scores.filter(scores.column("flagged"))

    @af.asset(partitions=daily)
    def audit(events: pa.Table) -> pa.Table:     # reads events too, but has no config
        return events

    defs = af.Definitions(assets=[events, scores, alerts, audit])
"""
NOW = "2024-01-04T00:00:00Z"  # partitions 2024-01-01 … 2024-01-03
DAYS = ["2024-01-01", "2024-01-02", "2024-01-03"]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_project(tmp_path, PIPELINE)
    (tmp_path / "cfg.toml").write_text('[scores]\nthreshold = 0.8\nmodel_name = "v2"\n')
    (tmp_path / "same.json").write_text(json.dumps({"scores": {"model_name": "v2", "threshold": 0.8}}))
    (tmp_path / "lower.json").write_text(json.dumps({"scores": {"threshold": 0.6, "model_name": "v2"}}))
    monkeypatch.setenv("ASSETFLOW_NOW", NOW)
    return tmp_path


def test_config_values_reach_the_asset_and_a_change_stales_only_it_and_its_downstream(project: Path) -> None:
    built = cli(project, "materialize", "--config", "cfg.toml", "--json", now=NOW)
    assert built.returncode == 0, built.stderr
    assert json.loads(built.stdout)["counts"]["materialized"] == 12

    defs = load_defs(project)
    value = af.load(defs, "scores", partition="2024-01-02")
    assert value.column("flagged").to_pylist() == [False]  # 0.7 is not above 0.8
    assert value.column("model").to_pylist() == ["v2"]

    # Same values, either format: nothing to do.
    assert steps(af.plan(defs, stale=True, config=project / "cfg.toml")) == []
    assert steps(af.plan(defs, stale=True, config=project / "same.json")) == []

    lowered = af.plan(defs, stale=True, config=project / "lower.json")
    assert steps(lowered) == [("scores", day, ("config_changed",)) for day in DAYS] + \
        [("alerts", day, ("upstream_stale",)) for day in DAYS]
    assert all((c.asset, c.partition) == ("scores", step.partition) for step in lowered.steps[3:] for c in step.causes)
    status = {a.asset: (a.up_to_date, a.stale) for a in af.status(defs, config=project / "lower.json").assets}
    assert status == {"events": (3, 0), "scores": (0, 3), "alerts": (0, 3), "audit": (3, 0)}

    run = af.materialize(defs, stale=True, config=project / "lower.json")
    assert sorted({s.asset for s in run.steps}) == ["alerts", "scores"]
    assert af.load(defs, "alerts", partition="2024-01-02").column("flagged").to_pylist() == [True]  # 0.7 > 0.6
    assert steps(af.plan(defs, stale=True, config=project / "lower.json")) == []
    # Going back to the TOML values is a config change again.
    assert [s[:2] for s in steps(af.plan(defs, ["scores"], stale=True, config=project / "cfg.toml"))] == [
        ("scores", day) for day in DAYS]


def test_no_config_file_means_the_models_defaults(project: Path) -> None:
    defs = load_defs(project)
    af.materialize(defs, ["events", "scores"])  # defaults: threshold 0.5
    assert af.load(defs, "scores", partition="2024-01-01").column("flagged").to_pylist() == [True]
    assert af.load(defs, "scores", partition="2024-01-01").column("model").to_pylist() == ["baseline"]
    assert steps(af.plan(defs, ["scores"], stale=True)) == []
    assert [s[2] for s in steps(af.plan(defs, ["scores"], stale=True, config=project / "cfg.toml"))] == [
        ("config_changed",)] * 3


def test_invalid_config_value_is_exit_2_naming_the_field_and_writes_nothing(project: Path) -> None:
    defs = load_defs(project)
    af.materialize(defs, config=project / "cfg.toml")
    (project / "bad.toml").write_text('[scores]\nthreshold = "very high"\nmodel_name = "v2"\n')
    before = files_under(project / ".assetflow")

    done = cli(project, "materialize", "--config", "bad.toml", now=NOW)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "threshold" in lines[0] and "scores" in lines[0]
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    assert files_under(project / ".assetflow") == before

    with pytest.raises(af.ConfigError, match="threshold"):
        af.materialize(defs, config={"scores": {"threshold": [1, 2]}})
    assert files_under(project / ".assetflow") == before
