"""Which blocks a kernel backend (C, Pallas) takes, and which it leaves to XLA: one policy for
every backend that renders the kernel IR, so they fall back for the same reasons.

Left to XLA: GEMMs and dense or grouped convolutions (``XLA_PREFERRED``: XLA's are fast, so
we fuse around them), a block of reshapes alone (a free bitcast in XLA), and what the lowering
cannot express (``lowering.unsupported_reason``). Depthwise convolutions are ours
(``codegen/kernel/depthwise.py``). A backend may take a GEMM into its kernel through a
``GemmPolicy``: C takes narrow ones up to ``C_GEMM_FLOPS``, Pallas those up to its device kind's
limit (``pallas_tuning``); with ``profile=True`` either takes those it timed no slower than
XLA's GEMM (``codegen/kernel/gemm_profitability.py``).

Example:
    >>> import jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> from dnnfusion_jax.fusion.plan import whole_graph_block
    >>> g = trace_function(lambda a, b: a @ b, [jnp.ones((4, 4)), jnp.ones((4, 4))]).graph
    >>> kernel_fusible(g.nodes[0])
    "XLA's GEMM is faster than a generated loop nest"
    >>> require_kernel_block(whole_graph_block(g))
    Traceback (most recent call last):
    ...
    dnnfusion_jax.fusion.backend.UnsupportedBlock: dot_general: XLA's GEMM is faster than a generated loop nest
"""
from __future__ import annotations

import math

from codegen.kernel.depthwise import depthwise_reason
from dnnfusion_jax.fusion.backend import GemmPolicy, UnsupportedBlock
from dnnfusion_jax.frontend.ir import Node
from codegen.kernel.lowering import unsupported_reason
from dnnfusion_jax.fusion.plan import Block

XLA_PREFERRED = {
    "dot_general": "XLA's GEMM is faster than a generated loop nest",
    "conv_general_dilated": "XLA's convolution is faster than a generated loop nest",
}
"""Primitives left to XLA on purpose, with the reason shown in reports."""

LAYOUT_ONLY = frozenset({"reshape", "squeeze", "expand_dims", "copy"})
"""Primitives that are a bitcast in XLA: a block of only these is not worth a kernel."""


C_GEMM_FLOPS = 1 << 20
"""GEMMs up to this many FLOPs run inside C kernels, with what is fused around them, when they
are narrow (``C_GEMM_NARROW``); others stay with XLA's GEMM. Measured on the 2-core EPYC
(2026-11-21): EfficientNet-B0, whose squeeze-excite GEMMs are 0.01-0.1 MFLOP matrix-vector
products, went from 12.2 ms to 11.2-11.7 ms (limits of 0.25, 1 and 4 MFLOP alike)."""

C_GEMM_NARROW = 8
"""The narrower side (rows of the result per batch element, or its columns) of a GEMM that C
takes. A generated loop nest keeps up with XLA on a matrix-vector product, not on a square
one: in a whole training step (2-core EPYC, 2026-12-04) a Haiku transformer's 64-wide GEMMs
and their transposed-operand gradients ran at 0.83-0.87 ms with every GEMM up to 1 MFLOP in C
kernels, 0.30 ms with all of them in XLA (jax.jit: 0.36-0.37 ms), although each such block,
timed alone, was no slower in C."""


def gemm_sides(node: Node) -> tuple[int, int]:
    """Rows and columns of a dot_general's result per batch element (lhs and rhs free sizes).

    >>> import jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> g = trace_function(lambda a, b: a @ b, [jnp.ones((1, 64)), jnp.ones((64, 16))]).graph
    >>> gemm_sides(g.nodes[0])
    (1, 16)
    """
    lhs, rhs = node.inputs
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = node.params["dimension_numbers"]
    free = lambda var, skip: math.prod(n for d, n in enumerate(var.shape)  # noqa: E731
                                       if d not in skip)
    return (free(lhs, (*lhs_contract, *lhs_batch)), free(rhs, (*rhs_contract, *rhs_batch)))


def c_takes_gemm(node: Node, flops: int) -> bool:
    """C's GEMM policy without measurements: small and narrow (matrix-vector-like)."""
    return flops <= C_GEMM_FLOPS and min(gemm_sides(node)) <= C_GEMM_NARROW


def xla_preferred(node: Node, gemm_in_kernel: GemmPolicy | None = None) -> str | None:
    """Why XLA should run ``node`` rather than a generated kernel (None: ours is faster)."""
    if node.op == "conv_general_dilated" and depthwise_reason(node) is None:
        return None  # XLA:CPU's depthwise convolution is slow (depthwise.py)
    if node.op == "dot_general" and gemm_in_kernel is not None and gemm_in_kernel(node):
        return None
    return XLA_PREFERRED.get(node.op)


def kernel_fusible(node: Node, gemm_in_kernel: GemmPolicy | None = None) -> str | None:
    """Why ``node`` may not join a generated kernel with others (None: it may)."""
    # what cannot be lowered first: a measured GEMM policy would try to time it
    return unsupported_reason(node) or xla_preferred(node, gemm_in_kernel)


def require_kernel_block(block: Block, gemm_in_kernel: GemmPolicy | None = None) -> None:
    """Raises UnsupportedBlock, with the reason, when ``block`` should stay with XLA."""
    for node in block.nodes:
        reason = xla_preferred(node, gemm_in_kernel)
        if reason:
            raise UnsupportedBlock(f"{node.op}: {reason}")
    if all(node.op in LAYOUT_ONLY for node in block.nodes):
        raise UnsupportedBlock("only reshapes: a free bitcast in XLA")
    if all(var.size == 1 for var in (*block.inputs, *block.outputs)):
        # a loop counter's i + 1: XLA computes it in place, a kernel call costs a µs or two
        raise UnsupportedBlock("scalars only: cheaper in XLA than a kernel call")
