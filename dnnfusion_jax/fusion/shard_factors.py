"""Which dimensions of a fused block may be split across devices: its sharding factors.

A *factor* is one iteration axis of a block, followed through its operators: the batch axis
of ``x`` in ``softmax(x)`` is the same factor in the input, in the row maximum, in the sum and
in the output. A factor may be *split* (each device computes a contiguous slice of it, with
no communication) when every operator maps it one-to-one from inputs to outputs, which is
what DNNFusion's mapping types say per operator and what this module works out per axis:

* elementwise operators (One-to-One) map every axis to itself (a size-1 operand axis is a
  broadcast: it carries no factor);
* a broadcast maps the operand's axes to theirs and adds new ones; a transpose permutes them;
  a reshape keeps an axis that stays whole, and maps axes it merges to a compound factor
  (batch and seq merged into batch*seq: the merged axis is batch's factor, split into
  contiguous slices, times seq, which is never split); axes it splits likewise;
* a reduction (reduce, argmax, cumulative operators, pooling windows) keeps its kept axes and
  *blocks* the reduced ones, except sums (reduce_sum, a GEMM's contraction): their axes may
  be split, each device summing its slice and an all-reduce completing the sums
  (``shard_sums``); slices, pads and concatenates keep the axes
  they leave whole and block the others;
* a gather keeps the axes of its indices (an embedding lookup of batch-sharded tokens);
* an iota keeps every axis but the one it counts along;
* anything else (scatter, dynamic slices, whatever is not listed) blocks
  every axis it touches: its result depends on global positions, and a wrong rule would be a
  silent wrong result.

A factor that reaches a blocked axis through any chain of operators is blocked everywhere;
a factor that occurs twice in one value (``x + x.T``) is blocked too. Size-1 axes carry no
factor. The partitioner may then split only the remaining factors (``splittable``).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> from dnnfusion_jax.fusion.plan import whole_graph_block
    >>> g = trace_function(lambda x, w: jax.nn.softmax(x, axis=-1) * w,
    ...                    [jnp.ones((8, 16)), jnp.ones(16)]).graph
    >>> factors = block_factors(whole_graph_block(g))
    >>> x, w = g.inputs
    >>> factors.splittable_dims(x), factors.splittable_dims(w)  # rows split, the softmax axis not
    ((0,), ())
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from dnnfusion_jax.frontend.ir import Node, Var
from dnnfusion_jax.fusion.plan import Block
from dnnfusion_jax.fusion.shard_sums import SumPlan, sum_plan
from dnnfusion_jax.ops.mapping_types import ELEMENTWISE_PRIMITIVES

Key = tuple[Var, int]  # one axis of one value

REDUCTIONS = frozenset({"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and",
                        "reduce_or", "reduce_xor", "argmax", "argmin"})
CUMULATIVE = frozenset({"cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp"})
WINDOWED = frozenset({"reduce_window_sum", "reduce_window_max", "reduce_window_min"})


@dataclass(frozen=True)
class BlockFactors:
    """The factor of every axis of a block's values (``block_factors`` makes them; see the
    module's example). ``factor[(var, dim)]`` is ``(f, m)`` for
    an axis that may be split: the axis is factor ``f`` (equal numbers: the same factor)
    times ``m`` (``m`` > 1: a merged axis, ``f`` its major part, as after a reshape of
    (batch, seq) to batch*seq). Absent: the axis may not be split. ``sizes[f]``: extents."""

    factor: dict[Key, tuple[int, int]]
    sizes: dict[int, int]
    sums: dict[int, SumPlan] = field(default_factory=dict)
    """Summed factors (``shard_sums``): factor → how the block runs with it split (phases,
    and the partial sums an all-reduce completes)."""

    def dims(self, var: Var) -> tuple[int | None, ...]:
        """Per axis of ``var``: its splittable factor, or None."""
        return tuple(self.factor.get((var, d), (None, 1))[0] for d in range(var.ndim))

    def multiples(self, var: Var) -> tuple[int, ...]:
        """Per axis of ``var``: how many times its factor's extent the axis is (1 if whole)."""
        return tuple(self.factor.get((var, d), (None, 1))[1] for d in range(var.ndim))

    def together(self) -> dict[int, set[int]]:
        """Factor → the other factors it shares a value with (inputs, outputs or
        temporaries): those may not be split over the same mesh axes."""
        by_value: dict[Var, set[int]] = {}
        for (var, _), (f, _) in self.factor.items():
            by_value.setdefault(var, set()).add(f)
        pairs: dict[int, set[int]] = {}
        for group in by_value.values():
            for f in group:
                pairs.setdefault(f, set()).update(group - {f})
        return pairs

    def splittable_dims(self, var: Var) -> tuple[int, ...]:
        """The axes of ``var`` that carry a splittable factor."""
        return tuple(d for d, f in enumerate(self.dims(var)) if f is not None)

    def any_splittable(self, values: Iterable[Var]) -> bool:
        """Whether any of ``values`` has an axis that may be split."""
        return any(self.splittable_dims(v) for v in values)


class _Axes:
    """Union-find over axes weighted by extent ratios: ``parent[k] = (p, r)`` says axis k is
    axis p's factor times r (r > 1: k is p merged with minor axes); plus the axes that must
    not be split."""

    def __init__(self) -> None:
        self.parent: dict[Key, tuple[Key, int]] = {}
        self.blocked: set[Key] = set()
        self.summed: set[Key] = set()  # added up by reduce_sum or a contraction

    def find(self, key: Key) -> tuple[Key, int]:
        """(root, m): the axis is its root's extent times m."""
        path = []
        while self.parent.get(key, (key, 1))[0] != key:
            path.append(key)
            key = self.parent[key][0]
        root, m = key, 1
        for k in reversed(path):  # compress: every axis on the path points at the root
            m *= self.parent[k][1]
            self.parent[k] = (root, m)
        return self.parent.get(path[0], (root, 1)) if path else (root, 1)

    def link(self, a: Var, i: int, b: Var, j: int, ratio: int = 1) -> None:
        """Axis j of b is axis i of a times ``ratio`` (ratio 1: one factor; > 1: b's axis is
        a's merged with minor axes). Extents that disagree block both."""
        if b.shape[j] != a.shape[i] * ratio:
            self.block(a, i)
            self.block(b, j)
            return
        if a.shape[i] == 1:
            return
        (ra, ma), (rb, mb) = self.find((a, i)), self.find((b, j))
        if ra == rb:
            if mb != ma * ratio:  # two paths, two different ratios: do not split it
                self.blocked.add(ra)
            return
        if (ma * ratio) % mb == 0:  # rb's extent is ra's times q: rb joins under ra
            self.parent[rb] = (ra, ma * ratio // mb)
        elif mb % (ma * ratio) == 0:
            self.parent[ra] = (rb, mb // (ma * ratio))
        else:
            self.blocked.update((ra, rb))

    def block(self, var: Var, dim: int) -> None:
        self.blocked.add((var, dim))

    def sum(self, var: Var, dim: int) -> None:
        """The axis is added up: split, it gives partial sums (``shard_sums`` decides)."""
        self.summed.add((var, dim))

    def block_all(self, *values: Var) -> None:
        for var in values:
            for d in range(var.ndim):
                self.block(var, d)


def block_factors(block: Block) -> BlockFactors:
    """The splittable factors of every axis of ``block``'s inputs, outputs and temporaries.

    >>> import jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> from dnnfusion_jax.fusion.plan import whole_graph_block
    >>> g = trace_function(lambda x: x.T.max(0), [jnp.ones((8, 16))]).graph
    >>> block_factors(whole_graph_block(g)).splittable_dims(g.inputs[0])  # axis 1: maxed
    (0,)
    """
    axes = _Axes()
    for node in block.nodes:
        rule = _RULES.get(node.op)
        if rule is None and node.op in ELEMENTWISE_PRIMITIVES:
            rule = _elementwise
        if rule is None or node.effects:
            axes.block_all(*node.inputs, *node.outputs)  # unknown: no axis may be split
        else:
            rule(node, axes)
    values = dict.fromkeys([*block.inputs, *block.outputs,
                            *(v for n in block.nodes for v in (*n.inputs, *n.outputs))])
    blocked = {axes.find(k)[0] for k in axes.blocked}
    for var in values:  # a factor twice in one value (x + x.T) cannot be split in both places
        roots = [axes.find((var, d))[0] for d in range(var.ndim) if var.shape[d] > 1]
        blocked.update(r for r in roots if roots.count(r) > 1)
    factor: dict[Key, tuple[int, int]] = {}
    numbers: dict[Key, int] = {}
    sizes: dict[int, int] = {}
    for var in values:
        for d, extent in enumerate(var.shape):
            root, m = axes.find((var, d))
            if extent > 1 and root not in blocked and extent // m > 1:
                number = numbers.setdefault(root, len(numbers))
                factor[(var, d)] = (number, m)
                sizes[number] = extent // m
    sums = {}
    for root in {axes.find(k)[0] for k in axes.summed} & set(numbers):
        dims = lambda var: tuple(factor.get((var, d), (None, 1))[0] for d in range(var.ndim))
        plan = sum_plan(block, numbers[root], dims)
        if plan is None:  # no all-reduce completes what a device would compute: never split
            factor = {k: v for k, v in factor.items() if v[0] != numbers[root]}
        else:
            sums[numbers[root]] = plan
    return BlockFactors(factor, sizes, sums)


# -- one rule per operator family: which output axis is which input axis --------------------

def _elementwise(node: Node, axes: _Axes) -> None:
    out = node.outputs[0]
    for operand in node.inputs:
        if operand.ndim == 0:
            continue  # a scalar operand: broadcast to every axis
        if operand.ndim != out.ndim:
            axes.block_all(operand, out)
            continue
        for d in range(out.ndim):
            if operand.shape[d] == 1 and out.shape[d] != 1:
                continue  # a size-1 broadcast: the operand has no part of this factor
            axes.link(operand, d, out, d)


def _broadcast(node: Node, axes: _Axes) -> None:
    operand, out = node.inputs[0], node.out
    for j, d in enumerate(node.params["broadcast_dimensions"]):
        if operand.shape[j] == out.shape[d]:
            axes.link(operand, j, out, d)


def _reshape(node: Node, axes: _Axes) -> None:
    """Axes that stay whole (size-1 axes aside) keep their factor; where axes merge, the
    merged axis is the major one's factor times the rest (a compound factor) and the minor
    ones are blocked; where an axis splits, likewise the other way round."""
    operand, out = node.inputs[0], node.out
    ins = [d for d in range(operand.ndim) if operand.shape[d] > 1]
    outs = [d for d in range(out.ndim) if out.shape[d] > 1]
    i = j = 0
    while i < len(ins) and j < len(outs):
        group_in, group_out = [ins[i]], [outs[j]]
        size_in, size_out = operand.shape[ins[i]], out.shape[outs[j]]
        while size_in != size_out:  # grow the smaller side until the products meet
            if size_in < size_out:
                i += 1
                group_in.append(ins[i])
                size_in *= operand.shape[ins[i]]
            else:
                j += 1
                group_out.append(outs[j])
                size_out *= out.shape[outs[j]]
        if len(group_in) == 1:  # one axis, whole (ratio 1) or split into major and minors
            axes.link(out, group_out[0], operand, group_in[0], size_in // out.shape[group_out[0]])
        elif len(group_out) == 1:  # merged: the major input axis times the minor ones
            axes.link(operand, group_in[0], out, group_out[0],
                      size_out // operand.shape[group_in[0]])
        else:
            axes.block(operand, group_in[0])
            axes.block(out, group_out[0])
        for d in group_in[1:]:
            axes.block(operand, d)
        for d in group_out[1:]:
            axes.block(out, d)
        i, j = i + 1, j + 1


def _transpose(node: Node, axes: _Axes) -> None:
    for d, source in enumerate(node.params["permutation"]):
        axes.link(node.inputs[0], source, node.out, d)


def _reduction(node: Node, axes: _Axes) -> None:
    operand, reduced = node.inputs[0], set(node.params["axes"])
    kept = [d for d in range(operand.ndim) if d not in reduced]
    for d in reduced:  # a sum may give partial sums; max, min, argmax... never
        (axes.sum if node.op == "reduce_sum" else axes.block)(operand, d)
    for out in node.outputs:
        for k, d in enumerate(kept):
            axes.link(operand, d, out, k)


def _rev(node: Node, axes: _Axes) -> None:
    """Reversed axes move every element: blocked; the others map to themselves."""
    operand, out = node.inputs[0], node.out
    for d in range(operand.ndim):
        if d in node.params["dimensions"]:
            axes.block(operand, d)
            axes.block(out, d)
        else:
            axes.link(operand, d, out, d)


def _iota(node: Node, axes: _Axes) -> None:
    """An iota's values are positions along its ``dimension``: that axis is blocked (a device
    would count from 0 again); its other axes repeat the same values and may be split."""
    axes.block(node.out, node.params["dimension"])


def _cumulative(node: Node, axes: _Axes) -> None:
    operand, out = node.inputs[0], node.out
    for d in range(operand.ndim):
        if d == node.params["axis"]:
            axes.block(operand, d)
            axes.block(out, d)
        else:
            axes.link(operand, d, out, d)


def _dot(node: Node, axes: _Axes) -> None:
    """Batch axes and the free axes of each side keep their factors; a contracted axis is one
    factor on both sides, summed (split, it gives partial sums)."""
    lhs, rhs = node.inputs
    out = node.out
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = node.params["dimension_numbers"]
    position = 0
    for a, b in zip(lhs_batch, rhs_batch):
        axes.link(lhs, a, out, position)
        axes.link(rhs, b, out, position)
        position += 1
    for a, b in zip(lhs_contract, rhs_contract):
        axes.link(lhs, a, rhs, b)
        axes.sum(lhs, a)
    for side, contract, batch in ((lhs, lhs_contract, lhs_batch), (rhs, rhs_contract, rhs_batch)):
        for d in range(side.ndim):
            if d not in contract and d not in batch:
                axes.link(side, d, out, position)
                position += 1


def _concatenate(node: Node, axes: _Axes) -> None:
    _along_axis(node, axes, node.params["dimension"], node.inputs, [node.out])


def _split(node: Node, axes: _Axes) -> None:
    _along_axis(node, axes, node.params["axis"], node.inputs, node.outputs)


def _along_axis(node: Node, axes: _Axes, axis: int, ins: Iterable[Var],
                outs: Iterable[Var]) -> None:
    """Concatenate and split: the joined axis is blocked, the others are one factor each."""
    first = node.outputs[0]
    for var in (*ins, *outs):
        for d in range(var.ndim):
            if d == axis:
                axes.block(var, d)
            elif var is not first:
                axes.link(var, d, first, d)


def _slice(node: Node, axes: _Axes) -> None:
    operand, out = node.inputs[0], node.out
    strides = node.params["strides"] or (1,) * operand.ndim
    for d, (start, limit, stride) in enumerate(zip(node.params["start_indices"],
                                                   node.params["limit_indices"], strides)):
        if (start, limit, stride) == (0, operand.shape[d], 1):
            axes.link(operand, d, out, d)
        else:
            axes.block(operand, d)
            axes.block(out, d)


def _pad(node: Node, axes: _Axes) -> None:
    operand, out = node.inputs[0], node.out
    for d, config in enumerate(node.params["padding_config"]):
        if tuple(config) == (0, 0, 0):
            axes.link(operand, d, out, d)
        else:
            axes.block(operand, d)
            axes.block(out, d)


def _window(node: Node, axes: _Axes) -> None:
    """Pooling and its gradient: an axis whose window is one element wide, unstrided and
    unpadded maps one-to-one; every other axis is blocked."""
    params = node.params
    rank = node.outputs[0].ndim
    ones = (1,) * rank
    trivial = [params["window_dimensions"][d] == 1
               and (params.get("window_strides") or ones)[d] == 1
               and tuple((params.get("padding") or ((0, 0),) * rank)[d]) == (0, 0)
               and (params.get("base_dilation") or ones)[d] == 1
               and (params.get("window_dilation") or ones)[d] == 1 for d in range(rank)]
    values = [v for v in (*node.inputs, *node.outputs) if v.ndim == rank]
    for var in values:
        for d in range(rank):
            if trivial[d]:
                axes.link(var, d, node.outputs[0], d)
            else:
                axes.block(var, d)
    axes.block_all(*(v for v in node.inputs if v.ndim != rank))


def _gather(node: Node, axes: _Axes) -> None:
    """A gather (an embedding lookup, ``take_along_axis``): each output position of the
    indices' axes reads the index at that position only, so those axes map one-to-one (as do
    the operand's batching axes, paired with them); the table's axes and the slice's are
    blocked (a row of the table may be read by any position)."""
    operand, indices = node.inputs[:2]
    out, numbers = node.out, node.params["dimension_numbers"]
    index_axes = range(indices.ndim - 1)  # jax's index vector is the last axis
    batch_out = [d for d in range(out.ndim) if d not in numbers.offset_dims]
    axes.block_all(*node.inputs, out)
    if len(batch_out) != len(index_axes):
        return
    position = dict(zip(index_axes, batch_out))
    pairs = [(indices, i, o) for i, o in position.items()]
    pairs += [(operand, d, position[i]) for d, i in zip(numbers.operand_batching_dims,
                                                       numbers.start_indices_batching_dims)]
    for var, d, o in pairs:
        axes.blocked -= {(var, d), (out, o)}
    for var, d, o in pairs:
        axes.link(var, d, out, o)


def _conv(node: Node, axes: _Axes) -> None:
    """A (depthwise) convolution: only the batch axis maps one-to-one."""
    lhs, rhs = node.inputs
    numbers = node.params["dimension_numbers"]
    axes.block_all(lhs, rhs, node.out)
    if node.params.get("batch_group_count", 1) == 1:
        axes.blocked.discard((lhs, numbers.lhs_spec[0]))
        axes.blocked.discard((node.out, numbers.out_spec[0]))
        axes.link(lhs, numbers.lhs_spec[0], node.out, numbers.out_spec[0])


_RULES: dict[str, Callable[[Node, _Axes], None]] = {
    "broadcast_in_dim": _broadcast,
    "reshape": _reshape,
    "squeeze": _reshape,
    "transpose": _transpose,
    "rev": _rev,
    "iota": _iota,
    "dot_general": _dot,
    "concatenate": _concatenate,
    "split": _split,
    "slice": _slice,
    "pad": _pad,
    "conv_general_dilated": _conv,
    "gather": _gather,
    "select_and_scatter_add": _window,
    **{name: _reduction for name in REDUCTIONS},
    **{name: _cumulative for name in CUMULATIVE},
    **{name: _window for name in WINDOWED},
}
"""Operator → how its axes map; an operator without a row (and not elementwise) blocks all
of its axes. Elementwise operators are ``ELEMENTWISE_PRIMITIVES`` from the registry."""
