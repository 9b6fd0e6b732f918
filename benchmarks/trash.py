"""Scratch folders are moved aside between measured runs and deleted only when the invocation ends.

Why not ``shutil.rmtree`` before each run: for a while after an inode is freed, ext4 will not hand it
out again (``recently_deleted`` in its inode allocator), and every such inode it passes over on the
way to a free one costs a lookup of its inode-table block. W1 creates 400 inodes per run (a folder and
a file per asset); deleting the previous run's 400 in the same folder just before the next run made
each of that run's ``mkdir`` and ``open(O_CREAT)`` walk past them. Measured with ``perf`` on the
benchmark VM: 200 ``mkdir`` took 75–82 ms instead of 3–5 ms, 200 file creations 114–121 ms instead of
5–6 ms, and W1's floor (:mod:`benchmarks.floor`) 150–290 ms instead of 55–85 ms. That time belongs
to the harness, not to the work measured — no user's run starts right after deleting 400 files — so
the harness no longer pays it inside a measurement: a folder to empty is renamed into a trash folder
beside it (one ``rename``, nothing freed), and :func:`empty` deletes every trash when the invocation
is done measuring.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

NAME = ".bench-trash"
"""The trash folder's name, created beside the folders moved into it (so a rename never crosses
filesystems)."""

_USED: set[Path] = set()


def discard(folder: Path) -> None:
    """Move ``folder`` (if it exists) out of the way, into the trash beside it."""
    if not folder.exists():
        return
    trash = folder.parent / NAME
    trash.mkdir(exist_ok=True)
    _USED.add(trash)
    os.rename(folder, trash / uuid.uuid4().hex)


def empty() -> None:
    """Delete everything this process discarded (call once nothing more is measured)."""
    while _USED:
        shutil.rmtree(_USED.pop(), ignore_errors=True)
