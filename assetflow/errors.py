"""Every error assetflow raises on purpose, in one tree.

    AssetflowError                 base; ``exit_code`` is what the CLI exits with
    ├── UsageError                 exit 2: the user asked for something that cannot be done
    │   ├── DefinitionError        the asset graph is invalid (cycle, unknown upstream, bad mapping)
    │   ├── SelectionError         SELECT names an unknown asset, group or tag
    │   ├── PartitionError         a partition key or RANGE is invalid for a partitions definition
    │   ├── ConfigError            --config file unreadable or failing validation
    │   └── StoreError             the lineage store or data root cannot be opened or read
    ├── StoreBusyError             exit 3: another ``materialize`` holds the store
    └── Interrupted                exit 130: SIGINT stopped a run

``Failure`` is not in the tree: it is raised *by user code* inside an asset to fail a step, optionally
without retry, and is defined with the other user-facing declarations in :mod:`assetflow.definitions`.

Messages are written to be printed as one line: they name the thing that is wrong.
"""

from __future__ import annotations

import os


class AssetflowError(Exception):
    """Base of all deliberate assetflow errors."""

    exit_code: int = 1


class UsageError(AssetflowError):
    """Bad input from the user: exit 2, nothing written."""

    exit_code = 2


class DefinitionError(UsageError):
    """The asset definitions do not form a valid graph."""


class SelectionError(UsageError):
    """A selection names something that does not exist."""


class PartitionError(UsageError):
    """A partition key or range is not valid for the partitions it is applied to."""


class ConfigError(UsageError):
    """Asset configuration is missing, unreadable or invalid."""


class StoreError(UsageError):
    """The lineage store or the data root cannot be used."""


def cannot_create_store(store: object, exc: OSError) -> StoreError:
    """The error for a lineage store whose folder (or run lock) cannot be made: it names the path in
    the way, where a path component is a file."""
    if isinstance(exc, (FileExistsError, NotADirectoryError)) and exc.filename:
        blocker = os.fspath(exc.filename)
        while not os.path.lexists(blocker) and os.path.dirname(blocker) != blocker:
            blocker = os.path.dirname(blocker)  # ENOTDIR names the folder to make, not the file in the way
        reason = f"{blocker} is a file, not a folder"
    else:
        reason = f"{exc.strerror or exc} ({exc.filename})"
    return StoreError(f"cannot create lineage store {store}: {reason}")


class StoreBusyError(AssetflowError):
    """Another materialize run holds the store."""

    exit_code = 3


class Interrupted(AssetflowError):
    """The run was interrupted by the user (SIGINT)."""

    exit_code = 130
