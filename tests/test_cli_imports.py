"""The everyday commands never import pandas: ``plan --stale``, ``status`` and ``materialize --stale``
on a real project (with pandas installed) leave ``pandas`` out of ``sys.modules``, because importing it
costs a large share of such a command. With ``--json`` they leave out ``rich`` too: scripts and CI get
no human output, so they need not pay for its import. ``plan`` returns no pydantic model and, for a
project without config models, does not import pydantic either. Values the user returns are still converted by
pyarrow itself, so a project whose asset returns a pandas DataFrame stores and loads back a DataFrame.

Each command runs in a fresh interpreter, as a user would run it; the clock is pinned by the
``project`` fixture's environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    DAYS,
    NOW,
    PYPROJECT,
    CliResult,
    Loader,
    Project,
    run_cli,
    step_keys,
    write_source,
)

_PROBE = """
import sys
from assetflow.cli import main
code = main(sys.argv[1:])
print("imported:", *sorted(m for m in ("pandas", "pydantic", "rich") if m in sys.modules), file=sys.stderr)
sys.exit(code)
"""

PIPELINE = '''
    from pathlib import Path

    import assetflow as af

    HERE = Path(__file__).parent
    daily = af.DailyPartitions(start="2024-01-01")

    landing = af.source("landing", path=str(HERE / "landing" / "{partition}.csv"), partitions=daily)


    @af.asset(partitions=daily, group="ingest")
    def rows(ctx: af.Context, landing: str) -> int:
        ctx.log.info("reading %s", ctx.partition_key)
        return len(Path(landing).read_text().splitlines())


    @af.asset(partitions=daily)
    def doubled(rows: int) -> int:
        return rows * 2


    @af.check("doubled")
    def doubled_is_even(doubled: int) -> bool:
        return doubled % 2 == 0


    @af.asset
    def total(doubled: dict[str, int]) -> int:
        return sum(doubled.values())


    defs = af.Definitions(assets=[landing, rows, doubled, total], checks=[doubled_is_even])
'''
"""landing (daily source files) -> rows (daily) -> doubled (daily, checked) -> total. Plain ints
throughout, so nothing the user returns needs pandas either."""


def run_probed(project: Project, *args: str, now: str = NOW) -> tuple[CliResult, set[str]]:
    """``assetflow -f pipeline.py ARGS --json`` in a fresh interpreter at clock ``now``: the result,
    and which of pandas, pydantic and rich the command imported."""
    argv = ("-f", "pipeline.py", *args, "--json")
    done = subprocess.run([sys.executable, "-c", _PROBE, *argv], cwd=project.root,
                          env={**os.environ, "ASSETFLOW_NOW": now}, capture_output=True, text=True, timeout=120,
                          check=False)
    result = CliResult(argv, done.returncode, done.stdout, done.stderr)
    marks = [line for line in done.stderr.splitlines() if line.startswith("imported:")]
    assert len(marks) == 1, result.describe()
    return result, set(marks[0].split()[1:])


@pytest.fixture(scope="module")
def materialized_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:data:`PIPELINE` with a landing file per day, materialized once for the module (tests get copies)."""
    root = tmp_path_factory.mktemp("imports") / "project"
    root.mkdir()
    (root / "pyproject.toml").write_text(PYPROJECT)
    write_source(root / "pipeline.py", PIPELINE)
    for day in DAYS:
        write_source(root / "landing" / f"{day}.csv", "a\nb\n")
    first = run_cli(root, "materialize", "--stale", "--json")
    assert first.returncode == 0, first.describe()
    assert first.json()["counts"]["materialized"] == 2 * len(DAYS) + 1, first.describe()
    return root


@pytest.fixture
def materialized(materialized_template: Path, tmp_path: Path, loader: Loader) -> Project:
    """A private copy of the materialized project: nothing is stale."""
    root = tmp_path / "project"
    shutil.copytree(materialized_template, root)
    return Project(root, loader)


def change_landing(project: Project) -> None:
    """One landing file changes: its partition, what depends on it and the total become stale."""
    write_source(project.root / "landing" / "2024-01-03.csv", "a\nb\nc\nd\n")


STALE = {("rows", "2024-01-03"), ("doubled", "2024-01-03"), ("total", None)}


def test_plan_stale_json_imports_neither_pandas_nor_pydantic_nor_rich(materialized: Project) -> None:
    change_landing(materialized)
    result, imported = run_probed(materialized, "plan", "--stale")
    assert result.returncode == 0, result.describe()
    assert step_keys(result.json()["steps"]) == STALE
    assert imported == set(), imported


def test_status_json_imports_neither_pandas_nor_rich(materialized: Project) -> None:
    change_landing(materialized)
    result, imported = run_probed(materialized, "status")
    assert result.returncode == 0, result.describe()
    by_asset = {a["asset"]: a for a in result.json()["assets"]}
    assert by_asset["doubled"]["partitions"] == len(DAYS) and by_asset["doubled"]["stale"] == 1
    assert by_asset["doubled"]["last_materialized_at"] is not None
    assert imported == {"pydantic"}, imported  # the result models; neither pandas nor rich


def test_materialize_stale_json_imports_neither_pandas_nor_rich(materialized: Project) -> None:
    change_landing(materialized)
    result, imported = run_probed(materialized, "materialize", "--stale")
    assert result.returncode == 0, result.describe()
    run = result.json()
    assert run["status"] == "success"
    assert {(s["asset"], s["partition"]) for s in run["steps"] if s["outcome"] == "materialized"} == STALE
    assert imported == {"pydantic"}, imported  # the result models; neither pandas nor rich


def test_materialize_stale_building_new_partitions_does_not_import_pandas(materialized: Project) -> None:
    write_source(materialized.root / "landing" / "2024-01-06.csv", "a\n")
    result, imported = run_probed(materialized, "materialize", "--stale", "rows", "doubled",
                                         "--partitions", "2024-01-06", now="2024-01-07T00:00:00Z")
    assert result.returncode == 0, result.describe()
    run = result.json()
    assert run["status"] == "success" and run["checks"], run
    assert {(s["asset"], s["partition"]) for s in run["steps"] if s["outcome"] == "materialized"} == {
        ("rows", "2024-01-06"), ("doubled", "2024-01-06")}
    assert imported == {"pydantic"}, imported  # the result models; neither pandas nor rich


def test_the_first_materialize_of_a_project_does_not_import_pandas(materialized: Project) -> None:
    shutil.rmtree(materialized.root / ".assetflow")  # no store, no values: everything is built anew
    result, imported = run_probed(materialized, "materialize", "--stale")
    assert result.returncode == 0, result.describe()
    assert result.json()["counts"]["materialized"] == 2 * len(DAYS) + 1
    assert imported == {"pydantic"}, imported  # the result models; neither pandas nor rich


def test_materialize_stale_with_nothing_stale_does_not_import_pandas(materialized: Project) -> None:
    result, imported = run_probed(materialized, "materialize", "--stale")
    assert result.returncode == 0, result.describe()
    assert result.json()["counts"]["materialized"] == 0
    assert imported == {"pydantic"}, imported  # the result models; neither pandas nor rich


# --- values the user returns still go through pyarrow -------------------------------------------------

FRAMES = '''
    import pandas as pd

    import assetflow as af

    daily = af.DailyPartitions(start="2024-01-01")


    @af.asset(partitions=daily)
    def readings(ctx: af.Context) -> pd.DataFrame:
        day = int(ctx.partition_key[-2:])
        return pd.DataFrame({"sensor": ["a", "b", None], "value": [day * 1.5, None, -day * 1.0]})


    @af.asset(partitions=daily)
    def cleaned(readings: pd.DataFrame) -> pd.DataFrame:
        assert isinstance(readings, pd.DataFrame), type(readings)
        return readings.dropna().reset_index(drop=True)


    defs = af.Definitions(assets=[readings, cleaned])
'''


def test_an_asset_returning_a_pandas_dataframe_loads_back_as_one(project: Project) -> None:
    import pandas as pd

    import assetflow as af

    project.write(FRAMES)
    run = project.cli_json("materialize", "--stale")
    assert run["status"] == "success" and run["counts"]["materialized"] == 2 * len(DAYS), run
    defs = project.defs()
    readings = af.load(defs, "readings", "2024-01-02")
    assert isinstance(readings, pd.DataFrame)
    pd.testing.assert_frame_equal(readings, pd.DataFrame({"sensor": ["a", "b", None], "value": [3.0, None, -2.0]}))
    cleaned = af.load(defs, "cleaned", "2024-01-04")
    assert isinstance(cleaned, pd.DataFrame)
    pd.testing.assert_frame_equal(cleaned, pd.DataFrame({"sensor": ["a"], "value": [6.0]}))
