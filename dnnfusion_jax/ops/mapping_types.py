"""DNNFusion's operator mapping types: a primitive's type and its refinement by shapes.

The type says how output elements map to input elements; it decides what may fuse (see
``fusion_table``). The table is the registry's mapping column (``registry.py``: the enum and
one row per primitive, with the refinement that applies to it). A node's type can be refined
by its shapes (an elementwise op that broadcasts a size-1 dimension reads one
input element for many outputs, so it is One-to-Many).

Example:
    >>> from dnnfusion_jax.ops.mapping_types import MappingType, PRIMITIVE_MAPPING_TYPES
    >>> PRIMITIVE_MAPPING_TYPES["exp"].label, PRIMITIVE_MAPPING_TYPES["dot_general"].label
    ('One-to-One', 'Many-to-Many')
    >>> MappingType.ONE_TO_ONE < MappingType.MANY_TO_MANY
    True
"""
from __future__ import annotations

import numpy as np

from dnnfusion_jax.frontend.ir import Node, Var
from dnnfusion_jax.ops.registry import BROADCASTING, PRIMITIVES, UNIT_DIMS, MappingType, lookup

__all__ = ["MappingType", "ELEMENTWISE_PRIMITIVES", "PRIMITIVE_MAPPING_TYPES",
           "primitive_mapping_type", "node_mapping_type", "edge_mapping_type"]

ELEMENTWISE_PRIMITIVES = frozenset(name for name, row in PRIMITIVES.items()
                                   if row.refine == BROADCASTING)
"""Elementwise primitives: same-shape operands (up to size-1 broadcasting), one output element
per input element. Only these are refined to One-to-Many when they broadcast.

>>> "add" in ELEMENTWISE_PRIMITIVES, "concatenate" in ELEMENTWISE_PRIMITIVES
(True, False)
"""

PRIMITIVE_MAPPING_TYPES: dict[str, MappingType] = {
    name: row.mapping for name, row in PRIMITIVES.items()}
"""Primitive name → mapping type (the registry's column). Anything absent is Opaque.

>>> PRIMITIVE_MAPPING_TYPES["transpose"].label
'Shuffle'
"""


def primitive_mapping_type(name: str) -> MappingType:
    """The table's type for a primitive name; unknown primitives are Opaque.

    Example:
        >>> primitive_mapping_type("while").label
        'Opaque'
    """
    return lookup(name).mapping


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
    row = lookup(node.op)
    if row.mapping is MappingType.OPAQUE or node.effects or not _numeric(node):
        return MappingType.OPAQUE
    if row.refine == BROADCASTING:
        out_size = node.outputs[0].size
        if any(1 < var.size < out_size for var in node.inputs):
            return MappingType.ONE_TO_MANY
    elif row.refine == UNIT_DIMS and node.inputs[0].size == node.out.size:
        return MappingType.REORGANIZE
    return row.mapping


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
    if node_type is MappingType.ONE_TO_MANY and lookup(node.op).refine == BROADCASTING:
        return MappingType.ONE_TO_ONE if operand.size == node.outputs[0].size else node_type
    return node_type


def _numeric(node: Node) -> bool:
    for var in (*node.inputs, *node.outputs):
        try:
            np.dtype(var.dtype)
        except TypeError:
            return False
    return True
