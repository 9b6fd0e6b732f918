"""Mutual exclusion between ``materialize`` runs on one store: an OS file lock beside the store file.

``flock`` is released by the kernel when its holder dies (SIGKILL included), so a crashed run never
leaves a stale lock behind, and "is anyone holding it?" is also how readers tell a crashed ``running``
run from a live one. The lock file's content names the holder for error messages.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import StoreBusyError, cannot_create_store


def lock_path(store_path: Path) -> Path:
    """The lock file of a store."""
    return store_path.with_name(store_path.name + ".lock")


def _describe(holder: dict[str, Any]) -> str:
    started = holder.get("started_at")
    age = ""
    if started:
        seconds = (datetime.now(timezone.utc) - datetime.fromisoformat(started)).total_seconds()
        age = f", running for {seconds:.0f}s"
    return f"run {holder.get('run_id', '?')} (pid {holder.get('pid', '?')}{age})"


@dataclass
class RunLock:
    """An acquired run lock; release it with :meth:`release` (or let the process die)."""

    path: Path
    fd: int

    def release(self) -> None:
        """Release the lock."""
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)


def acquire(store_path: Path, run_id: str, *, wait: bool = False, poll_s: float = 0.2) -> RunLock:
    """Take the store's run lock for ``run_id``; raise :class:`StoreBusyError` naming the holder, or
    wait for it with ``wait=True``."""
    path = lock_path(store_path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise cannot_create_store(store_path, exc) from None
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if not wait:
                holder = holder_of(store_path) or {}
                os.close(fd)
                raise StoreBusyError(f"store {store_path} is held by another materialize: {_describe(holder)}; "
                                     "retry later or pass --wait") from None
            time.sleep(poll_s)
    record = {"run_id": run_id, "pid": os.getpid(), "started_at": datetime.now(timezone.utc).isoformat()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    return RunLock(path, fd)


def holder_of(store_path: Path) -> dict[str, Any] | None:
    """Who holds the lock now, or None if nobody does."""
    path = lock_path(store_path)
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                return {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
