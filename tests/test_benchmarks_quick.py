"""The benchmark suite keeps running: ``python -m benchmarks --quick`` produces a figure for every workload.

This checks that the benchmarks run and report, never how fast anything is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from numbers import Real
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6")


@pytest.mark.timeout(600)
def test_quick_benchmarks_produce_every_workload(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out", str(out),
                           "--work", str(tmp_path / "work")], cwd=REPO,
                          capture_output=True, text=True, timeout=580)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())

    assert set(WORKLOADS) <= set(results["workloads"])
    for wid in WORKLOADS:
        measurements = results["workloads"][wid]["measurements"]
        assert measurements, f"{wid} has no measurements"
        for key, m in measurements.items():
            assert m["error"] is None, f"{wid} {key}: {m['error']}"
            assert isinstance(m["median_s"], Real) and m["median_s"] > 0, f"{wid} {key}: median {m['median_s']!r}"
            assert isinstance(m["rate"], Real), f"{wid} {key}: rate {m['rate']!r}"
            assert isinstance(m["peak_rss_mib"], Real) and m["peak_rss_mib"] > 0, f"{wid} {key}"
            assert len(m["runs_s"]) == 1
    assert results["meta"]["quick"] is True
    # W1's figures sit beside the floor of their mode: the engine-less run in-process, the bare imports
    # for a whole CLI process.
    w1 = results["workloads"]["W1"]["measurements"]
    assert w1["unpartitioned.cli"]["extra"]["floor_s"] == w1["unpartitioned.cli_floor"]["median_s"]
    assert w1["partitioned.inproc"]["extra"]["floor_s"] == w1["partitioned.floor"]["median_s"]
    # Scratch folders are moved aside between runs and deleted once measuring is over.
    assert not list((tmp_path / "work").rglob(".bench-trash"))


def test_a_discarded_folder_is_moved_aside_until_the_trash_is_emptied(tmp_path: Path) -> None:
    from benchmarks import trash

    run = tmp_path / "project" / "run"
    (run / "data").mkdir(parents=True)
    (run / "data" / "value.bin").write_bytes(b"x")
    trash.discard(run)
    assert not run.exists()
    kept = list((tmp_path / "project" / trash.NAME).glob("*/data/value.bin"))
    assert [p.read_bytes() for p in kept] == [b"x"]  # nothing freed while runs are being measured
    trash.discard(tmp_path / "project" / "never-made")  # nothing to move: no error, no trash entry
    trash.empty()
    assert not (tmp_path / "project" / trash.NAME).exists()
