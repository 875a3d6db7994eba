"""The trivial planner: every node is its own block (the unfused baseline and the safe fallback).

Example:
    >>> import jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> g = trace_function(lambda x: jnp.exp(x) + 1.0, [jnp.ones(2)]).graph
    >>> len(UnfusedPlanner().plan(g).blocks)
    2
"""
from __future__ import annotations

from dnnfusion_jax.frontend.ir import Graph
from dnnfusion_jax.ops.mapping_types import node_mapping_type
from dnnfusion_jax.fusion.plan import BlockBuilder, FusionPlan


class UnfusedPlanner:
    """One block per node, in graph order."""

    name = "none"

    def plan(self, graph: Graph) -> FusionPlan:
        builder = BlockBuilder(graph)
        for node in graph.nodes:
            builder.new_block(node, node_mapping_type(node))
        return builder.finish(self.name)
