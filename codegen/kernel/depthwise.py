"""Depthwise convolutions as a windowed reduction of the kernel IR.

A convolution whose groups are its input channels (``feature_group_count`` = input features,
one input feature per group) is not a GEMM: each output element is a small dot product over
the window of one channel, ``out[n, o, p...] = Σ_k x[n, o // M, p·s + k·d - pad] · w[k, o]``
for channel multiplier ``M``. XLA:CPU runs it slowly (a 3×3 depthwise convolution on
1×56×56×144 f32 took ~8 ms through XLA on 2 cores, ~1 GFLOP/s), while as a reduction over the
window it is a vectorisable loop nest that also takes its epilogue (batch norm, activation)
into the same kernel. Dense and grouped convolutions stay with XLA.

This module is the index arithmetic only: which convolutions qualify, and for one output
element the input and weight indices per window tap, with the bounds checks of the padding.
``lowering`` turns that into a reduce stage.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> conv = lambda x, w: jax.lax.conv_general_dilated(
    ...     x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
    ...     feature_group_count=8)
    >>> g = trace_function(conv, [jnp.ones((1, 6, 6, 8)), jnp.ones((3, 3, 1, 8))]).graph
    >>> depthwise_reason(g.nodes[0]) is None
    True
    >>> dense = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME")
    >>> g = trace_function(dense, [jnp.ones((1, 8, 6, 6)), jnp.ones((4, 8, 3, 3))]).graph
    >>> depthwise_reason(g.nodes[0])
    'not a depthwise convolution (feature_group_count 1 of 8 input features)'
"""
from __future__ import annotations

from dataclasses import dataclass

from dnnfusion_jax.frontend.ir import Node
from codegen.kernel.index import Index, LoopVar

CONV = "conv_general_dilated"


def depthwise_reason(node: Node) -> str | None:
    """Why ``node`` is not a depthwise convolution this lowering takes (None: it is)."""
    if node.op != CONV:
        return f"{node.op} is not a convolution"
    lhs, rhs = node.inputs
    lhs_spec, rhs_spec, _ = node.params["dimension_numbers"]
    features, groups = lhs.shape[lhs_spec[1]], node.params["feature_group_count"]
    if groups != features or rhs.shape[rhs_spec[1]] != 1:
        return (f"not a depthwise convolution (feature_group_count {groups} of {features} "
                "input features)")
    if node.params["batch_group_count"] != 1:
        return "batch_group_count > 1"
    if any(d != 1 for d in node.params["lhs_dilation"]):
        return "input (transposed) dilation"
    if node.params.get("preferred_element_type") not in (None, node.out.dtype):
        return "accumulation type differs from the result type"
    return None


@dataclass(frozen=True)
class WindowTap:
    """One output element's reads at one window position (the window loops as variables).

    lhs, rhs: indices into the input and the weights; inside: ``(index, size)`` per spatial
    dimension, all of which must satisfy ``0 <= index < size`` for the input element to exist
    (elsewhere it is padding, which reads as zero)."""

    lhs: list[Index]
    rhs: list[Index]
    inside: list[tuple[Index, int]]


def window_loops(node: Node, prefix: str) -> list[LoopVar]:
    """One loop per spatial dimension of the weights: the window the reduction runs over."""
    rhs = node.inputs[1]
    _, rhs_spec, _ = node.params["dimension_numbers"]
    return [LoopVar(f"{prefix}_{d}", rhs.shape[axis]) for d, axis in enumerate(rhs_spec[2:])]


def window_tap(node: Node, out_index: list[Index], window: list[LoopVar]) -> WindowTap:
    """The reads behind output element ``out_index`` at window position ``window``."""
    lhs, rhs = node.inputs
    lhs_spec, rhs_spec, out_spec = node.params["dimension_numbers"]
    multiplier = node.out.shape[out_spec[1]] // node.params["feature_group_count"]
    feature = out_index[out_spec[1]]
    lhs_index: list[Index] = [Index()] * lhs.ndim
    rhs_index: list[Index] = [Index()] * rhs.ndim
    lhs_index[lhs_spec[0]] = out_index[out_spec[0]]
    lhs_index[lhs_spec[1]] = feature // multiplier if multiplier > 1 else feature
    rhs_index[rhs_spec[0]] = feature  # rhs_spec[1], the one input feature, stays 0
    inside = []
    strides, dilation = node.params["window_strides"], node.params["rhs_dilation"]
    for d, (low, _high) in enumerate(node.params["padding"]):
        tap = Index.var(window[d])
        position = out_index[out_spec[2 + d]] * strides[d] + tap * dilation[d] + (-int(low))
        lhs_index[lhs_spec[2 + d]] = position
        rhs_index[rhs_spec[2 + d]] = tap
        inside.append((position, lhs.shape[lhs_spec[2 + d]]))
    return WindowTap(lhs_index, rhs_index, inside)
