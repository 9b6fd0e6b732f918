"""Several processes, one store: while a ``materialize`` runs (an asset blocks on a file event), readers
in other processes succeed and see the run in progress, a second ``materialize`` fails fast naming the
running run, ``--wait`` queues behind it, and SIGINT cancels a run with exit 130.

All real processes on a real DuckDB file. Synchronisation is by file events with bounded waits, and
"the --wait process is waiting" is observed, not assumed: it holds the store's lock file open.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


from assetflow.lineage_store import LineageStore
from assetflow.runlock import lock_path

NOW = "2024-01-11T00:00:00Z"
WAIT_S = 120.0

PIPELINE = '''
import os
import pathlib
import threading
import time

import assetflow as af

EVENTS = pathlib.Path(__file__).resolve().parent / "events"
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


def log(line):
    fd = os.open(EVENTS / "order.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\\n").encode())
    finally:
        os.close(fd)


@af.asset
def quick(ctx: af.Context) -> bytes:
    log(f"quick {ctx.run_id}")
    return b"quick"


@af.asset
def slow(ctx: af.Context, quick: bytes) -> bytes:
    log(f"slow-start {ctx.run_id}")
    mark("slow_pid", str(os.getpid()))
    mark("slow_started", ctx.run_id)
    wait_for("release", 60)
    log(f"slow-end {ctx.run_id}")
    return b"slow"


@af.asset
def after_slow(slow: bytes) -> bytes:
    mark("after_slow_ran")
    return slow


defs = af.Definitions(assets=[quick, slow, after_slow])
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

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "assetflow.cli", "-f", "pipeline.py", *args], cwd=self.root,
                                env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return _finish(self.popen(*args))

    def mark(self, name: str) -> None:
        (self.events / name).write_text("")

    def order(self) -> list[str]:
        path = self.events / "order.log"
        return path.read_text().splitlines() if path.exists() else []


def _project(tmp_path: Path, source: str) -> Project:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "concurrency-test"\nversion = "0"\n')
    (tmp_path / "pipeline.py").write_text(textwrap.dedent(source))
    (tmp_path / "events").mkdir()
    return Project(tmp_path)


def _finish(proc: subprocess.Popen[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _json(proc: subprocess.CompletedProcess[str], code: int = 0) -> Any:
    assert proc.returncode == code, f"exit {proc.returncode} (wanted {code})\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    return json.loads(proc.stdout)


def _wait(predicate: Callable[[], bool], what: str, proc: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"process exited ({proc.returncode}) before {what}\n{out}\n{err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _holds_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open (Linux /proc)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                return True
        except OSError:
            continue
    return False


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _start_blocked_run(project: Project, *args: str) -> tuple[subprocess.Popen[str], str]:
    """Start a materialize and wait until its ``slow`` step is running (and blocked)."""
    proc = project.popen("materialize", *args)
    _wait(lambda: (project.events / "slow_started").exists(), "the slow step to start", proc)
    return proc, (project.events / "slow_started").read_text()


LOCK_WORDS = ("Could not set lock", "Conflicting lock", "database is locked", "lock on file")


def test_readers_during_a_run_second_writer_and_wait(tmp_path: Path) -> None:
    project = _project(tmp_path, PIPELINE)
    first, run_id = _start_blocked_run(project, "--json")
    try:
        # --wait starts now so that it is queued on the lock while everything else happens
        waiter = project.popen("materialize", "--wait", "--json")
        readers = {
            "status": project.popen("status", "--json"),
            "plan": project.popen("plan", "--json"),
            "runs": project.popen("runs", "--json"),
            "lineage": project.popen("lineage", "slow", "--json"),
        }
        second = project.popen("materialize", "--json")
        done = {name: _finish(proc) for name, proc in readers.items()}
        for name, proc in done.items():
            assert proc.returncode == 0, f"{name} failed during a run:\n{proc.stderr}"
            assert not any(word in proc.stderr for word in LOCK_WORDS), f"{name}: {proc.stderr}"

        runs = {r["run_id"]: r for r in _json(done["runs"])["runs"]}
        assert runs[run_id]["status"] == "running"
        status = _json(done["status"])
        assert run_id in [r["run_id"] for r in status.get("running", [])], status.get("running")
        assert {s["asset"] for s in _json(done["plan"])["steps"]} == {"quick", "slow", "after_slow"}
        lineage = _json(done["lineage"])
        assert (lineage["asset"], lineage["data_version"], lineage["upstream_assets"]) == ("slow", None, ["quick"])

        refused = _finish(second)
        assert refused.returncode == 3, (refused.returncode, refused.stdout, refused.stderr)
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1, refused.stderr
        assert run_id in lines[0]
        assert refused.stdout == ""
        assert "Traceback" not in refused.stderr

        # the --wait run is queued: alive, and blocked on the store's run lock (it holds the lock file open)
        _wait(lambda: _holds_open(waiter.pid, lock_path(project.store)), "--wait to reach the run lock", waiter)
        assert waiter.poll() is None
        assert not [line for line in project.order() if run_id not in line]  # it has run nothing yet
    finally:
        project.mark("release")

    first_result = _json(_finish(first))
    assert first_result["run_id"] == run_id and first_result["status"] == "success"
    waited = _json(_finish(waiter))
    assert waited["status"] == "success"
    assert waited["run_id"] != run_id
    # the waiting run did its work strictly after the first run's work
    order = project.order()
    firsts = [i for i, line in enumerate(order) if line.endswith(run_id)]
    seconds = [i for i, line in enumerate(order) if line.endswith(waited["run_id"])]
    assert firsts and seconds and max(firsts) < min(seconds), order
    # the refused materialize left no trace in the history
    runs = LineageStore(project.store).runs()
    assert {r["run_id"]: r["status"] for r in runs} == {run_id: "success", waited["run_id"]: "success"}


def test_wait_takes_over_from_a_killed_run(tmp_path: Path) -> None:
    """SIGKILL the running materialize: the kernel frees its lock, the queued --wait run proceeds, and the
    dead run is recorded as crashed."""
    project = _project(tmp_path, PIPELINE)
    first, run_id = _start_blocked_run(project, "--json")
    try:
        waiter = project.popen("materialize", "--wait", "--json")
        _wait(lambda: _holds_open(waiter.pid, lock_path(project.store)), "--wait to reach the run lock", waiter)
        first.send_signal(signal.SIGKILL)
        assert _finish(first).returncode == -signal.SIGKILL
        _wait(lambda: (project.events / "slow_started").read_text() != run_id, "the waiting run to start its slow step",
              waiter)
    finally:
        project.mark("release")
    waited = _json(_finish(waiter))
    assert waited["status"] == "success" and waited["run_id"] != run_id
    runs = {r["run_id"]: r["status"] for r in _json(project.cli("runs", "--json"))["runs"]}
    assert runs == {run_id: "crashed", waited["run_id"]: "success"}


def test_sigint_cancels_the_run(tmp_path: Path) -> None:
    project = _project(tmp_path, PIPELINE)
    proc, run_id = _start_blocked_run(project, "--json")
    try:
        proc.send_signal(signal.SIGINT)
        result = _finish(proc)
    finally:
        project.mark("release")
    _check_cancelled(project, result, run_id)


def _check_cancelled(project: Project, result: subprocess.CompletedProcess[str], run_id: str) -> None:
    runs = _json(project.cli("runs", "--json"))["runs"]
    assert [(r["run_id"], r["status"]) for r in runs] == [(run_id, "cancelled")]
    assert result.returncode == 130, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert not (project.events / "after_slow_ran").exists()  # scheduling stopped
    heads = {h["asset"]: h for h in LineageStore(project.store).heads()}
    assert heads["quick"]["mat_id"] is not None  # what finished before the interrupt is recorded
    assert "slow" not in heads or heads["slow"]["mat_id"] is None
    assert not (project.data / "slow").exists() or not any((project.data / "slow").iterdir())


def test_ctrl_c_in_a_terminal_cancels_a_process_executor_run(tmp_path: Path) -> None:
    """A terminal's Ctrl-C signals the whole foreground process group: coordinator and workers alike."""
    project = _project(tmp_path, PIPELINE)
    proc = subprocess.Popen([sys.executable, "-m", "assetflow.cli", "-f", "pipeline.py", "materialize", "--executor",
                             "processes", "--json"], cwd=project.root, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    _wait(lambda: (project.events / "slow_started").exists(), "the slow step to start", proc)
    run_id = (project.events / "slow_started").read_text()
    slow_pid = int((project.events / "slow_pid").read_text())
    try:
        os.killpg(proc.pid, signal.SIGINT)
        result = _finish(proc)
    finally:
        project.mark("release")
    _check_cancelled(project, result, run_id)
    assert not _pid_alive(slow_pid), "the worker running the cancelled step outlived the run"
