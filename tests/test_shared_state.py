"""Shared lineage state on object storage (issue 6, part 1): ephemeral runners that share only a bucket.

Everything is real and on loopback: moto's S3 server on 127.0.0.1, used through s3fs by real
``python -m assetflow.cli`` subprocesses ("runners"), each with its OWN local cache folder
(``ASSETFLOW_CACHE``), so the only thing two runners share is the bucket. Nothing is mocked.

Synchronisation is by file events: an asset that should "hold the lock" writes ``started-<partition>``
(with its pid) into a gate folder and then waits for ``release`` to appear. A test waits for the
started file, does its checks while the runner is provably inside a step, and creates ``release``.

The one place where time itself is the subject (a lock's TTL) waits for the TTL to pass; no test
asserts on a duration.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import assetflow as af

s3fs = pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

NOW = "2024-01-06T00:00:00Z"  # daily partitions 2024-01-01 .. 2024-01-05
DAYS = [f"2024-01-0{d}" for d in range(1, 6)]
TIMEOUT = 120  # seconds any single runner may take before the test gives up on it (a hang, not a check)

PIPELINE = '''
import os
import time
from pathlib import Path

import pyarrow as pa

import assetflow as af

daily = af.DailyPartitions(start="2024-01-01")

# Test hook: with BLOCK_PARTITION set, `feat` of that partition announces itself in GATE_DIR
# (started-<partition>, holding the runner's pid) and waits for GATE_DIR/release.


@af.asset(partitions=daily)
def raw(ctx: af.Context) -> pa.Table:
    return pa.table({"day": [ctx.partition_key], "n": [int(ctx.partition_key[-2:])]})


def gate(partition: str) -> None:
    # Reads the environment when called (not at import): the code version of `feat` must not depend
    # on whether a runner was started with the hook armed.
    if os.environ.get("BLOCK_PARTITION") == partition:
        folder = Path(os.environ["GATE_DIR"])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"started-{partition}").write_text(str(os.getpid()))
        while not (folder / "release").exists():
            time.sleep(0.02)


@af.asset(partitions=daily)
def feat(ctx: af.Context, raw: pa.Table) -> pa.Table:
    gate(ctx.partition_key)
    return raw.append_column("double", pa.array([2 * raw["n"][0].as_py()]))


@af.asset
def summary(feat: dict[str, pa.Table]) -> pa.Table:
    return pa.concat_tables(list(feat.values()))


defs = af.Definitions(assets=[raw, feat, summary])
'''


def all_steps(days: list[str]) -> set[tuple[str, str | None]]:
    """Every (asset, partition) of PIPELINE when ``days`` are its partitions."""
    return {(a, d) for a in ("raw", "feat") for d in days} | {("summary", None)}


# ---- S3 on loopback ------------------------------------------------------------------------------


@dataclass(frozen=True)
class S3:
    endpoint: str

    def fs(self) -> Any:
        return s3fs.S3FileSystem(key="test", secret="test", client_kwargs={"endpoint_url": self.endpoint,
                                                                           "region_name": "us-east-1"},
                                 skip_instance_cache=True)

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="test",
                            aws_secret_access_key="test", region_name="us-east-1")


@pytest.fixture(scope="module")
def s3() -> Iterator[S3]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield S3(f"http://{host}:{port}")
    finally:
        server.stop()


@pytest.fixture
def bucket(s3: S3) -> str:
    name = f"af-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=name)
    return name


# ---- a project and its runners -------------------------------------------------------------------

_names = itertools.count()


@dataclass
class Done:
    """A finished runner command."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"stdout is not one JSON document ({exc}): {self.describe()}") from None

    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    def describe(self) -> str:
        return f"assetflow {' '.join(self.argv)} -> {self.returncode}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


class Running:
    """A runner started in the background."""

    def __init__(self, argv: tuple[str, ...], process: subprocess.Popen[str]) -> None:
        self.argv, self.process = argv, process

    def finish(self, timeout: float = TIMEOUT) -> Done:
        try:
            stdout, stderr = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            stdout, stderr = self.process.communicate()
            raise AssertionError(f"runner hung: assetflow {' '.join(self.argv)}\nstdout:\n{stdout}\nstderr:\n{stderr}") from None
        return Done(self.argv, self.process.returncode, stdout, stderr)

    def kill(self) -> None:
        """SIGKILL: no cleanup handler of the runner gets to run."""
        self.process.send_signal(signal.SIGKILL)
        self.process.communicate()


class SharedProject:
    """A tmp project whose runners share one bucket and nothing else."""

    def __init__(self, root: Path, s3: S3, bucket: str, source: str = PIPELINE) -> None:
        self.root, self.s3, self.bucket = root, s3, bucket
        root.mkdir(parents=True, exist_ok=True)
        (root / "pyproject.toml").write_text('[project]\nname = "demo"\nversion = "0.0.0"\n')
        (root / "pipeline.py").write_text(textwrap.dedent(source).lstrip())
        self.gate = root / "gate"
        self.store = f"s3://{bucket}/state/lineage.duckdb"
        self.data = f"s3://{bucket}/data"
        self._running: list[Running] = []

    def flags(self) -> tuple[str, ...]:
        return ("--store", self.store, "--data", self.data, "--storage-option", f"endpoint_url={self.s3.endpoint}")

    def env(self, runner: str, now: str, extra: dict[str, str] | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ASSETFLOW_", "AWS_"))}
        env.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1",
                   AWS_EC2_METADATA_DISABLED="true", ASSETFLOW_NOW=now, GATE_DIR=str(self.gate),
                   ASSETFLOW_CACHE=str(self.root / f"cache-{runner}"), PYTHONDONTWRITEBYTECODE="1")
        env.update(extra or {})
        return env

    def start(self, runner: str, *args: str, now: str = NOW, env: dict[str, str] | None = None) -> Running:
        argv = ("-f", "pipeline.py", *args, *self.flags())
        process = subprocess.Popen([sys.executable, "-m", "assetflow.cli", *argv], cwd=self.root,
                                   env=self.env(runner, now, env), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        running = Running(tuple(args), process)
        self._running.append(running)
        return running

    def run(self, runner: str, *args: str, now: str = NOW, env: dict[str, str] | None = None) -> Done:
        return self.start(runner, *args, now=now, env=env).finish()

    def run_many(self, *commands: tuple[str, tuple[str, ...]], now: str = NOW) -> list[Done]:
        """Independent commands side by side (start-up time is the main cost of a runner)."""
        started = [self.start(runner, *args, now=now) for runner, args in commands]
        return [s.finish() for s in started]

    def wait_started(self, partition: str, runner: Running) -> int:
        """Wait for the blocking step of ``partition`` to announce itself; return the pid it wrote."""
        marker = self.gate / f"started-{partition}"
        deadline = time.monotonic() + TIMEOUT
        while not marker.exists():
            if runner.process.poll() is not None:
                done = runner.finish()
                raise AssertionError(f"runner ended before its step started: {done.describe()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"step {partition} never started")
            time.sleep(0.02)
        while not marker.read_text():  # written right after creation
            time.sleep(0.01)
        return int(marker.read_text())

    def release(self) -> None:
        self.gate.mkdir(parents=True, exist_ok=True)
        (self.gate / "release").write_text("go")

    def close(self) -> None:
        self.release()
        for running in self._running:
            if running.process.poll() is None:
                running.process.kill()
                running.process.communicate()

    def load_defs(self) -> af.Definitions:
        name = f"af_shared_state_project_{next(_names)}"
        spec = importlib.util.spec_from_file_location(name, self.root / "pipeline.py")
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[name] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        return module.defs


@pytest.fixture
def project(tmp_path: Path, s3: S3, bucket: str) -> Iterator[SharedProject]:
    shared = SharedProject(tmp_path / "project", s3, bucket)
    try:
        yield shared
    finally:
        shared.close()


def steps_of(result: dict[str, Any], outcome: str = "materialized") -> set[tuple[str, str | None]]:
    return {(s["asset"], s["partition"]) for s in result["steps"] if s["outcome"] == outcome}


def plan_steps(plan: dict[str, Any]) -> set[tuple[str, str | None]]:
    return {(s["asset"], s["partition"]) for s in plan["steps"]}


def runs_by_id(runs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["run_id"]: r for r in runs["runs"]}


AGE = re.compile(r"\b\d+(\.\d+)?\s*(s|sec|secs|seconds|m|min|minutes|h)\b")


def assert_one_line_naming(done: Done, run_id: str) -> None:
    """Exit 3, nothing on stdout, exactly one stderr line naming the holder's run id and its age."""
    assert done.returncode == 3, done.describe()
    assert done.stdout.strip() == "", done.describe()
    lines = done.stderr_lines()
    assert len(lines) == 1, done.describe()
    assert run_id in lines[0], done.describe()
    assert AGE.search(lines[0]), f"no age in {lines[0]!r}"


# ---- tests ---------------------------------------------------------------------------------------


def test_second_runner_sees_the_first_runners_work_and_reads_without_the_lock(project: SharedProject, s3: S3,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # Runner A builds everything into the bucket.
    first = project.run("a", "materialize", "--stale", "--json")
    assert first.returncode == 0, first.describe()
    built = first.json()
    assert steps_of(built) == all_steps(DAYS)

    # Runner B: its own empty cache, the same bucket: nothing left to do.
    plan_b, mat_b = project.run_many(("b", ("plan", "--stale", "--json")), ("b2", ("materialize", "--stale", "--json")))
    assert plan_b.returncode == 0, plan_b.describe()
    assert plan_b.json()["steps"] == [], plan_b.describe()
    assert mat_b.returncode == 0, mat_b.describe()
    assert mat_b.json()["counts"]["materialized"] == 0, mat_b.describe()
    assert steps_of(mat_b.json()) == set()

    # A holds the lock (a rebuild of one partition, blocked inside its step) while B reads.
    holder = project.start("a", "materialize", "feat", "--partitions", "2024-01-05", "--json",
                           env={"BLOCK_PARTITION": "2024-01-05"})
    project.wait_started("2024-01-05", holder)
    status, lineage, runs, plan, busy = project.run_many(
        ("b", ("status", "--json")),
        ("b", ("lineage", "feat", "--partition", "2024-01-03", "--json")),
        ("b", ("runs", "--json")),
        ("b", ("plan", "--stale", "--json")),
        ("b", ("materialize", "--stale", "--json")),  # proves the lock really is held meanwhile
    )
    project.release()
    held = holder.finish()
    assert held.returncode == 0, held.describe()
    holder_id = held.json()["run_id"]

    for done in (status, lineage, runs, plan):
        assert done.returncode == 0, done.describe()
    assert_one_line_naming(busy, holder_id)
    assert {a["asset"]: a["up_to_date"] for a in status.json()["assets"]} == {"raw": 5, "feat": 5, "summary": 1}
    dv = {(s["asset"], s["partition"]): s["data_version"] for s in built["steps"]}
    seen = lineage.json()
    assert seen["data_version"] == dv[("feat", "2024-01-03")]
    assert seen["inputs"] == [{"asset": "raw", "partition": "2024-01-03", "data_version": dv[("raw", "2024-01-03")]}]
    listed = runs_by_id(runs.json())
    assert listed[built["run_id"]]["status"] == "success"
    assert listed[holder_id]["status"] == "running"  # the live holder's run, read from its first checkpoint
    assert plan.json()["steps"] == []

    # Values and state share the bucket; every head's value is in it, and loads.
    fs = s3.fs()
    top = {p.rsplit("/", 1)[-1] for p in fs.ls(project.bucket)}
    assert top == {"state", "data"}, top
    monkeypatch.setenv("ASSETFLOW_CACHE", str(project.root / "cache-test"))
    for key, value in project.env("test", NOW, None).items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    options = {"endpoint_url": s3.endpoint}
    defs = project.load_defs()
    for asset, partition in sorted(all_steps(DAYS), key=str):
        head = af.lineage(defs, asset, partition, store=project.store, data=project.data, storage_options=options)
        assert head.data_version == dv[(asset, partition)]
        assert head.path, (asset, partition)
        assert fs.exists(f"{project.bucket}/data/{head.path}"), head.path
    value = af.load(defs, "feat", "2024-01-02", store=project.store, data=project.data, storage_options=options)
    assert value.to_pylist() == [{"day": "2024-01-02", "n": 2, "double": 4}]


def test_while_one_runner_holds_the_store_another_fails_at_once_or_waits(project: SharedProject) -> None:
    a = project.start("a", "materialize", "--stale", "--json", env={"BLOCK_PARTITION": "2024-01-03"})
    project.wait_started("2024-01-03", a)
    b = project.start("b", "materialize", "--stale", "--json")                  # fails at once
    c = project.start("c", "materialize", "--stale", "--wait", "--json")        # waits for A
    failed = b.finish()
    assert c.process.poll() is None, "the --wait runner finished while A still held the store"
    project.release()
    done_a, done_c = a.finish(), c.finish()

    assert done_a.returncode == 0, done_a.describe()
    a_id = done_a.json()["run_id"]
    assert_one_line_naming(failed, a_id)
    assert done_c.returncode == 0, done_c.describe()
    # C planned under the lock, after A: it sees A's work and builds nothing again.
    assert steps_of(done_a.json()) == all_steps(DAYS)
    assert done_c.json()["counts"]["materialized"] == 0, done_c.describe()

    runs = project.run("b", "runs", "--json")
    assert runs.returncode == 0, runs.describe()
    listed = runs_by_id(runs.json())
    assert set(listed) == {a_id, done_c.json()["run_id"]}
    assert {r["status"] for r in listed.values()} == {"success"}
    assert listed[a_id]["counts"]["materialized"] == len(all_steps(DAYS))


def test_runners_started_together_never_lose_or_duplicate_work(project: SharedProject) -> None:
    a = project.start("a", "materialize", "--stale", "--wait", "--json")
    b = project.start("b", "materialize", "--stale", "--json")
    done_a, done_b = a.finish(), b.finish()
    assert done_a.returncode == 0, done_a.describe()
    a_id = done_a.json()["run_id"]
    if done_b.returncode == 3:  # B lost the race and said so, naming A
        assert_one_line_naming(done_b, a_id)
        finished = [done_a]
    else:  # B ran first or after A; either way both are complete runs
        assert done_b.returncode == 0, done_b.describe()
        finished = [done_a, done_b]
    # Every step was built exactly once across the runs.
    built = [step for done in finished for step in steps_of(done.json())]
    assert sorted(built, key=str) == sorted(all_steps(DAYS), key=str)

    runs, plan = project.run_many(("c", ("runs", "--json")), ("c", ("plan", "--stale", "--json")))
    listed = runs_by_id(runs.json())
    assert set(listed) == {d.json()["run_id"] for d in finished}
    assert all(r["status"] == "success" for r in listed.values()), listed
    assert plan.json()["steps"] == []


def test_a_killed_runner_leaves_readable_state_and_unlock_lets_the_next_one_finish_the_work(project: SharedProject) -> None:
    # Run 1 completes: its final checkpoint holds days 1-3.
    first_days = DAYS[:3]
    first = project.run("a", "materialize", "--stale", "--json", now="2024-01-04T00:00:00Z")
    assert first.returncode == 0, first.describe()
    assert steps_of(first.json()) == all_steps(first_days)

    # Run 2, two days later, is SIGKILLed inside feat/2024-01-05 (raw 4-5 and feat 4 are done by then).
    later = "2024-01-06T00:00:00Z"
    killed = project.start("a", "materialize", "--stale", "--json", now=later, env={"BLOCK_PARTITION": "2024-01-05"})
    project.wait_started("2024-01-05", killed)
    killed.kill()
    planned_by_killed = (all_steps(DAYS) - all_steps(first_days)) | {("summary", None)}

    # The shared state is readable; the dead runner's lock is still fresh, so writers are refused.
    runs, plan, busy = project.run_many(
        ("b", ("runs", "--json")), ("b", ("plan", "--stale", "--json")), ("b", ("materialize", "--stale", "--json")),
        now=later)
    assert runs.returncode == 0 and plan.returncode == 0, runs.describe() + plan.describe()
    listed = runs_by_id(runs.json())
    assert listed[first.json()["run_id"]]["status"] == "success"
    dead = [r for r in listed.values() if r["run_id"] != first.json()["run_id"]]
    assert len(dead) == 1, listed
    dead_id = dead[0]["run_id"]
    # What the implementation reports for a dead runner whose lock has not expired: still `running`
    # (it cannot tell a dead holder from a live one until the lock expires or is cleared).
    assert dead[0]["status"] == "running", dead
    assert_one_line_naming(busy, dead_id)
    left = plan_steps(plan.json())
    # At most the killed run's own work is left; never anything run 1 checkpointed.
    assert {("feat", "2024-01-05"), ("summary", None)} <= left <= planned_by_killed, left

    unlocked = project.run("b", "unlock", now=later)
    assert unlocked.returncode == 0, unlocked.describe()
    assert "warning" in unlocked.stderr.lower() and dead_id in unlocked.stderr, unlocked.describe()

    # The next runner proceeds and redoes exactly what was left, nothing more.
    nxt = project.run("c", "materialize", "--stale", "--json", now=later)
    assert nxt.returncode == 0, nxt.describe()
    assert steps_of(nxt.json()) == left
    assert nxt.json()["counts"]["materialized"] == len(left)

    runs, plan = project.run_many(("d", ("runs", "--json")), ("d", ("plan", "--stale", "--json")), now=later)
    assert plan.json()["steps"] == [], plan.describe()
    listed = runs_by_id(runs.json())
    assert listed[dead_id]["status"] == "crashed", listed[dead_id]
    assert listed[nxt.json()["run_id"]]["status"] == "success"
    assert len(listed) == 3


def test_a_dead_runners_lock_expires_after_its_ttl(project: SharedProject) -> None:
    ttl = {"ASSETFLOW_LOCK_TTL": "1"}
    killed = project.start("a", "materialize", "--stale", "--json",
                           env={**ttl, "BLOCK_PARTITION": "2024-01-03"})
    project.wait_started("2024-01-03", killed)
    killed.kill()
    # --wait: the next runner polls until the dead lock's TTL has run out, then takes it over.
    nxt = project.run("b", "materialize", "--stale", "--wait", "--json", env=ttl)
    assert nxt.returncode == 0, nxt.describe()
    assert "expired" in nxt.stderr.lower(), nxt.describe()  # it says it took over a dead runner's lock
    assert steps_of(nxt.json()) <= all_steps(DAYS)
    assert ("feat", "2024-01-03") in steps_of(nxt.json())

    runs, plan = project.run_many(("c", ("runs", "--json")), ("c", ("plan", "--stale", "--json")))
    assert plan.json()["steps"] == [], plan.describe()
    listed = runs_by_id(runs.json())
    statuses = sorted(r["status"] for r in listed.values())
    assert statuses == ["crashed", "success"], listed
    assert listed[nxt.json()["run_id"]]["status"] == "success"
    dead_id = next(r for r in listed if r != nxt.json()["run_id"])
    assert dead_id in nxt.stderr, nxt.describe()


def test_a_live_runner_inside_a_long_step_keeps_its_lock(project: SharedProject) -> None:
    """Regression: the heartbeat used to be refreshed only at checkpoints (on a commit, at most every
    10 s), so a live runner inside one step longer than the TTL lost its lock to the next runner, then
    failed with "lost the lock" (exit 2) and its records never reached the bucket."""
    ttl_s = 1.0
    ttl = {"ASSETFLOW_LOCK_TTL": str(ttl_s)}
    a = project.start("a", "materialize", "--stale", "--json", env={**ttl, "BLOCK_PARTITION": "2024-01-03"})
    project.wait_started("2024-01-03", a)
    # A is alive and working; let more than its TTL pass (time itself is what this test is about).
    time.sleep(2 * ttl_s + 0.5)
    b = project.run("b", "materialize", "--stale", "--json", env=ttl)
    project.release()
    done_a = a.finish()
    # B is refused (A is alive) and A completes.
    assert (b.returncode, done_a.returncode) == (3, 0), b.describe() + "\n" + done_a.describe()


CHECKOUT_PIPELINE = """
from pathlib import Path

import assetflow as af


@af.asset
def report() -> bytes:
    return (Path(__file__).parent / "query.sql").read_bytes()


defs = af.Definitions(assets=[report])
"""


def test_runners_in_different_checkouts_share_the_work(tmp_path: Path, s3: S3, bucket: str) -> None:
    checkouts = [SharedProject(tmp_path / where / "repo", s3, bucket, CHECKOUT_PIPELINE) for where in ("laptop", "ci")]
    try:
        for checkout in checkouts:
            (checkout.root / "query.sql").write_text("select 1")
        first = checkouts[0].run("a", "materialize", "--stale", "--json")
        assert first.returncode == 0, first.describe()
        plan = checkouts[1].run("b", "plan", "--stale", "--json")
        assert plan.returncode == 0, plan.describe()
        assert plan.json()["steps"] == [], plan.describe()
    finally:
        for checkout in checkouts:
            checkout.close()


def test_the_ci_recipe_runs_against_shared_state_configured_by_environment_only(tmp_path: Path, s3: S3,
                                                                                 bucket: str) -> None:
    """examples/ci/assetflow.yml: its `assetflow ...` commands, with its env (no flags), twice, as two
    ephemeral runners would."""
    yaml = pytest.importorskip("yaml")
    workflow = yaml.safe_load((Path(__file__).parents[1] / "examples" / "ci" / "assetflow.yml").read_text())
    commands = [step["run"] for step in workflow["jobs"]["materialize"]["steps"]
                if str(step.get("run", "")).startswith("assetflow ")]
    assert any(c.startswith("assetflow materialize --stale") for c in commands), commands
    assert commands[-1] == "assetflow status --check", commands
    env_template = workflow["env"]
    assert {"ASSETFLOW_STORE", "ASSETFLOW_DATA"} <= set(env_template)

    root = tmp_path / "repo"
    SharedProject(root, s3, bucket)  # writes pipeline.py and pyproject.toml
    with (root / "pyproject.toml").open("a") as pyproject:
        pyproject.write('\n[tool.assetflow]\nmodule = "pipeline"\n')

    def ci_env(run: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ASSETFLOW_", "AWS_"))}
        for key in ("ASSETFLOW_STORE", "ASSETFLOW_DATA", "ASSETFLOW_LOCK_TTL"):
            env[key] = str(env_template[key]).replace("${{ vars.ASSETFLOW_BUCKET }}", bucket)
        env.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1",
                   AWS_EC2_METADATA_DISABLED="true", AWS_ENDPOINT_URL_S3=s3.endpoint, ASSETFLOW_NOW=NOW,
                   ASSETFLOW_CACHE=str(tmp_path / f"runner-{run}"), PYTHONDONTWRITEBYTECODE="1")
        return env

    def run(command: str, env: dict[str, str]) -> Done:
        argv = tuple(command.split()[1:])
        done = subprocess.run([sys.executable, "-m", "assetflow.cli", *argv], cwd=root, env=env,
                              capture_output=True, text=True, timeout=TIMEOUT)
        return Done(argv, done.returncode, done.stdout, done.stderr)

    for command in commands:  # CI run 1 on a fresh runner
        done = run(command, ci_env(1))
        assert done.returncode == 0, done.describe()
    assert s3.fs().exists(f"{bucket}/assetflow/lineage.duckdb")
    # CI run 2 on another fresh runner: everything is already there.
    again = run("assetflow plan --stale --json", ci_env(2))
    assert again.returncode == 0, again.describe()
    assert again.json()["steps"] == [], again.describe()
