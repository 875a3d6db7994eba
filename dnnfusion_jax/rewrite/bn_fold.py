"""Batch-norm folding under a guard: a per-channel affine that follows a convolution,
``((conv(x, w) - m) * s) + b`` in any order of adds, subtracts and multiplies, becomes
``conv(x, w * S) + T`` with ``S``, ``T`` the composed per-channel scale and shift.

The fold saves the affine's per-element work over the activations for one pass over the
weights. It reassociates (``(v - m) * s`` against ``v * s - m * s``, ``Σ x·w·s`` against
``s · Σ x·w``), so it is exact only for weights and affine vectors in range, and runs under
``guarded.py``'s check over exactly those operands (a read of the weights, never of the
activations): all finite with ``|v| <= bound`` (no intermediate of either form overflows), and
no product ``w·S`` or scale ``S`` that flushes to zero where its factors are not zero (XLA:CPU
flushes subnormals; a weight folded to zero would lose its inf·0 = NaN and its value). Other
inputs take the original region and get exactly its result.

Activations are not read by the check, and need not be: with the operands above in range, an
inf or NaN in x reaches the same outputs with the same sign in both forms (a window holding a
non-finite x is non-finite in ``conv(x, w)`` whatever w is, since inf·0 is NaN, and scaling by
``S`` keeps or flips every term's sign as it keeps or flips the sum's). What the check cannot
see without that pass is a convolution of finite activations that overflows float32 (|Σ x·w|
above 3.4e38): there the original overflows and the fold may not (``rules check`` found
``inf`` against an exact 2.2996e38, which the fold computed), more accurate, as ``rules
check`` allows a rule to be. The other way round, the fold overflowing where the original
does not, needs partial sums of the convolution within a factor |S| of that maximum that
cancel before its end: outside the rule's range, unchecked.

The cond would cut the affine off from the elementwise work after it (a ReLU, a residual add),
which both forms then run as one fused pass; so the region takes that work along into both
branches (``_trailing``).

Example:
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> def conv_bn(x, w, m, s, b):
    ...     y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
    ...                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
    ...     return jax.nn.relu((y - m) * s + b)
    >>> shape = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)  # traced, never allocated
    >>> args = [shape(32, 56, 56, 64), shape(1, 1, 64, 64)] + [shape(64)] * 3
    >>> g, [rewrite] = fold_batch_norms(trace_function(conv_bn, args).graph)
    >>> print(rewrite.law)
    (((conv(x, w) - c0) * c1) + c2) -> conv(x, w*S) + T
    >>> [n.op for n in g.nodes if n.out.shape == (32, 56, 56, 64)]    # the fold and the ReLU
    ['cond']
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
from jax import lax

from dnnfusion_jax.frontend.evaluate import evaluate_nodes
from dnnfusion_jax.frontend.ir import Graph, Node, Var
from dnnfusion_jax.ops.mapping_types import MappingType, node_mapping_type
from dnnfusion_jax.rewrite.algebra_cost import GuardPays, guard_pays
from dnnfusion_jax.rewrite.guarded import GuardedRewrite, in_range, splice_guarded

AFFINE_OPS = ("add", "sub", "mul", "neg")


@dataclass(frozen=True)
class _Step:
    """One affine step ``v -> op(v, vector)``; ``flipped``: the vector is the left operand of a
    subtract (``p - v``). ``vector`` (None for ``neg``) is the value read: small (a scalar, or
    ones but along the channel axis), or the source of ``broadcast``, the node that made the
    full-size operand from it (which the fallback replays)."""

    op: str
    vector: Var | None = None
    flipped: bool = False
    broadcast: Node | None = None


def _channel_value(var: Var, out: Var, axis: int, producers: dict[Var, Node]
                   ) -> tuple[Var, Node | None] | None:
    """``var`` as a per-channel value of ``out`` (channels along ``axis``): the small value to
    read and the full-size broadcast node that made ``var`` from it (None: read as is)."""
    channels = out.shape[axis]

    def small(v: Var) -> bool:
        return v.dtype == out.dtype and (v.ndim == 0 or (
            v.ndim == out.ndim and v.shape[axis] in (1, channels)
            and all(n == 1 for d, n in enumerate(v.shape) if d != axis)))

    if small(var):
        return var, None
    node = producers.get(var)
    if node is None or node.op != "broadcast_in_dim" or var.shape != out.shape:
        return None
    source, = node.inputs
    dims = node.params["broadcast_dimensions"]
    if source.dtype != out.dtype or any(
            n != 1 and not (dims[j] == axis and n == channels) for j, n in enumerate(source.shape)):
        return None
    return source, node


def _as_channels(value, channels: int):
    """A small per-channel value as a vector of ``channels``."""
    return jnp.broadcast_to(jnp.reshape(value, (-1,)), (channels,)) if value.size == 1 \
        else jnp.reshape(value, (channels,))


def _affine_chain(conv: Node, producers, consumers, read_counts,
                  outputs) -> list[tuple[Node, _Step]]:
    """The affine steps that follow ``conv``, each the only reader of the value before it."""
    out = conv.out
    axis = conv.params["dimension_numbers"].out_spec[1]
    chain: list[tuple[Node, _Step]] = []
    value = out
    while read_counts.get(value, 0) == 1 and value not in outputs:
        node, = consumers[value]
        if node.op not in AFFINE_OPS or node.effects or node.out.shape != out.shape \
                or node.out.dtype != out.dtype:
            break
        if node.op == "neg":
            chain.append((node, _Step("neg")))
        else:
            a, b = node.inputs
            if a is b:
                break
            other = b if a is value else a
            found = _channel_value(other, out, axis, producers)
            if found is None:
                break
            source, broadcast = found
            chain.append((node, _Step(node.op, source, node.op == "sub" and other is a,
                                      broadcast)))
        value = node.out
    return chain


def _trailing(last: Var, producers, consumers, read_counts, outputs, region_ids) -> list[Node]:
    """The elementwise nodes after ``last`` that the fold's result alone feeds, in order (a
    ReLU, a residual add): taken into both branches so that each runs them in one pass."""
    taken: list[Node] = []
    value = last
    while read_counts.get(value, 0) == 1 and value not in outputs:
        node, = consumers[value]
        if (node.effects or len(node.outputs) != 1 or node.out.shape != last.shape
                or node_mapping_type(node) is not MappingType.ONE_TO_ONE
                or any(producers.get(v) is not None and id(producers[v]) in region_ids
                       for v in node.inputs if v is not value)):
            break
        taken.append(node)
        region_ids.add(id(node))
        value = node.out
    return taken


def _compose(steps: list[_Step], values: dict[Var, object], channels: int, dtype):
    """The per-channel (S, T) with ``chain(v) = v * S + T``, in the steps' order."""
    scale = jnp.ones((channels,), dtype)
    shift = jnp.zeros((channels,), dtype)
    for step in steps:
        p = None if step.vector is None else _as_channels(values[step.vector], channels)
        if step.op == "neg":
            scale, shift = -scale, -shift
        elif step.op == "add":
            shift = shift + p
        elif step.op == "sub" and step.flipped:
            scale, shift = -scale, p - shift
        elif step.op == "sub":
            shift = shift - p
        else:
            scale, shift = scale * p, shift * p
    return scale, shift


def fold_batch_norms(graph: Graph, finite_math: bool = False, pays: GuardPays = guard_pays
                     ) -> tuple[Graph, list[GuardedRewrite]]:
    """Every convolution followed by a per-channel affine with a multiply, folded where
    ``pays`` (``algebra_cost.guard_pays``) says it pays (see the module docstring)."""
    rewrites: list[GuardedRewrite] = []
    refused: set[int] = set()
    while (plan := _next_plan(graph, finite_math, refused, pays)) is not None:
        conv, chain, trailing, operands, replay, saved, bound = plan
        region = [conv, *(node for node, _ in chain), *trailing]
        spliced = splice_guarded(
            graph, region, operands, region[-1].out,
            _fast(conv, chain, trailing, operands, graph.constants), bound, finite_math,
            check=_check(conv, chain, bound, graph.constants), replay=replay)
        if spliced is None:
            refused.add(conv.out.id)
            continue
        graph, predicate = spliced
        law = "(" * len(chain) + "conv(x, w)" + "".join(
            f" {_SYMBOL[s.op]} c{i})" for i, (_, s) in enumerate(chain)) + " -> conv(x, w*S) + T"
        rewrites.append(GuardedRewrite.made("bn-fold", law, graph, _checked(conv, chain), bound,
                                            saved, finite_math, predicate))
    return graph, rewrites


_SYMBOL = {"add": "+", "sub": "-", "mul": "*", "neg": "neg"}


def _checked(conv: Node, chain) -> list[Var]:
    """What the guard reads: the weights and the affine's vectors (never the activations)."""
    return list(dict.fromkeys([conv.inputs[1], *(s.vector for _, s in chain if s.vector)]))


def _next_plan(graph: Graph, finite_math: bool, refused: set[int], pays: GuardPays
               ) -> tuple | None:
    producers, consumers = graph.producers(), graph.consumers()
    read_counts, outputs = graph.read_counts(), set(graph.outputs)
    for conv in graph.nodes:
        if (conv.op != "conv_general_dilated" or conv.effects or conv.out.id in refused
                or np.dtype(conv.out.dtype) not in (np.dtype("float32"), np.dtype("float64"))
                or any(v.dtype != conv.out.dtype for v in conv.inputs)
                or conv.params.get("preferred_element_type") not in (None, conv.out.dtype)):
            continue
        chain = _affine_chain(conv, producers, consumers, read_counts, outputs)
        if not any(step.op == "mul" for _, step in chain):
            continue
        region_ids = {id(conv), *(id(node) for node, _ in chain)}
        trailing = _trailing(chain[-1][0].out, producers, consumers, read_counts, outputs,
                             region_ids)
        x, w = conv.inputs
        vectors = [s.vector for _, s in chain if s.vector is not None]
        extra = [v for node in trailing for v in node.inputs
                 if producers.get(v) is None or id(producers[v]) not in region_ids]
        operands = [v for v in dict.fromkeys([x, w, *vectors, *extra])
                    if v not in graph.constants]  # constants stay in the branches' closures
        replay = [*(s.broadcast for _, s in chain if s.broadcast is not None), conv,
                  *(node for node, _ in chain), *trailing]
        channels = conv.out.shape[conv.params["dimension_numbers"].out_spec[1]]
        # per element: the chain's steps against one add of T; once: w * S and the vectors
        saved = (len(chain) - 1) * conv.out.size - w.size - 2 * channels * len(chain)
        elements = sum(v.size for v in _checked(conv, chain))
        if saved <= 0 or not (finite_math or pays(saved, elements, conv.out.itemsize)):
            continue
        fmax = float(np.finfo(conv.out.dtype).max)
        # |S| <= bound^k, |T| <= k * bound^k, |w * S| <= bound^(k+1): all under fmax / 4
        steps = len(chain)
        bound = math.exp((math.log(fmax / 4) - math.log(steps + 1)) / (steps + 1))
        return conv, chain, trailing, operands, replay, saved, bound
    return None


def _fast(conv: Node, chain, trailing: list[Node], operands: list[Var], constants: dict):
    axis = conv.params["dimension_numbers"].out_spec[1]
    kernel_axis = conv.params["dimension_numbers"].rhs_spec[0]
    steps = [s for _, s in chain]
    last = chain[-1][0].out

    def fast(*values):
        env = {**constants, **dict(zip(operands, values))}
        x, w = env[conv.inputs[0]], env[conv.inputs[1]]
        channels = conv.out.shape[axis]
        scale, shift = _compose(steps, env, channels, w.dtype)
        along = lambda v, ndim, d: lax.broadcast_in_dim(v, tuple(  # noqa: E731
            channels if i == d else 1 for i in range(ndim)), (d,))
        y = lax.conv_general_dilated_p.bind(x, w * along(scale, w.ndim, kernel_axis),
                                            **conv.params)
        env[last] = y + along(shift, y.ndim, axis)
        return evaluate_nodes(trailing, env)[trailing[-1].out if trailing else last]
    return fast


def _check(conv: Node, chain, bound: float, constants: dict):
    """The guard: operands in range, and no folded weight or scale flushed to zero."""
    kernel_axis = conv.params["dimension_numbers"].rhs_spec[0]
    steps = [s for _, s in chain]
    w_var = conv.inputs[1]
    checked = _checked(conv, chain)

    def check(operands: list[Var], values) -> object:
        env = {**constants, **dict(zip(operands, values))}
        w = env[w_var]
        channels = w.shape[kernel_axis]
        tiny = jnp.asarray(np.finfo(w.dtype).tiny, w.dtype)
        ok = in_range([env[v] for v in checked], bound)
        scale, _ = _compose(steps, env, channels, w.dtype)
        factors_nonzero = jnp.ones((channels,), bool)
        for step in steps:
            if step.op == "mul":
                factors_nonzero &= _as_channels(env[step.vector], channels) != 0
        ok &= jnp.all((jnp.abs(scale) >= tiny) == factors_nonzero)
        s = lax.broadcast_in_dim(scale, tuple(channels if i == kernel_axis else 1
                                              for i in range(w.ndim)), (kernel_axis,))
        ok &= jnp.all((w == 0) | (s == 0) | (jnp.abs(w * s) >= tiny))
        return ok
    return check
