"""assetflow: an asset-centric materialization engine.

Declare assets as Python functions, ask which (asset, partition) pairs are stale and why, and build
only those::

    import assetflow as af

    daily = af.DailyPartitions(start="2024-01-01")

    @af.asset(partitions=daily)
    def events(ctx: af.Context) -> pa.Table: ...

    defs = af.Definitions(assets=[events])
    af.materialize(defs, stale=True)
"""

from typing import TYPE_CHECKING, Any

from .api import load, materialize, plan
from .context import Context
from .definitions import AssetDef, CheckDef, Definitions, Failure, Output, Retry, SourceDef, asset, check, source
from .errors import AssetflowError, ConfigError, DefinitionError, PartitionError, SelectionError, StoreError, UsageError
from .mappings import AllPartitions, Containment, Identity, OnDimension, PartitionMapping, Window
from .partitions import (
    DailyPartitions,
    HourlyPartitions,
    MonthlyPartitions,
    MultiPartitions,
    PartitionsDefinition,
    StaticPartitions,
    WeeklyPartitions,
)

if TYPE_CHECKING:
    from .reports import gc, lineage, run, runs, status

_REPORTS = frozenset({"gc", "lineage", "run", "runs", "status"})


def __getattr__(name: str) -> Any:
    # The reports return pydantic models: importing them on first use keeps pydantic (a fifth of the
    # start-up of a command) out of `plan`.
    if name in _REPORTS:
        from . import reports

        return getattr(reports, name)
    raise AttributeError(f"module 'assetflow' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _REPORTS)


__version__ = "0.1.0"

__all__ = [
    "AllPartitions", "AssetDef", "AssetflowError", "CheckDef", "ConfigError", "Containment", "Context",
    "DailyPartitions", "DefinitionError", "Definitions", "Failure", "HourlyPartitions", "Identity",
    "MonthlyPartitions", "MultiPartitions", "OnDimension", "Output", "PartitionError", "PartitionMapping",
    "PartitionsDefinition", "Retry", "SelectionError", "SourceDef", "StaticPartitions", "StoreError", "UsageError",
    "WeeklyPartitions", "Window", "asset", "check", "gc", "lineage", "load", "materialize", "plan", "run", "runs",
    "source", "status",
]
