"""Presenting results: the rich table on the terminal, ``results.json`` and the Markdown section."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.model import Measurement, PeerFigure
from benchmarks.workloads import Workload


def machine() -> dict[str, Any]:
    """What the figures were measured on (``nproc``, ``lscpu | head``, memory, load, versions)."""
    def run(cmd: str) -> str:
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    mem = run("grep MemTotal /proc/meminfo")
    versions = {"python": platform.python_version()}
    for module in ("assetflow", "duckdb", "pyarrow", "numpy", "xxhash"):
        try:
            versions[module] = __import__(module).__version__
        except (ImportError, AttributeError):
            pass
    return {"nproc": run("nproc"), "lscpu": run("lscpu | head -15"), "memory": mem,
            "platform": platform.platform(), "versions": versions, "loadavg_start": os.getloadavg()}


def source_digest() -> str:
    """An xxh3 digest of assetflow's source files: identifies the code state the figures belong to
    (the harness compares it at start and end and warns when the code changed mid-run)."""
    import xxhash

    from benchmarks.measure import REPO

    digest = xxhash.xxh3_64()
    for path in sorted((REPO / "assetflow").rglob("*.py")):
        digest.update(str(path.relative_to(REPO)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds * 1e3:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _fmt_rate(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    return f"{value:,.2f} {unit}" if value < 100 else f"{value:,.0f} {unit}"


def _peer_cell(figure: PeerFigure, unit: str) -> str:
    if figure.seconds is None:
        return figure.note if figure.note.startswith("—") else f"— {figure.note}"
    mark = "≈" if figure.extrapolated else ""
    ratio = f" → ×{figure.ratio:,.0f}" if figure.ratio and figure.ratio >= 10 else (
        f" → ×{figure.ratio:.2f}" if figure.ratio else "")
    return f"{mark}{_fmt_s(figure.seconds)} ({_fmt_rate(figure.rate, unit)}){ratio}"


def _floor_note(m: Measurement, sep: str) -> str:
    """``sep`` + ``× 3.1 floor`` for a figure measured next to its floor (W1: its time over the floor's
    time, see benchmarks/floor.py), else ""."""
    ratio = m.extra.get("floor_ratio")
    return f"{sep}× {ratio:.1f} floor" if ratio else ""


def _peers(m: Measurement, name: str) -> list[PeerFigure]:
    """Figures of peer ``name`` to show for ``m``: none for a floor (no engine there to compare with)."""
    return [] if m.key.endswith((".floor", ".cli_floor")) else [f for f in m.peers if f.peer.startswith(name)]


def _verdict(m: Measurement) -> str:
    met = m.met()
    if m.error:
        return "ERROR"
    return "—" if met is None else ("met" if met else "MISSED")


def print_table(workloads: list[Workload], peers: bool) -> None:
    """The summary table on the terminal."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="assetflow benchmarks (median of runs; each run a fresh process)", show_lines=False)
    for column in ("WL", "measurement", "mode", "median", "cpu", "rate", "peak RSS", "target", "verdict"):
        table.add_column(column, no_wrap=column in ("WL", "mode", "verdict"))
    if peers:
        table.add_column("Dagster (ratio)")
        table.add_column("Prefect (ratio)")
    for wl in workloads:
        for m in wl.measurements:
            verdict = _verdict(m)
            style = {"met": "green", "MISSED": "red", "ERROR": "bold red"}.get(verdict, "")
            row = [wl.id, f"{m.key}\n{m.label}" if not m.error else f"{m.key}\n{m.error}", m.mode, _fmt_s(m.median_s),
                   _fmt_s(m.median_cpu_s), _fmt_rate(m.rate, m.rate_unit) + _floor_note(m, "\n"),
                   f"{m.peak_rss_mib:.0f} MiB" if m.peak_rss_mib else "—", "; ".join(t.text for t in m.targets) or "—",
                   f"[{style}]{verdict}[/]" if style else verdict]
            if peers:
                for name in ("dagster", "prefect"):
                    row.append("\n".join(_peer_cell(f, m.rate_unit) for f in _peers(m, name)) or "—")
            table.add_row(*row)
        table.add_section()
    Console(width=max(160, Console().width)).print(table)


def results_document(workloads: list[Workload], meta: dict[str, Any]) -> dict[str, Any]:
    """The content of results.json."""
    return {
        "meta": meta,
        "workloads": {
            wl.id: {"title": wl.title, "shape": wl.shape, "method": wl.method,
                    "measurements": {m.key: m.to_json() for m in wl.measurements}}
            for wl in workloads
        },
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write results.json atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, indent=2, default=str) + "\n")
    tmp.replace(path)


def markdown(workloads: list[Workload], meta: dict[str, Any], command: str) -> str:
    """A draft "## Performance" README section from the results."""
    lines = ["## Performance", "",
             f"Measured {meta['finished_at'][:10]} on {meta['machine']['nproc']} CPUs "
             f"({_cpu_model(meta['machine']['lscpu'])}), {_memory(meta['machine']['memory'])} RAM, "
             f"Python {meta['machine']['versions'].get('python')}; every figure is the median of "
             f"{meta['runs']} runs (peers: {meta.get('peer_runs', meta['runs'])}), each in a fresh process. Reproduce with:", "", "```sh", command, "```", "",
             "| workload | measurement | assetflow | per item | peak RSS | target | Dagster | Prefect |",
             "| --- | --- | ---: | ---: | ---: | --- | --- | --- |"]
    for wl in workloads:
        for m in wl.measurements:
            target = "; ".join(t.text for t in m.targets)
            verdict = _verdict(m)
            target_cell = f"{target} — **{verdict}**" if target else "—"
            cells = {name: "<br>".join(_peer_cell(f, m.rate_unit) for f in _peers(m, name)) or "—"
                     for name in ("dagster", "prefect")}
            lines.append(f"| {wl.id} {wl.title.split(':')[0]} | {m.label} ({m.mode}) | {_fmt_s(m.median_s)} | "
                         f"{_fmt_rate(m.rate, m.rate_unit)}{_floor_note(m, '<br>')} | {m.peak_rss_mib or 0:.0f} MiB | "
                         f"{target_cell} | {cells['dagster']} | {cells['prefect']} |")
    lines += ["", ("Ratios (×N) are assetflow's items per second over the peer's; ≈ marks a peer figure "
                   "extrapolated from a timed sample (stated in results.json). × N floor: assetflow's time over "
                   "its mode's floor, measured alongside: in-process, the same work with no engine "
                   "(benchmarks/floor.py); CLI, a process that only imports assetflow's dependencies."), ""]
    for wl in workloads:
        lines.append(f"- **{wl.id}** {wl.title} — {wl.shape}. {wl.method}.")
    return "\n".join(lines) + "\n"


def _memory(meminfo: str) -> str:
    """``MemTotal:  24684096 kB`` → ``23.5 GiB``."""
    parts = meminfo.split()
    return f"{int(parts[1]) / 1024**2:.1f} GiB" if len(parts) >= 2 and parts[1].isdigit() else "unknown"


def _cpu_model(lscpu: str) -> str:
    for line in lscpu.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def stamp() -> str:
    """Now, for the record."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def command_line() -> str:
    """How this invocation was started."""
    return " ".join(["python -m benchmarks", *sys.argv[1:]])
