"""Property: on any small DAG, ``af.plan(stale=True)`` agrees with a brute-force oracle.

Hypothesis draws a graph of 3-6 assets, each unpartitioned or daily (2-4 partitions), wired with
the default mappings (identity between daily assets, all-partitions into an unpartitioned one, the
one value into every daily partition). The whole graph is materialized through the API, then mutated
the ways a user mutates a project:

* some assets get a new ``code_version=`` (the module is regenerated with other strings);
* some stored values are deleted from ``.assetflow/data``;
* maybe the clock moves on by a day, so every daily asset gains a partition.

The oracle is the definition of staleness written as plainly as possible — a partition is stale if it
is missing, its code changed, its stored value is gone, or any upstream partition it consumes is
stale; and a recorded partition whose set of inputs grew (an all-partitions downstream when the clock
moves on) is ``upstream_changed`` — and it also predicts each step's exact reasons.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import assetflow as af
from conftest import Project, reasons_of

pytestmark = pytest.mark.usefixtures("pinned_environment")


@dataclass(frozen=True)
class Graph:
    partitioned: tuple[bool, ...]
    upstreams: tuple[tuple[int, ...], ...]  # indices of earlier assets
    days: int  # daily partitions that exist before the clock moves

    @property
    def names(self) -> list[str]:
        return [f"a{i}" for i in range(len(self.partitioned))]


@dataclass(frozen=True)
class Mutation:
    bumped: frozenset[int]  # assets whose code_version changes
    deleted: frozenset[tuple[int, int]]  # (asset, partition index; 0 for unpartitioned) whose value is deleted
    advance: bool  # the clock moves on by one day


def day(i: int) -> str:
    return f"2024-01-{i + 1:02d}"


def clock(days: int) -> str:
    """The instant at which exactly ``days`` daily partitions from 2024-01-01 are complete."""
    return f"{day(days)}T00:00:00Z"


@st.composite
def graphs(draw) -> Graph:
    n = draw(st.integers(3, 6))
    partitioned = tuple(draw(st.booleans()) for _ in range(n))
    upstreams = tuple(
        tuple(sorted(draw(st.sets(st.integers(0, i - 1), max_size=min(i, 3))))) if i else ()
        for i in range(n)
    )
    return Graph(partitioned, upstreams, draw(st.integers(2, 4)))


@st.composite
def scenarios(draw) -> tuple[Graph, Mutation]:
    graph = draw(graphs())
    n = len(graph.partitioned)
    bumped = draw(st.frozensets(st.integers(0, n - 1), max_size=2))
    cells = [(a, p) for a in range(n) for p in range(graph.days if graph.partitioned[a] else 1)]
    deleted = draw(st.frozensets(st.sampled_from(cells), max_size=3))
    return graph, Mutation(bumped, deleted, draw(st.booleans()))


def module_source(graph: Graph, bumped: frozenset[int] = frozenset()) -> str:
    """A pipeline for ``graph``; assets in ``bumped`` carry another ``code_version``."""
    lines = ["import assetflow as af", "", 'daily = af.DailyPartitions(start="2024-01-01")', ""]
    for i, name in enumerate(graph.names):
        options = ["partitions=daily"] if graph.partitioned[i] else []
        options.append(f'code_version="{"v2" if i in bumped else "v1"}"')
        params = ", ".join(["ctx: af.Context", *(f"a{u}" for u in graph.upstreams[i])])
        lines += [
            f"@af.asset({', '.join(options)})",
            f"def {name}({params}) -> str:",
            f'    return f"{name}:{{ctx.partition_key}}"  # unique per (asset, partition)',
            "",
        ]
    lines.append(f"defs = af.Definitions(assets=[{', '.join(graph.names)}])")
    return "\n".join(lines) + "\n"


def oracle(graph: Graph, mutation: Mutation) -> dict[tuple[str, str | None], tuple[str, ...]]:
    """Brute force: every stale (asset, partition) with its exact reasons."""
    days = graph.days + (1 if mutation.advance else 0)
    deleted = {(f"a{a}", day(p) if graph.partitioned[a] else None) for a, p in mutation.deleted}

    def keys(a: int) -> list[str | None]:
        return [day(i) for i in range(days)] if graph.partitioned[a] else [None]

    def consumed(a: int, key: str | None) -> list[tuple[int, str | None]]:
        pairs = []
        for u in graph.upstreams[a]:
            if not graph.partitioned[u]:
                pairs.append((u, None))  # the one value, into every partition
            elif graph.partitioned[a]:
                pairs.append((u, key))  # identity
            else:
                pairs.extend((u, k) for k in keys(u))  # all partitions
        return pairs

    @cache
    def reasons(a: int, key: str | None) -> frozenset[str]:
        found = set()
        new = key is not None and key >= day(graph.days)
        if new:
            found.add("missing")
        else:
            if a in mutation.bumped:
                found.add("code_changed")
            if (f"a{a}", key) in deleted:
                found.add("artifact_missing")
        inputs = consumed(a, key)
        if any(reasons(u, k) for u, k in inputs):
            found.add("upstream_stale")
        if not new and any(k is not None and k >= day(graph.days) for _, k in inputs):
            # A recorded partition that now also consumes a partition of the new period: its set of
            # inputs changed (an all-partitions downstream when the clock moves on).
            found.add("upstream_changed")
        return frozenset(found)

    return {(f"a{a}", key): tuple(sorted(reasons(a, key)))
            for a in range(len(graph.partitioned)) for key in keys(a) if reasons(a, key)}


@settings(max_examples=20, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(scenario=scenarios())
def test_stale_plan_matches_brute_force_oracle(scenario, loader, tmp_path_factory, monkeypatch):
    graph, mutation = scenario
    project = Project(tmp_path_factory.mktemp("prop") / "project", loader)
    monkeypatch.setenv("ASSETFLOW_NOW", clock(graph.days))
    project.write(module_source(graph))
    defs = project.defs()
    built = af.materialize(defs, stale=True)
    expected_steps = sum(graph.days if p else 1 for p in graph.partitioned)
    assert built.status == "success" and built.counts["materialized"] == expected_steps

    for a, p in sorted(mutation.deleted):
        head = af.lineage(defs, f"a{a}", partition=day(p) if graph.partitioned[a] else None)
        (project.data_dir / head.path).unlink()
    if mutation.bumped:
        project.write(module_source(graph, mutation.bumped))
    if mutation.advance:
        monkeypatch.setenv("ASSETFLOW_NOW", clock(graph.days + 1))

    plan = af.plan(project.defs(), stale=True)
    assert reasons_of(plan.steps) == oracle(graph, mutation), textwrap.indent(module_source(graph), "    ")
    assert plan.waiting == []


def test_oracle_sanity():
    """The oracle itself, on a hand-checked case: a0 (daily) -> a1 (unpartitioned) -> a2 (daily)."""
    graph = Graph((True, False, True), ((), (0,), (1,)), days=2)
    assert oracle(graph, Mutation(frozenset(), frozenset(), False)) == {}
    assert oracle(graph, Mutation(frozenset(), frozenset({(0, 1)}), False)) == {
        ("a0", "2024-01-02"): ("artifact_missing",),
        ("a1", None): ("upstream_stale",),
        ("a2", "2024-01-01"): ("upstream_stale",),
        ("a2", "2024-01-02"): ("upstream_stale",),
    }
    assert oracle(graph, Mutation(frozenset({2}), frozenset(), True)) == {
        ("a0", "2024-01-03"): ("missing",),
        ("a1", None): ("upstream_changed", "upstream_stale"),
        ("a2", "2024-01-01"): ("code_changed", "upstream_stale"),
        ("a2", "2024-01-02"): ("code_changed", "upstream_stale"),
        ("a2", "2024-01-03"): ("missing", "upstream_stale"),
    }


def test_oracle_matches_a_hand_built_project(project, monkeypatch):
    """One fixed scenario through the same path as the property, so a failure there is easy to replay."""
    graph = Graph((True, True, False), ((), (0,), (1,)), days=3)
    mutation = Mutation(frozenset({1}), frozenset({(0, 0)}), advance=True)
    monkeypatch.setenv("ASSETFLOW_NOW", clock(graph.days))
    project.write(module_source(graph))
    defs = project.defs()
    af.materialize(defs, stale=True)
    head = af.lineage(defs, "a0", partition=day(0))
    (project.data_dir / head.path).unlink()
    project.write(module_source(graph, mutation.bumped))
    monkeypatch.setenv("ASSETFLOW_NOW", clock(graph.days + 1))
    assert reasons_of(af.plan(project.defs(), stale=True).steps) == oracle(graph, mutation)
