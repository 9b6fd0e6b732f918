"""Profiles of missed targets, with py-spy (``--profile``).

Each measurement that misses a target is run once more under ``py-spy record`` twice:

* **wall** (``--idle --threads``): every sample of the main thread, waiting included — where the
  elapsed time goes;
* **cpu** (default): samples of threads that are running — where the work is.

The raw collapsed stacks (``*.wall.txt`` / ``*.cpu.txt``, py-spy's ``raw`` format) and
a summary (``*.summary.md``: top frames by self time and by inclusive time) are written under
``benchmarks/.work/profiles/``. Import time is folded into one ``[import]`` pseudo-frame so it shows as
one line. For in-process measurements the wall view keeps only stacks inside the timed call.
``python -m benchmarks.profiling RESULTS.json [--py-spy PATH] [KEY ...]`` profiles the missed targets
(or the given ``W3.1000x365.0pct.inproc``-style keys) of an earlier run without measuring again.
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

from benchmarks import trash
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


def imports(stacks: list[tuple[list[str], int]], *, keep: Callable[[list[str]], bool] = lambda s: True,
            top: int = 8) -> list[tuple[str, int]]:
    """Samples spent importing, by (code that triggered the import → top-level package imported)."""
    found: Counter[str] = Counter()
    for frames, count in stacks:
        frames = [f for f in frames if not f.startswith("thread (")]
        if not keep(frames) or not any(f.startswith("_find_and_load (") for f in frames):
            continue
        first = next(i for i, f in enumerate(frames) if f.startswith("_find_and_load ("))
        trigger = _FRAME.match(frames[first - 1]) if first else None
        where = f"{trigger['func']} ({'/'.join(Path(trigger['file']).parts[-2:])}:{trigger['line']})" if trigger else "?"
        module = next((f for f in frames[first:] if f.startswith("<module> (") and "<frozen" not in f), "")
        match = _FRAME.match(module)
        package = "?"
        if match:
            path = match["file"]
            package = path.split("site-packages/")[1].split("/")[0] if "site-packages/" in path else Path(path).parent.name
        found[f"{where} → {package}"] += count
    return found.most_common(top)


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
    return write_summary(m, stem, rate, notes)


def write_summary(m: Measurement, stem: Path, rate: int = 250, notes: list[str] | None = None) -> Path:
    """Summarize the raw profiles ``{stem}.wall.txt`` / ``{stem}.cpu.txt`` of ``m`` into ``{stem}.summary.md``."""
    sections = [f"# Profile: {m.workload} {m.key} — {m.label}", "",
                f"Command (cwd `{m.cwd}`): `{' '.join(m.command)}`", "",
                f"Measured median: {m.median_s:.3f} s ({m.mode}); targets: "
                + ", ".join(f"{t.text} → {'met' if t.met(m) else 'MISSED'}" for t in m.targets), ""]
    timed = (lambda frames: any(f.startswith("_timed (") for f in frames)) if m.mode == "in-process" else (lambda frames: True)
    wall, cpu = Path(f"{stem}.wall.txt"), Path(f"{stem}.cpu.txt")
    if wall.exists():
        main_stacks = _main_thread(parse_raw(wall))
        total, own, incl = summarize(main_stacks, keep=timed)
        scope = "main thread, timed call only" if m.mode == "in-process" else "main thread, whole process"
        sections += [_table(f"Wall time by self time ({scope}, idle included)", own, total, rate),
                     _table(f"Wall time by inclusive time ({scope})", incl, total, rate),
                     _table(f"{IMPORT} breakdown ({scope}): code that triggered the import → package",
                            imports(main_stacks, keep=timed), total, rate)]
    if cpu.exists():
        total, own, incl = summarize(parse_raw(cpu))
        sections += [_table("CPU by self time (all threads, running samples, whole process)", own, total, rate),
                     _table("CPU by inclusive time (all threads, whole process)", incl, total, rate)]
    sections += notes or []
    summary = Path(f"{stem}.summary.md")
    summary.write_text("\n".join(sections) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    """Profile missed targets (or the given keys) of an existing results.json."""
    import argparse
    import json

    from benchmarks import projects
    from benchmarks.measure import child_env, work_lock

    parser = argparse.ArgumentParser(prog="python -m benchmarks.profiling", description=main.__doc__)
    parser.add_argument("results", type=Path)
    parser.add_argument("keys", nargs="*", help="measurements to profile (default: every missed target)")
    parser.add_argument("--py-spy", metavar="PATH")
    args = parser.parse_args(argv)
    py_spy = find_py_spy(args.py_spy)
    if py_spy is None:
        parser.error("py-spy not found (pip install py-spy, or --py-spy PATH)")
    document = json.loads(args.results.read_text())
    env = child_env({"ASSETFLOW_NOW": projects.NOW}, pythonpath=True)
    with work_lock(WORK, print):
        try:
            _profile_document(document, args.keys, env, py_spy)
        finally:
            trash.empty()
    return 0


def _profile_document(document: dict, keys: list[str], env: dict[str, str], py_spy: Path) -> None:
    """Profile the selected measurements of a results document."""
    from benchmarks.workloads import Prepare

    for wid, workload in document["workloads"].items():
        for key, data in workload["measurements"].items():
            m = Measurement.from_json(data)
            full = f"{wid}.{key}"
            if (keys and full not in keys) or (not keys and m.met() is not False):
                continue
            prepare = Prepare.from_json(m.extra["prepare"]) if "prepare" in m.extra else None
            print(f"profiling {full} …", flush=True)
            print(f"  {profile(m, env, py_spy, prepare)}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
