"""Arrow arrays built straight from buffers.

Why not ``pa.array``: pyarrow's first conversion between Arrow and Python or numpy data (``pa.array``,
``pa.scalar``, ``Table.from_pylist``, even ``Array.to_numpy``) imports pandas when it is installed, to
check whether the data is a pandas object. That costs 0.3–0.5 s, a quarter of a ``plan --stale`` command on a 365k-partition
project, for data that is never pandas. Building from buffers skips the check. Everything on the path
of ``plan``, ``status`` and ``materialize`` goes through these helpers; values the user returns (which
may well be pandas) still go through pyarrow's own conversion.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def _validity(mask: np.ndarray | None) -> tuple[pa.Buffer | None, int]:
    """The validity bitmap for ``mask`` (True = null) and the null count."""
    if mask is None:
        return None, 0
    nulls = int(np.count_nonzero(mask))
    if nulls == 0:
        return None, 0
    return pa.py_buffer(np.packbits(~mask, bitorder="little")), nulls


def numbers(values: np.ndarray | Sequence[Any], type: pa.DataType = pa.int64(),
            mask: np.ndarray | None = None) -> pa.Array:
    """A fixed-width numeric array (integers, floats, or timestamps given as int64 ticks); ``mask``
    marks nulls."""
    data = np.ascontiguousarray(values, dtype=_numpy_dtype(type))
    validity, nulls = _validity(None if mask is None else np.asarray(mask, dtype=bool))
    return pa.Array.from_buffers(type, len(data), [validity, pa.py_buffer(data)], null_count=nulls)


def bools(values: np.ndarray | Sequence[bool | None]) -> pa.Array:
    """A boolean array from a numpy bool array, or from Python values where ``None`` entries are nulls."""
    if isinstance(values, np.ndarray):
        data, mask = values.astype(bool, copy=False), None
    else:
        data = np.fromiter((bool(v) for v in values), dtype=bool, count=len(values))
        mask = np.fromiter((v is None for v in values), dtype=bool, count=len(values))
    validity, nulls = _validity(mask)
    return pa.Array.from_buffers(pa.bool_(), len(data), [validity, pa.py_buffer(np.packbits(data, bitorder="little"))],
                                 null_count=nulls)


def strings(values: Sequence[str | None]) -> pa.Array:
    """A ``string`` array; ``None`` entries are nulls."""
    n = len(values)
    # Lone surrogates (an undecodable file name in a log) cannot be UTF-8: escaped, not fatal.
    encoded = [b"" if v is None else v.encode("utf-8", "backslashreplace") for v in values]
    offsets = np.zeros(n + 1, dtype=np.int64)
    if n:
        np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=n), out=offsets[1:])
    mask = np.fromiter((v is None for v in values), dtype=bool, count=n) if None in values else None
    validity, nulls = _validity(mask)
    data = pa.py_buffer(b"".join(encoded))
    if offsets[-1] < 2**31:
        return pa.Array.from_buffers(pa.string(), n, [validity, pa.py_buffer(offsets.astype(np.int32)), data],
                                     null_count=nulls)
    large = pa.Array.from_buffers(pa.large_string(), n, [validity, pa.py_buffer(offsets), data], null_count=nulls)
    return large.cast(pa.string())  # raises, as pa.array would, when it cannot fit


def timestamps(values: Sequence[datetime | None], type: pa.DataType) -> pa.Array:
    """A microsecond timestamp array of aware datetimes; ``None`` entries are nulls."""
    ticks = np.fromiter(((v - _EPOCH) // _MICROSECOND if v is not None else 0 for v in values), dtype=np.int64,
                        count=len(values))
    mask = np.fromiter((v is None for v in values), dtype=bool, count=len(values))
    return numbers(ticks, type, mask)


def column(values: Sequence[Any], type: pa.DataType) -> pa.Array:
    """An array of ``type`` (string, bool, integer, float or timestamp[us]) from Python values."""
    if len(values) == 0:
        return pa.nulls(0, type)
    if pa.types.is_string(type):
        return strings(values)
    if pa.types.is_boolean(type):
        return bools(values)
    if pa.types.is_timestamp(type):
        return timestamps(values, type)
    mask = np.fromiter((v is None for v in values), dtype=bool, count=len(values))
    data = [0 if v is None else v for v in values]
    return numbers(data, type, mask if mask.any() else None)


def table(rows: Sequence[Sequence[Any]], schema: pa.Schema) -> pa.Table:
    """A table of ``schema`` from rows given as tuples in the schema's column order (``None`` = null),
    for the column types :func:`column` knows. Tuples, not dicts: the executor builds one per attempt
    and input, and transposing them is one ``zip``."""
    if not rows:
        return empty(schema)
    return pa.table({f.name: column(values, f.type) for f, values in zip(schema, zip(*rows))}, schema=schema)


def empty(schema: pa.Schema) -> pa.Table:
    """A table of ``schema`` with no rows."""
    return pa.table({f.name: pa.nulls(0, f.type) for f in schema}, schema=schema)


def scalar(value: Any, type: pa.DataType) -> pa.Scalar:
    """A scalar of ``type`` (for compute calls such as ``fill_null``, which convert Python values with
    ``pa.scalar`` — the same pandas check)."""
    return column([value], type)[0]


def fill_null(values: pa.Array | pa.ChunkedArray, fill: Any) -> pa.Array | pa.ChunkedArray:
    """``values.fill_null(fill)`` without converting ``fill`` through ``pa.scalar``."""
    return pc.fill_null(values, scalar(fill, values.type))


def _numpy_dtype(type: pa.DataType) -> np.dtype:
    kind = "f" if pa.types.is_floating(type) else "u" if pa.types.is_unsigned_integer(type) else "i"
    return np.dtype(f"{kind}{type.bit_width // 8}")


def to_numpy(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``values.to_numpy()`` for integer, float and boolean arrays without nulls, read off the buffers
    (pyarrow's own ``to_numpy`` goes through the same pandas check). Integers and floats are a
    read-only view, booleans a new array; anything else falls back to pyarrow."""
    if isinstance(values, pa.ChunkedArray):
        if values.num_chunks == 0:  # pyarrow's combine_chunks of no chunks imports pandas
            return np.zeros(0, dtype=bool if pa.types.is_boolean(values.type) else _numpy_dtype(values.type))
        values = values.chunk(0) if values.num_chunks == 1 else values.combine_chunks()
    type = values.type
    fixed = pa.types.is_integer(type) or pa.types.is_floating(type)
    if values.null_count or not (fixed or pa.types.is_boolean(type)):
        return values.to_numpy(zero_copy_only=False)
    start, stop = values.offset, values.offset + len(values)
    buffer = values.buffers()[1]
    if pa.types.is_boolean(type):
        if buffer is None:
            return np.zeros(0, dtype=bool)
        return np.unpackbits(np.frombuffer(buffer, np.uint8), bitorder="little")[start:stop].astype(bool)
    dtype = _numpy_dtype(type)
    if buffer is None:
        return np.zeros(0, dtype=dtype)
    view = np.frombuffer(buffer, dtype=dtype)[start:stop]
    view.flags.writeable = False  # it is the Arrow array's memory
    return view


def latest_per_span(stamps: pa.Array | pa.ChunkedArray, offsets: np.ndarray) -> list[datetime | None]:
    """The latest non-null timestamp (UTC) of each span ``offsets[i]:offsets[i + 1]``, None for a span
    with none: integer work over the whole column instead of a datetime object per row."""
    never = np.iinfo(np.int64).min
    ticks = to_numpy(fill_null(pc.cast(stamps, pa.int64()), never))[: int(offsets[-1])]  # reduceat runs the last span to the end
    starts = offsets[:-1]
    latest = np.full(len(starts), never, dtype=np.int64)
    filled = starts < offsets[1:]
    if len(ticks) and filled.any():
        latest[filled] = np.maximum.reduceat(ticks, starts[filled])
    per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[stamps.type.unit]
    return [None if t == never else _EPOCH + _MICROSECOND * (t * 1_000_000 // per_second) for t in latest.tolist()]
