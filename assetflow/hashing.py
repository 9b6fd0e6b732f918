"""Data versions: a short fingerprint of what a value *contains*, not of how it happens to be laid out.

Staleness is decided by comparing data versions, so two promises matter more than anything else here:

* **Equal content gives an equal version.** An Arrow table does not have one canonical memory layout: the
  same rows can come in one chunk or a thousand, as a zero-copy slice of a bigger table, with arbitrary
  garbage bytes under null slots, or dictionary-encoded. If any of that leaked into the version, a
  harmless re-read of an upstream would look like a change and trigger needless rebuilds downstream.
  So tables are hashed from a normalized *byte stream* per column (validity, lengths, values) whose
  concatenation over chunks is the same however the column is chunked.
* **Hashing must be much cheaper than building.** Versions are computed for every materialized value,
  often gigabytes. Fixed-width buffers are therefore fed to xxh3 zero-copy (a memoryview on the Arrow
  buffer); only columns that need normalizing (nulls, bit-packed booleans, nested types) pay for a copy.

Every version starts with a type tag, so ``b"1"``, ``"1"`` and ``1`` differ, and so do a pandas frame, a
polars frame and an Arrow table with the same cells: the kind decides what a downstream asset receives
and what format the value store writes, so it is part of the content. (It also keeps content-addressed
paths of different formats from ever colliding.)

Known limits, by design: values that fall back to pickle are only as canonical as pickle is (a ``set``
of strings pickles in hash-seed order, equal dicts built in another insertion order differ); floats are
compared bit for bit (``-0.0`` != ``0.0``, NaN payloads count); for nested Arrow types (lists, structs,
maps, unions ...) garbage under *null* slots of child arrays can still change the version.
"""

from __future__ import annotations

import json
import pickle
import struct
import sys
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

__all__ = ["Kind", "Normalized", "data_version", "hash_bytes", "normalize", "version_of"]

Kind = Literal["arrow", "pandas", "polars", "bytes", "str", "pickle"]
"""What a value was recognized as; part of its version and decides how the value store writes it."""

# Bumping this prefix invalidates every stored version at once: do it only if the byte stream changes.
_PREFIX: Final = b"assetflow-dv1\x00"
_INT64: Final = struct.Struct("<q")


@dataclass(slots=True)
class Normalized:
    """A value reduced to what its version is computed from (read-only by convention: one is made per
    value stored, and a frozen dataclass costs four times as much to construct).

    Exactly one of ``table`` and ``payload`` is set. The value store writes these same objects, so the
    bytes it stores are the ones that were hashed and a frame is converted to Arrow only once.
    """

    kind: Kind
    table: pa.Table | None = None
    payload: bytes | bytearray | memoryview | None = None
    index_columns: tuple[str, ...] = ()
    """For pandas: which Arrow columns hold the index, so ``df.set_index("a")`` differs from ``df``."""


def hash_bytes(data: bytes | bytearray | memoryview) -> str:
    """Return the 32-hex-char xxh3_128 of raw bytes, with no type tag (files, serialized payloads)."""
    return xxhash.xxh3_128_hexdigest(data)


def data_version(value: object) -> str:
    """Return a 32-hex-char version of ``value``'s logical content: equal content, equal version.

    Arrow tables and record batches, pandas and polars frames are hashed column by column, independent
    of chunking, slicing, dictionary encoding and bytes under nulls; ``bytes``-likes by their bytes;
    ``str`` by its UTF-8; anything else by ``pickle.dumps(value, protocol=5)``. Each kind is tagged.
    """
    return version_of(normalize(value))


def normalize(value: object) -> Normalized:
    """Recognize ``value``'s kind and convert frames to Arrow, the form versions are computed from.

    A pandas frame that Arrow cannot represent (e.g. an object column of mixed Python types) falls back
    to ``pickle`` rather than failing, so every value has a version.
    """
    if isinstance(value, pa.Table):
        return Normalized("arrow", table=value)
    if isinstance(value, pa.RecordBatch):
        # A batch is one chunk of a table; the store hands back a table, so version it as one.
        return Normalized("arrow", table=pa.Table.from_batches([value]))
    if isinstance(value, (bytes, bytearray)):
        return Normalized("bytes", payload=value)
    if isinstance(value, memoryview):
        # A strided view has no single run of bytes to hash: take its logical bytes instead.
        return Normalized("bytes", payload=value if value.c_contiguous else value.tobytes())
    if isinstance(value, str):
        return Normalized("str", payload=value.encode("utf-8"))
    if _is_polars_frame(value):
        table = value.to_arrow()  # type: ignore[attr-defined]
        if isinstance(table, pa.Table):
            return Normalized("polars", table=table)
    if _is_pandas_frame(value):
        frame = _pandas_to_arrow(value)
        if frame is not None:
            return frame
    return Normalized("pickle", payload=pickle.dumps(value, protocol=5))


def version_of(normalized: Normalized) -> str:
    """Return the data version of an already :func:`normalize`-d value."""
    hasher = xxhash.xxh3_128()
    hasher.update(_PREFIX)
    _feed_str(hasher, normalized.kind)
    if normalized.table is not None:
        _feed_str(hasher, json.dumps(list(normalized.index_columns)))
        _feed_table(hasher, normalized.table)
    else:
        assert normalized.payload is not None
        hasher.update(normalized.payload)
    return hasher.hexdigest()


# --- recognizing frames ------------------------------------------------------------------------------


def _is_polars_frame(value: object) -> bool:
    # Duck-typed so polars stays an optional dependency and is never imported just to check.
    # A polars Series has ``to_arrow`` too, but it gives an Array: only DataFrames are frames.
    cls = type(value)
    return (
        cls.__module__.startswith("polars")
        and cls.__name__ == "DataFrame"
        and callable(getattr(value, "to_arrow", None))
    )


def _is_pandas_frame(value: object) -> bool:
    # If pandas was never imported, nothing can be a DataFrame: don't pay for importing it.
    # (isinstance, not a module-name check, so DataFrame subclasses from other packages count.)
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(value, pd.DataFrame)


def _pandas_to_arrow(frame: Any) -> Normalized | None:
    """Convert a pandas frame, keeping its index unless it is the default 0..n-1 one; None if Arrow can't."""
    try:
        table = pa.Table.from_pandas(frame, preserve_index=not _has_default_index(frame))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    meta = table.schema.pandas_metadata or {}
    # Only *named* index columns are real columns; a RangeIndex kept as metadata is a dict here.
    index_columns = tuple(c for c in meta.get("index_columns", ()) if isinstance(c, str))
    return Normalized("pandas", table=table, index_columns=index_columns)


def _has_default_index(frame: Any) -> bool:
    import pandas as pd

    index = frame.index
    return (
        isinstance(index, pd.RangeIndex)
        and index.start == 0
        and index.step == 1
        and index.name is None
    )


# --- tables ------------------------------------------------------------------------------------------


def _feed_str(hasher: xxhash.xxh3_128, text: str) -> None:
    """Feed a length-prefixed string, so consecutive strings can never run into each other."""
    data = text.encode("utf-8")
    hasher.update(_INT64.pack(len(data)))
    hasher.update(data)


def _logical_type(type_: pa.DataType) -> pa.DataType:
    """The type a column's *values* have: dictionary encoding is a storage detail, not content."""
    return type_.value_type if pa.types.is_dictionary(type_) else type_


def _feed_table(hasher: xxhash.xxh3_128, table: pa.Table) -> None:
    """Feed the schema (names, types, nullability; no metadata), then every column."""
    hasher.update(_INT64.pack(table.num_columns))
    for field in table.schema:
        _feed_str(hasher, field.name)
        _feed_str(hasher, str(_logical_type(field.type)))
        hasher.update(b"\x01" if field.nullable else b"\x00")
    for field, column in zip(table.schema, table.columns):
        _feed_column(hasher, field.name, column)


def _feed_column(hasher: xxhash.xxh3_128, name: str, column: pa.ChunkedArray) -> None:
    """Feed one column: its header, then the digests of its normalized streams.

    Each stream (validity, lengths, values) gets its own hasher fed chunk after chunk: the bytes of a
    stream concatenate to the same thing however the column is chunked, while interleaving streams
    per chunk would not.
    """
    logical = _logical_type(column.type)
    _feed_str(hasher, name)
    _feed_str(hasher, str(logical))
    hasher.update(_INT64.pack(len(column)))
    streams = _ColumnStreams(has_nulls=column.null_count > 0)
    if _is_flat(logical):
        for chunk in column.chunks:
            if len(chunk):
                streams.feed_chunk(_decode(chunk))
    else:
        streams.feed_nested(column)
    for digest in streams.digests():
        hasher.update(digest)


def _decode(chunk: pa.Array) -> pa.Array:
    """Undo encodings that do not change the values: dictionaries, string/binary views."""
    if pa.types.is_dictionary(chunk.type):
        chunk = chunk.dictionary_decode()
    if pa.types.is_string_view(chunk.type):
        return chunk.cast(pa.large_string())
    if pa.types.is_binary_view(chunk.type):
        return chunk.cast(pa.large_binary())
    return chunk


def _fixed_width(type_: pa.DataType) -> int | None:
    """Byte width of a fixed-width primitive type (ints, floats, temporals, decimals...), else None."""
    if pa.types.is_boolean(type_) or pa.types.is_nested(type_) or isinstance(type_, pa.BaseExtensionType):
        return None
    try:
        bits = type_.bit_width
    except ValueError:  # variable width
        return None
    return bits // 8 if bits % 8 == 0 and bits > 0 else None


def _is_binary_like(type_: pa.DataType) -> bool:
    return (
        pa.types.is_string(type_)
        or pa.types.is_large_string(type_)
        or pa.types.is_binary(type_)
        or pa.types.is_large_binary(type_)
        or pa.types.is_string_view(type_)
        or pa.types.is_binary_view(type_)
    )


def _is_flat(type_: pa.DataType) -> bool:
    """True for types with a dedicated, chunk-by-chunk normalization."""
    return (
        pa.types.is_null(type_)
        or pa.types.is_boolean(type_)
        or _fixed_width(type_) is not None
        or _is_binary_like(type_)
    )


class _ColumnStreams:
    """The normalized byte streams of one column, each hashed separately."""

    __slots__ = ("has_nulls", "validity", "lengths", "values")

    def __init__(self, *, has_nulls: bool) -> None:
        # Columns without nulls skip the validity stream entirely: the common case stays zero-copy.
        self.has_nulls = has_nulls
        self.validity = xxhash.xxh3_128()
        self.lengths = xxhash.xxh3_128()
        self.values = xxhash.xxh3_128()

    def digests(self) -> tuple[bytes, ...]:
        """The stream digests, in a fixed order, for the column's parent hasher."""
        flag = b"\x01" if self.has_nulls else b"\x00"
        return (flag, self.validity.digest(), self.lengths.digest(), self.values.digest())

    def feed_chunk(self, chunk: pa.Array) -> None:
        """Feed one non-empty chunk of a flat (null, boolean, fixed-width or binary-like) column."""
        valid = self._feed_validity(chunk)
        type_ = chunk.type
        if pa.types.is_null(type_):
            return  # no values beyond the row count and validity
        if pa.types.is_boolean(type_):
            self._feed_booleans(chunk, valid)
        elif _is_binary_like(type_):
            self._feed_binary(chunk)
        else:
            self._feed_fixed(chunk, _fixed_width(type_) or 0, valid)

    def feed_nested(self, column: pa.ChunkedArray) -> None:
        """Feed a column of any other type through its IPC serialization.

        Chunks are combined first so the serialization cannot depend on chunking; the IPC writer
        already normalizes slice offsets and bit offsets of sliced arrays.
        """
        chunks = [_decode(c) for c in column.chunks]
        combined = pa.chunked_array(chunks, type=_logical_type(column.type)).combine_chunks()
        batch = pa.record_batch([combined], names=["c"])
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        self.values.update(memoryview(sink.getvalue()))

    def _feed_validity(self, chunk: pa.Array) -> np.ndarray | None:
        """Feed one byte per row (1 = valid) when the column has nulls; return the mask if the chunk has any."""
        if not self.has_nulls:
            return None
        if chunk.null_count == 0:
            _feed_ones(self.validity, len(chunk))
            return None
        bitmap = chunk.buffers()[0]
        if bitmap is None:  # the null type: every row is null and there is no bitmap
            mask = np.zeros(len(chunk), dtype=np.uint8)
        else:
            mask = _unpack_bits(bitmap, chunk.offset, len(chunk))
        self.validity.update(mask.data)
        return mask

    def _feed_booleans(self, chunk: pa.Array, valid: np.ndarray | None) -> None:
        # Bit-packed, possibly at a bit offset: unpack to one byte per value; nulls read as False.
        values = _unpack_bits(chunk.buffers()[1], chunk.offset, len(chunk))
        if valid is not None:
            values = np.bitwise_and(values, valid)
        self.values.update(values.data)

    def _feed_fixed(self, chunk: pa.Array, width: int, valid: np.ndarray | None) -> None:
        """Feed a fixed-width chunk's data buffer slice zero-copy; with nulls, blocks with nulls zeroed."""
        start, stop = chunk.offset * width, (chunk.offset + len(chunk)) * width
        data = memoryview(chunk.buffers()[1])[start:stop]
        if valid is None:
            self.values.update(data)
        else:
            _feed_zeroing_nulls(self.values, data, width, valid)

    def _feed_binary(self, chunk: pa.Array) -> None:
        """Feed per-value lengths (int64) and the contiguous value bytes of a (large_)string/binary chunk."""
        if chunk.null_count:
            # Null slots may span garbage bytes; filling them with "" makes the value bytes contiguous.
            chunk = pc.fill_null(chunk, pa.scalar(b"", chunk.type))
        offset_type = np.dtype(np.int64 if _has_large_offsets(chunk.type) else np.int32)
        _, offsets_buf, data_buf = chunk.buffers()
        offsets = np.frombuffer(
            offsets_buf, dtype=offset_type, count=len(chunk) + 1, offset=chunk.offset * offset_type.itemsize
        )
        self.lengths.update(np.diff(offsets).astype(np.int64, copy=False).data)
        if data_buf is not None and offsets[-1] > offsets[0]:
            self.values.update(memoryview(data_buf)[int(offsets[0]) : int(offsets[-1])])


# Rows per block when a copy is unavoidable: a small reused buffer stays in cache and never page-faults.
_BLOCK_ROWS: Final = 1 << 16
_ONES: Final = np.ones(1 << 20, dtype=np.uint8)


def _unpack_bits(bitmap: pa.Buffer, offset: int, length: int) -> np.ndarray:
    """One uint8 (0 or 1) per bit of an LSB-first Arrow bitmap, starting at bit ``offset``."""
    first_byte, skip = divmod(offset, 8)
    packed = np.frombuffer(bitmap, dtype=np.uint8, count=(skip + length + 7) // 8, offset=first_byte)
    return np.unpackbits(packed, count=skip + length, bitorder="little")[skip:]


def _feed_ones(hasher: xxhash.xxh3_128, count: int) -> None:
    """Feed ``count`` one-bytes (validity of a chunk without nulls) without allocating them."""
    for start in range(0, count, len(_ONES)):
        hasher.update(_ONES[: min(len(_ONES), count - start)].data)


def _feed_zeroing_nulls(hasher: xxhash.xxh3_128, data: memoryview, width: int, valid: np.ndarray) -> None:
    """Feed fixed-width values with every null slot's bytes replaced by zeros.

    Bytes under nulls are unspecified, so they must not reach the hash. Multiplying by the 0/1
    validity in cache-sized blocks is one generic path for every width (1..32 bytes and odd ones).
    """
    item = next(size for size in (8, 4, 2, 1) if width % size == 0)
    rows = np.frombuffer(data, dtype=f"<u{item}").reshape(-1, width // item)
    out = np.empty((min(len(rows), _BLOCK_ROWS), rows.shape[1]), dtype=rows.dtype)
    for start in range(0, len(rows), _BLOCK_ROWS):
        block = rows[start : start + _BLOCK_ROWS]
        zeroed = out[: len(block)]
        np.multiply(block, valid[start : start + len(block), None], out=zeroed)
        hasher.update(zeroed.data)


def _has_large_offsets(type_: pa.DataType) -> bool:
    return pa.types.is_large_string(type_) or pa.types.is_large_binary(type_)


def _benchmark(gib: float = 1.0, columns: int = 8) -> None:
    """Print the throughput of :func:`data_version` on ~``gib`` GiB of numeric columns."""
    import time

    rows = int(gib * 2**30) // (8 * columns)
    rng = np.random.default_rng(0)
    table = pa.table(
        {f"c{i}": rng.random(rows) if i % 2 else rng.integers(0, 2**62, rows) for i in range(columns)}
    )
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        data_version(table)
        best = min(best, time.perf_counter() - started)
    print(f"data_version: {table.nbytes / 2**30:.2f} GiB in {best:.3f} s = {table.nbytes / best / 1e9:.2f} GB/s")


if __name__ == "__main__":
    _benchmark()
