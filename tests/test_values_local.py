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


def test_a_forked_child_names_its_temp_files_apart_from_its_parent() -> None:
    # Temp names are a per-process token and a counter (no syscall per value): a forked child, whose
    # counter starts where the parent's was, must still never pick the parent's names.
    import os

    from assetflow import values

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next name and leave without running pytest's teardown
        os.write(write_end, values._temp_name("folder", "v.bin").encode())
        os._exit(0)
    os.close(write_end)
    child = os.read(read_end, 1000).decode()
    os.waitpid(pid, 0)
    parent = values._temp_name("folder", "v.bin")
    assert child.startswith("folder/" + values.TEMP_PREFIX) and parent.startswith("folder/" + values.TEMP_PREFIX)
    assert child.split("-")[1][:12] != parent.split("-")[1][:12]


def test_a_value_read_in_short_pieces_is_read_to_its_end(tmp_path: Path) -> None:
    # Linux returns at most ~2 GiB per read; the reader goes on until the file's end.
    import os

    from assetflow import values

    payload = bytes(range(256)) * 40
    (tmp_path / "v.bin").write_bytes(payload)
    calls: list[int] = []

    def short(fd: int, n: int) -> bytes:
        calls.append(n)
        return os.read(fd, min(n, 1000))

    assert values._read_local(str(tmp_path / "v.bin"), short) == payload
    assert len(calls) > 10
    assert values._read_local(str(tmp_path / "v.bin")) == payload


def test_values_of_assets_listed_as_absent_create_their_folders(tmp_path: Path) -> None:
    # An asset whose folder a listing found absent skips the existence check and makes its folder up
    # front (the data root too, when that is new); a value another writer stored after the listing is
    # written again, identically, and both stores read it back.
    from assetflow.values import ValueStore

    store = ValueStore(str(tmp_path / "data"))
    assert store.list_paths(["a", "b", "nested/c"]) == set()  # the root itself does not exist yet
    first = store.put("a", b"one")
    again = store.put("a", b"one again")  # the folder this store has made since
    other = ValueStore(str(tmp_path / "data")).put("b", b"two")  # after our listing
    second = store.put("b", b"two")
    nested = store.put("nested/c", b"three")
    assert second == other
    assert [store.get(v.path, v.format) for v in (first, again, second, nested)] == [
        b"one", b"one again", b"two", b"three"]
    assert store.list_paths(["a", "b", "nested/c"]) == {first.path, again.path, second.path, nested.path}
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["a", "b", "nested"]
