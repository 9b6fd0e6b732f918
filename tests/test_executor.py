"""The executor, end to end: concurrency and pool limits, retries, timeouts (threads and processes),
blocking and non-blocking checks, captured logs and run tags.

Everything runs for real: the Python API in this process (threads, and worker processes for
``executor="processes"``) or the CLI in a subprocess, on real DuckDB files and a real data root in a
temporary project. Assets synchronise with the test through files (``events/``): an asset writes a
marker and blocks, boundedly, until another file appears. No sleep stands in for an event; the only
sleeps are the short "work" a step does while holding its slot and the poll interval of bounded waits.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import assetflow as af
from assetflow.hashing import data_version

NOW = "2024-01-11T00:00:00Z"  # daily partitions from 2024-01-01: ten of them, 01..10
WAIT_S = 60.0

# Helpers every pipeline gets: file events, and concurrency counters (in memory for threads, an
# fcntl-locked JSON file for worker processes).
PRELUDE = '''
import fcntl
import json
import os
import pathlib
import sys
import threading
import time

import pyarrow as pa

import assetflow as af

HERE = pathlib.Path(__file__).resolve().parent
EVENTS = HERE / "events"
EVENTS.mkdir(exist_ok=True)


def mark(name, text=""):
    tmp = EVENTS / f".{name}.{os.getpid()}.{threading.get_ident()}.part"
    tmp.write_text(text)
    os.replace(tmp, EVENTS / name)


def wait_for(name, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not (EVENTS / name).exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


_lock = threading.Lock()
CURRENT = {}
PEAK = {}


def _memory_update(keys, delta):
    with _lock:
        for key in keys:
            CURRENT[key] = CURRENT.get(key, 0) + delta
            PEAK[key] = max(PEAK.get(key, 0), CURRENT[key])
        return dict(PEAK)


def _file_update(keys, delta):
    fd = os.open(EVENTS / "counter.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        path = EVENTS / "counter.json"
        state = json.loads(path.read_text()) if path.exists() else {"current": {}, "peak": {}}
        for key in keys:
            state["current"][key] = state["current"].get(key, 0) + delta
            state["peak"][key] = max(state["peak"].get(key, 0), state["current"][key])
        path.write_text(json.dumps(state))
        return dict(state["peak"])
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def hold(keys, limit):
    """Occupy a slot: count in, wait (bounded) until the run has been seen at its limit once, so the
    limit is provably reached, work a moment, count out."""
    update = _file_update if COUNTER == "file" else _memory_update
    peak = update(keys, +1)
    deadline = time.monotonic() + 5.0
    while peak.get("all", 0) < limit and time.monotonic() < deadline:
        time.sleep(0.005)
        peak = update([], 0)
    time.sleep(0.02)  # the work
    update(keys, -1)
'''


# ---- helpers ------------------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSETFLOW_")}
    env["ASSETFLOW_NOW"] = NOW
    return env


class Project:
    """A temporary project: ``pyproject.toml`` + ``pipeline.py``, driven by the CLI or the API."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.events = root / "events"
        self.data = root / ".assetflow" / "data"

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "assetflow.cli", "-f", "pipeline.py", *args]

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), cwd=self.root, env=_env(), capture_output=True, text=True, timeout=timeout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(*args), cwd=self.root, env=_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def many(self, *commands: tuple[str, ...], timeout: float = 180) -> list[subprocess.CompletedProcess[str]]:
        """Run several read-only commands concurrently (they are independent processes)."""
        procs = [(c, self.popen(*c)) for c in commands]
        done = []
        for command, proc in procs:
            out, err = proc.communicate(timeout=timeout)
            done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
        return done

    def load(self) -> ModuleType:
        """Import pipeline.py in this process under a unique module name."""
        name = f"af_pipeline_{uuid.uuid4().hex[:10]}"
        spec = importlib.util.spec_from_file_location(name, self.root / "pipeline.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    def mark(self, name: str) -> None:
        self.events.mkdir(exist_ok=True)
        (self.events / name).write_text("")


def _project(tmp_path: Path, source: str, *, counter: str = "memory") -> Project:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "executor-test"\nversion = "0"\n')
    (tmp_path / "pipeline.py").write_text(PRELUDE + f"\nCOUNTER = {counter!r}\n" + textwrap.dedent(source))
    return Project(tmp_path)


def _json(proc: subprocess.CompletedProcess[str], code: int = 0) -> Any:
    assert proc.returncode == code, f"exit {proc.returncode} (wanted {code})\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    return json.loads(proc.stdout)


def _wait(predicate: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live (not zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _steps(result: Any) -> dict[tuple[str, str | None], Any]:
    steps = result["steps"] if isinstance(result, dict) else result.steps
    return {((s["asset"], s["partition"]) if isinstance(s, dict) else (s.asset, s.partition)): s for s in steps}


@pytest.fixture
def api_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API reads the same environment as the CLI."""
    for name in [k for k in os.environ if k.startswith("ASSETFLOW_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("ASSETFLOW_NOW", NOW)


# ---- bounded concurrency ------------------------------------------------------------------------------

LIMITS = '''
daily = af.DailyPartitions(start="2024-01-01")


@af.asset(partitions=daily)
def free(ctx: af.Context) -> pa.Table:
    hold(["all"], 3)
    return pa.table({"p": [ctx.partition_key]})


@af.asset(partitions=daily, pool="db")
def db_a(ctx: af.Context) -> pa.Table:
    hold(["all", "db"], 3)
    return pa.table({"p": [ctx.partition_key]})


@af.asset(partitions=daily, pool="db")
def db_b(ctx: af.Context) -> pa.Table:
    hold(["all", "db"], 3)
    return pa.table({"p": [ctx.partition_key]})


@af.asset
def summary(ctx: af.Context, free: dict) -> bytes:
    # every partition of free arrives as {partition: table}, in partition order
    return ",".join(f"{key}={table['p'][0].as_py()}" for key, table in free.items()).encode()


defs = af.Definitions(assets=[free, db_a, db_b, summary], pools={"db": 1})
'''


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_max_concurrency_and_pool_limits_hold(tmp_path: Path, api_env: None, executor: str) -> None:
    counter = "memory" if executor == "threads" else "file"
    project = _project(tmp_path, LIMITS, counter=counter)
    module = project.load()
    result = af.materialize(module.defs, max_concurrency=3, executor=executor)
    assert result.status == "success", result
    assert result.counts["materialized"] == 31
    # context and values crossed the worker boundary intact
    keys = [f"2024-01-{day:02d}" for day in range(1, 11)]
    assert af.load(module.defs, "summary") == ",".join(f"{k}={k}" for k in keys).encode()
    assert af.load(module.defs, "db_b", partition="2024-01-07").column("p").to_pylist() == ["2024-01-07"]
    if counter == "memory":
        peak, current = module.PEAK, module.CURRENT
    else:
        state = json.loads((project.events / "counter.json").read_text())
        peak, current = state["peak"], state["current"]
    assert peak["all"] <= 3, f"--max-concurrency 3 exceeded: {peak}"
    assert peak["db"] <= 1, f"pool db (limit 1) exceeded across db_a and db_b: {peak}"
    assert peak["all"] == 3, f"the run never used its 3 slots: {peak}"  # the limit is real, not serial execution
    assert current == {"all": 0, "db": 0}


SHORT_WAITS = '''
daily = af.DailyPartitions(start="2024-01-01")


@af.asset(partitions=daily)
def fetch(ctx: af.Context) -> bytes:
    _memory_update(["all"], +1)
    time.sleep(0.002)  # a short wait (a small request), well under the executor's "slow" mark
    _memory_update(["all"], -1)
    return ctx.partition_key.encode()


defs = af.Definitions(assets=[fetch])
'''


def test_short_attempts_that_wait_still_run_side_by_side(tmp_path: Path, api_env: None) -> None:
    # The thread executor starts a run on one thread (short attempts that compute run faster one at a
    # time) and puts every thread to work once an attempt waits: a run of short waits is not serialized.
    project = _project(tmp_path, SHORT_WAITS)
    module = project.load()
    result = af.materialize(module.defs, max_concurrency=4)
    assert result.status == "success" and result.counts["materialized"] == 10
    assert 2 <= module.PEAK["all"] <= 4, module.PEAK


SHORT_CRUNCHES = '''
import hashlib

daily = af.DailyPartitions(start="2024-01-01")
BLOCK = bytes(1 << 18)


@af.asset(partitions=daily)
def crunch(ctx: af.Context) -> bytes:
    _memory_update(["all"], +1)
    start = time.thread_time()
    while time.thread_time() - start < 0.003:  # 3 ms of computing, never waiting, mostly without the GIL
        hashlib.sha256(BLOCK).digest()
    _memory_update(["all"], -1)
    return ctx.partition_key.encode()


defs = af.Definitions(assets=[crunch])
'''


def test_short_attempts_that_compute_without_the_gil_still_run_side_by_side(tmp_path: Path, api_env: None) -> None:
    # No attempt here is slow (5 ms) or waits: each computes for 3 ms, which a thread's CPU time
    # cannot tell from computing under the GIL. Attempts that long on average still open every lane
    # (BUSY_S), or a run of them on a many-core machine would take one core. (On a loaded machine a
    # descheduled attempt may count as waiting and open the lanes first: this test fails without
    # BUSY_S only where that cannot happen, as on an idle one.)
    module = _project(tmp_path, SHORT_CRUNCHES).load()
    result = af.materialize(module.defs, max_concurrency=4)
    assert result.status == "success" and result.counts["materialized"] == 10
    assert 2 <= module.PEAK["all"] <= 4, module.PEAK


CHAIN = '''
@af.asset
def first() -> bytes:
    return b"1"


@af.asset
def second(first: bytes) -> bytes:
    return first + b"2"


@af.asset
def third(second: bytes) -> bytes:
    return second + b"3"


defs = af.Definitions(assets=[first, second, third])
'''


def test_a_worker_going_idle_wakes_the_coordinator(tmp_path: Path, api_env: None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Short attempts don't wake the coordinator with each result (see BatchedResults): the worker that
    # runs out of work does. With the coordinator's own periodic wake-up an hour away, a chain of
    # no-op steps still finishes: each one's result reaches it as soon as the worker is idle.
    import assetflow.scheduler

    monkeypatch.setattr(assetflow.scheduler, "TICK_S", 3600.0)
    module = _project(tmp_path, CHAIN).load()
    outcome: list[Any] = []
    runner = threading.Thread(target=lambda: outcome.append(af.materialize(module.defs)), daemon=True)
    runner.start()
    runner.join(WAIT_S)
    assert outcome and outcome[0].status == "success", "the run waited for the coordinator's periodic wake-up"
    assert af.load(module.defs, "third") == b"123"


def test_pool_limit_of_two_across_assets(tmp_path: Path, api_env: None) -> None:
    project = _project(tmp_path, '''
        daily = af.DailyPartitions(start="2024-01-01")

        @af.asset(partitions=daily, pool="warehouse")
        def w1(ctx: af.Context) -> pa.Table:
            hold(["all", "warehouse"], 2)
            return pa.table({"p": [ctx.partition_key]})

        @af.asset(partitions=daily, pool="warehouse")
        def w2(ctx: af.Context) -> pa.Table:
            hold(["all", "warehouse"], 2)
            return pa.table({"p": [ctx.partition_key]})

        defs = af.Definitions(assets=[w1, w2], pools={"warehouse": 2})
    ''')
    module = project.load()
    result = af.materialize(module.defs, max_concurrency=4)
    assert result.status == "success"
    assert module.PEAK["warehouse"] == 2, module.PEAK  # reached, never exceeded, with 4 free slots
    assert module.PEAK["all"] == 2


# ---- retries -------------------------------------------------------------------------------------------

RETRIES = '''
@af.asset(retries=af.Retry(max_attempts=3, delay=0.01, jitter=0))
def flaky(ctx: af.Context) -> bytes:
    if ctx.attempt < 3:
        raise RuntimeError(f"transient failure on attempt {ctx.attempt}")
    return b"third time lucky"


@af.asset(retries=af.Retry(max_attempts=3, delay=0.01, jitter=0))
def hopeless(ctx: af.Context) -> bytes:
    mark(f"hopeless_attempt_{ctx.attempt}")
    raise af.Failure("nope", retry=False)


defs = af.Definitions(assets=[flaky, hopeless])
'''


def _check_retry_record(run: dict[str, Any]) -> None:
    steps = _steps(run)
    flaky = steps[("flaky", None)]
    assert flaky["outcome"] == "materialized"
    assert [a["number"] for a in flaky["attempts"]] == [1, 2, 3]
    assert [a["outcome"] for a in flaky["attempts"]] == ["failed", "failed", "materialized"]
    assert "transient failure on attempt 1" in flaky["attempts"][0]["error"]
    assert "transient failure on attempt 2" in flaky["attempts"][1]["error"]
    assert flaky["attempts"][2]["error"] is None
    assert all(a["duration_s"] is not None and a["duration_s"] >= 0 for a in flaky["attempts"])
    hopeless = steps[("hopeless", None)]
    assert hopeless["outcome"] == "failed"
    assert len(hopeless["attempts"]) == 1
    assert "nope" in hopeless["attempts"][0]["error"]


def test_retries_cli_threads(tmp_path: Path) -> None:
    project = _project(tmp_path, RETRIES)
    result = _json(project.cli("materialize", "--json"), code=1)
    steps = _steps(result)
    assert steps[("flaky", None)]["outcome"] == "materialized"
    assert steps[("flaky", None)]["attempts"] == 3
    assert steps[("flaky", None)]["data_version"] == data_version(b"third time lucky")
    assert steps[("hopeless", None)]["outcome"] == "failed"
    assert steps[("hopeless", None)]["attempts"] == 1
    assert "nope" in steps[("hopeless", None)]["error"]
    assert not (project.events / "hopeless_attempt_2").exists()
    run = _json(project.cli("run", result["run_id"], "--json"))
    _check_retry_record(run)


def test_retries_api_processes(tmp_path: Path, api_env: None) -> None:
    project = _project(tmp_path, RETRIES)
    module = project.load()
    result = af.materialize(module.defs, executor="processes")
    steps = _steps(result)
    assert (steps[("flaky", None)].outcome, steps[("flaky", None)].attempts) == ("materialized", 3)
    assert (steps[("hopeless", None)].outcome, steps[("hopeless", None)].attempts) == ("failed", 1)
    assert af.load(module.defs, "flaky") == b"third time lucky"
    _check_retry_record(af.run(module.defs, result.run_id).model_dump(mode="json"))


def test_waiting_for_a_retry_does_not_hold_a_slot(tmp_path: Path, api_env: None) -> None:
    """With one slot, a step waiting out its retry delay lets another step run meanwhile."""
    project = _project(tmp_path, '''
        @af.asset(retries=af.Retry(max_attempts=2, delay=1.0, jitter=0))
        def first(ctx: af.Context) -> bytes:
            if ctx.attempt == 1:
                mark("first_failed_once")
                raise RuntimeError("try again later")
            if not (EVENTS / "second_ran").exists():
                raise af.Failure("second did not run while first waited for its retry", retry=False)
            return b"first"

        @af.asset
        def second() -> bytes:
            mark("second_ran", "after first failed" if (EVENTS / "first_failed_once").exists() else "before first")
            return b"second"

        defs = af.Definitions(assets=[first, second])
    ''')
    module = project.load()
    result = af.materialize(module.defs, max_concurrency=1)
    steps = _steps(result)
    assert (project.events / "second_ran").read_text() == "after first failed"  # the scenario really happened
    assert steps[("first", None)].outcome == "materialized", steps[("first", None)].error
    assert steps[("first", None)].attempts == 2


# ---- timeouts ------------------------------------------------------------------------------------------


def test_timeout_threads_abandons_and_never_writes_the_late_result(tmp_path: Path, api_env: None) -> None:
    project = _project(tmp_path, '''
        @af.asset(timeout=1)
        def hang(ctx: af.Context) -> bytes:
            if not (EVENTS / "hang_mode").exists():
                return b"first value"
            mark("hang_started", str(threading.get_ident()))
            released = wait_for("release", 60)
            mark("hang_returned", str(released))
            return b"late value"

        @af.asset
        def after_hang(hang: bytes) -> bytes:
            mark("after_hang_ran")
            return hang

        defs = af.Definitions(assets=[hang, after_hang])
    ''')
    module = project.load()
    first = af.materialize(module.defs)
    assert first.status == "success"
    before = af.lineage(module.defs, "hang")
    assert before.data_version == data_version(b"first value")
    files_before = sorted(p.name for p in (project.data / "hang").iterdir())
    (project.events / "after_hang_ran").unlink()

    project.mark("hang_mode")
    result = af.materialize(module.defs)
    steps = _steps(result)
    assert steps[("hang", None)].outcome == "failed"
    assert steps[("hang", None)].error.startswith("timed_out"), steps[("hang", None)].error
    assert steps[("after_hang", None)].outcome == "upstream_failed"
    assert not (project.events / "after_hang_ran").exists()
    assert (project.events / "hang_started").exists()
    assert not (project.events / "hang_returned").exists()  # really abandoned while still running

    # Now let the abandoned attempt finish: its value must never be written, its head never moved.
    project.mark("release")
    _wait(lambda: (project.events / "hang_returned").exists(), "the abandoned attempt to return")
    assert (project.events / "hang_returned").read_text() == "True"
    ident = int((project.events / "hang_started").read_text())
    _wait(lambda: not any(t.ident == ident and t.is_alive() for t in threading.enumerate()),
          "the abandoned worker thread to exit")
    assert sorted(p.name for p in (project.data / "hang").iterdir()) == files_before
    after = af.lineage(module.defs, "hang")
    assert after.data_version == before.data_version
    assert after.run_id == first.run_id
    run = af.run(module.defs, result.run_id)
    (hang_step,) = [s for s in run.steps if s.asset == "hang"]
    assert hang_step.attempts[-1].error.startswith("timed_out")


def test_timeout_then_retry_threads_keeps_the_retry_and_drops_the_late_result(tmp_path: Path, api_env: None) -> None:
    """A timed-out attempt that is retried: the retry's result counts, the first attempt's late one never does."""
    project = _project(tmp_path, '''
        @af.asset(timeout=1, retries=af.Retry(max_attempts=2, delay=0.01, jitter=0))
        def sometimes_hangs(ctx: af.Context) -> bytes:
            if ctx.attempt == 1:
                mark("attempt1_started", str(threading.get_ident()))
                released = wait_for("release", 60)
                mark("attempt1_returned", str(released))
                return b"late first attempt"
            return b"second attempt"

        defs = af.Definitions(assets=[sometimes_hangs])
    ''')
    module = project.load()
    result = af.materialize(module.defs)
    (step,) = result.steps
    assert (step.outcome, step.attempts) == ("materialized", 2), step.error
    assert step.data_version == data_version(b"second attempt")
    project.mark("release")
    _wait(lambda: (project.events / "attempt1_returned").exists(), "the abandoned first attempt to return")
    ident = int((project.events / "attempt1_started").read_text())
    _wait(lambda: not any(t.ident == ident and t.is_alive() for t in threading.enumerate()),
          "the abandoned worker thread to exit")
    assert af.load(module.defs, "sometimes_hangs") == b"second attempt"
    assert [p.name for p in (project.data / "sometimes_hangs").iterdir()] == [f"{data_version(b'second attempt')}.bin"]
    (recorded,) = af.run(module.defs, result.run_id).steps
    assert [a.outcome for a in recorded.attempts] == ["failed", "materialized"]
    assert recorded.attempts[0].error.startswith("timed_out")


def test_timeout_processes_kills_the_worker(tmp_path: Path) -> None:
    project = _project(tmp_path, '''
        @af.asset
        def warmup() -> bytes:
            return b"a worker process is up"

        # order-only dependency on warmup: hang starts on a worker that is certainly up, so this test
        # does not depend on how worker boot is accounted (test_timeout_processes_does_not_count_worker_startup)
        @af.asset(timeout=1, deps=["warmup"])
        def hang(ctx: af.Context) -> bytes:
            mark("hang_pid", str(os.getpid()))
            released = wait_for("release", 60)
            mark("hang_returned", str(released))
            return b"late value"

        def _alive(pid):
            try:
                stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
            except FileNotFoundError:
                return False
            return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")

        @af.asset
        def witness(ctx: af.Context) -> bytes:
            # runs in another worker process while the run goes on: sees whether the timeout killed hang's
            wait_for("hang_pid", 30)
            pid = int((EVENTS / "hang_pid").read_text())
            deadline = time.monotonic() + 30
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.01)
            mark("witness", "alive" if _alive(pid) else "dead")
            return str(pid).encode()

        defs = af.Definitions(assets=[warmup, hang, witness])
    ''')
    proc = project.cli("materialize", "--executor", "processes", "--max-concurrency", "2", "--json")
    result = _json(proc, code=1)
    steps = _steps(result)
    assert steps[("hang", None)]["outcome"] == "failed"
    assert steps[("hang", None)]["error"].startswith("timed_out"), steps[("hang", None)]["error"]
    assert steps[("witness", None)]["outcome"] == "materialized"
    pid = int((project.events / "hang_pid").read_text())
    assert (project.events / "witness").read_text() == "dead", "the timed-out worker outlived its timeout during the run"
    assert not _pid_alive(pid)
    assert not (project.events / "hang_returned").exists()
    assert not (project.data / "hang").exists() or not any((project.data / "hang").iterdir())
    project.mark("release")  # nothing is left waiting for it; harmless


def test_timeout_processes_does_not_count_worker_startup(tmp_path: Path, api_env: None) -> None:
    project = _project(tmp_path, '''
        import multiprocessing

        if multiprocessing.parent_process() is not None:
            time.sleep(1.5)  # a worker importing this file pays for heavy imports (think torch)

        @af.asset(timeout=1)
        def quick() -> bytes:
            return b"instant"

        defs = af.Definitions(assets=[quick])
    ''')
    module = project.load()
    result = af.materialize(module.defs, executor="processes")
    (step,) = result.steps
    assert step.outcome == "materialized", step.error


# ---- checks --------------------------------------------------------------------------------------------

CHECKS = '''
@af.asset
def a() -> pa.Table:
    return pa.table({"x": [1, 2, 3]})


@af.asset
def b(a: pa.Table) -> pa.Table:
    return a


@af.check("b", blocking=True)
def b_is_empty(b: pa.Table) -> bool:
    return b.num_rows == 0


@af.asset
def c(b: pa.Table) -> pa.Table:
    mark("c_ran")
    return b


@af.asset
def d(a: pa.Table) -> pa.Table:
    return a


@af.check("d")
def d_has_ten_rows(d: pa.Table) -> bool:
    return d.num_rows == 10


@af.check("d")
def d_raises(d: pa.Table) -> bool:
    raise ValueError("check blew up")


@af.asset
def e(d: pa.Table) -> pa.Table:
    mark("e_ran")
    return d


defs = af.Definitions(assets=[a, b, c, d, e], checks=[b_is_empty, d_has_ten_rows, d_raises])
'''


def test_blocking_and_non_blocking_checks(tmp_path: Path) -> None:
    project = _project(tmp_path, CHECKS)
    proc = project.cli("materialize", "--json")
    result = _json(proc, code=1)
    assert result["status"] == "failed"
    steps = _steps(result)
    assert steps[("a", None)]["outcome"] == "materialized"
    assert steps[("b", None)]["outcome"] == "check_failed"
    assert "b_is_empty" in steps[("b", None)]["error"]
    assert steps[("c", None)]["outcome"] == "upstream_failed"
    assert not (project.events / "c_ran").exists()
    # a non-blocking failure is a warning: d materializes and its downstream runs
    assert steps[("d", None)]["outcome"] == "materialized"
    assert steps[("e", None)]["outcome"] == "materialized"
    assert (project.events / "e_ran").exists()
    checks = {c["check"]: c for c in result["checks"]}
    assert checks["b_is_empty"]["passed"] is False and checks["b_is_empty"]["blocking"] is True
    assert checks["b_is_empty"]["asset"] == "b"
    assert checks["d_has_ten_rows"]["passed"] is False and checks["d_has_ten_rows"]["blocking"] is False
    assert checks["d_raises"]["passed"] is False and "check blew up" in checks["d_raises"]["error"]

    status, run, check = project.many(("status", "--json"), ("run", result["run_id"], "--json"), ("status", "--check"))
    assets = {s["asset"]: s for s in _json(status)["assets"]}
    (b_check,) = assets["b"]["checks"]
    assert (b_check["check"], b_check["blocking"], b_check["failed"], b_check["passed"]) == ("b_is_empty", True, 1, 0)
    d_checks = {c["check"]: c for c in assets["d"]["checks"]}
    assert (d_checks["d_has_ten_rows"]["blocking"], d_checks["d_has_ten_rows"]["failed"]) == (False, 1)
    assert d_checks["d_raises"]["failed"] == 1
    assert assets["d"]["up_to_date"] == 1 and assets["e"]["up_to_date"] == 1
    assert assets["b"]["up_to_date"] == 0
    recorded = {c["check_name"]: c for c in _json(run)["checks"]}
    assert recorded["b_is_empty"]["passed"] is False and recorded["b_is_empty"]["blocking"] is True
    assert recorded["d_has_ten_rows"]["passed"] is False and recorded["d_has_ten_rows"]["blocking"] is False
    assert check.returncode == 1, check.stderr  # a failed blocking check alerts
    assert recorded["d_raises"]["passed"] is False and "check blew up" in recorded["d_raises"]["error"]


# ---- logs ----------------------------------------------------------------------------------------------

LOGS = '''
@af.asset
def chatty(ctx: af.Context) -> bytes:
    ctx.log.info("ctx log line %d", 42)
    print("stdout line from chatty")
    print("stderr line from chatty", file=sys.stderr)
    return b"x"


def explode(attempt):
    raise ValueError(f"kaboom on attempt {attempt}")


@af.asset(retries=af.Retry(max_attempts=2, delay=0.01, jitter=0))
def broken(ctx: af.Context) -> bytes:
    ctx.log.warning("about to fail on attempt %d", ctx.attempt)
    explode(ctx.attempt)


defs = af.Definitions(assets=[chatty, broken])
'''


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_log_and_traceback_capture(tmp_path: Path, executor: str) -> None:
    project = _project(tmp_path, LOGS)
    proc = project.cli("materialize", "--executor", executor, "--json")
    assert proc.returncode == 1, proc.stderr
    result = json.loads(proc.stdout)  # --json: one JSON document on stdout, nothing else: no leaked print()
    assert "stdout line from chatty" not in proc.stdout + proc.stderr
    human, as_json = project.many(("run", result["run_id"]), ("run", result["run_id"], "--json"))
    assert human.returncode == 0, human.stderr
    steps = _steps(_json(as_json))
    logs = steps[("chatty", None)]["logs"]
    for text in ("ctx log line 42", "stdout line from chatty", "stderr line from chatty"):
        assert text in logs, (text, logs)
    broken = steps[("broken", None)]
    assert "about to fail on attempt 1" in broken["logs"] and "about to fail on attempt 2" in broken["logs"]
    assert [a["number"] for a in broken["attempts"]] == [1, 2]
    for attempt in broken["attempts"]:
        assert "kaboom on attempt" in attempt["error"]
        assert "Traceback" in attempt["traceback"] and "in explode" in attempt["traceback"]
        assert f"ValueError: kaboom on attempt {attempt['number']}" in attempt["traceback"]
    for text in ("ctx log line 42", "stdout line from chatty", "stderr line from chatty", "about to fail on attempt 2",
                 "Traceback", "in explode", "ValueError: kaboom on attempt 2"):
        assert text in human.stdout, text


def test_print_and_stderr_are_captured_in_process(tmp_path: Path, api_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    """Through the API too (threads): a step's print() lands in its record, not on the caller's terminal."""
    project = _project(tmp_path, LOGS)
    module = project.load()
    result = af.materialize(module.defs, select=["chatty"])
    (step,) = [s for s in af.run(module.defs, result.run_id).steps if s.asset == "chatty"]
    for text in ("ctx log line 42", "stdout line from chatty", "stderr line from chatty"):
        assert text in step.logs, (text, step.logs)
    printed = capsys.readouterr()
    assert "line from chatty" not in printed.out + printed.err
    print("the caller's own print still works")
    assert capsys.readouterr().out == "the caller's own print still works\n"


# ---- run tags ------------------------------------------------------------------------------------------


def test_runs_filtered_by_tag(tmp_path: Path, api_env: None) -> None:
    project = _project(tmp_path, '''
        @af.asset
        def one() -> bytes:
            return b"1"

        defs = af.Definitions(assets=[one])
    ''')
    tagged = _json(project.cli("materialize", "--tag", "team=ml", "--tag", "owner=ana", "--json"))
    assert tagged["tags"]["team"] == "ml"
    module = project.load()
    other = af.materialize(module.defs, tags={"team": "web"})
    untagged = af.materialize(module.defs)
    ml = project.cli("runs", "--tag", "team=ml", "--json")
    ml_runs = _json(ml)["runs"]
    assert [r["run_id"] for r in ml_runs] == [tagged["run_id"]]
    assert ml_runs[0]["tags"]["team"] == "ml" and ml_runs[0]["status"] == "success"
    assert [r.run_id for r in af.runs(module.defs, tags={"team": "ml", "owner": "ana"})] == [tagged["run_id"]]
    assert af.runs(module.defs, tags={"team": "ml", "owner": "bob"}) == []
    assert {r.run_id for r in af.runs(module.defs)} == {tagged["run_id"], other.run_id, untagged.run_id}
    assert [r.run_id for r in af.runs(module.defs, tags={"team": "web"})] == [other.run_id]
