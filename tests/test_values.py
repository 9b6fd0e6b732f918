"""One contract for every value-store backend, plus a real crash test for local atomic writes."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from assetflow.errors import StoreError
from assetflow.hashing import data_version
from assetflow.values import TEMP_PREFIX, StoredValue, ValueMissingError, ValueStore

REPO = Path(__file__).resolve().parents[1]
BUCKET = "assetflow-test"
_S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


# --- backends ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """An S3-compatible moto server on loopback, with one bucket; tests use a fresh prefix each."""
    s3fs = pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    saved = {name: os.environ.get(name) for name in _S3_CREDENTIALS}
    os.environ.update(_S3_CREDENTIALS)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True).mkdir(BUCKET)
        yield endpoint
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(params=["local", "memory", "s3", "dirfs"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ValueStore]:
    """A fresh, empty value store on each backend (``dirfs`` exercises the temp-key-and-move writes)."""
    if request.param == "local":
        yield ValueStore(str(tmp_path / "data"))
    elif request.param == "dirfs":
        yield ValueStore("dir://", {"path": str(tmp_path / "data"), "target_protocol": "file"})
    elif request.param == "memory":
        url = f"memory://assetflow-test-{uuid.uuid4().hex}"
        yield ValueStore(url)
        fs, root = fsspec.core.url_to_fs(url)
        if fs.exists(root):
            fs.rm(root, recursive=True)
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        yield ValueStore(f"s3://{BUCKET}/{uuid.uuid4().hex}", {"endpoint_url": endpoint})


def _raw(store: ValueStore) -> tuple[fsspec.AbstractFileSystem, str]:
    """The store's filesystem and root, opened independently, to look behind its back."""
    fs, root = fsspec.core.url_to_fs(store.url, **store.storage_options)
    return fs, root.rstrip("/")


# --- values of every format --------------------------------------------------------------------------


def _table() -> pa.Table:
    return pa.table(
        {
            "i": pa.array([1, None, 3], pa.int64()),
            "s": ["a", None, "ccc"],
            "d": pa.array(["x", "y", "x"]).dictionary_encode(),
            "ts": pa.array([1, 2, None], pa.timestamp("us", tz="UTC")),
            "l": [[1, 2], None, []],
        }
    ).replace_schema_metadata({"origin": "test"})


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"a": [1.5, None, 3.0], "b": ["x", "y", None]}, index=pd.Index([10, 20, 30], name="k"))


def _same_table(got: object, expected: Any) -> None:
    # Same schema (names, types, nested field names, metadata) and same rows. Not Table.equals: an
    # empty dictionary column legitimately comes back with an empty dictionary.
    assert isinstance(got, pa.Table)
    assert got.schema.equals(expected.schema, check_metadata=True)
    assert got.to_pylist() == expected.to_pylist()


def _same_frame(got: object, expected: Any) -> None:
    assert isinstance(got, pd.DataFrame)
    pd.testing.assert_frame_equal(got, expected)


def _same(got: object, expected: Any) -> None:
    assert type(got) is type(expected) and got == expected


def _same_bytes(got: object, expected: Any) -> None:
    assert isinstance(got, bytes) and got == bytes(expected)


# (value factory, format, extension, how to compare what get returns)
_CASES: dict[str, tuple[Callable[[], object], str, str, Callable[[object, Any], None]]] = {
    "arrow table": (_table, "parquet", "parquet", _same_table),
    "record batch": (lambda: _table().combine_chunks().to_batches()[0], "parquet", "parquet",
                     lambda got, batch: _same_table(got, pa.Table.from_batches([batch]))),
    "empty table": (lambda: _table().slice(0, 0), "parquet", "parquet", _same_table),
    "pandas": (_frame, "pandas", "parquet", _same_frame),
    "pandas default index": (lambda: _frame().reset_index(drop=True), "pandas", "parquet", _same_frame),
    "bytes": (lambda: b"\x00payload\xff", "bytes", "bin", _same_bytes),
    "bytearray": (lambda: bytearray(b"mutable"), "bytes", "bin", _same_bytes),
    "empty bytes": (lambda: b"", "bytes", "bin", _same_bytes),
    "str": (lambda: "héllo", "pickle", "pkl", _same),
    "pickle": (lambda: {"k": [1, 2.5, None], "t": (1, "x")}, "pickle", "pkl", _same),
}


@pytest.mark.parametrize("case", list(_CASES))
def test_put_get_round_trip(store: ValueStore, case: str) -> None:
    make, fmt, ext, check = _CASES[case]
    value = make()
    stored = store.put("features", value)
    assert stored == StoredValue(
        path=f"features/{data_version(value)}.{ext}", format=fmt, size=stored.size, content_hash=data_version(value)
    )
    assert stored.size == store.size(stored.path)
    assert stored.size > 0 or fmt == "bytes"
    got = store.get(stored.path, stored.format)
    check(got, value)
    assert data_version(got) == stored.content_hash


def test_polars_round_trip(store: ValueStore) -> None:
    pl = pytest.importorskip("polars")
    frame = pl.DataFrame({"a": [1, None, 3], "s": ["x", "y", None]})
    stored = store.put("p", frame)
    assert stored.format == "polars" and stored.path.endswith(".parquet")
    got = store.get(stored.path, "polars")
    assert isinstance(got, pl.DataFrame) and got.equals(frame)
    assert data_version(got) == stored.content_hash


# --- content addressing --------------------------------------------------------------------------------


def test_same_content_same_path_written_once(store: ValueStore) -> None:
    table = _table()
    first = store.put("a", table)
    # Same rows, other layout: same version, same path.
    again = store.put("a", pa.Table.from_batches(table.to_batches(max_chunksize=1)))
    assert again == first
    # Prove the second put did not write: replace the bytes behind the store's back, put again (through
    # a store that did not write the file itself, like another process), and the tampered bytes must
    # still be there (a content-addressed path is never rewritten).
    fs, root = _raw(store)
    fs.pipe_file(f"{root}/{first.path}", b"tampered")
    third = ValueStore(store.url, store.storage_options).put("a", table)
    assert third.path == first.path and third.size == len(b"tampered")
    assert fs.cat_file(f"{root}/{first.path}") == b"tampered"
    assert store.list_paths(["a"]) == {first.path}


def test_different_content_different_paths(store: ValueStore) -> None:
    paths = {store.put("a", v).path for v in (b"1", "1", 1, _table(), _table().slice(1))}
    assert len(paths) == 5


def test_same_content_in_two_assets_is_stored_twice(store: ValueStore) -> None:
    a, b = store.put("a", b"x"), store.put("b", b"x")
    assert a.content_hash == b.content_hash and a.path != b.path
    assert store.list_paths(["a", "b"]) == {a.path, b.path}


# --- listing, existence, deletion --------------------------------------------------------------------


def test_list_paths_sees_puts_and_ignores_temp_and_foreign_files(store: ValueStore) -> None:
    a1, a2 = store.put("a", b"one"), store.put("a", _table())
    nested = store.put("a/sub", b"nested")
    c1 = store.put("c", {"x": 1})
    fs, root = _raw(store)
    fs.pipe_file(f"{root}/a/{TEMP_PREFIX}0123-{a1.content_hash}.bin", b"partial")
    fs.pipe_file(f"{root}/a/notes.txt", b"not a value")
    assert store.list_paths(["a", "c"]) == {a1.path, a2.path, c1.path}
    assert store.list_paths(["a/sub"]) == {nested.path}
    assert store.list_paths(["missing", "c", "c"]) == {c1.path}
    assert store.list_paths([]) == set()


def test_list_paths_notices_deletions_behind_the_stores_back(store: ValueStore) -> None:
    kept, gone = store.put("a", b"kept"), store.put("a", b"gone")
    assert store.list_paths(["a"]) == {kept.path, gone.path}
    fs, root = _raw(store)
    fs.rm_file(f"{root}/{gone.path}")
    assert store.list_paths(["a"]) == {kept.path}
    assert not store.exists(gone.path)


def test_exists(store: ValueStore) -> None:
    path = f"a/{data_version(b'v')}.bin"
    assert not store.exists(path)
    assert store.put("a", b"v").path == path
    assert store.exists(path)
    assert not store.exists("a")  # a folder is not a value


def test_delete_frees_bytes(store: ValueStore) -> None:
    stored = store.put("a", _table())
    assert store.delete(stored.path) == stored.size > 0
    assert not store.exists(stored.path)
    assert store.list_paths(["a"]) == set()
    assert store.delete(stored.path) == 0
    with pytest.raises(ValueMissingError, match="missing"):
        store.size(stored.path)
    with pytest.raises(FileNotFoundError):  # a ValueMissingError is both
        store.get(stored.path, stored.format)


def test_put_after_delete_writes_again(store: ValueStore) -> None:
    stored = store.put("a", b"back")
    store.delete(stored.path)
    assert store.put("a", b"back") == stored
    assert store.get(stored.path, "bytes") == b"back"


def test_store_survives_pickling(store: ValueStore) -> None:
    stored = store.put("a", b"shipped")
    clone = pickle.loads(pickle.dumps(store))
    assert set(clone.__getstate__()) == {"url", "storage_options"}
    assert clone.url == store.url
    assert clone.get(stored.path, "bytes") == b"shipped"
    assert clone.put("a", b"from worker").path in store.list_paths(["a"])


@pytest.mark.parametrize("path", ["../escape.bin", "/abs.bin", "a/../b.bin", "a//b.bin", "", "a/./b.bin", ".",
                                  "a\\b.bin", "a/", "..", "./a.bin"])
def test_paths_outside_the_root_are_refused(store: ValueStore, path: str) -> None:
    with pytest.raises(StoreError, match="invalid path"):
        store.get(path, "bytes")


def test_unknown_format_is_refused(store: ValueStore) -> None:
    stored = store.put("a", b"x")
    with pytest.raises(StoreError, match="unknown value format"):
        store.get(stored.path, "feather")


# --- local only ----------------------------------------------------------------------------------------


def test_root_that_is_a_file_is_a_store_error(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("x")
    for url in (str(file), str(file / "below")):
        with pytest.raises(StoreError) as caught:
            ValueStore(url)
        assert url in str(caught.value) and "\n" not in str(caught.value)


def test_unknown_protocol_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="nosuchproto://bucket/x"):
        ValueStore("nosuchproto://bucket/x")


def test_relative_root_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = ValueStore("data")
    assert store.url == str(tmp_path / "data")
    stored = store.put("a", b"x")
    monkeypatch.chdir("/")  # a worker with another cwd still finds it
    assert pickle.loads(pickle.dumps(store)).get(stored.path, "bytes") == b"x"


def test_local_put_leaves_no_temp_files(tmp_path: Path) -> None:
    store = ValueStore(str(tmp_path))
    store.put("a", _table())
    store.put("a", b"x")
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(TEMP_PREFIX)]


_WRITER = """
import sys
import numpy as np, pyarrow as pa
from assetflow.values import ValueStore
store, rows = ValueStore(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(int(sys.argv[3]))
while True:  # keep writing fresh tables until killed
    store.put("big", pa.table({"a": rng.integers(0, 2**62, rows), "b": rng.random(rows)}))
"""


def _kill_while_writing(root: Path, seed: int, delay: float) -> bool:
    """Run a writer, SIGKILL it ``delay`` s after a temp file appears; True if one was left behind."""
    folder = root / "big"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", _WRITER, str(root), str(3_000_000), str(seed)], env=env)
    try:
        deadline = time.monotonic() + 20
        while not (folder.is_dir() and any(p.name.startswith(TEMP_PREFIX) for p in folder.iterdir())):
            assert child.poll() is None, "writer died on its own"
            assert time.monotonic() < deadline, "writer never started writing"
            time.sleep(0.001)
        time.sleep(delay)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    return any(p.name.startswith(TEMP_PREFIX) for p in folder.iterdir())


@pytest.mark.slow
def test_sigkill_mid_write_never_leaves_a_bad_value(tmp_path: Path) -> None:
    caught_mid_write = 0
    for seed, delay in enumerate([0.0, 0.05, 0.4]):
        root = tmp_path / f"run{seed}"
        caught_mid_write += _kill_while_writing(root, seed, delay)
        store = ValueStore(str(root))
        for path in store.list_paths(["big"]):
            # Every value visible at a final path must be complete: parse, and hash to its name.
            table = pq.read_table(root / path)
            assert data_version(table) == Path(path).stem, f"{path} holds other content than its name says"
            assert store.put("big", table).path == path
    assert caught_mid_write, "no kill landed mid-write: the test proved nothing"


def test_local_write_is_durable_and_readable_by_another_process(tmp_path: Path) -> None:
    store = ValueStore(str(tmp_path))
    stored = store.put("a", pa.table({"x": np.arange(1000)}))
    code = (
        "import sys, pickle; from assetflow.hashing import data_version; "
        "store = pickle.loads(bytes.fromhex(sys.argv[1])); "
        "print(data_version(store.get(sys.argv[2], 'parquet')))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-c", code, pickle.dumps(store).hex(), stored.path]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == stored.content_hash
