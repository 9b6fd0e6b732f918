"""The value store: where materialized values live, on any filesystem fsspec can reach.

Why it looks the way it does:

* **Content-addressed paths** (``{root}/{asset}/{data_version}.{ext}``). A path names its content, so a
  file is never overwritten in place, a re-materialization that produced the same value writes
  nothing, and a reader holding a path from the lineage store can never observe a newer value there.
* **Atomic writes.** Runs get killed (SIGKILL, OOM, a laptop lid). A half-written file at a final path
  would carry a name promising content it does not have, and content addressing would then skip
  rewriting it forever. So nothing partial is ever visible at a final path: locally we write a
  ``.tmp-`` file and ``os.replace`` it; object stores make a single PUT (or a completed multipart
  upload) atomic by themselves; other filesystems get a temp key and a move.
* **Group-committed durability.** Surviving a power loss needs the data on disk before lineage points
  at it. Two fsyncs per value would cost milliseconds each; instead :meth:`ValueStore.sync` flushes
  the data root once before each lineage batch commits, as databases group-commit their logs. An
  unreferenced file a power loss emptied is recognised (size 0) and rewritten, never trusted.
* **Cheap existence checks.** ``list_paths`` makes one listing per asset folder, so the engine can
  notice values deleted behind its back without one request per value.
* **What this store just wrote is read from memory.** A step's inputs are mostly values an upstream
  step wrote moments before through the same store; small encodings are kept (bounded) and decoded
  as the file would be, and known paths skip the existence check (:mod:`assetflow.recent`).
* **Picklable.** Stores are shipped to worker processes; fsspec filesystems (with their sockets,
  event loops and caches) are not safely picklable, so only the URL and storage options travel and
  the filesystem is recreated lazily on the other side.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import pickle
import re
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from assetflow.errors import StoreError
from assetflow.hashing import Normalized, normalize, version_of
from assetflow.recent import RecentValues

if TYPE_CHECKING:
    import fsspec

__all__ = ["FORMATS", "TEMP_PREFIX", "StoredValue", "ValueMissingError", "ValueStore"]

FORMATS: Final = ("parquet", "pandas", "polars", "bytes", "pickle")
"""Every value format the store writes, as recorded in :attr:`StoredValue.format`."""

TEMP_PREFIX: Final = ".tmp-"
"""Names of in-progress local writes start with this; listings ignore them (leftovers of a crash)."""

_FORMAT_OF_KIND: Final = {
    "arrow": "parquet",
    "pandas": "pandas",
    "polars": "polars",
    "bytes": "bytes",
    "str": "pickle",
    "pickle": "pickle",
}
_EXTENSION: Final = {"parquet": "parquet", "pandas": "parquet", "polars": "parquet", "bytes": "bin", "pickle": "pkl"}
_VALUE_NAME: Final = re.compile(r"[0-9a-f]{32}\.(?:parquet|bin|pkl)")

# For these a single PUT, or a multipart upload that only appears once completed, is already atomic.
_OBJECT_STORE_PROTOCOLS: Final = frozenset(
    {"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "adl", "oss", "memory"}
)

_WriteMode = Literal["local", "direct", "rename"]
_Encoded = pa.Table | bytes | bytearray | memoryview


class ValueMissingError(StoreError, FileNotFoundError):
    """A value path recorded somewhere is not (or no longer) in the data root.

    Both a :class:`StoreError` (for the CLI) and a :class:`FileNotFoundError` (for callers that treat a
    deleted value as "needs rebuilding").
    """


@dataclass(slots=True)
class StoredValue:
    """Where and how one value was stored (read-only by convention: one is made per value, and a
    frozen dataclass costs four times as much to construct)."""

    path: str
    """Relative to the data root, e.g. ``"features/3f2a...e1.parquet"``."""
    format: str
    """One of :data:`FORMATS`; pass it back to :meth:`ValueStore.get`."""
    size: int
    """Bytes written, or already present when the same content was stored before."""
    content_hash: str
    """The value's :func:`~assetflow.hashing.data_version`."""


class ValueStore:
    """Content-addressed, atomically written values under one root URL (local path or fsspec URL)."""

    __slots__ = ("url", "storage_options", "_fs", "_root", "_plain", "_recent", "_unlisted", "_made")

    url: str
    """The data root. A relative local path is made absolute, so workers with another cwd agree."""
    storage_options: dict[str, Any]
    """Passed to fsspec when the filesystem is (re)created."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        """Open the data root at ``url``; raise :class:`StoreError` if it cannot be one.

        Nothing is created until the first :meth:`put`. Only local roots are checked eagerly (a remote
        check would cost a request in every worker process).
        """
        self.__setstate__({"url": _absolute_if_local(url), "storage_options": dict(storage_options or {})})
        if self._is_local():
            _check_local_root(self._root, self.url)

    # --- pickling: only the address travels ----------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """Keep only the URL and storage options: the filesystem is rebuilt lazily after unpickling."""
        return {"url": self.url, "storage_options": self.storage_options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`__getstate__` without touching the filesystem yet."""
        self.url = state["url"]
        self.storage_options = state["storage_options"]
        self._fs: fsspec.AbstractFileSystem | None = None
        # A plain path is served with os calls alone: fsspec (~60 ms to import) is for URLs.
        self._plain = not _has_protocol(self.url)
        self._root = self.url.rstrip("/") if self._plain else ""
        # What this process wrote through this store: read back from memory (see assetflow.recent).
        self._recent = RecentValues()
        # Assets whose folder a local listing found absent: nothing can be found there but what this
        # store writes, so their values skip the existence check, and the first creates the folder up
        # front (``_made``: the ones it has created since).
        self._unlisted: set[str] = set()
        self._made: set[str] = set()

    def __repr__(self) -> str:
        """Show the root URL (never the storage options, which may hold credentials)."""
        return f"ValueStore({self.url!r})"

    # --- public API ----------------------------------------------------------------------------------

    def put(self, asset: str, value: object) -> StoredValue:
        """Store ``value`` for ``asset`` under its content hash; a no-op if that content is already there."""
        normalized = normalize(value)
        content_hash = version_of(normalized)
        fmt = _FORMAT_OF_KIND[normalized.kind]
        path = f"{_checked_relative(asset, self.url)}/{content_hash}.{_EXTENSION[fmt]}"
        size = self._recent.size(path)
        if size is None:  # not written through this store already
            full = self._full(path)
            encoded: _Encoded | None = None
            unlisted = asset in self._unlisted
            with self._os_errors("write", path, missing_is_absent=False):
                # Content-addressed: whatever is at this path already is this content — unless it is
                # the empty file a power loss can leave after an unsynced rename (nothing pointed at it).
                # (At worst, a value of an unlisted asset that another writer just stored is written
                # again, identically.)
                size = None if unlisted else self._size_if_present(full)
                if not size:
                    encoded = _encode(normalized, value)
                    new_folder = unlisted and asset not in self._made
                    size = self._write(full, encoded, new_folder=new_folder)
                    if new_folder:
                        self._made.add(asset)
            self._recent.remember(path, size, encoded if isinstance(encoded, bytes) else None)
        return StoredValue(path=path, format=fmt, size=size, content_hash=content_hash)

    def get(self, path: str, format: str) -> object:
        """Read back a value written by :meth:`put` (``format`` as in its :class:`StoredValue`).

        ``parquet`` gives a ``pyarrow.Table``, ``pandas`` / ``polars`` a DataFrame of that library,
        ``bytes`` the bytes and ``pickle`` the unpickled object. Raises :class:`ValueMissingError`.
        """
        if format not in FORMATS:
            raise StoreError(f"unknown value format {format!r} for {path} in data root {self.url}")
        if _EXTENSION[format] != "parquet":
            kept = self._recent.encoded(path)
            if kept is not None:  # decoded as the file would be: a fresh object for every reader
                return kept if format == "bytes" else pickle.loads(kept)
        full = self._full(path)
        with self._os_errors("read", path, missing_is_absent=True):
            if _EXTENSION[format] != "parquet" and self._is_local():
                data = _read_local(full)
            else:
                with self._open_for_read(full) as source:
                    if _EXTENSION[format] == "parquet":
                        return _frame_from_table(pq.read_table(source), format)
                    data = source.read()
        return data if format == "bytes" else pickle.loads(data)

    def exists(self, path: str) -> bool:
        """True if a value is stored at ``path``."""
        full = self._full(path)
        with self._os_errors("check", path, missing_is_absent=False):
            return self._size_if_present(full) is not None

    def list_paths(self, assets: Iterable[str]) -> set[str]:
        """Every value path present under these assets' folders, with one listing per folder.

        A missing folder lists as empty; in-progress or crashed temp files and anything not named like
        a value are ignored.
        """
        found: set[str] = set()
        # Locally, one listing of the root first: a fresh root, or an asset never materialized, then
        # costs no failing listing of its own (200 of them for a new 200-asset project).
        top = None
        if self._is_local():
            with self._os_errors("list", "the root", missing_is_absent=False):
                top = set(self._names_in(self._root or "."))
        for asset in dict.fromkeys(assets):  # dedupe, keep order
            folder = self._full(_checked_relative(asset, self.url))
            if top is not None and asset.split("/", 1)[0] not in top:
                self._unlisted.add(asset)
                continue
            self._unlisted.discard(asset)
            with self._os_errors("list", asset, missing_is_absent=False):
                names = self._names_in(folder)
            found.update(f"{asset}/{name}" for name in names if _VALUE_NAME.fullmatch(name))
        return found

    def _names_in(self, folder: str) -> list[str]:
        """Entry names in ``folder``, fresh (not from a listing cache); none if it does not exist."""
        if self._is_local():  # one listdir, without fsspec's per-call stat and path handling
            try:
                return os.listdir(folder)
            except (FileNotFoundError, NotADirectoryError):
                return []
        fs = self._filesystem()
        fs.invalidate_cache(folder)
        try:
            entries = fs.ls(folder, detail=False)
        except FileNotFoundError:
            return []
        return [str(entry).rstrip("/").rsplit("/", 1)[-1] for entry in entries]

    def delete(self, path: str) -> int:
        """Delete the value at ``path``; return the bytes freed (0 if it was not there)."""
        full = self._full(path)
        self._recent.forget(path)
        with self._os_errors("delete", path, missing_is_absent=False):
            size = self._size_if_present(full)
            if size is None:
                return 0
            try:
                if self._is_local():
                    os.remove(full)
                else:
                    self._filesystem().rm_file(full)
            except FileNotFoundError:  # deleted concurrently: someone else freed it
                return 0
        return size

    def sync(self) -> None:
        """Make every value written so far durable (call before committing lineage that points at
        them). Object stores are durable once a PUT returns; a local root is flushed in one call."""
        if self._write_mode() == "local" and os.path.isdir(self._root or "/"):
            _syncfs(self._root)

    def size(self, path: str) -> int:
        """Size in bytes of the value at ``path``; raises :class:`ValueMissingError` if absent."""
        full = self._full(path)
        with self._os_errors("stat", path, missing_is_absent=False):
            size = self._size_if_present(full)
        if size is None:
            raise ValueMissingError(f"value {path} is missing from data root {self.url}")
        return size

    # --- filesystem plumbing -------------------------------------------------------------------------

    def _filesystem(self) -> fsspec.AbstractFileSystem:
        """The fsspec filesystem, created on first use (again after unpickling)."""
        if self._fs is None:
            import fsspec

            try:
                fs, root = fsspec.core.url_to_fs(self.url, **self.storage_options)
            except (ValueError, ImportError, TypeError, OSError) as exc:
                raise StoreError(f"cannot open data root {self.url}: {_one_line(exc)}") from exc
            self._fs, self._root = fs, root.rstrip("/")
        return self._fs

    def _full(self, path: str) -> str:
        """The filesystem path of a root-relative path."""
        if not self._plain:
            self._filesystem()
        relative = _checked_relative(path, self.url)
        return f"{self._root}/{relative}" if self._root else relative

    def _is_local(self) -> bool:
        """Whether values are files on this machine (a plain path, or a URL fsspec resolves to one)."""
        if self._plain:
            return True
        from fsspec.implementations.local import LocalFileSystem

        return isinstance(self._filesystem(), LocalFileSystem)

    def _write_mode(self) -> _WriteMode:
        if self._is_local():
            return "local"
        fs = self._filesystem()
        protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
        return "direct" if protocols & _OBJECT_STORE_PROTOCOLS else "rename"

    def _size_if_present(self, full: str) -> int | None:
        """Size of the file at ``full``, or None if there is none (fresh, not from a listing cache)."""
        if self._is_local():  # one stat, without fsspec's per-call path handling
            try:
                info = os.stat(full)
            except FileNotFoundError:
                return None
            return info.st_size if stat.S_ISREG(info.st_mode) else None
        fs = self._filesystem()
        fs.invalidate_cache(full)
        try:
            info = fs.info(full)
        except FileNotFoundError:
            return None
        return int(info["size"]) if info.get("type") == "file" else None

    def _write(self, full: str, encoded: _Encoded, *, new_folder: bool = False) -> int:
        """Write ``encoded`` so that ``full`` either does not exist or holds all of it; return the size.
        ``new_folder``: the folder is likely missing (a local write creates it before anything else)."""
        mode = self._write_mode()
        if mode == "local":
            return _write_local_atomically(full, encoded, new_folder)
        data = _to_bytes(encoded)
        fs = self._filesystem()
        if mode == "direct":
            fs.pipe_file(full, data)  # one PUT (or multipart upload): visible only once complete
            return len(data)
        folder, name = full.rsplit("/", 1)
        temp = _temp_name(folder, name)
        fs.makedirs(folder, exist_ok=True)  # filesystems with real folders need them to exist
        try:
            fs.pipe_file(temp, data)
            fs.mv(temp, full)
        except BaseException:
            with suppress(Exception):
                fs.rm_file(temp)
            raise
        return len(data)

    @contextmanager
    def _open_for_read(self, full: str) -> Iterator[pa.NativeFile]:
        """A native file to read ``full`` from: streamed locally, one GET for remote stores."""
        if self._is_local():
            with pa.OSFile(full, "rb") as source:
                yield source
        else:
            yield pa.BufferReader(self._filesystem().cat_file(full))

    def _os_errors(self, action: str, path: str, *, missing_is_absent: bool) -> _OSErrors:
        """Turn filesystem errors into one-line :class:`StoreError`s that name the root URL."""
        return _OSErrors(self.url, action, path, missing_is_absent)


class _OSErrors:
    """The context manager of :meth:`ValueStore._os_errors`: a class, because it wraps every read and
    write of a value, and a generator-based one costs three times as much to enter and leave."""

    __slots__ = ("url", "action", "path", "missing_is_absent")

    def __init__(self, url: str, action: str, path: str, missing_is_absent: bool) -> None:
        self.url, self.action, self.path, self.missing_is_absent = url, action, path, missing_is_absent

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is None or isinstance(exc, StoreError) or not isinstance(exc, OSError):
            return  # nothing to translate: the exception (if any) goes on as it is
        if isinstance(exc, FileNotFoundError) and self.missing_is_absent:
            raise ValueMissingError(f"value {self.path} is missing from data root {self.url}") from exc
        raise StoreError(f"cannot {self.action} {self.path} in data root {self.url}: {_one_line(exc)}") from exc


# --- helpers -----------------------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    """An exception's message squeezed onto one line (errors are printed as one line)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _has_protocol(url: str) -> bool:
    return "://" in url or "::" in url


def _absolute_if_local(url: str) -> str:
    """Make a plain local path absolute; leave URLs (anything with a protocol) alone."""
    if _has_protocol(url):
        return url
    return os.path.abspath(os.path.expanduser(url))


def _check_local_root(root: str, url: str) -> None:
    """Fail now, with the URL, if a local root (or its nearest existing ancestor) is not a folder."""
    probe = root or os.sep
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            return
        probe = parent
    if not os.path.isdir(probe):
        what = "is not a directory" if probe == root else f"is under {probe}, which is not a directory"
        raise StoreError(f"data root {url} {what}")


def _checked_relative(path: str, url: str) -> str:
    """Reject paths that could escape the root or alias another path ('..', '.', '//', absolute)."""
    parts = path.split("/")
    if "\\" in path or "" in parts or "." in parts or ".." in parts:  # "" covers '', '/x', 'x/' and 'x//y'
        raise StoreError(f"invalid path {path!r} in data root {url}")
    return path


def _encode(normalized: Normalized, value: object) -> _Encoded:
    """What gets written: the Arrow table that was hashed, raw bytes, or a pickle."""
    if normalized.table is not None:
        return normalized.table
    if normalized.kind == "str":
        return pickle.dumps(value, protocol=5)  # hashed as UTF-8, but stored in the pickle format
    assert normalized.payload is not None
    return normalized.payload


def _write_parquet(table: pa.Table, sink: pa.NativeFile) -> None:
    # Parquet's "compliant" nested naming would rename list children (item -> element): the table
    # read back would have another type, hence another version. Keep Arrow's names.
    pq.write_table(table, sink, use_compliant_nested_type=False)


def _to_bytes(encoded: _Encoded) -> bytes:
    """Serialize fully in memory: object-store uploads need the whole body (or parts) up front."""
    if not isinstance(encoded, pa.Table):
        return bytes(encoded)
    sink = pa.BufferOutputStream()
    _write_parquet(encoded, sink)
    return sink.getvalue().to_pybytes()


def _frame_from_table(table: pa.Table, format: str) -> object:
    """Turn a table read from Parquet back into the frame type it was stored from."""
    if format == "pandas":
        return table.to_pandas()  # pandas metadata in the schema restores the index and dtypes
    if format == "polars":
        import polars  # optional dependency: only needed to read polars values back

        return polars.from_arrow(table)
    return table


_TEMP_TOKEN = secrets.token_hex(6)
_TEMP_COUNTER = itertools.count()


def _renew_temp_token() -> None:
    global _TEMP_TOKEN
    _TEMP_TOKEN = secrets.token_hex(6)


if hasattr(os, "register_at_fork"):  # a forked child must not reuse its parent's names (no fork on Windows)
    os.register_at_fork(after_in_child=_renew_temp_token)


def _temp_name(folder: str, name: str) -> str:
    """A temp path beside ``name`` that no other writer uses: a per-process random token and a counter
    (``uuid4`` would cost a ``getrandom`` syscall per value)."""
    return f"{folder}/{TEMP_PREFIX}{_TEMP_TOKEN}{next(_TEMP_COUNTER):x}-{name}"


def _create_exclusive(temp: str, folder: str, new_folder: bool = False) -> int:
    """Open a new file for writing; create its folder only when the open says it is missing (an asset's
    first value), which saves a syscall or two on every other value — or first, with one ``mkdir``,
    when the folder is known to be new."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    if new_folder:
        try:
            os.mkdir(folder)
        except FileExistsError:
            pass  # another thread's value of the same asset came first
        except FileNotFoundError:
            os.makedirs(folder, exist_ok=True)  # the data root itself is new
    try:
        return os.open(temp, flags, 0o666)
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
        return os.open(temp, flags, 0o666)


def _write_local_atomically(full: str, encoded: _Encoded, new_folder: bool = False) -> int:
    """Write via a temp file in the same folder and ``os.replace``; return the size.

    A process crash at any point leaves either no file at ``full`` or the complete one, plus perhaps a
    ``.tmp-`` leftover that listings ignore. Durability against power loss is group-committed:
    :meth:`ValueStore.sync` flushes the whole data root once before lineage that points at these
    values is committed (one sync per batch instead of two fsyncs per value).

    Every syscall here releases the GIL, and with several worker threads each one is a chance to
    wait for it to come back (a worker's ``stat`` measured ~0.1 ms here, nearly all of it waiting):
    a small value costs five (create, write, close, rename, and the caller's existence check — or,
    for an asset's first value in a ``new_folder``, the ``mkdir`` instead), not the dozen a
    general-purpose file object makes.
    """
    folder, name = os.path.split(full)
    temp = _temp_name(folder, name)
    fd = _create_exclusive(temp, folder, new_folder)
    try:
        if isinstance(encoded, pa.Table):
            # OSFile owns (and closes) the descriptor from here: never close it ourselves after this,
            # or we might close another thread's reuse of the number.
            owned, fd = fd, -1
            with pa.OSFile(owned, "wb") as sink:  # native writes: no GIL round trip per block
                _write_parquet(encoded, sink)
                size = sink.tell()
        else:
            size = _write_all(fd, encoded)
            closing, fd = fd, -1
            os.close(closing)
        os.replace(temp, full)
    except BaseException:
        if fd >= 0:
            with suppress(OSError):
                os.close(fd)
        with suppress(OSError):
            os.unlink(temp)
        raise
    return size


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> int:
    view = memoryview(data).cast("B")
    written = 0
    while written < len(view):
        written += os.write(fd, view[written:])
    return written


def _read_local(full: str, read: Callable[[int, int], bytes] = os.read) -> bytes:
    """The whole file, in four syscalls (open, fstat, read, close) — more only when a read comes back
    short (Linux returns at most ~2 GiB per call)."""
    fd = os.open(full, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
    try:
        size = os.fstat(fd).st_size
        data = read(fd, size)
        if len(data) == size:
            return data
        parts = [data]
        while chunk := read(fd, 1 << 24):
            parts.append(chunk)
        return b"".join(parts)
    finally:
        os.close(fd)


def _syncfs(path: str) -> None:
    """Flush the filesystem holding ``path`` to disk: Linux ``syncfs``, else a global ``sync``."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        os.sync()
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if getattr(libc, "syncfs", None) is None or libc.syncfs(fd) != 0:
            os.sync()
    except OSError:
        os.sync()
    finally:
        os.close(fd)


