"""Running one measured subprocess: wall time, CPU time and peak RSS of exactly that process.

Every timed run is a fresh process, started by the small launcher :mod:`benchmarks.spawn` and reaped
with ``os.wait4``, whose ``resource``-style usage record belongs to that one child (``ru_maxrss`` is its
peak resident set, KiB on Linux — what ``/usr/bin/time -v`` prints as "Maximum resident set size").
A run that exceeds its time limit has its whole process group killed; it never hangs the harness.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULT_MARKER = "BENCH_RESULT "
"""Prefix of the one stdout line carrying a runner's JSON result (in-process and peer runners)."""

REPO = Path(__file__).resolve().parent.parent
"""The repository root (holds ``benchmarks/`` and ``assetflow/``)."""

WORK = REPO / "benchmarks" / ".work"
"""Scratch space (gitignored): generated projects, stores, peer virtualenvs, profiles."""


@dataclass
class Sample:
    """One finished (or killed) subprocess."""

    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    returncode: int
    timed_out: bool
    stdout: str
    stderr: str
    payload: dict[str, Any] | None = field(default=None)

    @property
    def ok(self) -> bool:
        """True when the process exited 0 in time."""
        return self.returncode == 0 and not self.timed_out

    def failure(self) -> str:
        """A one-line description of what went wrong."""
        if self.timed_out:
            return f"timed out after {self.wall_s:.0f} s"
        tail = (self.stderr.strip().splitlines() or self.stdout.strip().splitlines() or ["no output"])[-1]
        return f"exit {self.returncode}: {tail[:300]}"


@contextmanager
def work_lock(work: Path, log: Callable[[str], None]) -> Iterator[None]:
    """Hold ``work/.lock`` for a whole run: two runs sharing one scratch folder would delete each other's
    stores. A second run waits (and says so); use ``--work DIR`` to run side by side."""
    import fcntl

    work.mkdir(parents=True, exist_ok=True)
    with open(work / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another benchmark run is using {work}; waiting for it (or pass --work DIR) …")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def child_env(extra: Mapping[str, str] | None = None, *, pythonpath: bool = False) -> dict[str, str]:
    """The environment of measured processes.

    Fixed clock; no store/data overrides leaking in from the caller's shell; bytecode caching on (as in
    any normal installation) but redirected under ``benchmarks/.work/pycache`` so nothing is written
    next to the sources.
    """
    env = {k: v for k, v in os.environ.items()
           if k not in ("ASSETFLOW_STORE", "ASSETFLOW_DATA", "ASSETFLOW_DEBUG", "PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
    env["PYTHONPYCACHEPREFIX"] = str(WORK / "pycache")
    if pythonpath:
        env["PYTHONPATH"] = str(REPO)
    env.update(extra or {})
    return env


def run_measured(cmd: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout_s: float) -> Sample:
    """Run ``cmd`` to completion (or kill it at ``timeout_s``) and measure it, through ``spawn.py``.

    Wall time, CPU time (user + system) and peak RSS are those of ``cmd`` alone, taken by the launcher
    around its own fork/exec/wait4 (see :mod:`benchmarks.spawn` for why a launcher is needed).
    """
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        result = Path(tmp) / "result.json"
        out_path, err_path = Path(tmp) / "stdout", Path(tmp) / "stderr"
        launcher = [sys.executable, str(Path(__file__).with_name("spawn.py")), str(result), str(timeout_s), "--", *cmd]
        launcher_rc: int | None = None
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            try:
                launcher_rc = subprocess.run(launcher, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=out,
                                             stderr=err, timeout=timeout_s + 60, check=False).returncode
            except subprocess.TimeoutExpired:
                pass
        stdout = out_path.read_text("utf-8", "replace")
        stderr = err_path.read_text("utf-8", "replace")
        if result.exists():
            got = json.loads(result.read_text())
        elif launcher_rc is not None:  # the launcher itself failed (e.g. the command cannot be executed)
            got = {"wall_s": 0.0, "cpu_s": 0.0, "maxrss_kib": 0, "returncode": launcher_rc or -1, "timed_out": False}
        else:
            got = {"wall_s": timeout_s, "cpu_s": 0.0, "maxrss_kib": 0, "returncode": -9, "timed_out": True}
    sample = Sample(got["wall_s"], got["cpu_s"], got["maxrss_kib"] / 1024.0, got["returncode"], got["timed_out"],
                    stdout, stderr)
    sample.payload = parse_payload(stdout)
    return sample


def parse_payload(stdout: str) -> dict[str, Any] | None:
    """The JSON after :data:`RESULT_MARKER` on the last such line of ``stdout``, if any."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER):])
    return None


def emit(payload: Mapping[str, Any]) -> None:
    """Print a runner's result line (used inside measured processes)."""
    sys.stdout.write(RESULT_MARKER + json.dumps(payload) + "\n")
    sys.stdout.flush()


def assetflow_cli() -> list[str]:
    """The ``assetflow`` console script of the running interpreter, as a user would invoke it."""
    script = Path(sys.executable).parent / "assetflow"
    return [str(script)] if script.exists() else [sys.executable, "-m", "assetflow.cli"]


def inproc_cmd(spec: Mapping[str, Any]) -> list[str]:
    """The command running :mod:`benchmarks.inproc` with ``spec``."""
    return [sys.executable, "-m", "benchmarks.inproc", json.dumps(spec)]
