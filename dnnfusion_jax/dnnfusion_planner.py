"""The DNNFusion planner: Table 3 (refined, ``legality``) plus profitability for YELLOW cells.

Nodes are visited in topological order, so each block grows towards its successors as soon as
they are ready (the paper's step 2). A node joins the first producer block where the refined
Table 3 says GREEN, or YELLOW and ``profitability`` says the fused kernel is faster, provided
the block graph stays acyclic and the block within its ``Constraints``; otherwise it starts
(seeds) a block of its own. Growth towards predecessors (step 3) is what parameter adapters
get: a broadcast or reshape of a weight waits until its consumer has a block and then joins
that block in front of it (an adapter shared by several consumers is first copied per
consumer, because inside a kernel it is only an index transform). Nodes the backend cannot
fuse (a GEMM for the C backend) and Opaque nodes get blocks of their own.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from dnnfusion_jax.trace import trace_function
    >>> def layer_norm(x, g, b):
    ...     m = x.mean(-1, keepdims=True)
    ...     v = ((x - m) ** 2).mean(-1, keepdims=True)
    ...     return (x - m) * jax.lax.rsqrt(v + 1e-5) * g + b
    >>> g = trace_function(layer_norm, [jnp.ones((512, 768)), jnp.ones(768), jnp.ones(768)]).graph
    >>> len(DnnFusionPlanner().plan(g).blocks)
    1
"""
from __future__ import annotations

from collections.abc import Callable

from .fusion_table import Verdict
from .ir import Graph, Node, Var
from .legality import Constraints, Legality
from .mapping_types import MappingType, edge_mapping_type, node_mapping_type
from .plan import BlockBuilder, FusionPlan
from .profitability import CostModel, Profitability


class DnnFusionPlanner:
    """Plans with the refined Table 3; YELLOW cells go to ``profitability``.

    fusible:       backend capability, ``node -> None | reason it must stay alone``;
    profitability: a factory ``graph -> Profitability`` (default: the static cost model).
    """

    name = "dnnfusion"

    def __init__(self, fusible: Callable[[Node], str | None] | None = None,
                 profitability: Callable[[Graph], Profitability] | None = None,
                 constraints: Constraints = Constraints()) -> None:
        self.fusible = fusible
        self.profitability = profitability or CostModel
        self.constraints = constraints

    def plan(self, graph: Graph) -> FusionPlan:
        graph = copy_shared_adapters(graph, Legality(graph, self.fusible))
        legality = Legality(graph, self.fusible, self.constraints)
        profit = self.profitability(graph)
        builder = BlockBuilder(graph)
        producer = graph.producers()
        waiting: set[Node] = set()
        decisions = {"green": 0, "yellow_fused": 0, "yellow_apart": 0}
        closed: set[int] = set()  # blocks of nodes that stay alone

        for node in graph.nodes:
            if legality.is_adapter(node):
                waiting.add(node)  # joins its consumer's block (growth to predecessors)
                continue
            adapters = [producer[v] for v in node.inputs
                        if v in producer and producer[v] in waiting]
            node_type = node_mapping_type(node)
            alone = legality.must_stay_alone(node)
            target = None if alone else self._choose_block(
                builder, legality, profit, node, node_type, decisions, closed)
            block = self._place(builder, node, node_type, target, adapters)
            waiting.difference_update(adapters)
            if alone:
                closed.add(block)
        for adapter in graph.nodes:  # adapters nobody consumed (outputs of dead code)
            if adapter in waiting:
                builder.new_block(adapter, node_mapping_type(adapter))
        plan = builder.finish(self.name)
        plan.notes.update({k: str(v) for k, v in decisions.items()})
        plan.notes.update({f"alone: {n.op}": why for n, why in legality.alone_reasons.items()})
        return plan

    @staticmethod
    def _place(builder: BlockBuilder, node: Node, node_type: MappingType,
               target: tuple[int, MappingType] | None, adapters: list[Node]) -> int:
        """Adds the node's waiting adapters, then the node, to the target or a new block."""
        adapters = list(dict.fromkeys(adapters))
        if node_type is MappingType.OPAQUE:  # an Opaque node is alone, without its adapters
            for adapter in adapters:
                builder.new_block(adapter, node_mapping_type(adapter))
            adapters = []
        queue = [*adapters, node]
        if target is None:
            block, fused_type = builder.new_block(queue.pop(0), node_type), node_type
        else:
            block, fused_type = target
        for member in queue:
            builder.join(block, fused_type, member)
        return block

    def _choose_block(self, builder: BlockBuilder, legality: Legality, profit: Profitability,
                      node: Node, node_type: MappingType, decisions: dict[str, int],
                      closed: set[int]) -> tuple[int, MappingType] | None:
        for block in builder.producer_blocks(node):
            if block in closed:
                continue
            values = builder.values_from(block, node)
            read_type = max(edge_mapping_type(node, v) for v in values)
            members = builder.members[block]
            fused_type, verdict = legality.verdict(members, builder.types[block], node,
                                                   read_type)
            if verdict is Verdict.RED or not builder.can_join(block, node):
                continue
            if not legality.within_constraints(members, node):
                continue
            if verdict is Verdict.YELLOW:
                if not profit.fuse_yellow(members, [node]):
                    decisions["yellow_apart"] += 1
                    continue
                decisions["yellow_fused"] += 1
            else:
                decisions["green"] += 1
            return block, fused_type
        return None


def copy_shared_adapters(graph: Graph, legality: Legality) -> Graph:
    """A graph where every parameter adapter has exactly one consuming node.

    An adapter read by several nodes is copied once per extra consumer (a reshape or broadcast
    of a weight costs nothing inside a kernel, but shared it would be a kernel of its own).
    """
    consumers = graph.consumers()
    copies: dict[tuple[Var, Node], Var] = {}
    nodes: list[Node] = []
    extra: dict[Node, list[Node]] = {}
    for node in graph.nodes:
        if legality.is_adapter(node) and len(consumers.get(node.out, ())) > 1:
            for user in consumers[node.out][1:]:
                clone_out = Var(node.out.shape, node.out.dtype, node.out.weak_type)
                extra.setdefault(user, []).append(
                    Node(node.primitive, node.inputs, (clone_out,), node.params))
                copies[node.out, user] = clone_out
    if not copies:
        return graph
    for node in graph.nodes:
        new_inputs = tuple(copies.get((v, node), v) for v in node.inputs)
        nodes.extend(extra.get(node, []))
        nodes.append(node if new_inputs == node.inputs else
                     Node(node.primitive, new_inputs, node.outputs, node.params, node.effects))
    return graph.replace(nodes)
