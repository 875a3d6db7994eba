"""A fused block at the shape one device computes: the split factors shrunk to a shard.

When the partitioner splits a kernel's factors (``shard_factors``) across devices, every
device runs the same block on its slice. Kernels have their shapes baked in, so the block is
rebuilt at the per-device extents (every value's split axes shrunk, the parameters that spell
a shape rewritten) and compiled again; the compile cache keys kernels by their source, which
holds the shapes, so each shard shape is its own cached kernel. Values without a split axis
keep their identity (a scalar constant stays inlinable).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> from dnnfusion_jax.fusion.plan import whole_graph_block
    >>> from dnnfusion_jax.fusion.shard_factors import block_factors
    >>> g = trace_function(lambda x: jax.nn.softmax(x, axis=-1), [jnp.ones((8, 16))]).graph
    >>> block = whole_graph_block(g)
    >>> factors = block_factors(block)
    >>> batch = factors.dims(g.inputs[0])[0]
    >>> shard, values = shard_block(block, factors, {batch: 2})
    >>> shard.inputs[0].shape, shard.outputs[0].shape
    ((2, 16), (2, 16))
"""
from __future__ import annotations

from collections.abc import Mapping

from dnnfusion_jax.frontend.ir import Node, Var
from dnnfusion_jax.fusion.plan import Block
from dnnfusion_jax.fusion.shard_factors import BlockFactors


def shard_shape(var: Var, factors: BlockFactors, extents: Mapping[int, int]) -> tuple[int, ...]:
    """``var``'s shape with each split factor at its per-device extent (a merged axis: that
    extent times its minor axes).

    >>> import jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> from dnnfusion_jax.fusion.plan import whole_graph_block
    >>> from dnnfusion_jax.fusion.shard_factors import block_factors
    >>> g = trace_function(lambda x: (x * 2.0).reshape(32, 64), [jnp.ones((8, 4, 64))]).graph
    >>> factors = block_factors(whole_graph_block(g))
    >>> batch = factors.dims(g.inputs[0])[0]
    >>> [shard_shape(v, factors, {batch: 2}) for v in (*g.inputs, *g.outputs)]
    [(2, 4, 64), (8, 64)]
    """
    return tuple(extents[f] * m if f in extents else n
                 for f, m, n in zip(factors.dims(var), factors.multiples(var), var.shape))


def shard_block(block: Block, factors: BlockFactors,
                extents: Mapping[int, int]) -> tuple[Block, dict[Var, Var]]:
    """``block`` with factor ``f`` at extent ``extents[f]``; also the map from every value
    of ``block`` to its per-device value. Only splittable factors may be given (the module's
    example shards a softmax's rows)."""
    values: dict[Var, Var] = {}

    def shrunk(var: Var) -> Var:
        if var not in values:
            shape = shard_shape(var, factors, extents)
            values[var] = var if shape == var.shape else Var(shape, var.dtype, var.weak_type)
        return values[var]

    nodes = []
    for node in block.nodes:
        inputs = tuple(shrunk(v) for v in node.inputs)
        outputs = tuple(shrunk(v) for v in node.outputs)
        nodes.append(Node(node.primitive, inputs, outputs, _params(node, outputs),
                          node.effects))
    return Block(block.id, nodes, block.mapping_type, tuple(shrunk(v) for v in block.inputs),
                 tuple(shrunk(v) for v in block.outputs)), values


def _params(node: Node, outputs: tuple[Var, ...]) -> dict:
    """The parameters that spell a shape, at the new shapes; the rest unchanged (a split
    axis is one the operator maps one-to-one, so no other parameter mentions its extent)."""
    params = dict(node.params)
    if node.op in ("broadcast_in_dim", "iota"):
        params["shape"] = outputs[0].shape
    elif node.op == "reshape":
        params["new_sizes"] = outputs[0].shape
    elif node.op == "slice":  # a split axis of a slice is taken whole: its limit is its extent
        params["limit_indices"] = tuple(
            out if limit == old else limit
            for limit, old, out in zip(node.params["limit_indices"], node.outputs[0].shape,
                                       outputs[0].shape))
    return params
