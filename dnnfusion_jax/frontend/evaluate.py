"""The reference semantics of the IR: nodes replayed primitive by primitive, unfused.

    >>> import jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> graph = trace_function(lambda x: jnp.exp(x) * 2.0, [jnp.zeros(2)]).graph
    >>> [float(v) for v in evaluate_graph(graph, jnp.zeros(2))[0]]
    [2.0, 2.0]
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dnnfusion_jax.frontend.ir import Graph, Node, Var


def evaluate_nodes(nodes: Sequence[Node], env: dict[Var, Any]) -> dict[Var, Any]:
    """Binds each node's primitive in order, reading and extending ``env``; returns ``env``."""
    for node in nodes:
        env.update(zip(node.outputs, node.bind(*(env[v] for v in node.inputs))))
    return env


def evaluate_graph(graph: Graph, *inputs: Any) -> list[Any]:
    """Runs a whole graph unfused, primitive by primitive: the reference semantics."""
    env = evaluate_nodes(graph.nodes, {**graph.constants, **dict(zip(graph.inputs, inputs))})
    return [env[v] for v in graph.outputs]
