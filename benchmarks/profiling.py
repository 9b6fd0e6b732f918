"""Profiles of missed targets, with py-spy (``--profile``).

Each measurement that misses a target is run once more under ``py-spy record`` twice:

* **wall** (``--idle --threads``): every sample of the main thread, waiting included — where the
  elapsed time goes;
* **cpu** (default): samples of threads that are running — where the work is.

The raw collapsed stacks (``*.wall.txt`` / ``*.cpu.txt``, py-spy's ``raw`` format) and
a summary (``*.summary.md``: top frames by self time and by inclusive time) are written under
``benchmarks/.work/profiles/``. Import time is folded into one ``[import]`` pseudo-frame so it shows as
one line. For in-process measurements the wall view keeps only stacks inside the timed call.
py-spy is looked up with ``--py-spy PATH``, on ``PATH``, or in ``benchmarks/.work/tools/bin``
(``python -m venv benchmarks/.work/tools && benchmarks/.work/tools/bin/pip install py-spy``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from benchmarks.measure import WORK
from benchmarks.model import Measurement

PROFILES = WORK / "profiles"
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")
IMPORT = "[import]"


def find_py_spy(explicit: str | None) -> Path | None:
    """The py-spy executable, or None."""
    for candidate in (explicit, shutil.which("py-spy"), str(WORK / "tools" / "bin" / "py-spy")):
        if candidate and Path(candidate).exists():
            return Path(candidate)
    return None


def _short(frame: str) -> str:
    """``func (path:line)`` → ``func (last/two.py)`` (aggregated over lines)."""
    match = _FRAME.match(frame)
    if not match:
        return frame
    parts = Path(match["file"]).parts
    return f"{match['func']} ({'/'.join(parts[-2:])})"


def _harness(frame: str) -> bool:
    """Frames every stack shares (interpreter start, the runners, the CLI entry): noise in inclusive views."""
    return ("<frozen runpy>" in frame or "benchmarks/inproc.py" in frame or frame.startswith("<module> (")
            or frame.startswith("main (") and "assetflow/cli.py" in frame)


def parse_raw(path: Path) -> list[tuple[list[str], int]]:
    """Collapsed stacks ``a;b;c N`` → [(frames, count)]."""
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def summarize(stacks: list[tuple[list[str], int]], *, keep: Callable[[list[str]], bool] = lambda s: True,
              top: int = 10) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """(total samples, top frames by self samples, top frames by inclusive samples)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for frames, count in stacks:
        frames = [f for f in frames if not f.startswith("thread (") and not f.startswith("process ")]
        if not frames or not keep(frames):
            continue
        total += count
        if any(f.startswith("_find_and_load (") for f in frames):
            own[IMPORT] += count
            inclusive[IMPORT] += count
            continue
        own[_short(frames[-1])] += count
        for name in dict.fromkeys(_short(f) for f in frames if not _harness(f)):
            inclusive[name] += count
    return total, own.most_common(top), inclusive.most_common(top + 5)


def _main_thread(stacks: list[tuple[list[str], int]]) -> list[tuple[list[str], int]]:
    per_thread: Counter[str] = Counter()
    for frames, count in stacks:
        if frames and frames[0].startswith("thread (") and any(f.startswith("<module> (") for f in frames):
            per_thread[frames[0].split(")")[0]] += count
    if not per_thread:
        return stacks
    main = per_thread.most_common(1)[0][0]
    return [(f, c) for f, c in stacks if f and f[0].startswith(main)]


def _table(title: str, rows: list[tuple[str, int]], total: int, rate: int) -> str:
    lines = [f"**{title}** ({total} samples at {rate} Hz ≈ {total / rate:.2f} s)", "",
             "| # | frame | samples | share | ≈ s |", "| --- | --- | ---: | ---: | ---: |"]
    for i, (name, count) in enumerate(rows, 1):
        lines.append(f"| {i} | `{name}` | {count} | {count / max(total, 1):.1%} | {count / rate:.2f} |")
    return "\n".join(lines) + "\n"


def profile(m: Measurement, env: dict[str, str], py_spy: Path, prepare: Callable[[], None] | None,
            rate: int = 250, timeout_s: float = 900) -> Path:
    """Profile ``m``'s command (wall and cpu views); returns the summary file."""
    PROFILES.mkdir(parents=True, exist_ok=True)
    stem = PROFILES / f"{m.workload}_{m.key}".replace("/", "_")
    views = {"wall": ["--idle", "--threads"], "cpu": []}
    notes = []
    for view, flags in views.items():
        if prepare:
            prepare()
        raw = Path(f"{stem}.{view}.txt")
        cmd = [str(py_spy), "record", "--rate", str(rate), "--format", "raw", "--output", str(raw), *flags, "--", *m.command]
        done = subprocess.run(cmd, cwd=m.cwd, env=env, capture_output=True, timeout=timeout_s, check=False)
        if not raw.exists():
            notes.append(f"{view}: py-spy failed: {done.stderr.decode(errors='replace').strip()[-300:]}")
    sections = [f"# Profile: {m.workload} {m.key} — {m.label}", "",
                f"Command (cwd `{m.cwd}`): `{' '.join(m.command)}`", "",
                f"Measured median: {m.median_s:.3f} s ({m.mode}); targets: "
                + ", ".join(f"{t.text} → {'met' if t.met(m) else 'MISSED'}" for t in m.targets), ""]
    timed = (lambda frames: any(f.startswith("_timed (") for f in frames)) if m.mode == "in-process" else (lambda frames: True)
    wall, cpu = Path(f"{stem}.wall.txt"), Path(f"{stem}.cpu.txt")
    if wall.exists():
        total, own, incl = summarize(_main_thread(parse_raw(wall)), keep=timed)
        scope = "main thread, timed call only" if m.mode == "in-process" else "main thread, whole process"
        sections += [_table(f"Wall time by self time ({scope}, idle included)", own, total, rate),
                     _table(f"Wall time by inclusive time ({scope})", incl, total, rate)]
    if cpu.exists():
        total, own, incl = summarize(parse_raw(cpu))
        sections += [_table("CPU by self time (all threads, running samples, whole process)", own, total, rate),
                     _table("CPU by inclusive time (all threads, whole process)", incl, total, rate)]
    sections += notes
    summary = Path(f"{stem}.summary.md")
    summary.write_text("\n".join(sections) + "\n")
    return summary
