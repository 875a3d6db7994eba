"""Row-local caching: which values a kernel computes once per row and keeps for later stages.

The lowering inlines every elementwise value into each stage that reads it, so a value read by
two stages is computed twice: softmax evaluates ``exp(x - max)`` in its sum stage and again in
its normalising stage. For a cheap value that is right (recomputing ``x - mean`` costs less
than a store and a load), for an expensive one it is not. This module decides, from a first
lowering of a block, which values to *cache*: the first stage that reads such a value also
stores it into a row-local temporary (``Stage.caches``), and later stages load it from there.

A value is cached when

* the kernel has a rows loop (the temporary holds one row, on the thread's stack);
* two or more stages read it, every read within the current row;
* it costs at least ``MIN_CACHE_COST`` (the registry's ``Primitive.cost``: a transcendental,
  or several cheaper operations), counting the operations inlined into it, minus values
  already cached;
* the first stage reading it visits each element of its row exactly once (checked by
  evaluating that stage's index at every point), so the temporary is complete after it;
* its row fits the remaining budget ``MAX_ROW_CACHE_ELEMENTS``.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> from dnnfusion_jax.fusion.plan import whole_graph_block
    >>> from codegen.kernel.lowering import lower_block
    >>> g = trace_function(jax.nn.softmax, [jnp.ones((4, 8))]).graph
    >>> kernel = lower_block(whole_graph_block(g), g.constants)
    >>> [(stage.kind, [temp for temp, _, _ in stage.caches]) for stage in kernel.stages]
    [('reduce', []), ('reduce', ['t1']), ('store', [])]
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Collection, Mapping, Sequence

from dnnfusion_jax.frontend.ir import Node, Var
from codegen.kernel.index import Index, LoopVar, linearize
from codegen.kernel.kernel_ir import Stage
from dnnfusion_jax.ops.registry import lookup

MIN_CACHE_COST = 8             # a store plus a load cost about two operations and cache space
MAX_ROW_CACHE_ELEMENTS = 8192  # all cached rows together, per thread, on its stack (32 KiB f32)


def value_cost(var: Var, producer: Mapping[Var, Node], stops: set[Var],
               staged: Collection[str]) -> int:
    """Operations inlined to compute one element of ``var``; ``stops`` are loaded instead
    (block inputs, cached values), and so are the results of ``staged`` primitives (those the
    lowering computes in stages of their own: reductions, depthwise convolutions). Shared
    operands count once."""
    seen: set[Var] = set()
    stack, cost = [var], 0
    while stack:
        current = stack.pop()
        node = producer.get(current)
        if current in seen or node is None or (current in stops and current is not var):
            continue
        seen.add(current)
        if node.op in staged:
            continue
        cost += lookup(node.op).cost
        stack.extend(node.inputs)
    return cost


def visits_each_once(stage: Stage, flat: Index, size: int) -> bool:
    """Whether ``flat`` takes every value in ``[0, size)`` exactly once over the stage's points
    (evaluated point by point: rows are at most a few thousand elements)."""
    loops: Sequence[LoopVar] = (*stage.loops, *stage.reduce_loops)
    if math.prod(v.extent for v in loops) != size:
        return False
    seen = bytearray(size)
    for point in itertools.product(*(range(v.extent) for v in loops)):
        value = flat.evaluate(dict(zip(loops, point)))
        if not 0 <= value < size or seen[value]:
            return False
        seen[value] = 1
    return True


def plan_row_caches(nodes: Sequence[Node], producer: Mapping[Var, Node],
                    reads: Mapping[Var, list[tuple[int, tuple[Index, ...]]]],
                    stages: Sequence[Stage], rows: Sequence[LoopVar],
                    staged: Collection[str]) -> dict[Var, int]:
    """Values to cache, each with the number of the stage that stores it (``staged``: see
    ``value_cost``; their results are loaded, never cached).

    ``reads[var]`` lists ``(stage number, index)`` for every distinct index at which the first
    lowering evaluated ``var``; ``nodes`` are in topological order.
    """
    if not rows:
        return {}
    k = len(rows)
    row_index = tuple(Index.var(v) for v in rows)
    plan: dict[Var, int] = {}
    budget = MAX_ROW_CACHE_ELEMENTS
    for node in nodes:
        if node.op in staged or lookup(node.op).cost == 0 or len(node.outputs) != 1:
            continue
        var = node.out
        var_reads = reads.get(var, [])
        readers = sorted({stage for stage, _ in var_reads})
        if len(readers) < 2 or any(index[:k] != row_index for _, index in var_reads):
            continue
        local_shape = var.shape[k:]
        size = math.prod(local_shape)
        if size > budget or value_cost(var, producer, set(plan), staged) < MIN_CACHE_COST:
            continue
        first = [index for stage, index in var_reads if stage == readers[0]]
        if len(first) != 1 or not visits_each_once(
                stages[readers[0]], linearize(list(first[0][k:]), local_shape), size):
            continue
        plan[var] = readers[0]
        budget -= size
    return plan
