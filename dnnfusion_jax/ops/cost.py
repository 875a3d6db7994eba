"""FLOP and byte estimates per node: what the report sums and what cost models start from.

FLOPs count arithmetic, as each primitive's registry row says: one per output element of an
elementwise op (powers and transcendentals included: weighting them is the business of a cost
model), ``2·M·N·K`` for a dot, ``2·out·(Cin/groups)·kernel`` for a convolution, one per input
element for a reduction or scan, one per window element for pooling. Data movement (reshape,
transpose, broadcast, slicing, gather) costs no FLOPs. A ``cond`` counts its last branch
(``lax.cond``'s true branch: for a guarded rewrite, ``rewrite/guarded.py``, the fast path that
inputs in range take); other control flow counts none. Bytes are the
sizes of every input and output, the traffic an unfused kernel would cause.

Example:
    >>> import jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> g = trace_function(lambda a, b: a @ b, [jnp.ones((4, 8)), jnp.ones((8, 16))]).graph
    >>> node_flops(g.nodes[0]), node_bytes(g.nodes[0])
    (1024, 896)
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from dnnfusion_jax.frontend.ir import Node
from dnnfusion_jax.frontend.trace import import_jaxpr
from dnnfusion_jax.ops.registry import CONV, DOT, PER_INPUT, PER_OUTPUT, WINDOW, lookup


def node_flops(node: Node) -> int:
    """Estimated floating-point operations of one node (0 for pure data movement), as its
    registry row counts them (``Primitive.flops``)."""
    if node.op == "cond":
        return _branch_flops(node.params["branches"][-1])
    kind = lookup(node.op).flops
    if kind == PER_OUTPUT:
        return sum(out.size for out in node.outputs)
    if kind == PER_INPUT:
        return node.inputs[0].size
    if kind == DOT:
        (contract_lhs, _), _ = node.params["dimension_numbers"]
        depth = int(np.prod([node.inputs[0].shape[d] for d in contract_lhs], dtype=np.int64))
        return 2 * node.out.size * depth
    if kind == CONV:
        return _conv_flops(node)
    if kind == WINDOW:
        window = int(np.prod(node.params["window_dimensions"], dtype=np.int64))
        return node.outputs[0].size * window
    return 0


def _branch_flops(branch) -> int:
    """FLOPs of a branch's jaxpr, nested calls inlined as the graph imports them."""
    graph, _ = import_jaxpr(branch)
    return total_flops(graph.nodes)


def _conv_flops(node: Node) -> int:
    lhs, rhs = node.inputs[:2]
    spec = node.params["dimension_numbers"]
    rhs_spec = spec.rhs_spec  # (out feature dim, in feature dim, *spatial dims)
    kernel_in = rhs.shape[rhs_spec[1]]
    kernel_spatial = int(np.prod([rhs.shape[d] for d in rhs_spec[2:]], dtype=np.int64))
    return 2 * node.out.size * kernel_in * kernel_spatial


def node_bytes(node: Node) -> int:
    """Bytes read and written by the node run on its own (inputs plus outputs)."""
    return sum(var.nbytes for var in node.inputs) + sum(var.nbytes for var in node.outputs)


def total_flops(nodes: Iterable[Node]) -> int:
    """Sum of ``node_flops`` over nodes."""
    return sum(node_flops(node) for node in nodes)
