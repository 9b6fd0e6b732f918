"""The values one process has just written, kept so that reading them back needs no filesystem.

A step's inputs are, most of the time, values an upstream step wrote moments before in the same
process (the thread executor's workers share one :class:`~assetflow.values.ValueStore`). Reading a
small file back costs four syscalls locally — each one a chance for a worker thread to wait for the
GIL — and a GET against an object store. Paths are content addressed, so what was written at a path
is what a read would return, for as long as nobody deletes it; the store forgets a path it deletes.

Only the *encoded* bytes are kept (the raw bytes of a ``bytes`` value, the pickle of any other
object), and only small ones: a reader decodes them exactly as it would decode the file, so it gets
a fresh object of its own, never one another step could mutate. Parquet values are not kept (their
encoding is streamed to the file), but their sizes are, so that storing the same content again
needs no existence check either.
"""

from __future__ import annotations

import threading

MAX_VALUE_BYTES = 1 << 20
"""Larger encodings are not kept: past this size a read is cheap next to what the step does with it."""
MAX_TOTAL_BYTES = 64 << 20
"""Bytes kept in all; the oldest go first."""
MAX_PATHS = 200_000
"""Paths remembered (with or without their bytes); the oldest go first."""


class RecentValues:
    """Bounded memory of ``path -> (size, encoded bytes or None)`` for the paths written through one
    store. Safe to share between threads."""

    __slots__ = ("_sizes", "_data", "_total", "_lock")

    def __init__(self) -> None:
        self._sizes: dict[str, int] = {}
        self._data: dict[str, bytes] = {}
        self._total = 0
        self._lock = threading.Lock()

    def remember(self, path: str, size: int, encoded: bytes | None) -> None:
        """Note that ``path`` now holds ``size`` bytes; keep ``encoded`` too if it is small enough."""
        with self._lock:
            sizes = self._sizes
            if path not in sizes and len(sizes) >= MAX_PATHS:
                self._drop(next(iter(sizes)))
            sizes[path] = size
            if encoded is not None and len(encoded) <= MAX_VALUE_BYTES and path not in self._data:
                self._data[path] = encoded
                self._total += len(encoded)
                while self._total > MAX_TOTAL_BYTES:
                    oldest = next(iter(self._data))
                    self._total -= len(self._data.pop(oldest))

    def size(self, path: str) -> int | None:
        """The size written at ``path``, if this process wrote it (and has not forgotten)."""
        return self._sizes.get(path)

    def encoded(self, path: str) -> bytes | None:
        """The encoded bytes written at ``path``, if kept."""
        return self._data.get(path)

    def forget(self, path: str) -> None:
        """Forget ``path`` (its file is being deleted)."""
        with self._lock:
            self._drop(path)

    def _drop(self, path: str) -> None:
        self._sizes.pop(path, None)
        data = self._data.pop(path, None)
        if data is not None:
            self._total -= len(data)
