"""Small helpers the feature suites share: write a real project into a folder, import its definitions
afresh, and drive the real CLI in subprocesses."""

from __future__ import annotations

import importlib.util
import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import assetflow as af

_modules = itertools.count()
_RUN_ENV_VARS = ("ASSETFLOW_STORE", "ASSETFLOW_DATA")


def write_project(root: Path, pipeline: str) -> None:
    """A project: ``pyproject.toml`` (pointing the CLI at ``pipeline``) and ``pipeline.py``."""
    (root / "pyproject.toml").write_text('[project]\nname = "demo"\n\n[tool.assetflow]\nmodule = "pipeline"\n')
    (root / "pipeline.py").write_text(textwrap.dedent(pipeline))


def load_defs(root: Path) -> af.Definitions:
    """Import ``root/pipeline.py`` afresh (a unique module name per call) and return its ``defs``."""
    name = f"_kit_pipeline_{next(_modules)}"
    spec = importlib.util.spec_from_file_location(name, root / "pipeline.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module.defs


def _env(now: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (*_RUN_ENV_VARS, "ASSETFLOW_NOW")}
    if now is not None:
        env["ASSETFLOW_NOW"] = now
    return env


def cli(root: Path, *args: str, now: str) -> subprocess.CompletedProcess[str]:
    """Run ``assetflow -f pipeline.py ARGS`` in ``root`` with the clock at ``now``."""
    return subprocess.run([sys.executable, "-m", "assetflow.cli", "-f", "pipeline.py", *args],
                          cwd=root, env=_env(now), capture_output=True, text=True, timeout=180)


def cli_many(root: Path, *calls: tuple[str, list[str]]) -> list[subprocess.CompletedProcess[str]]:
    """Run read-only CLI commands ``(ASSETFLOW_NOW, args)`` side by side; results in order."""
    procs = [subprocess.Popen([sys.executable, "-m", "assetflow.cli", "-f", "pipeline.py", *args], cwd=root,
                              env=_env(now), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for now, args in calls]
    results = []
    for proc, (_, args) in zip(procs, calls):
        out, err = proc.communicate(timeout=180)
        results.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
    return results


def steps(plan) -> list[tuple[str, str | None, tuple[str, ...]]]:
    """A plan's steps as (asset, partition, reasons)."""
    return [(s.asset, s.partition, tuple(s.reasons)) for s in plan.steps]
