"""Shared fixtures for the core-engine acceptance tests.

Every test builds a real, tiny project in a temporary directory — a ``pyproject.toml`` (so the
project root, code versions and the default ``.assetflow`` store location work as for a user) and a
``pipeline.py`` holding ``defs`` — and drives it through the Python API, the CLI as a real
subprocess, or both. The clock is pinned with ``ASSETFLOW_NOW``; nothing is mocked.

* ``load_project(path) -> defs`` imports ``path/pipeline.py`` afresh under a unique module name, so an
  edit made between two calls is seen exactly as a user re-running a command would see it.
* ``project`` is a :class:`Project` in ``tmp_path``: write and edit its files, load its definitions,
  run its CLI, and look at its store.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import json
import linecache
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import assetflow as af

NOW = "2024-01-06T00:00:00Z"
"""The default pinned clock: daily partitions from 2024-01-01 are 2024-01-01 .. 2024-01-05."""
DAYS = [f"2024-01-0{d}" for d in range(1, 6)]

PYPROJECT = '[project]\nname = "demo"\nversion = "0.0.0"\n'

_numbers = itertools.count()
_mtime_ticks = itertools.count(1)


def write_source(path: Path, text: str) -> None:
    """Write a project file so that every later reader sees the new text: dedented, with a fresh
    mtime (a same-size edit within one second must not be mistaken for the old file by bytecode or
    line caches) and no stale bytecode next to it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    stamp = path.stat().st_mtime + next(_mtime_ticks)
    os.utime(path, (stamp, stamp))
    shutil.rmtree(path.parent / "__pycache__", ignore_errors=True)


@dataclass
class CliResult:
    """A finished ``assetflow`` subprocess."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """stdout as exactly one JSON document (and nothing else)."""
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError as exc:  # pragma: no cover - the failure message is the point
            raise AssertionError(f"stdout of {self.args} is not one JSON document ({exc}):\n{self.stdout}\n"
                                 f"stderr:\n{self.stderr}") from None

    def describe(self) -> str:
        return f"assetflow {' '.join(self.args)} -> {self.returncode}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


def _environment(now: str) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ASSETFLOW_")}
    environment.update({"ASSETFLOW_NOW": now, "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "200"})
    return environment


def run_cli(cwd: Path, *args: str, now: str = NOW, target: tuple[str, ...] = ("-f", "pipeline.py")) -> CliResult:
    """Run ``python -m assetflow.cli TARGET ARGS`` in ``cwd`` as a real subprocess."""
    return run_cli_many([Invocation(cwd, (*target, *args), now)])[0]


@dataclass(frozen=True)
class Invocation:
    """One ``python -m assetflow.cli ARGV`` to run in ``cwd`` at clock ``now``."""

    cwd: Path
    argv: tuple[str, ...]
    now: str = NOW


def run_cli_many(invocations: list[Invocation]) -> list[CliResult]:
    """Run independent CLI subprocesses side by side and return their results in order. Only for
    commands that do not write the same store: it saves interpreter start-up time, nothing else."""
    started = [(inv.argv, subprocess.Popen([sys.executable, "-m", "assetflow.cli", *inv.argv], cwd=inv.cwd,
                                           env=_environment(inv.now), stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True))
               for inv in invocations]
    results = []
    for argv, process in started:
        stdout, stderr = process.communicate(timeout=120)
        results.append(CliResult(tuple(argv), process.returncode, stdout, stderr))
    return results


class Loader:
    """Imports project definitions afresh each time (see :func:`load_project`)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._monkeypatch = monkeypatch
        self._registered: list[str] = []
        self._roots: list[Path] = []
        self._project_modules: set[str] = set()

    def module(self, path: Path, filename: str = "pipeline.py") -> Any:
        root = Path(path).resolve()
        if root not in self._roots:
            self._monkeypatch.syspath_prepend(str(root))
            self._roots.append(root)
        self._forget_project_modules()
        importlib.invalidate_caches()
        linecache.clearcache()
        name = f"af_test_project_{next(_numbers)}_{Path(filename).stem}"
        spec = importlib.util.spec_from_file_location(name, root / filename)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # inspect needs it to find sources
        self._registered.append(name)
        before = set(sys.modules)
        try:
            spec.loader.exec_module(module)
        finally:
            # Modules the project imported from its own folder (``import helpers``) are forgotten
            # before the next load, so that edits to them are re-read too.
            for new in set(sys.modules) - before:
                file = getattr(sys.modules[new], "__file__", None)
                if file and Path(file).resolve().is_relative_to(root):
                    self._project_modules.add(new)
        return module

    def defs(self, path: Path, filename: str = "pipeline.py") -> af.Definitions:
        return self.module(path, filename).defs

    def _forget_project_modules(self) -> None:
        for name in self._project_modules:
            sys.modules.pop(name, None)
        self._project_modules.clear()

    def close(self) -> None:
        self._forget_project_modules()
        for name in self._registered:
            sys.modules.pop(name, None)


@pytest.fixture
def pinned_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No store/data/clock override leaks in from the outside; the clock is pinned to :data:`NOW`;
    no bytecode is written next to project files (edits must always be re-read from source).

    Not autouse, so the other suites in this folder are unaffected: every fixture below that builds
    a project requests it, and the core modules request it with ``pytestmark``."""
    for name in list(os.environ):
        if name.startswith("ASSETFLOW_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ASSETFLOW_NOW", NOW)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)


@pytest.fixture
def loader(pinned_environment: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Loader]:
    project_loader = Loader(monkeypatch)
    yield project_loader
    project_loader.close()


@pytest.fixture
def load_project(loader: Loader) -> Callable[..., af.Definitions]:
    """``load_project(path) -> defs``: import ``path/pipeline.py`` afresh under a unique module name."""
    return loader.defs


class Project:
    """A tiny assetflow project on disk."""

    def __init__(self, root: Path, loader: Loader) -> None:
        self.root = root
        self._loader = loader
        root.mkdir(parents=True, exist_ok=True)
        if not (root / "pyproject.toml").exists():
            (root / "pyproject.toml").write_text(PYPROJECT)

    # --- files -------------------------------------------------------------------------------------

    def write(self, text: str, filename: str = "pipeline.py") -> Project:
        write_source(self.root / filename, text)
        return self

    def edit(self, old: str, new: str, filename: str = "pipeline.py") -> None:
        """Replace ``old`` (which must occur exactly once) by ``new``."""
        path = self.root / filename
        text = path.read_text()
        old, new = textwrap.dedent(old).strip("\n"), textwrap.dedent(new).strip("\n")
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {filename}"
        write_source(path, text.replace(old, new))

    def write_json(self, filename: str, value: Any) -> None:
        (self.root / filename).write_text(json.dumps(value))

    # --- API ---------------------------------------------------------------------------------------

    def defs(self) -> af.Definitions:
        return self._loader.defs(self.root)

    def module(self) -> Any:
        return self._loader.module(self.root)

    # --- CLI ---------------------------------------------------------------------------------------

    def cli(self, *args: str, now: str = NOW, target: tuple[str, ...] = ("-f", "pipeline.py")) -> CliResult:
        return run_cli(self.root, *args, now=now, target=target)

    def cli_json(self, *args: str, returncode: int = 0, now: str = NOW) -> Any:
        result = self.cli(*args, "--json", now=now)
        assert result.returncode == returncode, result.describe()
        return result.json()

    # --- store -------------------------------------------------------------------------------------

    @property
    def store_dir(self) -> Path:
        return self.root / ".assetflow"

    @property
    def data_dir(self) -> Path:
        return self.store_dir / "data"

    def store_files(self) -> dict[str, bytes]:
        """Every file under ``.assetflow``, by relative path, with its bytes."""
        if not self.store_dir.exists():
            return {}
        return {str(p.relative_to(self.store_dir)): p.read_bytes()
                for p in sorted(self.store_dir.rglob("*")) if p.is_file()}


@pytest.fixture
def project(tmp_path: Path, loader: Loader) -> Project:
    return Project(tmp_path / "project", loader)


# --- the standard pipeline -------------------------------------------------------------------------

PIPELINE = '''
    import json
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.compute as pc

    import assetflow as af

    HERE = Path(__file__).parent
    daily = af.DailyPartitions(start="2024-01-01")


    def settings() -> dict:
        path = HERE / "settings.json"
        return json.loads(path.read_text()) if path.exists() else {}


    def scale(x):
        return x * 10


    @af.asset(partitions=daily, group="ingest", tags={"team": "ml"})
    def up(ctx: af.Context) -> pa.Table:
        ctx.log.info("loading %s", ctx.partition_key)
        conf = settings()
        if ctx.partition_key in conf.get("fail", []):
            raise RuntimeError(f"cannot load {ctx.partition_key}")
        day = int(ctx.partition_key[-2:])
        value = scale(day) + conf.get("bump", {}).get(ctx.partition_key, 0)
        return pa.table({"day": [day], "value": [value]})


    @af.asset(partitions=daily, group="model")
    def features(up: pa.Table) -> pa.Table:
        return up.append_column("double", pc.multiply(up["value"], 2))


    @af.asset(group="model", tags={"team": "ml"})
    def total(features: dict[str, pa.Table]) -> int:
        return sum(t["double"][0].as_py() for t in features.values())


    defs = af.Definitions(assets=[up, features, total])
'''
"""up (daily) -> features (daily, identity) -> total (unpartitioned, all partitions).

``up`` reads ``settings.json``, so a test can change one partition's output (``{"bump": {key: n}}``)
or make partitions fail (``{"fail": [key]}``) without touching any code."""

ALL_STEPS = {("up", d) for d in DAYS} | {("features", d) for d in DAYS} | {("total", None)}
"""Every (asset, partition) of :data:`PIPELINE` at :data:`NOW`."""


@pytest.fixture(scope="session")
def built_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:data:`PIPELINE` materialized once (through the API) for the whole session; tests get copies."""
    root = tmp_path_factory.mktemp("built") / "project"
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("ASSETFLOW_"):
                patch.delenv(name)
        patch.setenv("ASSETFLOW_NOW", NOW)
        patch.setattr(sys, "dont_write_bytecode", True)
        template_loader = Loader(patch)
        try:
            Project(root, template_loader).write(PIPELINE)
            result = af.materialize(template_loader.defs(root), stale=True)
        finally:
            template_loader.close()
    assert result.status == "success" and result.counts["materialized"] == len(ALL_STEPS), result
    return root


@pytest.fixture
def built(built_template: Path, tmp_path: Path, loader: Loader) -> Project:
    """A private copy of :data:`PIPELINE`, fully materialized (store and values included)."""
    root = tmp_path / "project"
    shutil.copytree(built_template, root)
    return Project(root, loader)


# --- plan helpers shared by the API and CLI tests --------------------------------------------------


def step_keys(steps: Any) -> set[tuple[str, str | None]]:
    """{(asset, partition)} of plan or run steps, given as objects or as JSON dicts."""
    return {(s["asset"], s["partition"]) if isinstance(s, dict) else (s.asset, s.partition) for s in steps}


def reasons_of(steps: Any) -> dict[tuple[str, str | None], tuple[str, ...]]:
    """{(asset, partition): sorted reasons} of plan steps (objects or JSON dicts)."""
    out = {}
    for s in steps:
        if isinstance(s, dict):
            out[(s["asset"], s["partition"])] = tuple(sorted(s["reasons"]))
        else:
            out[(s.asset, s.partition)] = tuple(sorted(s.reasons))
    return out


def causes_of(step: Any) -> set[tuple[str, str | None, str]]:
    """{(asset, partition, reason)} of one plan step's causes (object or JSON dict)."""
    if isinstance(step, dict):
        return {(c["asset"], c["partition"], c["reason"]) for c in step["causes"]}
    return {(c.asset, c.partition, c.reason) for c in step.causes}


def outcomes_of(steps: Any) -> dict[tuple[str, str | None], str]:
    """{(asset, partition): outcome} of materialize steps (objects or JSON dicts)."""
    return {((s["asset"], s["partition"]) if isinstance(s, dict) else (s.asset, s.partition)):
            (s["outcome"] if isinstance(s, dict) else s.outcome) for s in steps}
