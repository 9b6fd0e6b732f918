"""A data root that is a plain local path is served with os calls alone: fsspec, which costs ~60 ms
to import, is loaded only for URLs. Checked in a fresh interpreter, through every operation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_SCRIPT = """
import sys
from assetflow.values import ValueStore

store = ValueStore(sys.argv[1])
stored = store.put("features", b"payload")
assert store.exists(stored.path) and store.size(stored.path) == len(b"payload")
assert store.get(stored.path, stored.format) == b"payload"
assert store.list_paths(["features", "nothing_yet"]) == {stored.path}
store.sync()
assert store.delete(stored.path) == len(b"payload") and not store.exists(stored.path)
print("fsspec imported:", "fsspec" in sys.modules)
"""


def test_a_local_data_root_never_imports_fsspec(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path / "data")], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "fsspec imported: False"


def test_a_file_url_root_still_goes_through_fsspec(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", _SCRIPT, f"file://{tmp_path / 'data'}"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "fsspec imported: True"
