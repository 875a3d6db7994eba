"""Splitting a summed axis across devices: partial sums, all-reduces, and the phases between.

A block that sums over the batch (a mean loss, a bias gradient, a weight gradient contracted
over the batch, batch statistics) can still run on each device's slice of the batch: each
device computes a *partial* sum and an all-reduce (``psum``) completes it, what jax.jit does
for the same program. Between the sum and its completion only linear operators may act on it
(negation, scaling by a value every device has alike, sums of partial sums, reshapes); any
other use (``rsqrt(var)``, ``b - lr * grad``, ``x - mean``) must wait for the all-reduce. So
``sum_plan`` cuts the block into *phases*: phase k+1 starts where a node needs a sum that
phase k completes, and the sums leaving a phase are all-reduced in between. Each value is

* ``SPLIT``: it has an axis of the factor (each device holds its slice);
* ``SAME``: it has no such axis and every device computes it alike;
* ``PARTIAL``: a sum over the factor's axis from this device's slice only;

and the plan is None where a value would mix them in a way no all-reduce repairs (an axis of
the factor dropped other than by a sum). One phase is the common case: the kernel, then an
all-reduce of its partial outputs.

Example:
    >>> import jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> from dnnfusion_jax.fusion.plan import whole_graph_block
    >>> batch = lambda var: (0, None) if var.ndim == 2 else ()  # axis 0 of x is factor 0
    >>> g = trace_function(lambda x: -x.sum(0) / 8.0, [jnp.ones((8, 4))]).graph
    >>> plan = sum_plan(whole_graph_block(g), 0, batch)
    >>> len(plan.phases), g.outputs[0] in plan.partial
    (1, True)
    >>> g = trace_function(lambda x: x - x.mean(0), [jnp.ones((8, 4))]).graph
    >>> [[n.op for n in phase] for phase in sum_plan(whole_graph_block(g), 0, batch).phases]
    [['reduce_sum', 'div'], ['broadcast_in_dim', 'sub']]
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dnnfusion_jax.frontend.ir import Node, Var
from dnnfusion_jax.fusion.plan import Block

SPLIT, SAME, PARTIAL, BAD = "split", "same", "partial", "bad"

LINEAR = frozenset({"neg", "copy", "reshape", "squeeze", "broadcast_in_dim", "transpose",
                    "reduce_sum", "slice", "convert_element_type"})
"""One-operand operators linear in it: a sum of their results is their result of the sum."""

Dims = Callable[[Var], tuple]
"""A value → its factor per axis (None where it has none)."""


@dataclass(frozen=True)
class SumPlan:
    """How a block runs with a summed factor split: ``phases``, its nodes in order, one
    kernel each; ``partial``: the values that are partial sums, all-reduced when they leave
    their phase's kernel (as a block output or for a later phase). ``sum_plan`` makes it
    (the module's example)."""

    phases: tuple[tuple[Node, ...], ...]
    partial: frozenset[Var]


def sum_plan(block: Block, factor: int, dims: Dims) -> SumPlan | None:
    """The phases of ``block`` with summed ``factor`` split, or None where no all-reduce
    can complete what a device computes.

    >>> import jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> from dnnfusion_jax.fusion.plan import whole_graph_block
    >>> g = trace_function(lambda x: x.sum(0).max(), [jnp.ones((8, 4))]).graph
    >>> batch = lambda var: (0, None) if var.ndim == 2 else (None,) * var.ndim
    >>> [[n.op for n in p] for p in sum_plan(whole_graph_block(g), 0, batch).phases]
    [['reduce_sum'], ['reduce_max']]
    """
    kind: dict[Var, str] = {}
    phase: dict[Var, int] = {}

    def of(var: Var) -> tuple[str, int]:
        return kind.get(var) or (SPLIT if factor in dims(var) else SAME), phase.get(var, 0)

    def completed(k: str, p: int) -> int:  # the phase where a value is usable in full
        return p + 1 if k == PARTIAL else p

    node_phase: dict[Node, int] = {}
    for node in block.nodes:
        inputs = [of(v) for v in node.inputs]
        kinds = [k for k, _ in inputs]
        last = max((completed(k, p) for k, p in inputs), default=0)
        partial_phases = {p for k, p in inputs if k == PARTIAL}
        if _sums_over(node, factor, dims):
            result, at = PARTIAL, last
        elif (len(partial_phases) == 1 and SPLIT not in kinds
              and _linear(node, kinds) == PARTIAL
              and not any(factor in dims(v) for v in node.outputs)
              and max(p for k, p in inputs) <= min(partial_phases)):
            result, at = PARTIAL, min(partial_phases)  # still linear: no all-reduce yet
        else:  # the partial inputs are complete (SAME) from phase ``last`` on
            has_axis = any(factor in dims(v) for v in node.outputs)
            result, at = (SPLIT if has_axis else SAME if SPLIT not in kinds else BAD), last
        if result == BAD:
            return None
        node_phase[node] = at
        for out in node.outputs:
            kind[out], phase[out] = result, at
    count = max(node_phase.values(), default=0) + 1
    phases = tuple(tuple(n for n in block.nodes if node_phase[n] == k) for k in range(count))
    return SumPlan(tuple(p for p in phases if p),
                   frozenset(v for v, k in kind.items() if k == PARTIAL))


def _sums_over(node: Node, factor: int, dims: Dims) -> bool:
    """Whether ``node`` adds up the factor's axis (reduce_sum, or a contraction)."""
    if node.op == "reduce_sum":
        operand = dims(node.inputs[0])
        return any(operand[a] == factor for a in node.params["axes"])
    if node.op == "dot_general":
        (lhs_contract, _), _ = node.params["dimension_numbers"]
        lhs = dims(node.inputs[0])
        return any(lhs[a] == factor for a in lhs_contract)
    return False


def _linear(node: Node, inputs: list[str]) -> str:
    """The kind of a node with a partial-sum operand (and no split one)."""
    partial = [k == PARTIAL for k in inputs]
    if node.op in LINEAR and partial == [True]:
        floating = np.issubdtype(np.dtype(node.outputs[0].dtype), np.floating)
        return PARTIAL if floating or node.op != "convert_element_type" else BAD
    if node.op in ("add", "sub") and all(partial):  # sums of partial sums
        return PARTIAL
    if node.op in ("mul", "dot_general") and sum(partial) == 1:  # scaled by a common value
        return PARTIAL
    if node.op == "div" and partial == [True, False]:
        return PARTIAL
    return BAD
