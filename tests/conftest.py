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


def run_cli(cwd: Path, *args: str, now: str = NOW, target: tuple[str, ...] = ("-f", "pipeline.py"),
            env: dict[str, str] | None = None) -> CliResult:
    """Run ``python -m assetflow.cli TARGET ARGS`` in ``cwd`` as a real subprocess."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ASSETFLOW_")}
    environment.update({"ASSETFLOW_NOW": now, "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "200"})
    environment.update(env or {})
    argv = (*target, *args)
    done = subprocess.run([sys.executable, "-m", "assetflow.cli", *argv], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=120)
    return CliResult(argv, done.returncode, done.stdout, done.stderr)


class Loader:
    """Imports project definitions afresh each time (see :func:`load_project`)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._monkeypatch = monkeypatch
        self._registered: list[str] = []
        self._roots: list[Path] = []

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
        spec.loader.exec_module(module)
        return module

    def defs(self, path: Path, filename: str = "pipeline.py") -> af.Definitions:
        return self.module(path, filename).defs

    def _forget_project_modules(self) -> None:
        """Drop modules imported from a project folder (``import helpers``) so edits are re-read."""
        for name, module in list(sys.modules.items()):
            file = getattr(module, "__file__", None)
            if file and any(Path(file).resolve().is_relative_to(root) for root in self._roots):
                if name not in self._registered:
                    del sys.modules[name]

    def close(self) -> None:
        self._forget_project_modules()
        for name in self._registered:
            sys.modules.pop(name, None)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No store/data/clock override leaks in from the outside; the clock is pinned to :data:`NOW`;
    no bytecode is written next to project files (edits must always be re-read from source)."""
    for name in list(os.environ):
        if name.startswith("ASSETFLOW_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ASSETFLOW_NOW", NOW)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)


@pytest.fixture
def loader(monkeypatch: pytest.MonkeyPatch) -> Iterator[Loader]:
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
    return Project(tmp_path, loader)


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
