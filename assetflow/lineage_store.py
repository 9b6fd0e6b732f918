"""The lineage store: runs, attempts, consumed inputs and the current head of every (asset, partition),
in one DuckDB file. This module owns all SQL.

Why connections are short: DuckDB lets one process open a file read-write *or* many processes open it
read-only, never both. A ``materialize`` that held its connection for the whole run would lock every
``status``/``plan``/``runs`` out. So every operation opens, works in one transaction, and closes; the
other side of a conflict retries for a while (:data:`LOCK_WAIT_S`). Writes are batched (a single-row
INSERT costs milliseconds) and mutual exclusion between *runs* is a separate file lock (``runlock``).

The one exception is :meth:`LineageStore.held`: opening a DuckDB database costs 15–25 ms (DuckDB 2
builds its whole function catalogue per instance), as much as the rest of a 200-step run's lineage
work, so a run keeps its first connection for its operations of the next :data:`HOLD_S` and then
goes back to short ones. While held, that single connection is *the* connection of this process to
the file — no cursor or second connection beside it, so DuckDB never checkpoints beside another
transaction of the same database.

``heads`` and ``head_inputs`` are derived state kept in the same transaction as the history they
summarize, so planning never scans history: the planner's snapshot is two scans, however many runs
came before.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from .arrays import empty, numbers, strings
from .background import Background
from .errors import StoreError, cannot_create_store

SCHEMA_VERSION = 2
NEW_STORE_CONFIG = {"default_block_size": "16384"}
"""DuckDB settings for creating a store file. 16 KiB blocks instead of the default 256 KiB: a new
store's first checkpoint writes ~0.2 MB instead of ~2.6 MB (its close, 14 -> 10 ms here; and shared
state uploads the whole file at each of its checkpoints), while a 365k-partition store plans as fast
(0.38 vs 0.39 s) in a file ~12 % larger. An existing file keeps the block size it was created with."""
_IN_PROCESS = threading.RLock()
LOCK_WAIT_S = 30.0
HOLD_S = 1.0
"""How long a run keeps the store file open across its operations (see :meth:`LineageStore.held`):
the longest another process's ``status`` waits for a short run, beyond one operation."""

_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, kind VARCHAR, status VARCHAR, tags VARCHAR, selection VARCHAR,
    started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ, pid INTEGER, host VARCHAR,
    materialized INTEGER DEFAULT 0, skipped INTEGER DEFAULT 0, failed INTEGER DEFAULT 0,
    upstream_failed INTEGER DEFAULT 0, error VARCHAR);
CREATE TABLE IF NOT EXISTS materializations (
    mat_id BIGINT, run_id VARCHAR, asset VARCHAR, partition VARCHAR, attempt INTEGER, outcome VARCHAR,
    started_at TIMESTAMPTZ, duration_s DOUBLE, error VARCHAR, traceback VARCHAR, logs VARCHAR,
    code_version VARCHAR, config_hash VARCHAR, data_version VARCHAR, path VARCHAR, format VARCHAR,
    size BIGINT, metadata VARCHAR);
CREATE TABLE IF NOT EXISTS inputs (mat_id BIGINT, up_asset VARCHAR, up_partition VARCHAR, data_version VARCHAR);
CREATE TABLE IF NOT EXISTS heads (
    asset VARCHAR, partition VARCHAR, mat_id BIGINT, code_version VARCHAR, config_hash VARCHAR,
    data_version VARCHAR, path VARCHAR, format VARCHAR, materialized_at TIMESTAMPTZ, run_id VARCHAR,
    failed BOOLEAN, PRIMARY KEY (asset, partition));
CREATE TABLE IF NOT EXISTS checks (
    run_id VARCHAR, asset VARCHAR, partition VARCHAR, check_name VARCHAR, passed BOOLEAN,
    blocking BOOLEAN, error VARCHAR, metadata VARCHAR, checked_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS observations (
    source VARCHAR, partition VARCHAR, version VARCHAR, observed_at TIMESTAMPTZ,
    PRIMARY KEY (source, partition));
"""

# The tables a version-1 store lacks; a new file gets them with the rest in one go (``_SCHEMA``).
_HEAD_INPUTS = """
CREATE TABLE IF NOT EXISTS head_inputs (
    asset VARCHAR, partition VARCHAR, up_asset VARCHAR, up_partition VARCHAR, data_version VARCHAR);
"""

# Migrations from version N to N+1, applied in order inside one transaction.
_MIGRATIONS: dict[int, str] = {
    # 2: the inputs of current heads get their own table, so planning never joins history.
    1: _HEAD_INPUTS + """
INSERT INTO head_inputs SELECT h.asset, h.partition, i.up_asset, i.up_partition, i.data_version
    FROM heads h JOIN inputs i ON i.mat_id = h.mat_id;
""",
}
_SCHEMA = _SCHEMA_V1 + _HEAD_INPUTS
"""Every table of the current schema version, for a file this process has just created."""

ATTEMPT_SCHEMA = pa.schema([
    ("mat_id", pa.int64()), ("run_id", pa.string()), ("asset", pa.string()), ("partition", pa.string()),
    ("attempt", pa.int32()), ("outcome", pa.string()), ("started_at", pa.timestamp("us", tz="UTC")),
    ("duration_s", pa.float64()), ("error", pa.string()), ("traceback", pa.string()), ("logs", pa.string()),
    ("code_version", pa.string()), ("config_hash", pa.string()), ("data_version", pa.string()),
    ("path", pa.string()), ("format", pa.string()), ("size", pa.int64()), ("metadata", pa.string()),
])
INPUT_SCHEMA = pa.schema([
    ("mat_id", pa.int64()), ("up_asset", pa.string()), ("up_partition", pa.string()), ("data_version", pa.string()),
])
"""The ``inputs`` table: the upstream versions one materialization consumed."""
BATCH_INPUT_SCHEMA = INPUT_SCHEMA.append(pa.field("asset", pa.string())).append(pa.field("partition", pa.string()))
"""A batch's input rows: ``inputs`` columns, then the (asset, partition) of the attempt ``mat_id`` names —
which its writer knows, so moving heads needs no join of the batch's inputs to its attempts (a third
of the head inputs' insert, ~2 ms a batch). Input rows belong to ``materialized`` attempts only."""
CHECK_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("asset", pa.string()), ("partition", pa.string()), ("check_name", pa.string()),
    ("passed", pa.bool_()), ("blocking", pa.bool_()), ("error", pa.string()), ("metadata", pa.string()),
    ("checked_at", pa.timestamp("us", tz="UTC")),
])
OBSERVATION_SCHEMA = pa.schema([
    ("source", pa.string()), ("partition", pa.string()), ("version", pa.string()),
    ("observed_at", pa.timestamp("us", tz="UTC")),
])


@dataclass(frozen=True, eq=False)
class Catalogue:
    """How the caller numbers (asset, partition) pairs, so the store can hand rows over as numbers.

    ``nodes`` is (name, grp, off) per asset and ``keys`` (grp, key, local) per partition key of each
    group of assets sharing a partitions definition; the id of (asset, key) is ``off + local``. The
    store joins its rows to these two small tables, so a snapshot of 365k heads and 520k inputs never
    crosses into Python as a million strings to look up again.
    """

    nodes: pa.Table
    keys: pa.Table

    @staticmethod
    def build(names: Sequence[str], group_of: Sequence[int] | np.ndarray, group_keys: Sequence[Sequence[str]]) -> Catalogue:
        """Number ``names`` in order: asset ``i`` has the keys ``group_keys[group_of[i]]``, and its ids
        follow the previous asset's."""
        group_of = np.asarray(group_of, dtype=np.int64)
        sizes = np.array([len(keys) for keys in group_keys], dtype=np.int64)
        counts = sizes[group_of] if len(group_of) else np.zeros(0, np.int64)
        nodes = pa.table({"name": strings(names), "grp": numbers(group_of),
                          "off": numbers(np.cumsum(counts) - counts)})
        keys = pa.table({
            "grp": numbers(np.repeat(np.arange(len(sizes)), sizes)),
            "key": strings([key for keys in group_keys for key in keys]),
            "local": numbers(np.concatenate([np.arange(n) for n in sizes]) if len(sizes) else np.zeros(0, np.int64)),
        })
        return Catalogue(nodes, keys)


HEAD_SCHEMA = pa.schema([
    ("gid", pa.int64()), ("mat_id", pa.int64()), ("code_version", pa.string()), ("config_hash", pa.string()),
    ("data_version", pa.string()), ("path", pa.string()), ("format", pa.string()),
    ("materialized_at", pa.timestamp("us", tz="UTC")), ("failed", pa.bool_()),
])
HEAD_INPUT_SCHEMA = pa.schema([("down", pa.int64()), ("up", pa.int64()), ("data_version", pa.string()),
                               ("gone_asset", pa.string()), ("gone_partition", pa.string())])


@dataclass(frozen=True, slots=True)
class StoreSnapshot:
    """What the planner knows of the store, in the ids of ``catalogue``: the current head of every
    (asset, partition) (``gid``) and the inputs those heads consumed (``down`` → ``up``), in no order
    (an ORDER BY costs more than the planner saves when the rows happen to come in order).
    An (asset, partition) the catalogue does not know (a removed asset, a partition before a new
    ``start``) has the id -1; a consumed one keeps its name in ``gone_asset`` / ``gone_partition``, so
    a plan can still say which input went away."""

    catalogue: Catalogue
    heads: pa.Table
    inputs: pa.Table

    @staticmethod
    def empty(catalogue: Catalogue) -> StoreSnapshot:
        """The snapshot of a store that does not exist yet."""
        return StoreSnapshot(catalogue, empty(HEAD_SCHEMA), empty(HEAD_INPUT_SCHEMA))


@dataclass(frozen=True, slots=True)
class Batch:
    """One write transaction's worth of results (Arrow tables in the schemas above)."""

    attempts: pa.Table
    inputs: pa.Table
    checks: pa.Table
    new_heads: bool = False
    """True when no partition the batch materializes has a heads row yet (its writer knows, from the
    snapshot it planned from and the rows it wrote since, under the run lock): heads are inserted, not
    upserted, and there are no earlier head inputs to delete. The first materialization of new
    partitions (a daily run's new day, a backfill, a new store) is most batches."""

    @staticmethod
    def empty() -> Batch:
        """A batch with no rows."""
        return Batch(ATTEMPT_SCHEMA.empty_table(), BATCH_INPUT_SCHEMA.empty_table(), CHECK_SCHEMA.empty_table())


@dataclass(frozen=True, slots=True)
class RunEnd:
    """How a run ended, written with its last batch."""

    run_id: str
    status: str
    counts: dict[str, int]
    finished_at: datetime
    error: str | None = None


def fetch_arrow(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    """A query's result as an Arrow table (``to_arrow_table`` in DuckDB 2, ``arrow`` before)."""
    relation = con.sql(sql)
    fetch = getattr(relation, "to_arrow_table", None) or relation.arrow
    return fetch()


def _sql(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Execute one statement and drain its result (DuckDB 2 refuses new work while a result is pending)."""
    cursor = con.execute(sql, list(params)) if params else con.execute(sql)
    try:
        return cursor.fetchall()
    except duckdb.InvalidInputError:  # statements without a result set
        return []


# LEFT JOINs on purpose, and no filter on their result: with inner joins (which a filter on the joined
# columns becomes) the optimizer joins the two small tables first, every asset × every key, and builds
# its hash table on that. As written, the big table probes two small ones: several times faster. Rows
# the catalogue does not know come out as -1.
_SNAPSHOT_HEADS = """
SELECT coalesce(n.off + k.local, -1) AS gid, h.mat_id, h.code_version, h.config_hash, h.data_version, h.path,
       h.format, h.materialized_at, h.failed
FROM heads h LEFT JOIN af_nodes n ON n.name = h.asset LEFT JOIN af_keys k ON k.grp = n.grp AND k.key = h.partition"""
_SNAPSHOT_INPUTS = """
SELECT coalesce(n.off + k.local, -1) AS down, coalesce(un.off + uk.local, -1) AS up, i.data_version,
       CASE WHEN uk.local IS NULL THEN i.up_asset END AS gone_asset,
       CASE WHEN uk.local IS NULL THEN i.up_partition END AS gone_partition
FROM head_inputs i LEFT JOIN af_nodes n ON n.name = i.asset LEFT JOIN af_keys k ON k.grp = n.grp AND k.key = i.partition
LEFT JOIN af_nodes un ON un.name = i.up_asset LEFT JOIN af_keys uk ON uk.grp = un.grp AND uk.key = i.up_partition"""


def _read_snapshot(con: duckdb.DuckDBPyConnection, catalogue: Catalogue) -> StoreSnapshot:
    con.register("af_nodes", catalogue.nodes)
    con.register("af_keys", catalogue.keys)
    try:
        heads = fetch_arrow(con, _SNAPSHOT_HEADS).cast(HEAD_SCHEMA)
        inputs = fetch_arrow(con, _SNAPSHOT_INPUTS).cast(HEAD_INPUT_SCHEMA)
    finally:
        con.unregister("af_nodes")
        con.unregister("af_keys")
    return StoreSnapshot(catalogue, heads, inputs)


def _is_lock_conflict(exc: Exception) -> bool:
    text = str(exc)
    return "Could not set lock" in text or "Conflicting lock" in text or "database is locked" in text


class _Hold:
    """The one connection a run of this process keeps to a store file (see :meth:`LineageStore.held`).
    Read and changed under ``_IN_PROCESS`` only."""

    __slots__ = ("con", "released", "error")

    def __init__(self) -> None:
        self.con: duckdb.DuckDBPyConnection | None = None
        self.released = False  # once true, operations open their own short connections again
        self.error: BaseException | None = None  # why opening ahead failed: raised by the first operation

    def release(self) -> None:
        """Close the connection for good (the run ended, or its time is up, or an operation failed)."""
        with _IN_PROCESS:
            self.released = True
            con, self.con = self.con, None
            if con is not None:
                con.close()  # rolls back a transaction an operation left open; checkpoints otherwise


_HOLDS: dict[str, _Hold] = {}
"""Held store files by absolute path; read and changed under ``_IN_PROCESS``."""


class LineageStore:
    """A DuckDB lineage file. Cheap to construct; every method opens and closes its own connection,
    except while a run holds the file (:meth:`held`)."""

    def __init__(self, path: str | os.PathLike[str], *, lock_wait_s: float = LOCK_WAIT_S,
                 on_commit: Callable[[LineageStore], None] | None = None) -> None:
        self.path = Path(path)
        self.lock_wait_s = lock_wait_s
        # Called after every committed write with the file closed (remote state uploads a checkpoint).
        self.on_commit = on_commit
        self._schema_ready = False
        # True during the one operation that created the file: its heads are known to be empty.
        self._created = False
        # True from the start of a hold on a file that did not exist until the first operation: that
        # operation may take the file to be empty without opening it (see begin_run).
        self._absent = False
        # A new file's run record being written in the background; every other operation waits for it.
        self._starting: Background[tuple[int, StoreSnapshot]] | None = None

    @contextmanager
    def held(self, linger_s: float = HOLD_S) -> Iterator[None]:
        """Within this block, this process's operations on the file share one connection for at most
        ``linger_s`` (then each opens its own again, so another process's ``status`` waits at most
        that long for a long run). A run shorter than that opens the file once instead of two or more
        times. The connection is opened (and the schema created) at once on a background thread —
        DuckDB does that without the GIL — so it overlaps the caller's own work until the first
        operation needs it; on a file that does not exist yet, the run's start does not wait for it
        either (see :meth:`begin_run`). Enter only with the right to write (a run holds the run
        lock). Not for stores that upload after every commit: they need the file closed."""
        key = os.path.abspath(self.path)
        with _IN_PROCESS:
            hold = None if self.on_commit is not None or key in _HOLDS else _HOLDS.setdefault(key, _Hold())
        if hold is None:
            yield
            return
        # Under the run lock no other writer can create the file: absent now, it is empty until we write.
        self._absent = not self.path.exists()
        opener = threading.Thread(target=self._open_ahead, args=(hold,), name="assetflow-store-open", daemon=True)
        opener.start()
        timer = threading.Timer(linger_s, hold.release)
        timer.name, timer.daemon = "assetflow-store-linger", True
        timer.start()
        try:
            yield
        finally:
            # Neither helper may outlive the block, least of all inside DuckDB while the process exits.
            timer.cancel()
            timer.join()
            opener.join()
            self._absent = False
            # A failed run record was raised by the operation after it (a run always writes its end),
            # or the block is ending on an error of its own.
            with suppress(Exception):
                self._join_start()
            with _IN_PROCESS:
                hold.release()
                del _HOLDS[key]

    def _open_ahead(self, hold: _Hold) -> None:
        with _IN_PROCESS:
            if hold.con is None and not hold.released:
                try:
                    hold.con = self._open_checked(write=True)
                except BaseException as exc:  # the first operation reports it, as if it had opened
                    hold.error = exc

    def exists(self) -> bool:
        """Whether the store file has been created (by the time a run record written ahead is)."""
        self._join_start()
        return self.path.exists()

    @contextmanager
    def connect(self, *, write: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection, retried while another process holds the file. Within a process,
        connections are taken one at a time: DuckDB's instance cache is not safe when threads open and
        close connections to one file concurrently (the background recorder and the caller would)."""
        self._join_start()
        with _IN_PROCESS:
            try:
                with self._connect(write=write) as con:
                    yield con
            finally:
                self._created = self._absent = False  # only the first operation may rely on them

    def _join_start(self) -> None:
        """Wait for a run record being written in the background (unless called by that very write),
        and raise its error."""
        starting = self._starting
        if starting is not None and not starting.on_this_thread():
            self._starting = None
            starting.result()

    @contextmanager
    def _connect(self, *, write: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        hold = _HOLDS.get(os.path.abspath(self.path)) if _HOLDS else None
        if hold is not None and not hold.released:
            with self._held(hold) as con:
                yield con
            return
        con = self._open_checked(write=write)
        try:
            if not write and self._check_version(con) < SCHEMA_VERSION:
                # An older store: migrate it once (a short write), then read as asked.
                con.close()
                with self.connect(write=True):
                    pass
                con = self._open(read_only=True)
            yield con
            if write and self.on_commit is not None:
                _sql(con, "CHECKPOINT")  # make the file self-contained before it is copied
        finally:
            con.close()
        if write and self.on_commit is not None:
            self.on_commit(self)

    @contextmanager
    def _held(self, hold: _Hold) -> Iterator[duckdb.DuckDBPyConnection]:
        """An operation on the held connection (opened ahead, or else by the first operation)."""
        if hold.error is not None:
            error, hold.error = hold.error, None
            hold.release()
            raise error
        if hold.con is None:
            hold.con = self._open_checked(write=True)
        try:
            yield hold.con
        except BaseException:
            # Whatever the operation left half done is rolled back with the connection; the hold ends.
            hold.release()
            raise

    def _open_checked(self, *, write: bool) -> duckdb.DuckDBPyConnection:
        """A connection to the file, refusing a directory; a writer's with the schema in place."""
        if self.path.is_dir():
            raise StoreError(f"lineage store {self.path} is a directory, not a DuckDB file")
        if write:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise cannot_create_store(self.path, exc) from None
        con = self._open(read_only=not write)
        if write:
            try:
                self._ensure_schema(con)
            except BaseException:
                con.close()
                raise
        return con

    def _open(self, *, read_only: bool) -> duckdb.DuckDBPyConnection:
        config: dict[str, str] = {}
        if not read_only and not self.path.exists():
            self._created = True
            self._schema_ready = False
            config = NEW_STORE_CONFIG
        deadline = time.monotonic() + self.lock_wait_s
        pause = 0.005
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only, config=config)
            except duckdb.IOException as exc:
                if not _is_lock_conflict(exc) or time.monotonic() > deadline:
                    raise StoreError(f"cannot open lineage store {self.path}: {str(exc).splitlines()[0]}") from None
            except duckdb.Error as exc:
                raise StoreError(f"cannot open lineage store {self.path}: {str(exc).splitlines()[0]}") from None
            time.sleep(pause * (1 + random.random()))
            pause = min(pause * 2, 0.1)

    def _check_version(self, con: duckdb.DuckDBPyConnection) -> int:
        try:
            rows = _sql(con, "SELECT value FROM meta WHERE key = 'schema_version'")
            row = rows[0] if rows else None
        except duckdb.Error:
            raise StoreError(f"lineage store {self.path} is not an assetflow store (no schema)") from None
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StoreError(f"lineage store {self.path} has schema {version}; this assetflow knows up to {SCHEMA_VERSION}")
        return version

    def _ensure_schema(self, con: duckdb.DuckDBPyConnection) -> None:
        if self._schema_ready:
            return  # checked on an earlier connection of this process: skip two statements per write
        self._ensure_schema_now(con)
        self._schema_ready = True

    def _ensure_schema_now(self, con: duckdb.DuckDBPyConnection) -> None:
        if self._created:  # a file this operation just created: nothing to inspect or migrate (idempotent
            # all the same, for a writer racing us without the run lock)
            _sql(con, "BEGIN")
            _sql(con, _SCHEMA)
            # Not INSERT OR REPLACE: the upsert machinery costs twice as much on a table this new.
            _sql(con, f"INSERT INTO meta SELECT 'schema_version', '{SCHEMA_VERSION}' "
                      "WHERE NOT EXISTS (SELECT 1 FROM meta WHERE key = 'schema_version')")
            _sql(con, "COMMIT")
            return
        tables = {r[0] for r in _sql(con, "SELECT table_name FROM information_schema.tables")}
        if "meta" in tables:
            version = int(_sql(con, "SELECT value FROM meta WHERE key = 'schema_version'")[0][0])
            if version == SCHEMA_VERSION:
                return
            if version > SCHEMA_VERSION:
                raise StoreError(f"lineage store {self.path} has schema {version}; this assetflow knows up to {SCHEMA_VERSION}")
        elif tables:
            raise StoreError(f"lineage store {self.path} is a DuckDB file but not an assetflow store")
        else:
            version = 0
        _sql(con, "BEGIN")
        if version == 0:
            _sql(con, _SCHEMA_V1)
            version = 1
        while version < SCHEMA_VERSION:
            _sql(con, _MIGRATIONS[version])
            version += 1
        _sql(con, "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(version)])
        _sql(con, "COMMIT")

    def _read(self) -> Any:
        """A read connection, or None when the store does not exist yet (a fresh project)."""
        return self.connect(write=False) if self.exists() else None

    # ---- planner snapshot -------------------------------------------------------------------------

    def snapshot(self, catalogue: Catalogue) -> StoreSnapshot:
        """Heads and the inputs they consumed, numbered by ``catalogue``, read in one transaction."""
        reader = self._read()
        if reader is None:
            return StoreSnapshot.empty(catalogue)
        with reader as con:
            return _read_snapshot(con, catalogue)

    # ---- runs ---------------------------------------------------------------------------------------

    def begin_run(self, run_id: str, kind: str, tags: dict[str, str], selection: Sequence[str],
                  started_at: datetime, catalogue: Catalogue) -> tuple[int, StoreSnapshot]:
        """Record a run as ``running``; runs that were left ``running`` by a dead process become ``crashed``.
        Called under the run lock; returns the first free materialization id for this run and the
        snapshot to plan it from (read on the same connection: one open instead of two).

        The first operation of a hold on a file that does not exist yet returns at once: an empty
        snapshot, and ids from 1. The record is written on a thread meanwhile — DuckDB takes tens of
        milliseconds to create an instance and a file — and every later operation of this store
        waits for it, so no batch can commit before its run's record.
        """
        if self._absent and self._can_create():
            self._absent = False
            self._starting = Background("assetflow-run-start", self._record_start, run_id, kind, tags, selection,
                                        started_at, catalogue)
            return 1, StoreSnapshot.empty(catalogue)
        return self._record_start(run_id, kind, tags, selection, started_at, catalogue)

    def _can_create(self) -> bool:
        """Whether the file's folder exists (made now if need be) and is writable: where it is not, the
        run record is written in the caller's thread, and fails there before any step runs."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            return False
        return os.access(self.path.parent, os.W_OK | os.X_OK)

    def _record_start(self, run_id: str, kind: str, tags: dict[str, str], selection: Sequence[str],
                      started_at: datetime, catalogue: Catalogue) -> tuple[int, StoreSnapshot]:
        with self.connect(write=True) as con:
            new = self._created  # this very operation created the file: no runs, attempts or heads to ask about
            _sql(con, "BEGIN")
            if not new:
                _sql(con, "UPDATE runs SET status = 'crashed', finished_at = ? WHERE status = 'running'", [started_at])
            _sql(con,
                "INSERT INTO runs (run_id, kind, status, tags, selection, started_at, pid, host) "
                "VALUES (?, ?, 'running', ?, ?, ?, ?, ?)",
                [run_id, kind, json.dumps(tags, sort_keys=True), json.dumps(list(selection)), started_at,
                 os.getpid(), os.uname().nodename],
            )
            base = 1 if new else _sql(con, "SELECT coalesce(max(mat_id), 0) + 1 FROM materializations")[0][0]
            _sql(con, "COMMIT")
            return int(base), StoreSnapshot.empty(catalogue) if new else _read_snapshot(con, catalogue)

    def write(self, batch: Batch, *, finish: RunEnd | None = None,
              make_durable: Callable[[], None] | None = None) -> None:
        """Append a batch of attempts, inputs and check results, and move heads, in one transaction —
        which also closes the run when ``finish`` is given (a run's last batch and its end commit together).

        Every value the batch points at must be durable in the data store before the commit:
        ``make_durable`` (the data root's flush) runs on a thread while the statements do — both wait
        on the disk, not on the GIL — and the commit waits for it; if it fails, nothing is committed.
        Without it, the values must be durable already. At most one ``materialized`` attempt per
        (asset, partition).
        """
        flushing = None if make_durable is None else Background("assetflow-sync", make_durable)
        try:
            self._write(batch, finish, flushing)
        finally:
            if flushing is not None:
                flushing.wait()  # never left running behind an error (the caller may delete the values)

    def _write(self, batch: Batch, finish: RunEnd | None, flushing: Background[None] | None) -> None:
        outcomes = set(batch.attempts.column("outcome").to_pylist())
        # Registering an Arrow table costs about a millisecond: only tables with rows are.
        tables = {name: rows for name, rows in (("b_attempts", batch.attempts), ("b_inputs", batch.inputs),
                                                ("b_checks", batch.checks)) if rows.num_rows}
        with self.connect(write=True) as con:
            _sql(con, "BEGIN")
            # Registered inside the transaction, the batch's views commit (or roll back) with it: two
            # commits fewer than registering and unregistering each on its own, ~1 ms a batch.
            for name, rows in tables.items():
                con.register(name, rows)
            # Statements cost milliseconds each here: only those the batch needs are run.
            if batch.attempts.num_rows:
                _sql(con, "INSERT INTO materializations SELECT * FROM b_attempts")
            if batch.inputs.num_rows:
                _sql(con, "INSERT INTO inputs SELECT mat_id, up_asset, up_partition, data_version FROM b_inputs")
            if batch.checks.num_rows:
                _sql(con, "INSERT INTO checks SELECT * FROM b_checks")
            if "materialized" in outcomes:
                self._move_heads(con, batch.inputs.num_rows > 0, batch.new_heads)
            if outcomes & {"failed", "check_failed"}:
                # A final failure flags the head (its value stays current) unless a later success moved it.
                _sql(con,
                    "INSERT INTO heads (asset, partition, failed, run_id) "
                    "SELECT DISTINCT asset, partition, true, run_id FROM b_attempts f "
                    "WHERE outcome IN ('failed', 'check_failed') AND NOT EXISTS (SELECT 1 FROM b_attempts s "
                    "  WHERE s.asset = f.asset AND s.partition = f.partition AND s.outcome = 'materialized' "
                    "  AND s.mat_id > f.mat_id) "
                    "ON CONFLICT (asset, partition) DO UPDATE SET failed = true")
            if finish is not None:
                _sql(con,
                    "UPDATE runs SET status = ?, finished_at = ?, materialized = ?, skipped = ?, failed = ?, "
                    "upstream_failed = ?, error = ? WHERE run_id = ?",
                    [finish.status, finish.finished_at, finish.counts.get("materialized", 0),
                     finish.counts.get("skipped", 0), finish.counts.get("failed", 0),
                     finish.counts.get("upstream_failed", 0), finish.error, finish.run_id])
            for name in tables:
                con.unregister(name)
            if flushing is not None:
                flushing.result()  # raises a failed flush: the open transaction is rolled back
            _sql(con, "COMMIT")

    @staticmethod
    def _move_heads(con: duckdb.DuckDBPyConnection, with_inputs: bool, new: bool) -> None:
        """The success of each partition in the batch becomes its head; head_inputs follows it, so a
        snapshot never joins history. A batch holds at most one success per partition (a run
        materializes each pair once); were there two, DuckDB would refuse the upsert rather than pick
        one, and the window that used to pick the newest cost more than the rest of the upsert.
        ``new`` (see :attr:`Batch.new_heads`): a plain insert, twice as fast as the upsert."""
        heads = ("INSERT INTO heads SELECT asset, partition, mat_id, code_version, config_hash, data_version, path, "
                 "format, started_at + to_microseconds(CAST(duration_s * 1e6 AS BIGINT)), run_id, false "
                 "FROM b_attempts WHERE outcome = 'materialized'")
        if new:
            _sql(con, heads)
        else:
            _sql(con, heads + " ON CONFLICT (asset, partition) DO UPDATE SET mat_id = excluded.mat_id, "
                 "code_version = excluded.code_version, config_hash = excluded.config_hash, "
                 "data_version = excluded.data_version, path = excluded.path, format = excluded.format, "
                 "materialized_at = excluded.materialized_at, run_id = excluded.run_id, failed = false")
            _sql(con,
                "DELETE FROM head_inputs WHERE (asset, partition) IN "
                "(SELECT asset, partition FROM b_attempts WHERE outcome = 'materialized')")
        if with_inputs:  # the batch's own successes, not the heads table (which grows with the store)
            _sql(con, "INSERT INTO head_inputs SELECT asset, partition, up_asset, up_partition, data_version FROM b_inputs")

    def record_observations(self, observations: pa.Table) -> None:
        """Remember the latest observed version of source partitions."""
        if observations.num_rows == 0:
            return
        with self.connect(write=True) as con:
            con.register("b_obs", observations)
            _sql(con,
                "INSERT INTO observations SELECT * FROM b_obs ON CONFLICT (source, partition) DO UPDATE SET "
                "version = excluded.version, observed_at = excluded.observed_at"
            )

    # ---- queries for status / runs / lineage / gc ---------------------------------------------------

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        reader = self._read()
        if reader is None:
            return []
        with reader as con:
            cursor = con.execute(sql, list(params))
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]

    def runs(self, limit: int | None = None, tags: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """Newest runs first, optionally only those carrying every tag in ``tags``."""
        # rowid breaks ties in insertion order (runs under a pinned ASSETFLOW_NOW share started_at)
        rows = self._rows("SELECT * FROM runs ORDER BY started_at DESC, rowid DESC")
        result = []
        for row in rows:
            row["tags"] = json.loads(row["tags"] or "{}")
            if tags and any(row["tags"].get(k) != v for k, v in tags.items()):
                continue
            result.append(row)
            if limit is not None and len(result) >= limit:
                break
        return result

    def run(self, run_id: str) -> dict[str, Any] | None:
        """One run with its attempts and check results, or None."""
        runs = self._rows("SELECT * FROM runs WHERE run_id = ?", [run_id])
        if not runs:
            return None
        run = runs[0]
        run["tags"] = json.loads(run["tags"] or "{}")
        run["attempts"] = self._rows(
            "SELECT * FROM materializations WHERE run_id = ? ORDER BY asset, partition, attempt", [run_id])
        run["checks"] = self._rows("SELECT * FROM checks WHERE run_id = ? ORDER BY asset, partition, check_name", [run_id])
        return run

    def heads(self) -> list[dict[str, Any]]:
        """Every current head row, by asset and partition (for inspection; planning reads snapshots)."""
        return self._rows("SELECT * FROM heads ORDER BY asset, partition")

    def head(self, asset: str, partition: str) -> dict[str, Any] | None:
        """The current materialization of one partition with the inputs it consumed."""
        rows = self._rows("SELECT * FROM heads WHERE asset = ? AND partition = ?", [asset, partition])
        if not rows or rows[0]["mat_id"] is None:
            return rows[0] if rows else None
        head = rows[0]
        head["inputs"] = self._rows(
            "SELECT up_asset, up_partition, data_version FROM inputs WHERE mat_id = ? ORDER BY up_asset, up_partition",
            [head["mat_id"]])
        return head

    def consumers(self, asset: str, partition: str, data_version: str) -> list[dict[str, Any]]:
        """Current heads that consumed exactly this version of (asset, partition)."""
        return self._rows(
            "SELECT h.asset, h.partition FROM inputs i JOIN heads h ON h.mat_id = i.mat_id "
            "WHERE i.up_asset = ? AND i.up_partition = ? AND i.data_version = ? ORDER BY h.asset, h.partition",
            [asset, partition, data_version])

    def last_checks(self) -> list[dict[str, Any]]:
        """The latest result of every (check, asset, partition)."""
        return self._rows(
            "SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY check_name, asset, partition "
            "ORDER BY checked_at DESC) AS rn FROM checks) WHERE rn = 1")

    def value_paths(self) -> list[dict[str, Any]]:
        """Every stored value any materialization points at, newest first per partition."""
        return self._rows(
            "SELECT m.asset, m.partition, m.path, m.mat_id, (h.mat_id IS NOT NULL) AS is_head FROM materializations m "
            "LEFT JOIN heads h ON h.mat_id = m.mat_id WHERE m.path IS NOT NULL ORDER BY m.asset, m.partition, m.mat_id DESC")
