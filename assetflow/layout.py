"""One integer per (asset, partition): the index space the planner and executor compute in.

Nodes are laid out in topological order and each node's partitions in partition order, so sorting by
this id *is* a valid execution order. Edges become global (downstream id, upstream id) arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

import numpy as np
import pyarrow as pa

from .arrays import strings
from .graph import AssetGraph, Edge
from .lineage_store import Catalogue
from .mappings import EdgePairs, edge_pairs, keys_of


@dataclass(frozen=True, slots=True)
class GlobalEdge:
    """An edge's dependency pairs in global ids, sorted by downstream id."""

    edge: Edge
    down: np.ndarray
    up: np.ndarray
    local: EdgePairs


@dataclass(frozen=True, slots=True)
class Level:
    """The edges into every non-source node at one depth of the graph (the longest path from a node
    with no inputs), concatenated node by node and edge by edge: no node reads another of its own
    level, so the planner propagates a whole level in one pass of array operations.

    ``block_target[i]`` waits on whatever blocks ``block_source[i]`` when that upstream id is waiting,
    or, where ``block_source[i]`` is -1, on node ``block_node[i]`` (the upstream partition it needs
    does not exist yet)."""

    gids: np.ndarray
    down: np.ndarray
    up: np.ndarray
    block_target: np.ndarray
    block_source: np.ndarray
    block_node: np.ndarray


def _spans(offsets: np.ndarray, nodes: list[int]) -> np.ndarray:
    """The global ids of ``nodes``, node after node (each node's ids are one contiguous span)."""
    node = np.asarray(nodes, dtype=np.int64)
    lo, hi = offsets[node], offsets[node + 1]
    sizes = hi - lo
    # arange over the total, shifted at each node's start to that node's first id
    shift = np.repeat(lo - (np.cumsum(sizes) - sizes), sizes)
    return np.arange(int(sizes.sum()), dtype=np.int64) + shift


class Layout:
    """Global ids of every (node, partition) of a graph at one clock reading."""

    def __init__(self, graph: AssetGraph, now: datetime) -> None:
        self.graph = graph
        self.now = now
        self.names: tuple[str, ...] = graph.order
        # Assets share a handful of partitions definitions: compute each one's keys once.
        of_definition = {d: keys_of(d, now) for d in {graph.nodes[n].partitions for n in self.names}}
        self.keys: dict[str, tuple[str, ...]] = {n: of_definition[graph.nodes[n].partitions] for n in self.names}
        counts = np.array([len(self.keys[n]) for n in self.names], dtype=np.int64)
        self.offsets = np.concatenate(([0], np.cumsum(counts)))
        self.size = int(self.offsets[-1])
        self.node_index = {n: i for i, n in enumerate(self.names)}

    def span(self, name: str) -> tuple[int, int]:
        """The [first, last) global ids of a node's partitions."""
        i = self.node_index[name]
        return int(self.offsets[i]), int(self.offsets[i + 1])

    def node_of(self, gids: np.ndarray) -> np.ndarray:
        """Node index of each global id."""
        if len(gids) > 4096:  # a gather beats a binary search per id
            return self.node_of_every[gids]
        return np.searchsorted(self.offsets, gids, side="right") - 1

    @cached_property
    def node_of_every(self) -> np.ndarray:
        """Node index of every global id, in order."""
        return np.repeat(np.arange(len(self.names), dtype=np.int64), np.diff(self.offsets))

    def locate(self, gid: int) -> tuple[str, str]:
        """(node name, partition key) of one global id."""
        node = int(np.searchsorted(self.offsets, gid, side="right") - 1)
        name = self.names[node]
        return name, self.keys[name][gid - int(self.offsets[node])]

    @cached_property
    def edges(self) -> dict[str, list[GlobalEdge]]:
        """Upstream edges of every node, in global ids."""
        result: dict[str, list[GlobalEdge]] = {}
        for name in self.names:
            node = self.graph.nodes[name]
            out = []
            for edge in self.graph.upstream[name]:
                local = edge_pairs(edge.mapping, node.partitions, self.graph.nodes[edge.upstream].partitions, self.now)
                down0, _ = self.span(name)
                up0, _ = self.span(edge.upstream)
                out.append(GlobalEdge(edge, local.down + down0, local.up + up0, local))
            result[name] = out
        return result

    @cached_property
    def levels(self) -> tuple[Level, ...]:
        """The non-source nodes by depth, shallowest first (see :class:`Level`)."""
        # Sources stay at -1, in no level: they are never stale, and what waits on them is known first.
        depth = [-1] * len(self.names)
        edges_at: dict[int, list[GlobalEdge]] = {}
        nodes_at: dict[int, list[int]] = {}
        index, nodes = self.node_index, self.graph.nodes
        for i, name in enumerate(self.names):  # topological: every upstream has its depth already
            if not nodes[name].is_source:
                d = depth[i] = 1 + max((depth[index[e.upstream]] for e in self.graph.upstream[name]), default=-1)
                edges_at.setdefault(d, []).extend(self.edges[name])
                nodes_at.setdefault(d, []).append(i)
        empty = np.zeros(0, np.int64)
        levels = []
        for d in sorted(edges_at):
            edges = edges_at[d]
            down = np.concatenate([ge.down for ge in edges]).astype(np.int64, copy=False) if edges else empty
            up = np.concatenate([ge.up for ge in edges]).astype(np.int64, copy=False) if edges else empty
            target, source, node = down, up, np.zeros(len(down), np.int64)
            if any(ge.local.unsatisfied.any() for ge in edges):  # rare: interleave, edge by edge
                parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
                for ge in edges:
                    missing = self.span(ge.edge.downstream)[0] + np.flatnonzero(ge.local.unsatisfied)
                    parts[0].extend((ge.down, missing))
                    parts[1].extend((ge.up, np.full(len(missing), -1, np.int64)))
                    parts[2].extend((np.zeros(len(ge.down), np.int64),
                                     np.full(len(missing), index[ge.edge.upstream], np.int64)))
                target, source, node = (np.concatenate(p).astype(np.int64, copy=False) for p in parts)
            levels.append(Level(_spans(self.offsets, nodes_at[d]), down, up, target, source, node))
        return tuple(levels)

    @cached_property
    def expected_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Every (downstream id, upstream id) dependency pair of the graph, edge by edge."""
        edges = [ge for name in self.names for ge in self.edges[name]]
        if not edges:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate([ge.down for ge in edges]), np.concatenate([ge.up for ge in edges])

    @cached_property
    def is_source(self) -> np.ndarray:
        """Per node index: whether it is a source asset."""
        return np.array([self.graph.nodes[n].is_source for n in self.names], dtype=bool)

    @cached_property
    def names_array(self) -> pa.Array:
        """Node names as Arrow, in layout order (for vectorized name lookups)."""
        return strings(self.names)

    @cached_property
    def definition_groups(self) -> dict[object, np.ndarray]:
        """Node indices grouped by partitions definition: nodes of one group share one key tuple."""
        groups: dict[object, list[int]] = {}
        for i, name in enumerate(self.names):
            groups.setdefault(self.graph.nodes[name].partitions, []).append(i)
        return {d: np.array(ids, dtype=np.int64) for d, ids in groups.items()}

    @cached_property
    def group_of_node(self) -> np.ndarray:
        """Per node index: the position of its group in :attr:`definition_groups`."""
        group = np.empty(len(self.names), dtype=np.int64)
        for g, ids in enumerate(self.definition_groups.values()):
            group[ids] = g
        return group


    def prepare(self) -> Layout:
        """Compute now what every plan of this layout needs (edges, levels, expected pairs), for a
        caller with time to spare, such as while the lineage store opens."""
        self.edges, self.levels, self.expected_pairs, self.is_source, self.node_of_every  # noqa: B018
        return self

    @cached_property
    def catalogue(self) -> Catalogue:
        """This layout's numbering, for the store to hand its rows over in global ids."""
        groups = list(self.definition_groups.values())
        return Catalogue.build(self.names, self.group_of_node, [self.keys[self.names[int(ids[0])]] for ids in groups])


_KEY_ARRAYS: dict[tuple[str, ...], pa.Array] = {}


def key_array(keys: tuple[str, ...]) -> pa.Array:
    # Many assets share one partitions definition; convert its keys to Arrow once.
    array = _KEY_ARRAYS.get(keys)
    if array is None:
        if len(_KEY_ARRAYS) > 256:
            _KEY_ARRAYS.clear()
        array = _KEY_ARRAYS[keys] = strings(keys)
    return array
