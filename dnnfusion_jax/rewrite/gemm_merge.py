"""GEMM merging, exact and unguarded: GEMMs that share an operand become one GEMM on
concatenated weights, followed by slices; two GEMMs that are summed become one GEMM over the
concatenated contraction.

* shared operand (``gemm-merge-shared``): ``x@a, x@b, x@c`` → ``y = x@concat([a, b, c])``
  and slices of y (the Q, K and V projections of one x as three Dense layers, in Flax, Haiku
  and Equinox). Each output element is the same dot product of the same values, so results
  are those of the separate GEMMs, inf and NaN included.
* sum (``gemm-merge-sum``): ``x@Wx + h@Wh`` → ``concat([x, h], -1) @ concat([Wx, Wh], 0)``
  (an LSTM step). The same products are summed, in one accumulation instead of two, which
  rounds as a GEMM's K-blocking does (an order XLA leaves unspecified anyway): the same
  inf/NaN terms meet in one sum, so an inf or NaN input gives the same inf/NaN pattern. Finite
  products whose sum overflows may overflow differently (one accumulation reaching -inf where
  two partial sums made +inf and -inf, then NaN): the original was wrong there too, and
  ``rules check`` accepts it as it accepts a rule that overflows less.

Legality is this file's: the same operand (one ``Var``), equal dimension numbers and
precision, operands of one dtype whose shapes differ only along the concatenated dimension.
Profitability is ``algebra_cost.merge_pays`` (``merge_gemms(pays=...)`` replaces it): the
weights are concatenated on every call, so a merge must save more than the concatenation
moves. On this machine that is the sum form with many rows against the weights, and the
shared form where each GEMM is a pass over a large x to a few columns (narrow heads); wider
shared GEMMs save only calls, cheap on XLA:CPU (see that file for the measurements).

Example:
    >>> import jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> x, w = jnp.ones((4096, 64)), jnp.ones((64, 64))
    >>> fn = lambda x, a, b, c: (jnp.tanh(x @ a), jnp.exp(x @ b), x @ c + 1.0)
    >>> merge_gemms(trace_function(fn, [x, w, w, w]).graph)[1]    # the cost model says no
    Counter()
    >>> always = lambda saved, concat, flops: True
    >>> g2, fired = merge_gemms(trace_function(fn, [x, w, w, w]).graph, pays=always)
    >>> [n.op for n in g2.nodes].count("dot_general"), dict(fired)
    (1, {'gemm-merge-shared': 2})
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
from jax import lax

from dnnfusion_jax.frontend.ir import Graph, Node, Var
from dnnfusion_jax.ops.cost import node_flops
from dnnfusion_jax.ops.mapping_types import MappingType, node_mapping_type
from dnnfusion_jax.rewrite.algebra_cost import merge_pays, shared_reads_saved
from dnnfusion_jax.rewrite.splice import splice


def dot_signature(node: Node) -> str:
    """What GEMMs must share to be merged or factored: dimension numbers, precision and the
    accumulation type (none given means the operands' own, so jnp's ``@`` and a plain
    ``lax.dot_general`` agree).

    >>> import jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> g = trace_function(lambda a, b: (a @ b, lax.dot_general(a, b, (((1,), (0,)), ((), ())))),
    ...                    [jnp.ones((2, 2))] * 2).graph
    >>> dot_signature(g.nodes[0]) == dot_signature(g.nodes[1])
    True
    """
    params = node.params
    preferred = params.get("preferred_element_type") or node.out.dtype
    return str((params["dimension_numbers"], params.get("precision"), np.dtype(preferred)))


def _free_dims(dims, side: int, rank: int) -> list[int]:
    (lc, rc), (lb, rb) = dims
    taken = set(lc if side == 0 else rc) | set(lb if side == 0 else rb)
    return [d for d in range(rank) if d not in taken]


def dot_as(lhs, rhs, params: dict):
    """``lax.dot_general`` of ``lhs`` and ``rhs`` with a dot_general node's ``params``."""
    return lax.dot_general(lhs, rhs, params["dimension_numbers"],
                           precision=params.get("precision"),
                           preferred_element_type=params.get("preferred_element_type"))


def merge_gemms(graph: Graph, pays: Callable[[int, int, int], bool] = merge_pays
                ) -> tuple[Graph, Counter]:
    """Merges every group of GEMMs that is legal and ``pays(saved_bytes, concat_bytes,
    gemm_flops)``; returns the graph and the merges (``gemm-merge-shared``: GEMMs merged into
    another; ``gemm-merge-sum``: sums merged)."""
    fired: Counter = Counter()
    refused: set[tuple] = set()  # groups whose merge would make a cycle
    while True:
        plan = _shared_plan(graph, refused, pays) or _sum_plan(graph, refused, pays)
        if plan is None:
            return graph, fired
        rule, key, region, operands, outputs, fn = plan
        merged = splice(graph, region, operands, outputs, fn)
        if merged is None:
            refused.add(key)
            continue
        graph = merged
        fired[rule] += len(outputs) - 1 if rule == "gemm-merge-shared" else 1


def _shared_plan(graph: Graph, refused: set, pays: Callable) -> tuple | None:
    groups: dict[tuple, list[Node]] = {}
    for node in graph.nodes:
        if node.op != "dot_general" or node.effects or len(node.inputs) != 2:
            continue
        dims = node.params["dimension_numbers"]
        for side in (0, 1):
            shared, other = node.inputs[side], node.inputs[1 - side]
            free = _free_dims(dims, 1 - side, other.ndim)
            if not free or other is shared or other.dtype != shared.dtype:
                continue
            axis = free[-1]
            masked = tuple(-1 if d == axis else n for d, n in enumerate(other.shape))
            key = (shared.id, side, dot_signature(node), str(other.dtype), masked, axis)
            groups.setdefault(key, []).append(node)
    readers = graph.consumers()
    outputs = set(graph.outputs)
    for key, dots in groups.items():
        dots = list({id(d.inputs[1 - key[1]]): d for d in dots}.values())  # distinct weights
        if len(dots) < 2 or key in refused:
            continue
        side, axis = key[1], key[5]
        shared = dots[0].inputs[side]
        weights = [d.inputs[1 - side] for d in dots]
        dims = dots[0].params["dimension_numbers"]  # one signature for the group
        width = max(int(np.prod([w.shape[d] for d in _free_dims(dims, 1 - side, w.ndim)]))
                    for w in weights)
        saved = shared_reads_saved(shared.nbytes, len(dots), width)
        # the weights' concatenation, and a copy of each slice that no reader takes into its
        # kernel (a slice fuses into any block but a GEMM's, a convolution's or an opaque one)
        concat = 2 * sum(w.nbytes for w in weights) + sum(
            2 * d.out.nbytes for d in dots if d.out in outputs or any(
                node_mapping_type(r) in (MappingType.MANY_TO_MANY, MappingType.OPAQUE)
                for r in readers.get(d.out, ())))
        if not pays(saved, concat, min(node_flops(d) for d in dots)):
            continue
        (_, _), (lb, _) = dims
        own_free = _free_dims(dims, side, shared.ndim)
        other_free = _free_dims(dims, 1 - side, weights[0].ndim)
        out_axis = len(lb) + (len(own_free) + other_free.index(axis) if side == 0
                              else other_free.index(axis))
        sizes = [w.shape[axis] for w in weights]
        params = dict(dots[0].params)

        def fn(x, *ws, side=side, axis=axis, out_axis=out_axis, sizes=sizes, params=params):
            w = lax.concatenate(ws, axis)
            y = dot_as(x, w, params) if side == 0 else dot_as(w, x, params)
            starts = np.cumsum([0, *sizes])
            return [lax.slice_in_dim(y, int(s), int(e), axis=out_axis)
                    for s, e in zip(starts[:-1], starts[1:])]
        return ("gemm-merge-shared", key, dots, [shared, *weights], [d.out for d in dots], fn)
    return None


def _sum_plan(graph: Graph, refused: set, pays: Callable) -> tuple | None:
    readers = graph.read_counts()
    producers = graph.producers()
    for node in graph.nodes:
        if node.op != "add" or node.effects or len(node.inputs) != 2:
            continue
        first, second = (producers.get(v) for v in node.inputs)
        key = ("sum", node.out.id)
        if (key in refused or first is None or second is None or first is second
                or any(d.op != "dot_general" or d.effects or readers.get(d.out, 0) != 1
                       or d.out.shape != node.out.shape or d.out.dtype != node.out.dtype
                       for d in (first, second))
                or dot_signature(first) != dot_signature(second)):
            continue
        (lc, rc), _ = first.params["dimension_numbers"]
        if len(lc) != 1 or len(rc) != 1:
            continue
        axes = (int(lc[0]), int(rc[0]))
        if not all(_differ_only_at(first.inputs[i], second.inputs[i], axes[i]) for i in (0, 1)):
            continue
        saved = 3 * node.out.nbytes  # the partial products written, read back, and the add
        concat = 2 * sum(v.nbytes for v in (*first.inputs, *second.inputs))
        if not pays(saved, concat, min(node_flops(first), node_flops(second))):
            continue
        params = dict(first.params)

        def fn(x, wx, h, wh, axes=axes, params=params):
            return [dot_as(lax.concatenate([x, h], axes[0]), lax.concatenate([wx, wh], axes[1]),
                         params)]
        operands = [first.inputs[0], first.inputs[1], second.inputs[0], second.inputs[1]]
        return ("gemm-merge-sum", key, [first, second, node], operands, [node.out], fn)
    return None


def _differ_only_at(a: Var, b: Var, axis: int) -> bool:
    return (a.dtype == b.dtype and a.ndim == b.ndim
            and all(m == n for d, (m, n) in enumerate(zip(a.shape, b.shape)) if d != axis))
