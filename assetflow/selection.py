"""The SELECT syntax: ``name``, ``name+`` (with downstream), ``+name`` (with upstream), ``group:G``,
``tag:K=V``. Several terms are a union; no terms select every asset."""

from __future__ import annotations

from collections.abc import Sequence

from .errors import SelectionError
from .graph import AssetGraph


def select_assets(graph: AssetGraph, terms: Sequence[str] | str | None) -> frozenset[str]:
    """Names of the buildable assets selected by ``terms`` (sources are never selected: they are not built)."""
    if isinstance(terms, str):
        terms = [terms]
    buildable = {a.name for a in graph.assets()}
    if not terms:
        return frozenset(buildable)
    chosen: set[str] = set()
    for term in terms:
        chosen |= _select_term(graph, term.strip())
    return frozenset(chosen & buildable)


def _select_term(graph: AssetGraph, term: str) -> set[str]:
    if term.startswith("group:"):
        group = term[len("group:"):]
        found = {n for n, node in graph.nodes.items() if node.group == group}
        if not found:
            raise SelectionError(f"selection '{term}': no asset is in group '{group}'")
        return found
    if term.startswith("tag:"):
        key, sep, value = term[len("tag:"):].partition("=")
        if not sep or not key:
            raise SelectionError(f"selection '{term}': expected tag:KEY=VALUE")
        found = {n for n, node in graph.nodes.items() if node.tags.get(key) == value}
        if not found:
            raise SelectionError(f"selection '{term}': no asset has tag {key}={value}")
        return found
    up, down = term.startswith("+"), term.endswith("+")
    name = term.strip("+")
    if name not in graph.nodes:
        raise SelectionError(f"unknown asset '{name}' in selection '{term}'")
    found = {name}
    if up:
        found |= graph.upstream_closure([name])
    if down:
        found |= graph.downstream_closure([name])
    return found
