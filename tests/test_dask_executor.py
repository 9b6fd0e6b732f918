"""The Dask executor (issue 6, part 2) on a real ``distributed.LocalCluster`` of worker processes.

One cluster (2 worker processes, 1 thread each) is shared by the module and handed to real
``python -m assetflow.cli ... materialize --executor dask --dask-address tcp://...`` subprocesses;
one test also lets assetflow start its own LocalCluster (no address). Asset code reports where and
when it ran through files in its project folder; the test waits on those files, never on sleeps.

Each test's definitions file has its own module name (``pipeline_cmp.py``, ``pipeline_pool.py``,
...) so the tests stay independent of each other; that workers keep two projects with the *same*
module name apart is tested on its own
(``test_two_projects_with_the_same_module_name_each_run_their_own_code``).
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import assetflow as af

distributed = pytest.importorskip("distributed")

NOW = "2024-01-06T00:00:00Z"  # daily partitions 2024-01-01 .. 2024-01-05
DAYS = [f"2024-01-0{d}" for d in range(1, 6)]
TIMEOUT = 180  # a hang guard for one runner, not a check


@dataclass(frozen=True)
class Cluster:
    address: str
    client: Any

    def worker_pids(self) -> set[int]:
        return set(self.client.run(os.getpid).values())


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A LocalCluster with 2 worker processes and the scheduler's default configuration (as a user's
    `dask scheduler` would have)."""
    local = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0")
    client = distributed.Client(local)
    try:
        client.wait_for_workers(2)
        yield Cluster(local.scheduler_address, client)
    finally:
        client.close()
        local.close()


# ---- projects and runners ------------------------------------------------------------------------

_names = itertools.count()


@dataclass
class Done:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"stdout is not one JSON document ({exc}): {self.describe()}") from None

    def describe(self) -> str:
        return f"assetflow {' '.join(self.argv)} -> {self.returncode}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


class Project:
    def __init__(self, root: Path, filename: str, source: str) -> None:
        self.root, self.filename = root, filename
        root.mkdir(parents=True, exist_ok=True)
        (root / "pyproject.toml").write_text('[project]\nname = "demo"\nversion = "0.0.0"\n')
        self.write(source)
        self.processes: list[subprocess.Popen[str]] = []

    def write(self, source: str) -> None:
        """(Re)write the definitions file so that every reader sees the new text."""
        path = self.root / self.filename
        path.write_text(textwrap.dedent(source).lstrip())
        stamp = path.stat().st_mtime + 10
        os.utime(path, (stamp, stamp))
        shutil.rmtree(self.root / "__pycache__", ignore_errors=True)

    def start(self, *args: str) -> tuple[tuple[str, ...], subprocess.Popen[str]]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASSETFLOW_")}
        env.update(ASSETFLOW_NOW=NOW, PYTHONDONTWRITEBYTECODE="1")
        argv = ("-f", self.filename, *args)
        process = subprocess.Popen([sys.executable, "-m", "assetflow.cli", *argv], cwd=self.root, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.processes.append(process)
        return argv, process

    @staticmethod
    def finish(started: tuple[tuple[str, ...], subprocess.Popen[str]]) -> Done:
        argv, process = started
        try:
            stdout, stderr = process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
            raise AssertionError(f"runner hung: {argv}\nstdout:\n{stdout}\nstderr:\n{stderr}") from None
        return Done(argv, process.returncode, stdout, stderr)

    def run(self, *args: str) -> Done:
        return self.finish(self.start(*args))

    def load_defs(self) -> af.Definitions:
        name = f"af_dask_test_project_{next(_names)}"
        spec = importlib.util.spec_from_file_location(name, self.root / self.filename)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[name] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        return module.defs

    def close(self) -> None:
        (self.root / "release").write_text("go")
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.communicate()


@pytest.fixture
def projects(tmp_path: Path) -> Iterator[Any]:
    made: list[Project] = []

    def make(name: str, filename: str, source: str) -> Project:
        project = Project(tmp_path / name, filename, source)
        made.append(project)
        return project

    try:
        yield make
    finally:
        for project in made:
            project.close()


def by_step(result: dict[str, Any]) -> dict[tuple[str, str | None], dict[str, Any]]:
    return {(s["asset"], s["partition"]): s for s in result["steps"]}


# ---- same results as the thread executor ---------------------------------------------------------

GRAPH = '''
import os
from pathlib import Path

import pyarrow as pa

import assetflow as af

daily = af.DailyPartitions(start="2024-01-01")
HERE = Path(__file__).parent  # (a Path, not the `__file__` string: the code version must not depend on where the project is)


def trace(ctx: af.Context) -> None:
    """Leave a file naming the process that ran this step."""
    folder = HERE / "ran"
    folder.mkdir(exist_ok=True)
    (folder / f"{ctx.asset}-{ctx.partition_key}-{os.getpid()}").touch()


@af.asset(partitions=daily)
def raw(ctx: af.Context) -> pa.Table:
    trace(ctx)
    return pa.table({"day": [ctx.partition_key], "v": [int(ctx.partition_key[-2:])]})


@af.asset(partitions=daily)
def feat(ctx: af.Context, raw: pa.Table) -> pa.Table:
    trace(ctx)
    return pa.table({"day": raw["day"], "v": pa.array([raw["v"][0].as_py() * 10])})


@af.asset(partitions=daily, deps={"feat": af.Window(start=-2, end=0)})
def rolling(ctx: af.Context, feat: dict[str, pa.Table]) -> pa.Table:
    trace(ctx)
    return pa.table({"day": [ctx.partition_key], "sum": [sum(t["v"][0].as_py() for t in feat.values())],
                     "days": [len(feat)]})


defs = af.Definitions(assets=[raw, feat, rolling])
'''


def test_dask_cluster_gives_the_same_results_and_lineage_as_threads(cluster: Cluster, projects: Any,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    threads = projects("threads", "pipeline_cmp.py", GRAPH)
    dask = projects("dask", "pipeline_cmp.py", GRAPH)
    started_threads = threads.start("materialize", "--json")
    started_dask = dask.start("materialize", "--executor", "dask", "--dask-address", cluster.address, "--json")
    cli_pid = started_dask[1].pid
    done_threads, done_dask = Project.finish(started_threads), Project.finish(started_dask)
    assert done_threads.returncode == 0, done_threads.describe()
    assert done_dask.returncode == 0, done_dask.describe()

    expected = {(a, d) for a in ("raw", "feat", "rolling") for d in DAYS}
    t_steps, d_steps = by_step(done_threads.json()), by_step(done_dask.json())
    assert set(t_steps) == set(d_steps) == expected
    for key in expected:
        t, d = t_steps[key], d_steps[key]
        assert (d["outcome"], d["attempts"], d["data_version"]) == (t["outcome"], t["attempts"], t["data_version"]), key
        assert d["outcome"] == "materialized" and d["data_version"], key

    # The dask steps really ran on the cluster's worker processes, not in the runner.
    ran = {int(p.name.rsplit("-", 1)[1]) for p in (dask.root / "ran").iterdir()}
    assert len(list((dask.root / "ran").iterdir())) == len(expected)
    assert cli_pid not in ran and ran <= cluster.worker_pids(), (ran, cluster.worker_pids())
    assert {int(p.name.rsplit("-", 1)[1]) for p in (threads.root / "ran").iterdir()} == {started_threads[1].pid}

    # Lineage: one sample through the CLI's JSON, every (asset, partition) through the API.
    cli_lineage = [Project.finish(p.start("lineage", "rolling", "--partition", "2024-01-04", "--json"))
                   for p in (threads, dask)]
    for done in cli_lineage:
        assert done.returncode == 0, done.describe()
    t_json, d_json = (done.json() for done in cli_lineage)
    assert d_json["inputs"] == t_json["inputs"]
    assert [i["partition"] for i in d_json["inputs"]] == ["2024-01-02", "2024-01-03", "2024-01-04"]
    assert d_json["data_version"] == t_json["data_version"] == t_steps[("rolling", "2024-01-04")]["data_version"]

    monkeypatch.setenv("ASSETFLOW_NOW", NOW)
    t_defs, d_defs = threads.load_defs(), dask.load_defs()
    for asset, day in sorted(expected):
        t, d = af.lineage(t_defs, asset, day), af.lineage(d_defs, asset, day)
        assert d.data_version == t.data_version == t_steps[(asset, day)]["data_version"]
        assert d.code_version == t.code_version
        assert [i.model_dump() for i in d.inputs] == [i.model_dump() for i in t.inputs], (asset, day)
        assert [i.data_version for i in d.inputs] == [d_steps[(i.asset, i.partition)]["data_version"] for i in d.inputs]


# ---- pools across workers ------------------------------------------------------------------------

POOLED = '''
import json
import os
import time
from pathlib import Path

import assetflow as af

daily = af.DailyPartitions(start="2024-01-01")
HERE = Path(__file__).parent


def in_pool(ctx: af.Context) -> bytes:
    """Hold the pool's single slot: an O_EXCL slot file that a second concurrent holder cannot create."""
    folder = HERE / "pool"
    folder.mkdir(exist_ok=True)
    start = time.time()
    try:
        fd = os.open(folder / "slot", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        fd = None
        (folder / f"overlap-{ctx.asset}-{ctx.partition_key}").touch()
    time.sleep(0.2)  # stay in the slot long enough for a second holder to be caught (work, not synchronisation)
    end = time.time()
    if fd is not None:
        os.close(fd)
        os.unlink(folder / "slot")
    (folder / f"step-{ctx.asset}-{ctx.partition_key}.json").write_text(
        json.dumps({"pid": os.getpid(), "start": start, "end": end}))
    return f"{ctx.asset} {ctx.partition_key}".encode()


@af.asset(partitions=daily, pool="db")
def load_orders(ctx: af.Context) -> bytes:
    return in_pool(ctx)


@af.asset(partitions=daily, pool="db")
def load_users(ctx: af.Context) -> bytes:
    return in_pool(ctx)


@af.asset(partitions=af.StaticPartitions(["x", "y"]))
def free(ctx: af.Context) -> bytes:
    """Outside the pool: both partitions must be running at once (on two workers) to finish."""
    folder = HERE / "free"
    folder.mkdir(exist_ok=True)
    (folder / ctx.partition_key).write_text(str(os.getpid()))
    other = folder / ("y" if ctx.partition_key == "x" else "x")
    deadline = time.monotonic() + 90  # a hang guard only
    while not other.exists():
        if time.monotonic() > deadline:
            raise af.Failure("the other partition never ran alongside this one", retry=False)
        time.sleep(0.02)
    return b"ok"


defs = af.Definitions(assets=[free, load_orders, load_users], pools={"db": 1})
'''


def test_a_pool_limit_of_one_holds_across_workers(cluster: Cluster, projects: Any) -> None:
    project = projects("pool", "pipeline_pool.py", POOLED)
    done = project.run("materialize", "--executor", "dask", "--dask-address", cluster.address,
                       "--max-concurrency", "4", "--json")
    assert done.returncode == 0, done.describe()
    result = done.json()
    assert result["counts"]["materialized"] == 12, done.describe()

    # The run had parallelism to spare: the two `free` partitions ran at once, on two worker processes.
    free_pids = {int((project.root / "free" / key).read_text()) for key in ("x", "y")}
    assert len(free_pids) == 2 and free_pids <= cluster.worker_pids()

    # ...yet never two steps of pool "db" at once.
    folder = project.root / "pool"
    assert sorted(p.name for p in folder.glob("overlap-*")) == []
    records = [json.loads(p.read_text()) for p in folder.glob("step-*.json")]
    assert len(records) == 10
    assert {r["pid"] for r in records} <= cluster.worker_pids()
    records.sort(key=lambda r: r["start"])
    for before, after in zip(records, records[1:]):
        assert after["start"] >= before["end"], (before, after)


# ---- a long-lived cluster and edited code --------------------------------------------------------

EDITABLE = '''
import os
import time
from pathlib import Path

import assetflow as af


def both_workers(ctx: af.Context) -> None:
    """x and y wait for each other, so each of the two workers runs one of them (and imports this file)."""
    folder = Path(__file__).parent / "ran" / ctx.run_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ctx.partition_key).write_text(str(os.getpid()))
    other = folder / ("y" if ctx.partition_key == "x" else "x")
    deadline = time.monotonic() + 90  # a hang guard only
    while not other.exists():
        if time.monotonic() > deadline:
            raise af.Failure("the other partition never ran alongside this one", retry=False)
        time.sleep(0.02)


@af.asset(partitions=af.StaticPartitions(["x", "y"]))
def greeting(ctx: af.Context) -> bytes:
    both_workers(ctx)
    return b"hello v1"


defs = af.Definitions(assets=[greeting])
'''


def test_a_long_lived_cluster_runs_the_edited_code(cluster: Cluster, projects: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: workers cached the definitions per (module, file, sys.path) and kept running the OLD
    code after pipeline.py was edited, while lineage recorded the NEW code version."""
    project = projects("editable", "pipeline.py", EDITABLE)
    flags = ("--executor", "dask", "--dask-address", cluster.address, "--json")
    first = project.run("materialize", "--stale", *flags)
    assert first.returncode == 0, first.describe()
    project.write(EDITABLE.replace('b"hello v1"', 'b"hello v2"'))
    second = project.run("materialize", "--stale", *flags)
    assert second.returncode == 0, second.describe()
    assert {s["outcome"] for s in second.json()["steps"]} == {"materialized"}  # code_changed: both rebuilt

    monkeypatch.setenv("ASSETFLOW_NOW", NOW)
    defs = project.load_defs()
    assert [af.load(defs, "greeting", key) for key in ("x", "y")] == [b"hello v2", b"hello v2"]


SAME_NAME = EDITABLE.replace('b"hello v1"', "GREETING").replace(
    "defs = af.Definitions", 'GREETING = b"from PROJECT"\n\n\ndefs = af.Definitions')


def test_two_projects_with_the_same_module_name_each_run_their_own_code(cluster: Cluster, projects: Any,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # Two repositories, each with its own pipeline_same.py (think: two teams' `pipeline.py`).
    one = projects("one", "pipeline_same.py", SAME_NAME.replace("PROJECT", "project one"))
    two = projects("two", "pipeline_same.py", SAME_NAME.replace("PROJECT", "project two"))
    flags = ("--executor", "dask", "--dask-address", cluster.address, "--json")
    first = one.run("materialize", *flags)  # x and y meet: both workers have imported project one
    assert first.returncode == 0, first.describe()
    second = two.run("materialize", *flags)
    assert second.returncode == 0, second.describe()
    monkeypatch.setenv("ASSETFLOW_NOW", NOW)
    values = [af.load(p.load_defs(), "greeting", key) for p in (one, two) for key in ("x", "y")]
    assert values == [b"from project one"] * 2 + [b"from project two"] * 2


# ---- a worker killed mid-step --------------------------------------------------------------------

KILLABLE = '''
import os
import time
from pathlib import Path

import assetflow as af

GATE = Path(__file__).parent / "gate"


def first_attempt_blocks(ctx: af.Context) -> bytes:
    """Announce (asset, attempt, pid); the first attempt then blocks until killed (or released)."""
    GATE.mkdir(exist_ok=True)
    (GATE / f"{ctx.asset}-attempt{ctx.attempt}-{os.getpid()}").touch()
    if ctx.attempt == 1:
        while not (Path(__file__).parent / "release").exists():
            time.sleep(0.02)
    return ctx.asset.encode()


@af.asset(retries=af.Retry(max_attempts=2, delay=0.1))
def with_retry(ctx: af.Context) -> bytes:
    return first_attempt_blocks(ctx)


@af.asset
def no_retry(ctx: af.Context) -> bytes:
    return first_attempt_blocks(ctx)


defs = af.Definitions(assets=[with_retry, no_retry])
'''


def markers(project: Project, attempt: int) -> dict[str, set[int]]:
    found: dict[str, set[int]] = {}
    for path in (project.root / "gate").glob(f"*-attempt{attempt}-*"):
        asset, _, pid = path.name.rsplit("-", 2)
        found.setdefault(asset, set()).add(int(pid))
    return found


@pytest.mark.parametrize("where", [
    "own-local-cluster",
    # Regression for the shared cluster (a scheduler assetflow did not start, default allowed-failures=3):
    # it used to re-run a killed worker's task as the SAME attempt behind the coordinator's back, so
    # no_retry ended materialized and with_retry with attempts 1.
    "shared-cluster",
])
def test_a_worker_killed_mid_step_is_retried_per_the_assets_policy(where: str, cluster: Cluster, projects: Any) -> None:
    project = projects(where, "pipeline_kill.py", KILLABLE)
    address = ("--dask-address", cluster.address) if where == "shared-cluster" else ()
    started = project.start("materialize", "--executor", "dask", *address, "--json")
    process = started[1]

    deadline = time.monotonic() + TIMEOUT
    while set(markers(project, 1)) != {"with_retry", "no_retry"}:  # both first attempts are running
        assert process.poll() is None, Project.finish(started).describe()
        assert time.monotonic() < deadline, "the first attempts never started"
        time.sleep(0.02)
    killed = set().union(*markers(project, 1).values())
    for pid in killed:
        os.kill(pid, signal.SIGKILL)

    # Wait for the runner. Should the cluster re-run a killed first attempt by itself, release it
    # rather than hang (the assertions below then tell what happened).
    while process.poll() is None:
        assert time.monotonic() < deadline, "the run never ended"
        if set().union(*markers(project, 1).values()) - killed:
            (project.root / "release").write_text("go")
        time.sleep(0.05)
    done = Project.finish(started)

    assert done.returncode == 1, done.describe()  # no_retry failed, so the run failed
    steps = by_step(done.json())
    assert (steps[("with_retry", None)]["outcome"], steps[("with_retry", None)]["attempts"]) == ("materialized", 2), done.describe()
    assert (steps[("no_retry", None)]["outcome"], steps[("no_retry", None)]["attempts"]) == ("failed", 1), done.describe()
    assert markers(project, 2).keys() == {"with_retry"}
    assert not markers(project, 2)["with_retry"] & killed
