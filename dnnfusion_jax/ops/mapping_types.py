"""DNNFusion's operator mapping types and the table that classifies every lax primitive.

The type says how output elements map to input elements; it decides what may fuse (see
``fusion_table``). The table is data: one entry per primitive, grouped by type. A node's type
can be refined by its shapes (an elementwise op that broadcasts a size-1 dimension reads one
input element for many outputs, so it is One-to-Many).

Example:
    >>> from dnnfusion_jax.ops.mapping_types import MappingType, PRIMITIVE_MAPPING_TYPES
    >>> PRIMITIVE_MAPPING_TYPES["exp"].label, PRIMITIVE_MAPPING_TYPES["dot_general"].label
    ('One-to-One', 'Many-to-Many')
    >>> MappingType.ONE_TO_ONE < MappingType.MANY_TO_MANY
    True
"""
from __future__ import annotations

import enum

import numpy as np

from dnnfusion_jax.frontend.ir import Node, Var


class MappingType(enum.IntEnum):
    """Mapping types ordered by complexity, as in the paper (a fused pair takes the larger)."""

    ONE_TO_ONE = 0    # out[i] reads in[i] of each operand through a 1-1 index map
    REORGANIZE = 1    # pure copy keeping element order (reshape, squeeze, size-1 broadcast)
    SHUFFLE = 2       # permutation of dimensions or of element order (transpose, rev)
    ONE_TO_MANY = 3   # an input element feeds many outputs (broadcast, gather, size-1 broadcast)
    MANY_TO_MANY = 4  # an output reads many inputs (dot, conv, reductions, pooling, cumsum)
    OPAQUE = 5        # not analysed: run as it is by XLA, never fused (control flow, RNG, sort)

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    MappingType.ONE_TO_ONE: "One-to-One",
    MappingType.REORGANIZE: "Reorganize",
    MappingType.SHUFFLE: "Shuffle",
    MappingType.ONE_TO_MANY: "One-to-Many",
    MappingType.MANY_TO_MANY: "Many-to-Many",
    MappingType.OPAQUE: "Opaque",
}

# Elementwise primitives: same-shape operands (up to size-1 broadcasting), one output element
# per input element. Only these are refined to One-to-Many when they broadcast.
ELEMENTWISE_PRIMITIVES = frozenset("""
    abs acos acosh add and asin asinh atan atan2 atanh bessel_i0e bessel_i1e
    cbrt ceil clamp clz complex conj convert_element_type copy cos cosh
    digamma div eq erf erf_inv erfc exp exp2 expm1 floor ge gt igamma igamma_grad_a igammac imag
    integer_pow is_finite le lgamma log log1p logistic lt max min mul ne neg nextafter not or
    polygamma population_count pow real reduce_precision
    regularized_incomplete_beta rem round rsqrt select_n shift_left shift_right_arithmetic
    shift_right_logical sign sin sinh sqrt square stop_gradient sub tan tanh xor zeta
""".split())

# One-to-One structural primitives: each output element copies at most one input element,
# but shapes differ (the paper counts Concat, Slice and Split as One-to-One).
STRUCTURAL_ONE_TO_ONE = frozenset("concatenate stack slice split unstack pad iota".split())

PRIMITIVE_MAPPING_TYPES: dict[str, MappingType] = {
    **{name: MappingType.ONE_TO_ONE for name in ELEMENTWISE_PRIMITIVES | STRUCTURAL_ONE_TO_ONE},
    **{name: MappingType.REORGANIZE for name in "reshape squeeze".split()},
    **{name: MappingType.SHUFFLE for name in "transpose rev".split()},
    **{name: MappingType.ONE_TO_MANY for name in
       "broadcast_in_dim gather dynamic_slice tile".split()},
    **{name: MappingType.MANY_TO_MANY for name in """
        dot_general conv_general_dilated reduce_sum reduce_max reduce_min reduce_prod
        reduce_and reduce_or reduce_xor argmax argmin reduce_window_sum reduce_window_max
        reduce_window_min reduce_window cumsum cumprod cummax cummin cumlogsumexp
        select_and_scatter_add select_and_gather_add dynamic_update_slice
        scatter scatter-add scatter-sub scatter-mul scatter-min scatter-max fft
    """.split()},
}
"""Primitive name → mapping type. Anything absent is Opaque."""

def primitive_mapping_type(name: str) -> MappingType:
    """The table's type for a primitive name; unknown primitives are Opaque.

    Example:
        >>> primitive_mapping_type("while").label
        'Opaque'
    """
    return PRIMITIVE_MAPPING_TYPES.get(name, MappingType.OPAQUE)


def node_mapping_type(node: Node) -> MappingType:
    """The mapping type of one node, refined by its shapes.

    * an elementwise op with a non-scalar operand smaller than its output broadcasts it
      (implicit size-1 broadcasting): One-to-Many;
    * a ``broadcast_in_dim`` that only inserts size-1 dimensions copies: Reorganize;
    * a node with effects, or that produces non-numeric values (PRNG keys, tokens): Opaque.

    Example:
        >>> import jax.numpy as jnp
        >>> from dnnfusion_jax.frontend.trace import trace_function
        >>> g = trace_function(lambda x, b: x + b, [jnp.ones((4, 3)), jnp.ones((1, 3))]).graph
        >>> node_mapping_type(g.nodes[0]).label
        'One-to-Many'
    """
    base = primitive_mapping_type(node.op)
    if base is MappingType.OPAQUE or node.effects or not _numeric(node):
        return MappingType.OPAQUE
    if node.op in ELEMENTWISE_PRIMITIVES:
        out_size = node.outputs[0].size
        if any(1 < var.size < out_size for var in node.inputs):
            return MappingType.ONE_TO_MANY
    elif node.op == "broadcast_in_dim" and node.inputs[0].size == node.out.size:
        return MappingType.REORGANIZE
    return base


def edge_mapping_type(node: Node, operand: Var) -> MappingType:
    """How ``node`` reads one of its operands: the type that matters when fusing its producer.

    An elementwise op that broadcasts *another* operand (a bias, a norm's scale) still reads
    this one element for element: One-to-One along this edge, One-to-Many only along the
    broadcast one. Other nodes read every operand as their node type says.

    Example:
        >>> import jax.numpy as jnp
        >>> from dnnfusion_jax.frontend.trace import trace_function
        >>> g = trace_function(lambda x, b: x + b, [jnp.ones((4, 3)), jnp.ones((1, 3))]).graph
        >>> add = g.nodes[0]
        >>> [edge_mapping_type(add, v).label for v in add.inputs]
        ['One-to-One', 'One-to-Many']
    """
    node_type = node_mapping_type(node)
    if node_type is MappingType.ONE_TO_MANY and node.op in ELEMENTWISE_PRIMITIVES:
        return MappingType.ONE_TO_ONE if operand.size == node.outputs[0].size else node_type
    return node_type


def _numeric(node: Node) -> bool:
    for var in (*node.inputs, *node.outputs):
        try:
            np.dtype(var.dtype)
        except TypeError:
            return False
    return True
