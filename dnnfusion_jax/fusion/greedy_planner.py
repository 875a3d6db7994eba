"""The first, simple fusion planner: greedy producer→consumer fusion over Table 3's green cells.

Nodes are visited in topological order. A node joins the block of one of its producers when
Table 3 says the block's accumulated type followed by the node's type is GREEN and the join
keeps the block graph acyclic; otherwise it starts a block. The node's type is taken along the
edges it reads from that block (``edge_mapping_type``): a bias add reads the matmul's result
one to one even though it broadcasts the bias. Opaque nodes are always alone. Yellow cells are
never fused here: deciding them needs measurements (the DNNFusion planner).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> g = trace_function(lambda x, w, b: jax.nn.gelu(x @ w + b),
    ...                    [jnp.ones((8, 4)), jnp.ones((4, 4)), jnp.ones((8, 4))]).graph
    >>> [b.ops[:2] for b in GreedyPlanner().plan(g).blocks]
    [['dot_general', 'add']]
"""
from __future__ import annotations

from dnnfusion_jax.fusion.fusion_table import Verdict, fuse_verdict
from dnnfusion_jax.frontend.ir import Graph, Node
from dnnfusion_jax.ops.mapping_types import MappingType, edge_mapping_type, node_mapping_type
from dnnfusion_jax.fusion.plan import BlockBuilder, FusionPlan


class GreedyPlanner:
    """Fuse along Table 3's GREEN cells, first producer block first."""

    name = "greedy"

    def plan(self, graph: Graph) -> FusionPlan:
        builder = BlockBuilder(graph)
        for node in graph.nodes:
            node_type = node_mapping_type(node)
            target = _green_producer_block(builder, node, node_type)
            if target is None:
                builder.new_block(node, node_type)
            else:
                builder.join(*target, node=node)
        return builder.finish(self.name)


def _green_producer_block(builder: BlockBuilder, node: Node,
                          node_type: MappingType) -> tuple[int, MappingType] | None:
    """The first producer block the node may join on a GREEN cell, with the fused type."""
    if node_type is MappingType.OPAQUE:
        return None
    for block in builder.producer_blocks(node):
        read_type = max(edge_mapping_type(node, v) for v in builder.values_from(block, node))
        fused_type, verdict = fuse_verdict(builder.types[block], read_type)
        if verdict is Verdict.GREEN and builder.can_join(block, node):
            return block, fused_type
    return None
