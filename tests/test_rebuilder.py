"""The rebuilder on its own: ``why_stale`` over hand-made arrays, as a table of cases."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from assetflow.rebuilder import Current, InputPairs, Reason, Records, why_stale

NO_PAIRS = InputPairs(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0, bool),
                      pa.array([], pa.string()), pa.array([], pa.string()))


def code_reasons(recorded: list[str | None], now: list[str | None], asset: list[int]) -> list[bool]:
    """Whether each target is code_changed, given its recorded code version and its asset's current one."""
    n = len(recorded)
    records = Records(np.ones(n, bool), np.zeros(n, bool), np.ones(n, bool),
                      pa.chunked_array([recorded[: n // 2], recorded[n // 2:]], pa.string()),  # as the store hands it
                      pa.array([None] * n, pa.string()))
    current = Current(pa.array(now, pa.string()), pa.array([None] * len(now), pa.string()), np.array(asset))
    verdict = why_stale(records, current, NO_PAIRS)
    return [bool(r & Reason.code_changed) for r in verdict.reasons.tolist()]


@pytest.mark.parametrize(("recorded", "now", "asset", "changed"), [
    # two assets share one version: each partition is compared with its own asset's
    (["v1", "v1", "v2", "v1"], ["v1", "v1"], [0, 1, 1, 0], [False, False, True, False]),
    # a version that no asset has now
    (["old", "v1"], ["v1"], [0, 0], [True, False]),
    # nothing recorded (null) against a version, and null against null
    ([None, "v1", None, None], ["v1", None], [0, 0, 1, 1], [True, False, False, False]),
    # one version recorded for every partition, another asset now
    (["v9"] * 4, ["v1", "v9"], [0, 0, 1, 1], [True, True, False, False]),
])
def test_code_changed_compares_each_partition_with_its_own_assets_version(recorded, now, asset, changed):
    assert code_reasons(recorded, now, asset) == changed
