"""Specification of assetflow.arrays, as tables: every helper builds exactly what pyarrow's own
conversion (``pa.array``, ``pa.scalar``, ``Table.from_pylist``, ``to_numpy``) builds from the same
input — equal values, nulls in the same places, the same type — only without going through it.

Each table row is one input; the expected side is always computed by pyarrow itself (or, for
``latest_per_span``, by a brute-force Python max over ``to_pylist()``), never written by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from assetflow import arrays
from assetflow.lineage_store import (
    ATTEMPT_SCHEMA,
    CHECK_SCHEMA,
    INPUT_SCHEMA,
    OBSERVATION_SCHEMA,
)

TS = pa.timestamp("us", tz="UTC")
T0 = datetime(2024, 1, 6, 12, 30, 5, 123456, tzinfo=UTC)


def same_array(got: pa.Array, expected: pa.Array) -> None:
    """``got`` is a valid array equal to ``expected``: type, length, values and nulls."""
    got.validate(full=True)
    assert got.type == expected.type
    assert got.null_count == expected.null_count
    assert got.equals(expected), f"\n{got}\n!=\n{expected}"


# --- strings -----------------------------------------------------------------------------------------

STRINGS = {
    "ascii": ["up", "features", "total"],
    "non-ascii": ["héllo", "日本語", "🎉 emoji", "Ωmega"],
    "empty string": ["", "a", "", ""],
    "only empty strings": ["", ""],
    "None entries": ["a", None, "ccc", None],
    "leading None": [None, "x"],
    "only None": [None, None, None],
    "empty list": [],
    "one long value": ["x" * 10_000],
    "many values": [f"2024-01-{d:02d}" for d in range(1, 32)] * 40,
}


@pytest.mark.parametrize("values", list(STRINGS.values()), ids=list(STRINGS))
def test_strings_is_pa_array_of_strings(values: list[str | None]) -> None:
    same_array(arrays.strings(values), pa.array(values, pa.string()))


def test_strings_accepts_a_tuple() -> None:
    values = ("a", None, "é")
    same_array(arrays.strings(values), pa.array(list(values), pa.string()))


def test_strings_escape_a_lone_surrogate_instead_of_failing() -> None:
    # An asset logging an undecodable file name (os.fsdecode of Latin-1 bytes) must not crash the run.
    name = "caf\udce9.csv"
    same_array(arrays.strings([name, "ok"]), pa.array(["caf\\udce9.csv", "ok"], pa.string()))
    arrays.strings([name]).validate(full=True)


# --- numbers -----------------------------------------------------------------------------------------

NUMBERS: dict[str, tuple[Any, pa.DataType, list[bool] | None]] = {
    # (values, type, mask: True = null)
    "int64 list": ([1, -2, 3, 2**62], pa.int64(), None),
    "int64 numpy": (np.array([5, 6, 7], dtype=np.int64), pa.int64(), None),
    "int64 with mask": ([1, 0, 3, 0], pa.int64(), [False, True, False, True]),
    "int64 mask without nulls": ([1, 2, 3], pa.int64(), [False, False, False]),
    "int64 all masked": ([0, 0], pa.int64(), [True, True]),
    "int64 empty": ([], pa.int64(), None),
    "int64 empty with mask": ([], pa.int64(), []),
    "int32 list": ([1, -2, 2**31 - 1, -(2**31)], pa.int32(), None),
    "int32 from int64 numpy": (np.array([1, 2, 3], dtype=np.int64), pa.int32(), None),
    "int32 with mask": ([7, 0, 9], pa.int32(), [False, True, False]),
    "int16": ([1, -1, 2**15 - 1], pa.int16(), None),
    "int8 with mask": ([-128, 0, 127], pa.int8(), [False, True, False]),
    "uint8": ([0, 1, 255], pa.uint8(), None),
    "uint8 with mask": ([0, 1, 255, 3], pa.uint8(), [True, False, False, True]),
    "uint16": ([0, 65535], pa.uint16(), None),
    "uint32": ([0, 2**32 - 1], pa.uint32(), None),
    "uint64": ([0, 2**64 - 1], pa.uint64(), None),
    "float64 list": ([0.5, -1.25, 1e300, 0.0], pa.float64(), None),
    "float64 numpy": (np.array([1.5, 2.5]), pa.float64(), None),
    "float64 with mask": ([0.5, 0.0, 2.0], pa.float64(), [False, True, False]),
    "float64 from ints": ([1, 2, 3], pa.float64(), None),
    "float32": ([0.5, -2.0, 3.25], pa.float32(), None),
    "float32 with mask": ([0.5, 0.0], pa.float32(), [False, True]),
    "mask crossing a byte": (list(range(19)), pa.int64(), [i % 3 == 0 for i in range(19)]),
    "timestamp ticks": ([0, 1_704_542_400_000_000, -1], TS, None),
    "timestamp ticks with mask": ([0, 1_704_542_400_000_000], TS, [True, False]),
}


@pytest.mark.parametrize(("values", "type", "mask"), list(NUMBERS.values()), ids=list(NUMBERS))
def test_numbers_is_pa_array_with_nulls_where_masked(values: Any, type: pa.DataType, mask: list[bool] | None) -> None:
    python = list(values.tolist() if isinstance(values, np.ndarray) else values)
    if mask is not None:
        python = [None if null else v for v, null in zip(python, mask)]
    expected = pa.array(python, type)
    same_array(arrays.numbers(values, type, None if mask is None else np.array(mask, dtype=bool)), expected)


def test_numbers_defaults_to_int64() -> None:
    same_array(arrays.numbers([3, 1, 2]), pa.array([3, 1, 2], pa.int64()))


# --- bools -------------------------------------------------------------------------------------------

BOOLS: dict[str, Any] = {
    "numpy": np.array([True, False, True]),
    "numpy crossing a byte": np.array([i % 3 == 0 for i in range(21)]),
    "numpy all false": np.zeros(9, dtype=bool),
    "numpy empty": np.zeros(0, dtype=bool),
    "numpy sliced view": np.array([True, False, False, True, True, False, True, False, True])[1::2],
    "list": [True, False, True, True],
    "list with None": [True, None, False, None, True],
    "list only None": [None, None],
    "list crossing a byte with None": [None if i % 5 == 0 else i % 2 == 0 for i in range(23)],
    "empty list": [],
}


@pytest.mark.parametrize("values", list(BOOLS.values()), ids=list(BOOLS))
def test_bools_is_pa_array_of_booleans(values: Any) -> None:
    python = values.tolist() if isinstance(values, np.ndarray) else list(values)
    same_array(arrays.bools(values), pa.array(python, pa.bool_()))


# --- timestamps --------------------------------------------------------------------------------------

TIMESTAMPS: dict[str, list[datetime | None]] = {
    "utc": [datetime(2024, 1, 6, tzinfo=UTC), datetime(2024, 1, 7, 3, 4, 5, tzinfo=UTC)],
    "microseconds": [T0, T0 + timedelta(microseconds=1), datetime(2024, 1, 1, 0, 0, 0, 999999, tzinfo=UTC)],
    "None entries": [T0, None, T0, None],
    "only None": [None],
    "epoch": [datetime(1970, 1, 1, tzinfo=UTC)],
    "pre-1970": [datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), datetime(1900, 1, 1, tzinfo=UTC),
                 datetime(1901, 6, 30, 12, 0, 0, 1, tzinfo=UTC)],
    "far future": [datetime(2262, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)],
    "other offsets": [datetime(2024, 1, 6, 5, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
                      datetime(2023, 12, 31, 20, 0, 0, 7, tzinfo=timezone(timedelta(hours=-4)))],
    "empty list": [],
}


@pytest.mark.parametrize("values", list(TIMESTAMPS.values()), ids=list(TIMESTAMPS))
def test_timestamps_is_pa_array_of_microsecond_timestamps(values: list[datetime | None]) -> None:
    same_array(arrays.timestamps(values, TS), pa.array(values, TS))


# --- table -------------------------------------------------------------------------------------------

MATERIALIZED = {
    "mat_id": 41, "run_id": "20240106-000000-92b6e6", "asset": "features", "partition": "2024-01-03",
    "attempt": 1, "outcome": "materialized", "started_at": T0, "duration_s": 0.012345, "error": None,
    "traceback": None, "logs": "loading 2024-01-03\n", "code_version": "c" * 32, "config_hash": "f" * 32,
    "data_version": "d" * 32, "path": "features/" + "d" * 32 + ".parquet", "format": "parquet", "size": 1234,
    "metadata": '{"rows": 1}',
}
FAILED = {  # an attempt that raised: no value, so no data_version, path, format or size keys at all
    "mat_id": 42, "run_id": "20240106-000000-92b6e6", "asset": "up", "partition": "2024-01-04", "attempt": 2,
    "outcome": "failed", "started_at": T0 + timedelta(seconds=1), "duration_s": 0.5,
    "error": "RuntimeError: cannot load 2024-01-04",
    "traceback": 'Traceback (most recent call last):\n  File "pipeline.py", line 3\nRuntimeError: cannot load ünïcode',
    "logs": "", "code_version": "c" * 32, "config_hash": "f" * 32,
}
UNPARTITIONED = {**MATERIALIZED, "mat_id": 43, "asset": "total", "partition": "", "format": "pickle",
                 "path": "total/x.pkl", "size": 0, "metadata": None}
OLD_ATTEMPT = {**MATERIALIZED, "mat_id": 2**40, "started_at": datetime(1969, 7, 20, 20, 17, 40, 5, tzinfo=UTC)}

TABLES: dict[str, tuple[list[dict[str, Any]], pa.Schema]] = {
    "attempts": ([MATERIALIZED, FAILED, UNPARTITIONED], ATTEMPT_SCHEMA),
    "one attempt": ([MATERIALIZED], ATTEMPT_SCHEMA),
    "attempt with only missing keys": ([{"mat_id": 1}], ATTEMPT_SCHEMA),
    "attempts before 1970": ([OLD_ATTEMPT, FAILED], ATTEMPT_SCHEMA),
    "no attempts": ([], ATTEMPT_SCHEMA),
    "inputs": ([{"mat_id": 41, "up_asset": "up", "up_partition": "2024-01-03", "data_version": "a" * 32},
                {"mat_id": 43, "up_asset": "features", "up_partition": "2024-01-01", "data_version": "b" * 32},
                {"mat_id": 44, "up_asset": "landing", "up_partition": "", "data_version": None}], INPUT_SCHEMA),
    "input without a data version key": ([{"mat_id": 7, "up_asset": "up", "up_partition": "2024-01-01"}],
                                         INPUT_SCHEMA),
    "no inputs": ([], INPUT_SCHEMA),
    "checks": ([{"run_id": "r", "asset": "features", "partition": "2024-01-01", "check_name": "positive",
                 "passed": True, "blocking": False, "error": None, "metadata": "{}", "checked_at": T0},
                {"run_id": "r", "asset": "features", "partition": "2024-01-02", "check_name": "positive",
                 "passed": False, "blocking": True, "error": "ValueError: négatif", "checked_at": T0},
                {"run_id": "r", "asset": "total", "partition": "", "check_name": "raises", "blocking": False,
                 "error": "boom"}], CHECK_SCHEMA),
    "no checks": ([], CHECK_SCHEMA),
    "observations": ([{"source": "landing", "partition": "2024-01-01", "version": "mtime:1", "observed_at": T0},
                      {"source": "rates", "partition": "", "version": None, "observed_at": T0}], OBSERVATION_SCHEMA),
}


@pytest.mark.parametrize(("rows", "schema"), list(TABLES.values()), ids=list(TABLES))
def test_table_of_tuples_is_from_pylist_with_missing_keys_as_nulls(rows: list[dict[str, Any]], schema: pa.Schema) -> None:
    got = arrays.table([tuple(row.get(f.name) for f in schema) for row in rows], schema)
    expected = pa.Table.from_pylist(rows, schema)
    got.validate(full=True)
    assert got.schema.equals(expected.schema, check_metadata=True)
    assert got.equals(expected), f"\n{got.to_pylist()}\n!=\n{expected.to_pylist()}"
    assert got.to_pylist() == expected.to_pylist()


# --- empty -------------------------------------------------------------------------------------------

SCHEMAS = {"attempts": ATTEMPT_SCHEMA, "inputs": INPUT_SCHEMA, "checks": CHECK_SCHEMA,
           "observations": OBSERVATION_SCHEMA,
           "with metadata": pa.schema([("a", pa.int32())], metadata={"origin": "test"})}


@pytest.mark.parametrize("schema", list(SCHEMAS.values()), ids=list(SCHEMAS))
def test_empty_is_the_schemas_empty_table(schema: pa.Schema) -> None:
    got = arrays.empty(schema)
    expected = schema.empty_table()
    got.validate(full=True)
    assert got.num_rows == 0
    assert got.schema.equals(expected.schema, check_metadata=True)
    assert got.equals(expected)


# --- scalar ------------------------------------------------------------------------------------------

SCALARS: dict[str, tuple[Any, pa.DataType]] = {
    "string": ("2024-01-01", pa.string()),
    "non-ascii string": ("é", pa.string()),
    "empty string": ("", pa.string()),
    "null string": (None, pa.string()),
    "true": (True, pa.bool_()),
    "false": (False, pa.bool_()),
    "null bool": (None, pa.bool_()),
    "int64": (-1, pa.int64()),
    "int32": (-2, pa.int32()),
    "uint8": (255, pa.uint8()),
    "null int64": (None, pa.int64()),
    "float64": (0.25, pa.float64()),
    "timestamp": (T0, TS),
    "pre-1970 timestamp": (datetime(1960, 1, 1, 0, 0, 0, 1, tzinfo=UTC), TS),
    "null timestamp": (None, TS),
}


@pytest.mark.parametrize(("value", "type"), list(SCALARS.values()), ids=list(SCALARS))
def test_scalar_is_pa_scalar(value: Any, type: pa.DataType) -> None:
    got, expected = arrays.scalar(value, type), pa.scalar(value, type)
    assert got.type == expected.type
    assert got.is_valid == expected.is_valid
    assert got.equals(expected)
    assert got.as_py() == expected.as_py()


# --- fill_null ---------------------------------------------------------------------------------------

FILLS: dict[str, tuple[pa.Array | pa.ChunkedArray, Any]] = {
    "int64 with nulls": (pa.array([1, None, 3, None], pa.int64()), -1),
    "int32 index_in result": (pa.array([0, None, 2], pa.int32()), -2),
    "int64 without nulls": (pa.array([1, 2], pa.int64()), -1),
    "int64 only nulls": (pa.array([None, None], pa.int64()), 0),
    "int64 empty": (pa.array([], pa.int64()), -1),
    "float64": (pa.array([0.5, None], pa.float64()), 0.0),
    "string": (pa.array(["a", None, "é"], pa.string()), ""),
    "bool": (pa.array([True, None, False], pa.bool_()), False),
    "timestamp": (pa.array([T0, None], TS), datetime(1970, 1, 1, tzinfo=UTC)),
    "sliced": (pa.array([None, 1, None, 2, None], pa.int64()).slice(1, 3), -1),
    "chunked": (pa.chunked_array([[1, None], [], [None, 4]], pa.int64()), -1),
    "chunked without chunks": (pa.chunked_array([], pa.int64()), -1),
    "timestamp cast to int64": (pa.array([T0, None], TS).cast(pa.int64()), np.iinfo(np.int64).min),
}


@pytest.mark.parametrize(("values", "fill"), list(FILLS.values()), ids=list(FILLS))
def test_fill_null_is_pyarrows_fill_null(values: pa.Array | pa.ChunkedArray, fill: Any) -> None:
    got, expected = arrays.fill_null(values, fill), values.fill_null(fill)
    assert type(got) is type(expected)
    assert got.type == expected.type
    assert got.null_count == 0 or values.null_count == 0
    assert got.equals(expected)


# --- to_numpy ----------------------------------------------------------------------------------------

_LONG = pa.array(list(range(-5, 20)), pa.int64())
_FLAGS = pa.array([i % 3 == 0 for i in range(21)], pa.bool_())

TO_NUMPY: dict[str, pa.Array | pa.ChunkedArray] = {
    "int64": pa.array([1, -2, 3], pa.int64()),
    "int32": pa.array([1, -2, 2**31 - 1], pa.int32()),
    "int8": pa.array([-128, 0, 127], pa.int8()),
    "uint8": pa.array([0, 255], pa.uint8()),
    "uint64": pa.array([0, 2**64 - 1], pa.uint64()),
    "float64": pa.array([0.5, -1.0, 1e300], pa.float64()),
    "float32": pa.array([0.5, -1.0], pa.float32()),
    "bool": pa.array([True, False, True], pa.bool_()),
    "bool crossing bytes": _FLAGS,
    "int64 empty": pa.array([], pa.int64()),
    "bool empty": pa.array([], pa.bool_()),
    "int64 empty without buffers": pa.nulls(0, pa.int64()),
    "bool empty without buffers": pa.nulls(0, pa.bool_()),
    "built by numbers": arrays.numbers([4, 5, 6], pa.int32()),
    "built by bools": arrays.bools([True, False, True, True, False, False, True, False, True]),
    # slices: the values start at a non-zero offset into the buffer (a bit offset for booleans)
    "int64 sliced": _LONG.slice(3, 10),
    "int64 sliced to the end": _LONG.slice(20),
    "int64 sliced to nothing": _LONG.slice(5, 0),
    "float64 sliced": pa.array([0.0, 0.5, 1.5, 2.5]).slice(1, 2),
    "uint8 sliced": pa.array([1, 2, 3, 4, 5], pa.uint8()).slice(2),
    "bool sliced at a bit offset": _FLAGS.slice(3, 11),
    "bool sliced across bytes": _FLAGS.slice(7, 10),
    "slice without the nulls of its parent": pa.array([None, 1, 2, None], pa.int64()).slice(1, 2),
    # chunked arrays: no chunks, one chunk, several (sliced and empty ones included)
    "chunked int64 without chunks": pa.chunked_array([], pa.int64()),
    "chunked bool without chunks": pa.chunked_array([], pa.bool_()),
    "chunked int64 one chunk": pa.chunked_array([[1, 2, 3]], pa.int64()),
    "chunked int64 one sliced chunk": pa.chunked_array([_LONG.slice(4, 6)]),
    "chunked int64 several chunks": pa.chunked_array([[1, 2], [], [3], _LONG.slice(2, 5)], pa.int64()),
    "chunked float64 several chunks": pa.chunked_array([[0.5], [1.5, 2.5]], pa.float64()),
    "chunked bool one chunk": pa.chunked_array([_FLAGS.slice(5, 9)]),
    "chunked bool several chunks": pa.chunked_array([_FLAGS.slice(1, 5), [True], _FLAGS.slice(9, 12)]),
    # fall back to pyarrow: nulls, or a type that is neither numeric nor boolean
    "int64 with nulls": pa.array([1, None, 3], pa.int64()),
    "float64 with nulls": pa.array([0.5, None], pa.float64()),
    "bool with nulls": pa.array([True, None], pa.bool_()),
    "chunked int64 with a null in one chunk": pa.chunked_array([[1, 2], [None, 4]], pa.int64()),
    "string": pa.array(["a", "b"], pa.string()),
    "timestamp": pa.array([T0, T0 + timedelta(days=1)], TS),
}


def _pyarrows_to_numpy(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    if isinstance(values, pa.ChunkedArray):
        return values.to_numpy()
    return values.to_numpy(zero_copy_only=False)


@pytest.mark.parametrize("values", list(TO_NUMPY.values()), ids=list(TO_NUMPY))
def test_to_numpy_is_pyarrows_to_numpy(values: pa.Array | pa.ChunkedArray) -> None:
    got, expected = arrays.to_numpy(values), _pyarrows_to_numpy(values)
    assert isinstance(got, np.ndarray)
    assert got.dtype == expected.dtype
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_to_numpy_of_numbers_is_a_read_only_view() -> None:
    source = pa.array([1, 2, 3, 4], pa.int64())
    view = arrays.to_numpy(source.slice(1, 2))
    assert view.tolist() == [2, 3]
    assert not view.flags.writeable


def test_to_numpy_of_bools_is_a_new_array() -> None:
    flags = arrays.to_numpy(_FLAGS.slice(1, 4))
    assert flags.tolist() == [False, False, True, False]
    flags[0] = True
    assert _FLAGS.slice(1, 4).to_pylist() == [False, False, True, False]


# --- latest_per_span ---------------------------------------------------------------------------------


def _stamps(*micros: int | None, type: pa.DataType = TS) -> pa.Array:
    return pa.array([None if m is None else T0 + timedelta(microseconds=m) for m in micros], type)


def _brute_force_latest(stamps: pa.Array | pa.ChunkedArray, offsets: list[int]) -> list[datetime | None]:
    values = stamps.to_pylist()
    out = []
    for lo, hi in pairwise(offsets):
        present = [v for v in values[lo:hi] if v is not None]
        out.append(max(present) if present else None)
    return out


_BEFORE_1970 = pa.array([datetime(1969, 12, 31, 23, 59, 59, 5, tzinfo=UTC), None,
                         datetime(1900, 1, 1, tzinfo=UTC), datetime(1969, 1, 1, 0, 0, 0, 999999, tzinfo=UTC)], TS)

LATEST: dict[str, tuple[pa.Array | pa.ChunkedArray, list[int]]] = {
    "one span": (_stamps(5, 1, 9, 3), [0, 4]),
    "several spans": (_stamps(5, 1, 9, 3, 2, 8), [0, 2, 3, 6]),
    "one row per span": (_stamps(3, 1, 2), [0, 1, 2, 3]),
    "a span of only nulls": (_stamps(5, None, None, 7), [0, 1, 3, 4]),
    "every span only nulls": (_stamps(None, None, None), [0, 2, 3]),
    "empty spans first, between and last": (_stamps(4, 2, None, 6), [0, 0, 2, 2, 2, 4, 4]),
    "empty spans around a null span": (_stamps(None, 3), [0, 0, 1, 1, 2, 2]),
    "no rows, empty spans": (_stamps(), [0, 0, 0]),
    "no spans": (_stamps(), [0]),
    "latest is the first row of its span": (_stamps(9, 1, 1, 0), [0, 2, 4]),
    "microseconds apart": (_stamps(1, 0, 2, 3), [0, 2, 4]),
    "before 1970": (_BEFORE_1970, [0, 2, 4]),
    "chunked": (pa.chunked_array([_stamps(5, None), _stamps(), _stamps(1, 7, None)]), [0, 1, 3, 5]),
    "chunked without chunks": (pa.chunked_array([], TS), [0, 0]),
    "milliseconds": (pa.array([1_704_542_400_123, None, 1_704_542_400_001], pa.timestamp("ms", tz="UTC")), [0, 1, 3]),
    "seconds": (pa.array([1_704_542_400, -86_400, None], pa.timestamp("s", tz="UTC")), [0, 2, 3]),
    "other time zone": (_stamps(5, 1, 9, type=pa.timestamp("us", tz="Europe/Berlin")), [0, 2, 3]),
    "spans ending before the column": (_stamps(1, 5, 9), [0, 1]),
}


@pytest.mark.parametrize(("stamps", "offsets"), list(LATEST.values()), ids=list(LATEST))
def test_latest_per_span_is_the_max_of_each_span(stamps: pa.Array | pa.ChunkedArray, offsets: list[int]) -> None:
    got = arrays.latest_per_span(stamps, np.array(offsets, dtype=np.int64))
    expected = _brute_force_latest(stamps, offsets)
    assert got == expected
    assert all(t is None or t.utcoffset() == timedelta(0) for t in got)
