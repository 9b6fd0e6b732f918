"""The code-version cache's key: which files it watches, and that it is reused or dropped accordingly.

Every command computes this key, so it must never look at more than the code it imported: a project
folder that also holds data (``data/`` with thousands of files, a notebook checkout) would otherwise be
listed on every ``plan`` and ``materialize``.
"""

from __future__ import annotations

import os
import runpy
from pathlib import Path

import pytest

from assetflow.versioncache import cached_versions, project_fingerprint
from conftest import Loader, write_source

PIPELINE = """
    import helpers

    def my_asset():
        return helpers.rows()
"""

HELPERS = """
    def rows():
        return [1, 2, 3]
"""


@pytest.fixture
def project(tmp_path: Path, loader: Loader, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ASSETFLOW_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "project"
    write_source(root / "pipeline.py", PIPELINE)
    write_source(root / "helpers.py", HELPERS)
    loader.module(root)
    return root


def test_files_the_project_never_imported_leave_the_fingerprint_alone(project: Path) -> None:
    before = project_fingerprint(project)
    write_source(project / "data" / "scratch.py", "x = 1\n")  # a script beside the data, never imported
    for i in range(50):
        (project / "data" / f"part-{i}.csv").write_text("a,b\n")
    write_source(project / "notebooks" / "explore.py", "print('hi')\n")
    assert project_fingerprint(project) == before


def test_editing_an_imported_helper_changes_the_fingerprint(project: Path) -> None:
    before = project_fingerprint(project)
    write_source(project / "helpers.py", HELPERS.replace("[1, 2, 3]", "[1, 2, 4]"))  # same size
    assert project_fingerprint(project) != before


def test_a_definitions_file_executed_without_becoming_a_module_is_watched_when_named(tmp_path: Path) -> None:
    script = tmp_path / "loose" / "defs_script.py"
    write_source(script, "VALUE = 1\n")
    runpy.run_path(str(script))  # executed, not imported: no module of it in sys.modules
    before = project_fingerprint(script.parent, [script])
    assert project_fingerprint(script.parent) != before  # it is only watched because it is named
    write_source(script, "VALUE = 2\n")
    assert project_fingerprint(script.parent, [script]) != before


def test_a_vanished_module_file_is_part_of_the_fingerprint_not_an_error(project: Path) -> None:
    before = project_fingerprint(project)
    os.remove(project / "helpers.py")
    assert project_fingerprint(project) != before


def _counting(calls: list[list[str]]):  # noqa: ANN202 - a tiny local spy
    def compute(names: list[str]) -> dict[str, str]:
        calls.append(list(names))
        return {name: f"v-{name}" for name in names}
    return compute


def test_versions_are_reused_until_imported_code_changes(project: Path) -> None:
    calls: list[list[str]] = []
    compute = _counting(calls)
    assert cached_versions(project, ["my_asset"], compute) == {"my_asset": "v-my_asset"}
    write_source(project / "scripts" / "adhoc.py", "import pipeline\n")  # never imported by the project
    (project / "data").mkdir()
    (project / "data" / "new.parquet").write_bytes(b"PAR1")
    assert cached_versions(project, ["my_asset"], compute) == {"my_asset": "v-my_asset"}
    assert len(calls) == 1  # new files under the project, none of them imported: the cache still holds
    write_source(project / "helpers.py", HELPERS.replace("3]", "3, 4]"))
    cached_versions(project, ["my_asset"], compute)
    assert len(calls) == 2  # an imported helper changed: computed again
