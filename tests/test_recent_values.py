"""Values a store has just written are read back from memory (assetflow.recent): exactly what the
file would give, a fresh object per reader, bounded, and forgotten when deleted.

Real files in ``tmp_path``; where a test must prove the filesystem was *not* touched, the read or
existence check is replaced by one that fails the test.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

import assetflow.recent as recent
import assetflow.values as values
from assetflow.recent import RecentValues
from assetflow.values import ValueMissingError, ValueStore


def _no_filesystem_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("read the file")

    monkeypatch.setattr(values, "_read_local", refuse)


def test_a_value_written_through_a_store_is_read_back_without_the_filesystem(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ValueStore(str(tmp_path / "data"))
    raw = store.put("a", b"payload")
    obj = store.put("b", {"rows": [1, 2]})
    _no_filesystem_reads(monkeypatch)

    assert store.get(raw.path, raw.format) == b"payload"
    first, second = store.get(obj.path, obj.format), store.get(obj.path, obj.format)
    first["rows"].append(3)  # each reader decodes its own object, as from the file
    assert second == {"rows": [1, 2]} and store.get(obj.path, obj.format) == {"rows": [1, 2]}


def test_a_value_another_store_wrote_is_read_from_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written = ValueStore(str(tmp_path / "data")).put("a", b"payload")
    reader = ValueStore(str(tmp_path / "data"))  # like another process
    assert reader.get(written.path, written.format) == b"payload"
    _no_filesystem_reads(monkeypatch)
    with pytest.raises(AssertionError, match="read the file"):
        reader.get(written.path, written.format)


def test_storing_known_content_again_checks_nothing_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ValueStore(str(tmp_path / "data"))
    first = store.put("a", pa.table({"x": [1, 2, 3]}))

    def refuse(self, full):
        raise AssertionError("checked the file")

    monkeypatch.setattr(ValueStore, "_size_if_present", refuse)
    assert store.put("a", pa.table({"x": [1, 2, 3]})) == first


def test_a_deleted_value_is_forgotten(tmp_path: Path) -> None:
    store = ValueStore(str(tmp_path / "data"))
    stored = store.put("a", b"payload")
    assert store.delete(stored.path) == len(b"payload")
    with pytest.raises(ValueMissingError):
        store.get(stored.path, stored.format)
    assert store.put("a", b"payload") == stored  # and written again, not skipped as known
    assert (tmp_path / "data" / stored.path).read_bytes() == b"payload"


def test_memory_is_bounded_oldest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recent, "MAX_VALUE_BYTES", 4)
    monkeypatch.setattr(recent, "MAX_TOTAL_BYTES", 8)
    monkeypatch.setattr(recent, "MAX_PATHS", 3)
    kept = RecentValues()
    kept.remember("big", 5, b"12345")  # over the per-value limit: its size only
    assert (kept.size("big"), kept.encoded("big")) == (5, None)
    for name in ("p", "q", "r"):
        kept.remember(name, 4, name.encode() * 4)
    # 12 bytes > 8: p's bytes went first; 4 paths > 3: "big" went first
    assert [kept.encoded(n) for n in ("p", "q", "r")] == [None, b"qqqq", b"rrrr"]
    assert [kept.size(n) for n in ("big", "p", "q", "r")] == [None, 4, 4, 4]
    kept.forget("q")
    assert (kept.size("q"), kept.encoded("q")) == (None, None)
    kept.remember("s", 2, b"ss")
    assert [kept.encoded(n) for n in ("r", "s")] == [b"rrrr", b"ss"]  # 6 bytes: nothing else dropped
