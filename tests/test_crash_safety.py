"""Crash safety: SIGKILL a real ``assetflow materialize --stale`` again and again, at random moments of a
multi-asset partitioned run, and check after every kill that the store still opens, that every lineage
head points at a complete value whose bytes hash back to its content-addressed name, and that no
partial file sits at a final path. Finally ``materialize --stale`` finishes exactly the unfinished
work, the plan is empty and every killed run reads ``crashed``.

Kill moments are seeded and anchored to events of the run being killed (the run lock being taken, or
the k-th step of that run starting), then delayed by a random 0.05–0.6 s: anchored so that the kills
land inside the run — in planning, ``begin_run``, steps, value writes and batched lineage flushes —
rather than all in interpreter start-up.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from assetflow import cli
from assetflow.hashing import data_version
from assetflow.lineage_store import LineageStore
from assetflow.runlock import lock_path
from assetflow.values import TEMP_PREFIX, ValueStore

NOW = "2024-01-31T00:00:00Z"  # daily partitions 2024-01-01 .. 2024-01-30: 30 of them
KILLS = 20
SEED = 20240131
VALUE_NAME = re.compile(r"[0-9a-f]{32}\.(?:parquet|bin|pkl)")
FORMAT_OF_EXTENSION = {"parquet": "parquet", "bin": "bytes", "pkl": "pickle"}

PIPELINE = '''
import os
import pathlib
import time
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

import assetflow as af

EVENTS = pathlib.Path(__file__).resolve().parent / "events"
EVENTS.mkdir(exist_ok=True)
daily = af.DailyPartitions(start="2024-01-01")


class Salt(BaseModel):
    salt: int = 0


def progress(ctx):
    """Tell the test which run (and process) is at which step: one appended line per step start."""
    fd = os.open(EVENTS / "progress.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{os.getpid()} {ctx.run_id} {ctx.asset} {ctx.partition_key}\\n".encode())
    finally:
        os.close(fd)


def work(seed, n=4000):
    rng = np.random.default_rng(seed)
    values = np.sort(rng.random(n))
    time.sleep(0.03)  # the rest of the step's work
    return values


@af.asset(partitions=daily)
def raw(ctx: af.Context, cfg: Salt) -> pa.Table:
    progress(ctx)
    seed = zlib.crc32(ctx.partition_key.encode()) + cfg.salt
    return pa.table({"partition": [ctx.partition_key] * 4000, "value": work(seed)})


@af.asset(partitions=daily)
def clean(ctx: af.Context, raw: pa.Table) -> pa.Table:
    progress(ctx)
    work(1)
    return raw.filter(pc.greater(raw["value"], 0.25))


@af.asset(partitions=daily, deps={"raw": af.Window(start=-2, end=0)})
def rolling(ctx: af.Context, raw: dict) -> pa.Table:
    progress(ctx)
    work(2)
    table = pa.concat_tables(list(raw.values()))
    return pa.table({"partition": [ctx.partition_key], "days": [len(raw)], "mean": [pc.mean(table["value"]).as_py()]})


defs = af.Definitions(assets=[raw, clean, rolling])
'''


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSETFLOW_")}
    env["ASSETFLOW_NOW"] = NOW
    return env


class Project:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.events = root / "events"
        self.store = root / ".assetflow" / "lineage.duckdb"
        self.data = root / ".assetflow" / "data"
        self.progress = self.events / "progress.log"

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "assetflow.cli", "-f", "pipeline.py", *args]

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(*args), cwd=self.root, env=_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), cwd=self.root, env=_env(), capture_output=True, text=True, timeout=300)

    def set_salt(self, salt: int) -> None:
        (self.root / "config.toml").write_text(f"[raw]\nsalt = {salt}\n")

    def progress_lines(self) -> list[list[str]]:
        if not self.progress.exists():
            return []
        return [line.split() for line in self.progress.read_text().splitlines() if line.strip()]


def _project(tmp_path: Path, source: str) -> Project:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "crash-test"\nversion = "0"\n')
    (tmp_path / "pipeline.py").write_text(textwrap.dedent(source))
    (tmp_path / "events").mkdir()
    return Project(tmp_path)


def _json(proc: subprocess.CompletedProcess[str], code: int = 0) -> Any:
    assert proc.returncode == code, f"exit {proc.returncode} (wanted {code})\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    return json.loads(proc.stdout)


def _finish(proc: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _status_in_process(project: Project) -> dict[str, Any]:
    """``assetflow status --json`` through the CLI's entry point, in this process (no interpreter start-up)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["-f", str(project.root / "pipeline.py"), "status", "--config",
                         str(project.root / "config.toml"), "--json"])
    assert code == 0, out.getvalue()
    return json.loads(out.getvalue())


def _lock_holder_pid(project: Project) -> int | None:
    try:
        return json.loads(lock_path(project.store).read_text() or "{}").get("pid")
    except (OSError, ValueError):
        return None


def _steps_started_by(project: Project, pid: int) -> list[list[str]]:
    return [line for line in project.progress_lines() if line[0] == str(pid)]


def _wait_for_moment(project: Project, proc: subprocess.Popen[str], mode: str, k: int) -> bool:
    """Wait (bounded) for the anchor event of this kill; False if the run ended first."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if mode == "lock" and _lock_holder_pid(project) == proc.pid:
            return True
        if mode == "step" and len(_steps_started_by(project, proc.pid)) >= k:
            return True
        time.sleep(0.002)
    raise AssertionError(f"materialize (pid {proc.pid}) never reached its '{mode}' moment")


def verify_store(project: Project) -> dict[tuple[str, str], str]:
    """The invariants that must hold whenever no materialize is running. Returns the heads' versions."""
    values = ValueStore(str(project.data))
    # 1. No partial value is visible: every file with a final (content-addressed) name is complete —
    #    its bytes hash back to its name. Temp files may be left over by a kill; they are never final.
    if project.data.exists():
        for file in project.data.rglob("*"):
            if file.is_dir() or file.name.startswith(TEMP_PREFIX):
                continue
            assert VALUE_NAME.fullmatch(file.name), f"unexpected file at a final path: {file}"
            relative = file.relative_to(project.data).as_posix()
            stem, extension = file.name.split(".")
            assert data_version(values.get(relative, FORMAT_OF_EXTENSION[extension])) == stem, f"partial value {file}"
    if not project.store.exists():
        return {}
    store = LineageStore(project.store, lock_wait_s=5)
    # 2. Every head points at a present, complete value whose content hash is its name and its version.
    heads: dict[tuple[str, str], str] = {}
    for head in store.heads():
        if head["mat_id"] is None:
            continue  # a partition that only ever failed
        path = head["path"]
        assert path is not None, head
        name = path.rsplit("/", 1)[-1]
        assert not name.startswith(TEMP_PREFIX) and VALUE_NAME.fullmatch(name), f"head at a non-final path: {head}"
        assert (project.data / path).is_file(), f"head points at a missing value: {head}"
        assert head["data_version"] == name.split(".")[0], head
        assert data_version(values.get(path, head["format"])) == head["data_version"], f"head value does not match: {head}"
        heads[(head["asset"], head["partition"])] = head["data_version"]
    # 3. No lineage row at all points at a missing value.
    for row in store.value_paths():
        assert (project.data / row["path"]).is_file(), f"lineage row points at a missing value: {row}"
    return heads


@pytest.mark.slow
def test_sigkill_loop_never_corrupts_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("ASSETFLOW_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("ASSETFLOW_NOW", NOW)
    project = _project(tmp_path, PIPELINE)
    rng = random.Random(SEED)
    salt = 0
    project.set_salt(salt)
    materialize = ("materialize", "--stale", "--config", "config.toml", "--max-concurrency", "2", "--json")

    kills = 0
    killed_runs: set[str] = set()
    completed = 0
    status_check: subprocess.Popen[str] | None = None
    moments: list[tuple[str, int, float]] = []
    heads_seen: list[int] = []
    for _ in range(KILLS * 3):
        if kills >= KILLS:
            break
        mode = "lock" if rng.random() < 0.2 else "step"
        k = rng.randint(1, 20)
        delay = rng.uniform(0.05, 0.6)
        proc = project.popen(*materialize)
        reached = _wait_for_moment(project, proc, mode, k)
        if reached:
            time.sleep(delay)  # the random moment itself, not a synchronisation
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
        killed = proc.returncode == -signal.SIGKILL
        if killed:
            kills += 1
            moments.append((mode, k, round(delay, 3)))
            killed_runs.update(line[1] for line in _steps_started_by(project, proc.pid))
        else:
            # the run finished before its moment came: fine, but it is not a kill; give it new work
            assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
            completed += 1
            salt += 1
            project.set_salt(salt)
        # The store opens after the kill: `status --json` through the CLI entry point every time, and as a
        # separate process every fourth kill (alongside the next run, so also against a live writer).
        if status_check is not None:
            status = _finish(status_check)
            assert status.returncode == 0, f"status after a kill failed:\n{status.stderr}"
            assert json.loads(status.stdout)["assets"]
            status_check = None
        heads_seen.append(len(verify_store(project)))
        assert len(_status_in_process(project)["assets"]) == 3
        if killed and kills % 4 == 1:
            status_check = project.popen("status", "--config", "config.toml", "--json")
    assert kills >= KILLS, f"only {kills} kills landed ({completed} runs finished first): {moments}"
    assert max(heads_seen) <= 90

    plan_before = project.popen("plan", "--stale", "--config", "config.toml", "--json")
    if status_check is not None:
        status = _finish(status_check)
        assert status.returncode == 0, status.stderr
    todo = {(s["asset"], s["partition"]) for s in _json(_finish(plan_before))["steps"]}

    final = _json(project.cli(*materialize))
    assert final["status"] == "success"
    done = {(s["asset"], s["partition"]) for s in final["steps"]}
    assert done == todo, "materialize --stale must do exactly the unfinished work"
    assert {s["outcome"] for s in final["steps"]} <= {"materialized", "skipped"}

    heads = verify_store(project)
    assert len(heads) == 90  # 3 assets x 30 partitions, every one current and matching its bytes

    plan_after = project.popen("plan", "--stale", "--config", "config.toml", "--json")
    runs_after = project.popen("runs", "--limit", "1000", "--json")
    assert _json(_finish(plan_after))["steps"] == []
    runs = _json(_finish(runs_after))["runs"]
    by_id = {r["run_id"]: r for r in runs}
    assert by_id[final["run_id"]]["status"] == "success"
    assert killed_runs, f"no kill landed after a run had started its steps: {moments}"
    # A kill can land after a run committed its end but before its process exited: such a run is a
    # success. Every other killed run is crashed, and at least one kill must have caught a run mid-way.
    killed_statuses = [by_id[run_id]["status"] for run_id in killed_runs]
    assert set(killed_statuses) <= {"crashed", "success"}, killed_statuses
    assert "crashed" in killed_statuses, killed_statuses
    # every run either finished on its own or was killed; none is left "running"
    assert {r["status"] for r in runs} <= {"crashed", "success"}, runs
