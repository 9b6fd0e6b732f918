"""Data versions must follow content, never layout: these tests pin both directions."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assetflow.hashing import data_version, hash_bytes, normalize

REPO = Path(__file__).resolve().parents[1]


def _mixed_table() -> pa.Table:
    """One column of every family the hasher treats differently, each with nulls."""
    return pa.table(
        {
            "i64": pa.array([1, None, 3, 4, 5, None, 7, 8], pa.int64()),
            "i8": pa.array([1, 2, 3, 4, 5, 6, 7, 8], pa.int8()),
            "f64": [1.5, 2.5, None, 4.0, -0.5, 6.0, 7.25, 8.0],
            "bool": [True, None, False, True, True, False, None, True],
            "str": ["a", None, "ccc", "", "e", "ff", None, "hhhh"],
            "lstr": pa.array(["x", "y", None, "zz", "", "w", "v", "u"], pa.large_string()),
            "bin": pa.array([b"\x00", b"\x01\x02", None, b"", b"e", b"f", b"g", b"h"], pa.binary()),
            "fsb": pa.array([b"ab", b"cd", None, b"ef", b"gh", b"ij", b"kl", b"mn"], pa.binary(2)),
            "dict": pa.array(["x", "y", "x", None, "y", "x", "z", "z"]).dictionary_encode(),
            "ts": pa.array([1, 2, 3, None, 5, 6, 7, 8], pa.timestamp("ms", tz="UTC")),
            "date": pa.array([dt.date(2024, 1, d) for d in range(1, 9)]),
            "dec": pa.array([1, 2, 3, 4, None, 6, 7, 8]).cast(pa.decimal128(30, 2)),
            "null": pa.nulls(8),
            "list": [[1], [2, 3], None, [], [5], [6, 7], None, [8]],
            "struct": [{"x": 1}, {"x": 2}, None, {"x": 4}, {"x": None}, {"x": 6}, {"x": 7}, {"x": 8}],
            "view": pa.array(["a", "b", None, "d", "e", "f", "g", "h"], pa.string_view()),
        }
    )


# --- layout independence -----------------------------------------------------------------------------


def _layouts(table: pa.Table) -> dict[str, pa.Table]:
    """The same rows laid out in every way we know of."""
    padded = pa.concat_tables([table.slice(0, 3), table, table.slice(2)])
    return {
        "combined": table.combine_chunks(),
        "one row per chunk": pa.Table.from_batches(table.to_batches(max_chunksize=1)),
        "slice of a bigger table": padded.slice(3, table.num_rows),
        "chunked slice of a bigger table": pa.Table.from_batches(
            padded.slice(3, table.num_rows).to_batches(max_chunksize=3)
        ),
        "with empty chunks": pa.concat_tables(
            [table.slice(0, 0), table.slice(0, 5), table.slice(5, 0), table.slice(5)]
        ),
        "record batch": table.combine_chunks().to_batches()[0],  # type: ignore[dict-item]
    }


@pytest.mark.parametrize("layout", list(_layouts(_mixed_table())))
def test_layout_does_not_change_the_version(layout: str) -> None:
    table = _mixed_table()
    assert data_version(_layouts(table)[layout]) == data_version(table)


def test_dictionary_encoding_does_not_change_the_version() -> None:
    plain = pa.table({"s": ["x", "y", None, "x"], "i": [1, 2, 1, None]})
    encoded = pa.table({"s": plain["s"].dictionary_encode(), "i": plain["i"].dictionary_encode()})
    assert data_version(encoded) == data_version(plain)


def test_string_views_hash_like_their_values() -> None:
    # Views can share or scatter buffers arbitrarily; only the strings count.
    values = ["short", None, "a string longer than twelve bytes", ""]
    a = pa.table({"v": pa.array(values, pa.string_view())})
    b = pa.table({"v": pa.array(values, pa.string()).cast(pa.string_view())})
    assert data_version(a) == data_version(b)


def _validity(bits: list[int]) -> pa.Buffer:
    return pa.py_buffer(np.packbits(np.array(bits, dtype=np.uint8), bitorder="little").tobytes())


@pytest.mark.parametrize(
    ("type_", "clean", "garbage"),
    [
        (pa.int64(), [1, 0, 3], [1, 0xDEAD, 3]),
        (pa.float64(), [1.0, 0.0, 3.0], [1.0, float("nan"), 3.0]),
        (pa.timestamp("us"), [1, 0, 3], [1, 99, 3]),
    ],
)
def test_bytes_under_nulls_do_not_change_the_version(type_: pa.DataType, clean: list, garbage: list) -> None:
    dtype = np.float64 if pa.types.is_floating(type_) else np.int64
    arrays = [
        pa.Array.from_buffers(type_, 3, [_validity([1, 0, 1]), pa.py_buffer(np.array(data, dtype=dtype).tobytes())])
        for data in (clean, garbage)
    ]
    assert arrays[0].to_pylist() == arrays[1].to_pylist()
    assert data_version(pa.table({"c": arrays[0]})) == data_version(pa.table({"c": arrays[1]}))


def test_string_bytes_under_nulls_do_not_change_the_version() -> None:
    validity = _validity([1, 0, 1])
    clean = pa.Array.from_buffers(
        pa.string(), 3, [validity, pa.py_buffer(np.array([0, 1, 1, 3], np.int32).tobytes()), pa.py_buffer(b"acc")]
    )
    # The null slot spans 5 garbage bytes here.
    dirty = pa.Array.from_buffers(
        pa.string(), 3, [validity, pa.py_buffer(np.array([0, 1, 6, 8], np.int32).tobytes()), pa.py_buffer(b"aXXXXXcc")]
    )
    assert clean.to_pylist() == dirty.to_pylist() == ["a", None, "cc"]
    assert data_version(pa.table({"s": clean})) == data_version(pa.table({"s": dirty}))


def test_boolean_bits_under_nulls_do_not_change_the_version() -> None:
    validity = _validity([1, 0, 1])
    a = pa.Array.from_buffers(pa.bool_(), 3, [validity, _validity([1, 0, 0])])
    b = pa.Array.from_buffers(pa.bool_(), 3, [validity, _validity([1, 1, 0])])
    assert a.to_pylist() == b.to_pylist()
    assert data_version(pa.table({"b": a})) == data_version(pa.table({"b": b}))


_cells = {
    "int": st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
    "float": st.one_of(st.none(), st.floats(allow_nan=False)),
    "str": st.one_of(st.none(), st.text(max_size=6)),
    "bool": st.one_of(st.none(), st.booleans()),
    "list": st.one_of(st.none(), st.lists(st.integers(0, 9), max_size=3)),
}
_types = {
    "int": pa.int64(),
    "float": pa.float64(),
    "str": pa.string(),
    "bool": pa.bool_(),
    "list": pa.list_(pa.int64()),
}


@st.composite
def _tables_and_cuts(draw: st.DrawFn) -> tuple[pa.Table, list[int], int, int]:
    rows = draw(st.integers(0, 40))
    kinds = draw(st.lists(st.sampled_from(sorted(_cells)), min_size=1, max_size=4))
    columns = {
        f"{kind}{i}": pa.array(draw(st.lists(_cells[kind], min_size=rows, max_size=rows)), _types[kind])
        for i, kind in enumerate(kinds)
    }
    table = pa.table(columns)
    cuts = sorted(draw(st.sets(st.integers(0, rows), max_size=6)))
    return table, cuts, draw(st.integers(0, 5)), draw(st.integers(0, 5))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_tables_and_cuts())
def test_random_tables_split_into_random_chunks_keep_their_version(case: tuple[pa.Table, list[int], int, int]) -> None:
    table, cuts, before, after = case
    bounds = [0, *cuts, table.num_rows]
    chunked = pa.concat_tables([table.slice(a, b - a) for a, b in zip(bounds, bounds[1:])])
    # The same rows as a slice in the middle of a bigger table (non-zero offsets everywhere).
    head, tail = table.slice(0, before), table.slice(max(0, table.num_rows - after))
    padded = pa.concat_tables([head, table, tail]).combine_chunks()
    expected = data_version(table)
    assert data_version(chunked) == expected
    assert data_version(padded.slice(head.num_rows, table.num_rows)) == expected


# --- content changes change the version ---------------------------------------------------------------

_BASE = pa.table({"a": pa.array([1, 2, 3], pa.int64()), "b": ["x", "yy", None]})


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param(_BASE.rename_columns(["A", "b"]), id="column renamed"),
        pytest.param(_BASE.set_column(0, "a", _BASE["a"].cast(pa.int32())), id="column type changed"),
        pytest.param(_BASE.set_column(1, "b", _BASE["b"].cast(pa.large_string())), id="string made large"),
        pytest.param(_BASE.set_column(0, "a", pa.array([1, 2, 4], pa.int64())), id="value changed"),
        pytest.param(_BASE.set_column(0, "a", pa.array([1, 2, None], pa.int64())), id="value nulled"),
        pytest.param(_BASE.set_column(0, "a", pa.array([1, 2, 0], pa.int64())), id="null vs zero"),
        pytest.param(_BASE.set_column(1, "b", pa.array(["xy", "y", None])), id="string boundary moved"),
        pytest.param(_BASE.set_column(1, "b", pa.array(["x", "yy", ""])), id="null vs empty string"),
        pytest.param(_BASE.select(["b", "a"]), id="columns reordered"),
        pytest.param(_BASE.slice(0, 2), id="row dropped"),
        pytest.param(_BASE.drop_columns(["b"]), id="column dropped"),
        pytest.param(pa.table({"a": [1, 2, 3]}).append_column("b", pa.nulls(3, pa.string())), id="all null"),
    ],
)
def test_content_changes_change_the_version(changed: pa.Table) -> None:
    assert data_version(changed) != data_version(_BASE)


def test_metadata_does_not_change_the_version() -> None:
    assert data_version(_BASE.replace_schema_metadata({"note": "hello"})) == data_version(_BASE)


# --- type tags and scalars -----------------------------------------------------------------------------


def test_bytes_str_and_pickle_are_tagged_apart() -> None:
    versions = {data_version(b"1"), data_version("1"), data_version(1), data_version([b"1"]), hash_bytes(b"1")}
    assert len(versions) == 5


@pytest.mark.parametrize("same", [bytearray(b"abc"), memoryview(b"abc")], ids=["bytearray", "memoryview"])
def test_bytes_likes_hash_like_bytes(same: object) -> None:
    assert data_version(same) == data_version(b"abc")


def test_versions_are_32_lowercase_hex() -> None:
    for version in (data_version(_BASE), data_version("x"), data_version({"k": 1}), hash_bytes(memoryview(b"x"))):
        assert len(version) == 32 and int(version, 16) >= 0 and version == version.lower()


def test_hash_bytes_is_plain_xxh3_128() -> None:
    import xxhash

    assert hash_bytes(b"payload") == xxhash.xxh3_128(b"payload").hexdigest()


def test_pickled_values_hash_by_content() -> None:
    assert data_version({"a": [1, 2]}) == data_version({"a": [1, 2]})
    assert data_version({"a": [1, 2]}) != data_version({"a": [1, 3]})


# --- frames ---------------------------------------------------------------------------------------------


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"a": [1, 2, 3], "b": ["x", None, "z"], "c": [0.5, np.nan, 2.0]})


def test_pandas_versions_are_deterministic() -> None:
    df = _frame()
    assert data_version(df) == data_version(df.copy()) == data_version(_frame())


def test_pandas_version_survives_an_arrow_round_trip() -> None:
    for df in (_frame(), _frame().set_index("a"), _frame().iloc[1:]):
        assert data_version(pa.Table.from_pandas(df).to_pandas()) == data_version(df)


def test_pandas_version_is_stable_across_processes() -> None:
    # Hash randomization must not leak in: workers in other processes compute the same versions.
    code = "import pandas as pd, numpy as np; from assetflow.hashing import data_version; " + (
        "print(data_version(pd.DataFrame({'a': [1, 2, 3], 'b': ['x', None, 'z'], 'c': [0.5, np.nan, 2.0]})))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == data_version(_frame())


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(lambda df: df.set_index("a"), id="column moved to index"),
        pytest.param(lambda df: df.iloc[1:], id="rows dropped keep their labels"),
        pytest.param(lambda df: df.set_axis([5, 6, 7]), id="non-default index"),
        pytest.param(lambda df: df.rename(columns={"a": "A"}), id="column renamed"),
        pytest.param(lambda df: pa.Table.from_pandas(df, preserve_index=False), id="same cells as an Arrow table"),
    ],
)
def test_pandas_changes_change_the_version(other) -> None:  # type: ignore[no-untyped-def]
    assert data_version(other(_frame())) != data_version(_frame())


def test_pandas_categorical_hashes_like_its_values() -> None:
    # Category is pandas' dictionary encoding: an encoding, not content.
    df = pd.DataFrame({"s": ["x", "y", "x"]})
    assert data_version(df.astype({"s": "category"})) == data_version(df)


def test_pandas_frame_arrow_cannot_hold_falls_back_to_pickle() -> None:
    df = pd.DataFrame({"mixed": [1, "a", 2.5]})
    assert normalize(df).kind == "pickle"
    assert data_version(df) == data_version(df.copy())


class DataFrame:
    """Stands in for polars.DataFrame, recognized by duck typing."""

    __module__ = "polars.dataframe.frame"

    def __init__(self, table: pa.Table) -> None:
        self._table = table

    def to_arrow(self) -> pa.Table:
        return self._table


def test_polars_frames_are_recognized_by_duck_typing() -> None:
    normalized = normalize(DataFrame(_BASE))
    assert normalized.kind == "polars" and normalized.table is _BASE
    assert data_version(DataFrame(_BASE)) == data_version(DataFrame(_BASE.combine_chunks()))
    assert data_version(DataFrame(_BASE)) != data_version(_BASE)


def test_real_polars_frame_if_installed() -> None:
    pl = pytest.importorskip("polars")
    frame = pl.DataFrame({"a": [1, 2, None], "s": ["x", None, "zz"]})
    assert normalize(frame).kind == "polars"
    assert data_version(frame) == data_version(frame.clone())
    assert data_version(frame) != data_version(frame.with_columns(pl.col("a").fill_null(0)))


def test_index_columns_are_part_of_pandas_versions() -> None:
    normalized = normalize(_frame().set_index("a"))
    assert normalized.index_columns == ("a",)
    assert json.dumps(list(normalized.index_columns))  # the form that is hashed
