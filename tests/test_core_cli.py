"""Acceptance: the ``assetflow`` command, run as a real subprocess in a real project folder.

``python -m assetflow.cli -f pipeline.py COMMAND ... --json`` must print exactly one JSON document on
stdout with the contract's field names, and exit 0 (success), 1 (a materialization failed) or 2
(usage or definition error: one line on stderr, no traceback, nothing written).

Interpreter start-up dominates the cost of a CLI call, so read-only calls and error cases that touch
separate folders are started side by side (``run_cli_many``); nothing here depends on their timing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import assetflow as af
from conftest import (
    ALL_STEPS,
    DAYS,
    NOW,
    PIPELINE,
    CliResult,
    Invocation,
    Project,
    causes_of,
    outcomes_of,
    reasons_of,
    run_cli_many,
    step_keys,
)

PLAN_STEP_FIELDS = {"asset", "partition", "reasons", "causes"}
CAUSE_FIELDS = {"asset", "partition", "reason"}
RUN_FIELDS = {"run_id", "kind", "status", "counts", "steps"}
RUN_STEP_FIELDS = {"asset", "partition", "outcome", "attempts", "data_version", "duration_s", "error"}
COUNT_FIELDS = {"materialized", "skipped", "failed", "upstream_failed"}

pytestmark = pytest.mark.usefixtures("pinned_environment")


def assert_plan_shape(document: dict) -> None:
    assert set(document) >= {"steps", "waiting", "summary"}
    assert set(document["summary"]) >= {"steps", "assets", "up_to_date"}
    for step in document["steps"]:
        assert set(step) >= PLAN_STEP_FIELDS
        for cause in step["causes"]:
            assert set(cause) >= CAUSE_FIELDS


def assert_run_shape(document: dict) -> None:
    assert set(document) >= RUN_FIELDS
    assert document["status"] in ("success", "failed")
    assert set(document["counts"]) >= COUNT_FIELDS
    for step in document["steps"]:
        assert set(step) >= RUN_STEP_FIELDS
        assert step["outcome"] in ("materialized", "skipped", "failed", "upstream_failed", "check_failed")


# --- the main loop: materialize, edit, plan ---------------------------------------------------------


def test_cli_fresh_project_builds_everything_then_nothing(project):
    project.write(PIPELINE)
    first = project.cli_json("materialize", "--stale")
    assert_run_shape(first)
    assert (first["kind"], first["status"]) == ("stale", "success")
    assert outcomes_of(first["steps"]) == {key: "materialized" for key in ALL_STEPS}
    assert first["counts"] == {"materialized": 11, "skipped": 0, "failed": 0, "upstream_failed": 0}
    assert all(s["attempts"] == 1 and s["data_version"] and s["error"] is None for s in first["steps"])
    assert (project.store_dir / "lineage.duckdb").is_file()

    second = project.cli_json("materialize", "--stale")
    assert_run_shape(second)
    assert second["status"] == "success"
    assert second["steps"] == []
    assert second["counts"] == {"materialized": 0, "skipped": 0, "failed": 0, "upstream_failed": 0}

    plan = project.cli_json("plan", "--stale")
    assert plan == {"steps": [], "waiting": [], "summary": {"steps": 0, "assets": 0, "up_to_date": 11}}


def test_cli_plan_explains_a_logic_edit_down_to_the_edited_asset(built):
    # The store was written through the API; the CLI must agree on every code version it did not change.
    built.edit('return up.append_column("double", pc.multiply(up["value"], 2))',
               'return up.append_column("double", pc.multiply(up["value"], 3))')
    plan = built.cli_json("plan", "--stale")
    assert_plan_shape(plan)
    expected = {("features", d): ("code_changed",) for d in DAYS} | {("total", None): ("upstream_stale",)}
    assert reasons_of(plan["steps"]) == expected
    total = next(s for s in plan["steps"] if s["asset"] == "total")
    assert causes_of(total) == {("features", d, "upstream_stale") for d in DAYS}
    assert plan["summary"] == {"steps": 6, "assets": 2, "up_to_date": 5}


def test_cli_failing_asset_exits_1_and_the_next_stale_run_redoes_only_what_failed(project):
    project.write(PIPELINE)
    project.write_json("settings.json", {"fail": ["2024-01-04"]})
    failed = project.cli("materialize", "--stale", "--json")
    assert failed.returncode == 1, failed.describe()
    document = failed.json()
    assert_run_shape(document)
    assert document["status"] == "failed"
    outcomes = outcomes_of(document["steps"])
    assert outcomes.pop(("up", "2024-01-04")) == "failed"
    assert outcomes.pop(("features", "2024-01-04")) == "upstream_failed"
    assert outcomes.pop(("total", None)) == "upstream_failed"
    assert set(outcomes.values()) == {"materialized"} and len(outcomes) == 8
    error = next(s["error"] for s in document["steps"] if s["outcome"] == "failed")
    assert "cannot load 2024-01-04" in error

    # The CLI's records are what the API plans from: fix the data and rerun only what is stale.
    (project.root / "settings.json").unlink()
    fixed = af.materialize(project.defs(), stale=True)
    assert fixed.status == "success"
    assert outcomes_of(fixed.steps) == {("up", "2024-01-04"): "materialized",
                                        ("features", "2024-01-04"): "materialized",
                                        ("total", None): "materialized"}


# --- usage and definition errors ------------------------------------------------------------------

CYCLE_PIPELINE = '''
    import assetflow as af


    @af.asset(deps=["second"])
    def first() -> int:
        return 1


    @af.asset
    def second(first: int) -> int:
        return first


    defs = af.Definitions(assets=[first, second])
'''

# case -> (project: "built" copy or "fresh" folder, pipeline override or None, argv, text the message names)
USAGE_ERRORS = {
    "unknown asset": ("built", None, ("-f", "pipeline.py", "materialize", "up", "nope+", "--stale"), "nope"),
    "bad range": ("built", None, ("-f", "pipeline.py", "plan", "--stale", "--partitions", "2024-13-01..", "--json"),
                  "2024-13-01"),
    "cycle": ("built", CYCLE_PIPELINE, ("-f", "pipeline.py", "materialize", "--stale", "--json"), "first"),
    "missing module": ("fresh", None, ("-m", "no_such_pipeline", "materialize", "--stale"), "no_such_pipeline"),
    "missing file": ("fresh", None, ("-f", "no_such_file.py", "materialize", "--json"), "no_such_file.py"),
    "store under a file": ("fresh", None, ("-f", "pipeline.py", "--store", "pipeline.py/lineage.duckdb", "materialize",
                                           "--json"), "pipeline.py is a file, not a folder"),
}


@pytest.fixture(scope="module")
def usage_errors(built_template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    """Run every case of :data:`USAGE_ERRORS` once (side by side, each in its own folder), recording the
    store's files before and after."""
    setups = {}
    for number, (case, (kind, pipeline, argv, _)) in enumerate(USAGE_ERRORS.items()):
        root = tmp_path_factory.mktemp(f"usage{number}") / "project"
        if kind == "built":
            shutil.copytree(built_template, root)
        project = Project(root, loader=None)  # type: ignore[arg-type]  # never loaded in-process
        if pipeline is not None:
            project.write(pipeline)
        elif kind == "fresh":
            project.write(PIPELINE)
        setups[case] = (project, project.store_files())
    results = run_cli_many([Invocation(setups[case][0].root, USAGE_ERRORS[case][2]) for case in USAGE_ERRORS])
    return {case: (result, setups[case][1], setups[case][0].store_files())
            for case, result in zip(USAGE_ERRORS, results)}


@pytest.mark.parametrize("case", list(USAGE_ERRORS))
def test_cli_usage_error_exits_2_with_one_line_and_leaves_the_store_untouched(usage_errors, case):
    result, before, after = usage_errors[case]
    assert result.returncode == 2, result.describe()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.describe()
    assert "Traceback" not in result.stderr
    assert USAGE_ERRORS[case][3] in lines[0]
    assert result.stdout == ""
    assert after == before  # byte for byte; {} == {} means no .assetflow was created
    if USAGE_ERRORS[case][0] == "built":
        assert before, "the case was meant to run against an existing store"


# --- JSON documents of the read-side commands -------------------------------------------------------


@pytest.fixture(scope="module")
def reports(built_template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, CliResult]:
    """Read-only commands against one materialized copy of :data:`PIPELINE`, run side by side."""
    root = tmp_path_factory.mktemp("reports") / "project"
    shutil.copytree(built_template, root)
    run_id = _only_run_id(root)
    # `runs` finds the definitions through pyproject.toml; `lineage` takes the global option last.
    with (root / "pyproject.toml").open("a") as pyproject:
        pyproject.write('\n[tool.assetflow]\nmodule = "pipeline"\n')
    f = ("-f", "pipeline.py")
    commands = {
        "status": Invocation(root, (*f, "status", "--json")),
        "lineage": Invocation(root, ("lineage", "features", "--partition", "2024-01-02", "--json", *f)),
        "runs": Invocation(root, ("runs", "--json")),
        "run": Invocation(root, (*f, "run", run_id, "--json")),
        "plan tag": Invocation(root, (*f, "plan", "tag:team=ml", "--partitions", "2024-01-02", "--json")),
        "plan next day": Invocation(root, (*f, "plan", "--stale", "--json"), now="2024-01-07T00:00:00Z"),
    }
    results = run_cli_many(list(commands.values()))
    out = dict(zip(commands, results))
    out["run_id"] = run_id  # type: ignore[assignment]
    return out


def _only_run_id(root: Path) -> str:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ASSETFLOW_NOW", NOW)
        runs = af.runs(af.Definitions(root=root), store=str(root / ".assetflow" / "lineage.duckdb"))
    assert len(runs) == 1
    return runs[0].run_id


def ok_json(result: CliResult) -> dict:
    assert result.returncode == 0, result.describe()
    return result.json()


def test_cli_status_json(reports):
    document = ok_json(reports["status"])
    assets = {a["asset"]: a for a in document["assets"]}
    assert set(assets) == {"up", "features", "total"}
    for entry in assets.values():
        assert set(entry) >= {"asset", "partitions", "up_to_date", "stale", "missing", "failed",
                              "last_materialized_at", "freshness"}
        assert set(entry["freshness"]) >= {"max_lag_s", "lag_s", "overdue"}
        assert entry["last_materialized_at"] is not None
        assert (entry["stale"], entry["missing"], entry["failed"]) == (0, 0, 0)
    assert (assets["up"]["partitions"], assets["up"]["up_to_date"]) == (5, 5)
    assert (assets["total"]["partitions"], assets["total"]["up_to_date"]) == (1, 1)


def test_cli_lineage_json(reports):
    document = ok_json(reports["lineage"])
    assert set(document) >= {"asset", "partition", "data_version", "code_version", "run_id", "materialized_at",
                             "inputs", "downstream"}
    assert (document["asset"], document["partition"], document["run_id"]) == ("features", "2024-01-02",
                                                                               reports["run_id"])
    assert [(i["asset"], i["partition"]) for i in document["inputs"]] == [("up", "2024-01-02")]
    assert all(set(i) >= {"asset", "partition", "data_version"} and i["data_version"] for i in document["inputs"])
    assert document["downstream"] == [{"asset": "total", "partition": None}]


def test_cli_runs_json(reports):
    document = ok_json(reports["runs"])
    assert len(document["runs"]) == 1
    run = document["runs"][0]
    assert set(run) >= {"run_id", "kind", "status", "tags", "started_at", "finished_at", "counts"}
    assert (run["run_id"], run["kind"], run["status"]) == (reports["run_id"], "stale", "success")
    assert run["tags"].get("kind") == "stale"
    assert run["counts"] == {"materialized": 11, "skipped": 0, "failed": 0, "upstream_failed": 0}


def test_cli_run_json_shows_steps_attempts_and_captured_ctx_log(reports):
    document = ok_json(reports["run"])
    assert set(document) >= {"run_id", "kind", "status", "tags", "started_at", "finished_at", "counts", "steps"}
    assert step_keys(document["steps"]) == ALL_STEPS
    for step in document["steps"]:
        assert step["outcome"] == "materialized"
        assert len(step["attempts"]) == 1
        attempt = step["attempts"][0]
        assert attempt["number"] == 1 and attempt["error"] is None
        assert any(k.startswith("duration") for k in attempt)
    logs = {step["partition"]: step["logs"] for step in document["steps"] if step["asset"] == "up"}
    for day in DAYS:
        assert f"loading {day}" in logs[day]


def test_cli_plan_select_and_partitions(reports):
    tagged = ok_json(reports["plan tag"])
    assert step_keys(tagged["steps"]) == {("up", "2024-01-02"), ("total", None)}


def test_cli_plan_on_the_next_day_shows_only_the_new_period(reports):
    plan = ok_json(reports["plan next day"])
    assert_plan_shape(plan)
    assert reasons_of(plan["steps"]) == {
        ("up", "2024-01-06"): ("missing",),
        ("features", "2024-01-06"): ("missing", "upstream_stale"),
        ("total", None): ("upstream_changed", "upstream_stale"),
    }
    assert plan["summary"] == {"steps": 3, "assets": 3, "up_to_date": 10}


# --- output printed by asset functions --------------------------------------------------------------

NOISY_PIPELINE = '''
    import assetflow as af


    @af.asset
    def noisy(ctx: af.Context) -> int:
        ctx.log.info("said through ctx.log")
        print("said through print")
        return 1


    defs = af.Definitions(assets=[noisy])
'''


def test_cli_materialize_json_stays_one_document_when_an_asset_prints(project):
    project.write(NOISY_PIPELINE)
    result = project.cli("materialize", "--stale", "--json")
    assert result.returncode == 0, result.describe()
    assert "said through print" not in result.stdout
    assert result.json()["counts"]["materialized"] == 1


def test_run_record_holds_what_an_asset_printed(project, capsys):
    project.write(NOISY_PIPELINE)
    defs = project.defs()
    run_id = af.materialize(defs, stale=True).run_id
    assert "said through print" not in capsys.readouterr().out, "printed output belongs to the run, not the console"
    (step,) = af.run(defs, run_id).steps
    assert "said through ctx.log" in step.logs
    assert "said through print" in step.logs
