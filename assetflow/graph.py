"""The validated asset graph: definitions resolved into nodes, edges with partition mappings, and a
topological order. Every invalid definition is reported here, once, naming the assets involved."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from graphlib import CycleError, TopologicalSorter

from .definitions import AssetDef, CheckDef, Definitions, SourceDef
from .errors import DefinitionError
from .mappings import PartitionMapping, default_mapping


@dataclass(frozen=True, slots=True)
class Edge:
    """``downstream`` consumes ``upstream`` through ``mapping``; ``param`` is the function parameter that
    receives the value, or None for an order-only dependency."""

    downstream: str
    upstream: str
    mapping: PartitionMapping
    param: str | None


class AssetGraph:
    """Assets and sources as a DAG. Built once per command from a :class:`Definitions`."""

    def __init__(self, defs: Definitions) -> None:
        self.defs = defs
        self.nodes: dict[str, AssetDef | SourceDef] = dict(defs.assets)
        self.checks: dict[str, list[CheckDef]] = {}
        self.upstream: dict[str, list[Edge]] = {name: [] for name in self.nodes}
        self.downstream: dict[str, list[Edge]] = {name: [] for name in self.nodes}
        for node in self.nodes.values():
            if isinstance(node, AssetDef):
                for edge in self._edges_of(node):
                    self.upstream[node.name].append(edge)
                    self.downstream[edge.upstream].append(edge)
        self.order: tuple[str, ...] = self._toposort()
        self._validate_checks()
        self._validate_pools()

    def _edges_of(self, node: AssetDef) -> Iterable[Edge]:
        assert node.signature is not None
        params = [p for p in node.signature.inputs]
        for param in params:
            if param not in self.nodes:
                if param in node.signature.optional:
                    continue
                raise DefinitionError(f"asset '{node.name}': parameter '{param}' names no asset or source")
        names = [p for p in params if p in self.nodes] + [d for d in node.deps if d not in params]
        for name in names:
            if name not in self.nodes:
                raise DefinitionError(f"asset '{node.name}': deps names unknown asset '{name}'")
            if name == node.name:
                raise DefinitionError(f"asset '{node.name}' depends on itself")
            upstream = self.nodes[name]
            mapping = node.deps.get(name)
            try:
                if mapping is None:
                    mapping = default_mapping(node.partitions, upstream.partitions)
                mapping.check(node.partitions, upstream.partitions)
            except DefinitionError as exc:
                raise DefinitionError(f"asset '{node.name}' <- '{name}': {exc}") from None
            yield Edge(node.name, name, mapping, name if name in params else None)

    def _toposort(self) -> tuple[str, ...]:
        sorter = TopologicalSorter({n: [e.upstream for e in self.upstream[n]] for n in self.nodes})
        try:
            # static_order is deterministic for a given insertion order, which follows Definitions.
            return tuple(sorter.static_order())
        except CycleError as exc:
            cycle = exc.args[1]
            raise DefinitionError("dependency cycle: " + " -> ".join(reversed(cycle))) from None

    def _validate_checks(self) -> None:
        for check in self.defs.checks.values():
            target = self.nodes.get(check.asset)
            if not isinstance(target, AssetDef):
                raise DefinitionError(f"check '{check.name}' targets unknown asset '{check.asset}'")
            self.checks.setdefault(check.asset, []).append(check)

    def _validate_pools(self) -> None:
        for node in self.assets():
            if node.pool is not None and node.pool not in self.defs.pools:
                raise DefinitionError(f"asset '{node.name}' uses pool '{node.pool}' which Definitions(pools=...) does not define")

    def assets(self) -> tuple[AssetDef, ...]:
        """Buildable assets (not sources) in topological order."""
        return self._assets

    def sources(self) -> tuple[SourceDef, ...]:
        """Source assets in topological order."""
        return self._sources

    @cached_property
    def _assets(self) -> tuple[AssetDef, ...]:
        # Once per graph: a command asks for them several times, and the graph never changes.
        return tuple(n for n in (self.nodes[x] for x in self.order) if isinstance(n, AssetDef))

    @cached_property
    def _sources(self) -> tuple[SourceDef, ...]:
        return tuple(n for n in (self.nodes[x] for x in self.order) if isinstance(n, SourceDef))

    @cached_property
    def index(self) -> dict[str, int]:
        """Position of each node in the topological order."""
        return {name: i for i, name in enumerate(self.order)}

    def upstream_closure(self, names: Iterable[str]) -> set[str]:
        """``names`` and everything they depend on."""
        return self._closure(names, lambda n: (e.upstream for e in self.upstream[n]))

    def downstream_closure(self, names: Iterable[str]) -> set[str]:
        """``names`` and everything that depends on them."""
        return self._closure(names, lambda n: (e.downstream for e in self.downstream[n]))

    @staticmethod
    def _closure(names: Iterable[str], step) -> set[str]:
        seen: set[str] = set()
        todo = list(names)
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(step(name))
        return seen
