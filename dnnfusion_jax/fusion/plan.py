"""Fusion plans: blocks of nodes that become one kernel each, and the planner interface.

A planner maps a graph to a ``FusionPlan``: blocks in an executable (topological) order, each
with its accumulated mapping type and the values it reads from and hands to other blocks.
Planners build plans with ``BlockBuilder``, which keeps the block graph acyclic: a node may
join a block only if no path leaves the block and comes back to the node, and producer blocks
merge with their common consumer only if each of them passes that test.

Example:
    >>> import jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> from dnnfusion_jax.fusion.greedy_planner import GreedyPlanner
    >>> g = trace_function(lambda x: jnp.tanh(x * 2.0) + 1.0, [jnp.ones((4, 4))]).graph
    >>> plan = GreedyPlanner().plan(g)
    >>> len(plan.blocks), plan.blocks[0].mapping_type.label
    (1, 'One-to-One')
"""
from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from dnnfusion_jax.frontend.ir import Graph, Node, Var
from dnnfusion_jax.ops.mapping_types import MappingType


@dataclass(eq=False)
class Block:
    """Nodes fused into one kernel, in topological order.

    ``inputs``: values read from outside the block (graph inputs, constants, other blocks);
    ``outputs``: values the block must materialise (read by another block or returned).
    """

    id: int
    nodes: list[Node]
    mapping_type: MappingType
    inputs: tuple[Var, ...] = ()
    outputs: tuple[Var, ...] = ()

    @property
    def ops(self) -> list[str]:
        return [node.op for node in self.nodes]

    def __repr__(self) -> str:
        return f"Block({self.id}, {self.mapping_type.label}, {'+'.join(self.ops)})"


def whole_graph_block(graph: Graph) -> Block:
    """All of ``graph`` as one block (to lower or test a kernel without a planner).

    Example:
        >>> import jax.numpy as jnp
        >>> from dnnfusion_jax.frontend.trace import trace_function
        >>> whole_graph_block(trace_function(jnp.exp, [jnp.ones(3)]).graph).ops
        ['exp']
    """
    from dnnfusion_jax.ops.mapping_types import node_mapping_type
    kind = max((node_mapping_type(n) for n in graph.nodes), default=MappingType.ONE_TO_ONE)
    inputs = dict.fromkeys(v for n in graph.nodes for v in n.inputs
                           if v in set(graph.inputs) | set(graph.constants))
    return Block(0, list(graph.nodes), kind, tuple(inputs), tuple(dict.fromkeys(graph.outputs)))


@dataclass
class FusionPlan:
    """Blocks in execution order; ``planner`` names who made it."""

    graph: Graph
    blocks: list[Block]
    planner: str
    notes: dict[str, str] = field(default_factory=dict)

    def block_types(self) -> dict[str, int]:
        """Count of blocks per mapping type label."""
        return dict(Counter(block.mapping_type.label for block in self.blocks))

    def intermediate_bytes(self) -> int:
        """Bytes of values one block writes and another reads (graph inputs/outputs excluded)."""
        returned = set(self.graph.outputs)
        return sum(var.nbytes for block in self.blocks for var in block.outputs
                   if var not in returned)


class Planner(Protocol):
    """Anything that groups a graph's nodes into fusion blocks."""

    name: str

    def plan(self, graph: Graph) -> FusionPlan: ...


class BlockBuilder:
    """Grows blocks node by node (nodes arrive in topological order) without creating cycles."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.block_of: dict[Node, int] = {}
        self.members: list[list[Node]] = []
        self.types: list[MappingType] = []
        self._preds: list[set[int]] = []  # block → blocks it reads from directly
        self._producer = graph.producers()
        self._position = {node: i for i, node in enumerate(graph.nodes)}
        self._last_effect: int | None = None  # effects keep program order across blocks

    def producer_blocks(self, node: Node) -> list[int]:
        """Blocks that compute the node's inputs, in input order, without repeats (producers
        a planner has not placed yet are skipped)."""
        found = [self.block_of[p] for p in (self._producer.get(v) for v in node.inputs)
                 if p is not None and p in self.block_of]
        return list(dict.fromkeys(found))

    def values_from(self, block: int, node: Node) -> list[Var]:
        """The node's inputs that ``block`` computes."""
        return [v for v in node.inputs
                if v in self._producer and self.block_of.get(self._producer[v]) == block]

    def new_block(self, node: Node, mapping_type: MappingType) -> int:
        self.members.append([])
        self.types.append(mapping_type)
        self._preds.append(set())
        block = len(self.members) - 1
        self._add(block, node)
        return block

    def can_join(self, block: int, node: Node) -> bool:
        """True if adding ``node`` to ``block`` keeps the block graph acyclic: no path leads
        from ``block`` to another producer block of the node.

        It also licenses merges: if every block of a group passes, the group fused with the
        node is acyclic, and its blocks are independent (no path between any two). A cycle
        through the merged group would have to leave one member and come back to the node or
        to another member, i.e. reach another producer block of the node (A → C → B).

        Example (a = 2x, c = exp(a), b = c - 1, out = a + b; one block per node so far):
            >>> import jax.numpy as jnp
            >>> from dnnfusion_jax.frontend.trace import trace_function
            >>> from dnnfusion_jax.ops.mapping_types import node_mapping_type as kind
            >>> def f(x):
            ...     a = x * 2.0
            ...     return a + (jnp.exp(a) - 1.0)
            >>> g = trace_function(f, [jnp.ones(4)]).graph
            >>> builder = BlockBuilder(g)
            >>> a, c, b = (builder.new_block(n, kind(n)) for n in g.nodes[:3])
            >>> [n.op for n in g.nodes]
            ['mul', 'exp', 'sub', 'add']
            >>> builder.can_join(a, g.nodes[3]), builder.can_join(b, g.nodes[3])  # a → c → b
            (False, True)
        """
        others = [b for b in self.producer_blocks(node) if b != block]
        return not any(self._reaches(block, other) for other in others)

    def join(self, block: int, fused_type: MappingType, node: Node) -> None:
        self.types[block] = fused_type
        self._add(block, node)

    def merge(self, block: int, other: int, fused_type: MappingType) -> None:
        """Moves every node of ``other`` into ``block`` (``other`` is left empty); members
        stay in topological order. Callers merge only blocks that pass ``can_join`` with the
        node they are about to share."""
        moved = self.members[other]
        self.members[block] = sorted(self.members[block] + moved, key=self._position.__getitem__)
        self.members[other] = []
        for node in moved:
            self.block_of[node] = block
        self._preds[block] = (self._preds[block] | self._preds[other]) - {block, other}
        self._preds[other] = set()
        for preds in self._preds:
            if other in preds:
                preds.discard(other)
                preds.add(block)
        self._preds[block].discard(block)
        if self._last_effect == other:
            self._last_effect = block
        self.types[block] = fused_type

    def _add(self, block: int, node: Node) -> None:
        self.members[block].append(node)
        self.block_of[node] = block
        self._preds[block].update(b for b in self.producer_blocks(node) if b != block)
        if node.effects:
            if self._last_effect is not None and self._last_effect != block:
                self._preds[block].add(self._last_effect)
            self._last_effect = block

    def _reaches(self, source: int, target: int) -> bool:
        """Is there a path source → … → target in the block graph? (walks predecessors)"""
        stack, seen = [target], {target}
        while stack:
            current = stack.pop()
            if current == source:
                return True
            for pred in self._preds[current] - seen:
                seen.add(pred)
                stack.append(pred)
        return False

    def finish(self, planner: str) -> FusionPlan:
        """Orders blocks topologically and computes their inputs and outputs."""
        order = [b for b in self._topological_order() if self.members[b]]  # merged: empty
        consumers = self.graph.consumers()
        returned = set(self.graph.outputs)
        blocks = []
        for new_id, old in enumerate(order):
            nodes = self.members[old]
            inside = {out for node in nodes for out in node.outputs}
            inputs = dict.fromkeys(v for node in nodes for v in node.inputs if v not in inside)
            outputs = [out for node in nodes for out in node.outputs
                       if out in returned or any(self.block_of[user] != old
                                                 for user in consumers.get(out, ()))]
            blocks.append(Block(new_id, nodes, self.types[old], tuple(inputs), tuple(outputs)))
        return FusionPlan(self.graph, blocks, planner)

    def _topological_order(self) -> list[int]:
        # Kahn's algorithm; ties go to the block whose first node came first.
        first = [self._position[nodes[0]] if nodes else -1 for nodes in self.members]
        pending = [len(preds) for preds in self._preds]
        succs: list[list[int]] = [[] for _ in self.members]
        for b, preds in enumerate(self._preds):
            for p in preds:
                succs[p].append(b)
        ready = [(first[b], b) for b, n in enumerate(pending) if n == 0]
        heapq.heapify(ready)
        order = []
        while ready:
            _, b = heapq.heappop(ready)
            order.append(b)
            for s in succs[b]:
                pending[s] -= 1
                if pending[s] == 0:
                    heapq.heappush(ready, (first[s], s))
        assert len(order) == len(self.members), "fusion created a cycle between blocks"
        return order
