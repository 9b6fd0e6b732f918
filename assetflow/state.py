"""Where lineage state lives: a local DuckDB file, or a DuckDB file shared through object storage.

The remote pattern is Terraform's S3 backend, adapted to a database file:

* the DuckDB file (``s3://bucket/team/lineage.duckdb``) is the shared state; every command works on a
  local copy in a cache folder and never opens the remote object in place;
* readers (``status``, ``plan``, ``lineage``, ``runs``) download a consistent copy and never lock;
* a writer (``materialize``, ``gc``) first takes a **lock object** beside the state, created with a
  conditional write (``If-None-Match: *``) so exactly one runner wins; it then downloads the latest
  state, works on the local copy, and uploads **checkpoints** (a single PUT is atomic: readers see the
  previous or the next checkpoint, never a torn file) during the run and at its end;
* the lock carries a heartbeat refreshed at every checkpoint with ``If-Match`` on its ETag. A runner
  that dies leaves a lock whose heartbeat stops: after ``ttl`` seconds the next runner takes it over
  (again with ``If-Match``, so two runners cannot both take it), or ``assetflow unlock`` clears it.

Values are content-addressed, so work redone after a crash (since the last checkpoint) is harmless.
"""

from __future__ import annotations

import hashlib
import shutil
import weakref
import json
import os
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .errors import StoreBusyError, StoreError
from .lineage_store import LineageStore
from .runlock import acquire as acquire_local, holder_of as local_holder

DEFAULT_TTL_S = 300.0
CHECKPOINT_EVERY_S = 10.0


class Lock(Protocol):
    """A held run lock."""

    def release(self) -> None:
        """Release it."""


class State(Protocol):
    """Lineage state as commands use it."""

    url: str

    def reader(self) -> LineageStore:
        """A store to read from, without locking."""

    def lock(self, run_id: str, *, wait: bool = False) -> Lock:
        """Take the run lock (StoreBusyError if held)."""

    def writer(self) -> LineageStore:
        """The store to write to; only after :meth:`lock`."""

    def holder(self) -> dict[str, Any] | None:
        """Who holds the run lock now (None when nobody does, or the holder is dead)."""


def is_remote(url: str | os.PathLike[str]) -> bool:
    """Whether a store location is an fsspec URL other than a local file."""
    text = str(url)
    return "://" in text and not text.startswith("file://")


class LocalState:
    """A lineage file on this machine's disk; the run lock is an OS file lock beside it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.url = str(path)
        self.store = LineageStore(Path(str(path).removeprefix("file://")))

    def reader(self) -> LineageStore:
        """The file itself: DuckDB allows many read-only processes."""
        return self.store

    def writer(self) -> LineageStore:
        """The file itself."""
        return self.store

    def lock(self, run_id: str, *, wait: bool = False) -> Lock:
        """flock on ``<store>.lock``."""
        return acquire_local(self.store.path, run_id, wait=wait)

    def holder(self) -> dict[str, Any] | None:
        """The flock holder's record, if any process holds it."""
        return local_holder(self.store.path)


def _cache_root() -> Path:
    base = os.environ.get("ASSETFLOW_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "assetflow")
    return Path(base)


@dataclass
class RemoteLock:
    """The lock object of a remote state, kept alive by heartbeats: at every checkpoint, and from a
    background thread every ``ttl/3`` seconds, so a live runner inside a long step keeps its lock."""

    state: RemoteState
    record: dict[str, Any]
    etag: str
    lost: str | None = None

    def __post_init__(self) -> None:
        self._guard = threading.Lock()
        self._stop = threading.Event()
        interval = max(float(self.record.get("ttl_s", DEFAULT_TTL_S)) / 3, 0.2)
        self._beater = threading.Thread(target=self._beat, args=(interval,), daemon=True, name="assetflow-lock-heartbeat")
        self._beater.start()

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.heartbeat()
            except StoreError as exc:
                self.lost = str(exc)
                return

    def heartbeat(self) -> None:
        """Refresh the heartbeat; raises StoreError if the lock was taken from us (e.g. ``unlock``)."""
        with self._guard:
            if self.lost:
                raise StoreError(self.lost)
            self.record["heartbeat_at"] = time.time()
            try:
                self.etag = self.state.put_lock(self.record, if_match=self.etag)
            except (FileNotFoundError, OSError) as exc:
                self.lost = f"lost the lock on {self.state.url}: {exc}"
                raise StoreError(self.lost) from None

    def release(self) -> None:
        """Stop the heartbeat and delete the lock object (only if it is still ours)."""
        self._stop.set()
        self._beater.join(5)
        with self._guard:
            current = self.state.read_lock()
            if current is not None and current[0].get("run_id") == self.record["run_id"]:
                self.state.fs.rm_file(self.state.lock_key)


@dataclass
class RemoteState:
    """Lineage state in object storage (see the module docstring for the protocol)."""

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict)
    ttl_s: float = field(default_factory=lambda: float(os.environ.get("ASSETFLOW_LOCK_TTL", DEFAULT_TTL_S)))
    checkpoint_every_s: float = CHECKPOINT_EVERY_S

    def __post_init__(self) -> None:
        import fsspec

        try:
            self.fs, self.key = fsspec.core.url_to_fs(self.url, **self.storage_options)
        except (ImportError, ValueError) as exc:
            raise StoreError(f"cannot use lineage store {self.url}: {exc}") from None
        self.lock_key = self.key + ".lock"
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        self.cache = _cache_root() / digest
        self._held: RemoteLock | None = None
        self._last_upload = 0.0
        self._reader: LineageStore | None = None

    # ---- the lock object -------------------------------------------------------------------------

    def read_lock(self) -> tuple[dict[str, Any], str] | None:
        """The lock record and its ETag, or None if there is no lock."""
        try:
            info = self.fs.info(self.lock_key)
            body = self.fs.cat_file(self.lock_key)
        except FileNotFoundError:
            return None
        try:
            return json.loads(body), str(info.get("ETag", ""))
        except ValueError:
            return {}, str(info.get("ETag", ""))

    def put_lock(self, record: dict[str, Any], *, if_match: str | None = None) -> str:
        """Write the lock object conditionally: create-only, or replace only the version we saw."""
        body = json.dumps(record).encode()
        if if_match is None:
            self.fs.pipe_file(self.lock_key, body, mode="create")
        else:
            self.fs.pipe_file(self.lock_key, body, IfMatch=if_match)
        self.fs.invalidate_cache(self.lock_key)
        return str(self.fs.info(self.lock_key).get("ETag", ""))

    def _expired(self, record: dict[str, Any]) -> bool:
        beat = record.get("heartbeat_at") or record.get("acquired_at") or 0
        return time.time() - float(beat) > float(record.get("ttl_s", self.ttl_s))

    def holder(self) -> dict[str, Any] | None:
        """The live holder of the lock (an expired lock has none)."""
        found = self.read_lock()
        if found is None or self._expired(found[0]):
            return None
        return found[0]

    def lock(self, run_id: str, *, wait: bool = False, poll_s: float = 1.0) -> RemoteLock:
        """Take the lock: create it, or take over an expired one; fail naming the holder, or wait."""
        now = time.time()
        record = {"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(),
                  "acquired_at": now, "heartbeat_at": now, "ttl_s": self.ttl_s}
        while True:
            try:
                self._held = RemoteLock(self, record, self.put_lock(record))
                return self._held
            except FileExistsError:
                pass
            found = self.read_lock()
            if found is None:
                continue  # released between our attempts: try again
            holder, etag = found
            if self._expired(holder):
                try:
                    self._held = RemoteLock(self, record, self.put_lock(record, if_match=etag))
                    import warnings

                    warnings.warn(f"took over the expired lock of run {holder.get('run_id')} on {self.url}", stacklevel=2)
                    return self._held
                except OSError:
                    continue  # another runner took it over first
            if not wait:
                age = time.time() - float(holder.get("acquired_at", time.time()))
                raise StoreBusyError(
                    f"store {self.url} is held by run {holder.get('run_id')} on {holder.get('host')} "
                    f"(pid {holder.get('pid')}, for {age:.0f}s); retry later, pass --wait, or `assetflow unlock` if it is dead")
            time.sleep(poll_s)

    def unlock(self) -> dict[str, Any] | None:
        """Remove the lock object whoever holds it; returns the removed holder."""
        found = self.read_lock()
        if found is None:
            return None
        self.fs.rm_file(self.lock_key)
        return found[0]

    # ---- the state file --------------------------------------------------------------------------

    def _download(self, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        for leftover in (target, target.with_name(target.name + ".wal")):
            leftover.unlink(missing_ok=True)
        try:
            self.fs.get_file(self.key, str(target))
        except FileNotFoundError:
            return  # no state yet: a fresh project

    def reader(self) -> LineageStore:
        """A private downloaded copy of the latest checkpoint (never locks anything)."""
        if self._reader is None:
            folder = Path(tempfile.mkdtemp(prefix="read-", dir=self._ensure_cache()))
            weakref.finalize(self, shutil.rmtree, folder, True)  # a read copy lives as long as this object
            path = folder / "lineage.duckdb"
            self._download(path)
            self._reader = LineageStore(path)
        return self._reader

    def _ensure_cache(self) -> Path:
        self.cache.mkdir(parents=True, exist_ok=True)
        return self.cache

    def writer(self) -> LineageStore:
        """The local working copy, freshly downloaded under the lock; commits upload checkpoints."""
        if self._held is None:
            raise StoreError("internal: writer() before lock()")
        path = self._ensure_cache() / f"work-{os.getpid()}" / "lineage.duckdb"
        self._download(path)
        return LineageStore(path, on_commit=self._checkpoint)

    def _checkpoint(self, store: LineageStore, force: bool = False) -> None:
        if not force and time.monotonic() - self._last_upload < self.checkpoint_every_s:
            return
        self._last_upload = time.monotonic()
        if self._held is not None:
            self._held.heartbeat()
        if store.path.exists():
            self.fs.put_file(str(store.path), self.key)

    def flush(self, store: LineageStore) -> None:
        """Upload the final state now."""
        self._checkpoint(store, force=True)


def open_state(url: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> LocalState | RemoteState:
    """The state backend for a ``--store`` value."""
    if is_remote(url):
        return RemoteState(str(url), dict(storage_options or {}))
    return LocalState(url)
