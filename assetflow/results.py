"""Results as they cross the user boundary: returned by the Python API and printed by ``--json``.

Field names are the contract's; fields may be added, never renamed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class StepResultModel(BaseModel):
    """How one (asset, partition) ended in a run."""

    asset: str
    partition: str | None
    outcome: str
    attempts: int
    data_version: str | None
    duration_s: float
    error: str | None


class RunResult(BaseModel):
    """``materialize --json`` and the return value of :func:`assetflow.materialize`."""

    run_id: str
    kind: str
    status: str
    counts: dict[str, int]
    steps: list[StepResultModel]
    tags: dict[str, str] = Field(default_factory=dict)
    checks: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the run succeeded."""
        return self.status == "success"


class FreshnessModel(BaseModel):
    """Freshness of one asset: ``lag_s`` against the policy ``max_lag_s``."""

    max_lag_s: float | None
    lag_s: float | None
    overdue: bool


class CheckStatusModel(BaseModel):
    """Latest results of one check over an asset's partitions."""

    check: str
    blocking: bool
    passed: int
    failed: int


class AssetStatusModel(BaseModel):
    """One asset's line in ``status``."""

    asset: str
    group: str
    partitions: int
    up_to_date: int
    stale: int
    missing: int
    failed: int
    waiting: int = 0
    last_materialized_at: datetime | None
    freshness: FreshnessModel
    checks: list[CheckStatusModel] = Field(default_factory=list)


class StatusResult(BaseModel):
    """``status --json``."""

    assets: list[AssetStatusModel]
    running: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def alerting(self) -> list[str]:
        """Assets that make ``status --check`` fail: overdue, failed, or with a failed blocking check."""
        return [a.asset for a in self.assets
                if a.freshness.overdue or a.failed or any(c.blocking and c.failed for c in a.checks)]


class InputModel(BaseModel):
    """A consumed upstream version."""

    asset: str
    partition: str | None
    data_version: str | None


class LineageResult(BaseModel):
    """``lineage --json``."""

    asset: str
    partition: str | None
    data_version: str | None
    code_version: str | None
    config_hash: str | None = None
    run_id: str | None
    materialized_at: datetime | None
    path: str | None = None
    inputs: list[InputModel]
    downstream: list[dict[str, str | None]]
    upstream_assets: list[str] = Field(default_factory=list)
    downstream_assets: list[str] = Field(default_factory=list)


class RunSummaryModel(BaseModel):
    """One run in ``runs``."""

    run_id: str
    kind: str
    status: str
    tags: dict[str, str]
    started_at: datetime | None
    finished_at: datetime | None
    counts: dict[str, int]


class AttemptModel(BaseModel):
    """One attempt of one step."""

    number: int
    outcome: str
    error: str | None
    traceback: str | None = None
    duration_s: float | None
    started_at: datetime | None = None


class RunStepModel(BaseModel):
    """A step in ``run RUN_ID``: its attempts and captured logs."""

    asset: str
    partition: str | None
    outcome: str
    data_version: str | None
    attempts: list[AttemptModel]
    logs: str


class RunDetailModel(RunSummaryModel):
    """``run RUN_ID --json``."""

    steps: list[RunStepModel]
    checks: list[dict[str, Any]] = Field(default_factory=list)
