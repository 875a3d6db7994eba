"""Replacing a region of the graph by a JAX function of its operands, traced and imported.

The graph passes of this folder (``matrix_chain.py``, ``gemm_factor.py``, ``gemm_merge.py``)
write their replacement as ordinary JAX code; ``splice`` traces it with ``jax.make_jaxpr``,
imports the equations as ``trace.py`` imports any function, puts them where the region's
last node was, and points every reader of the region's outputs at the new values. The nodes
are then sorted again (stably: untouched nodes keep their order) when a reader of an earlier
region node came before the region's last node; a replacement that would make a cycle (an
operand computed from one of the region's own results) is refused with ``None``.

Example:
    >>> import jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> g = trace_function(lambda x: jnp.exp(x) * 2.0, [jnp.ones(3)]).graph
    >>> g2 = splice(g, g.nodes, list(g.inputs), g.outputs, lambda x: [jnp.exp(x) + jnp.exp(x)])
    >>> [n.op for n in g2.nodes]
    ['exp', 'exp', 'add']
"""
from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from typing import Any

import jax

from dnnfusion_jax.frontend.ir import Graph, Node, Var
from dnnfusion_jax.frontend.trace import import_call


def splice(graph: Graph, region: Sequence[Node], operands: Sequence[Var],
           outputs: Sequence[Var], fn: Callable[..., Sequence[Any]]) -> Graph | None:
    """``graph`` with ``region`` replaced by ``fn(*operands)`` (a sequence, one value per
    ``outputs`` entry, same shapes and dtypes); None if that would make a cycle. Values of the
    region other than ``outputs`` must not be read outside it."""
    avals = [jax.ShapeDtypeStruct(v.shape, v.dtype, weak_type=v.weak_type) for v in operands]
    closed = jax.make_jaxpr(lambda *values: list(fn(*values)))(*avals)
    spliced, sub_constants, new_outputs = import_call(closed, operands)
    constants = {**graph.constants, **sub_constants}
    for old, new in zip(outputs, new_outputs, strict=True):
        if old.shape != new.shape or old.dtype != new.dtype:
            raise AssertionError(f"replacement {new!r} does not match {old!r}")
    subst = dict(zip(outputs, new_outputs))

    region_ids = {id(node) for node in region}
    last = max(i for i, node in enumerate(graph.nodes) if id(node) in region_ids)
    nodes: list[Node] = []
    for i, node in enumerate(graph.nodes):
        if i == last:
            nodes += spliced
        if id(node) in region_ids:
            continue
        if any(v in subst for v in node.inputs):
            node = Node(node.primitive, tuple(subst.get(v, v) for v in node.inputs),
                        node.outputs, node.params, node.effects)
        nodes.append(node)
    nodes = stable_topological_order(nodes, set(graph.inputs) | set(constants))
    if nodes is None:
        return None
    return graph.replace(nodes, [subst.get(v, v) for v in graph.outputs], constants)


def stable_topological_order(nodes: Sequence[Node], available: set[Var]) -> list[Node] | None:
    """``nodes`` in a topological order that keeps their given order wherever it is already
    valid (and the relative order of effectful nodes); None if they hold a cycle.

    >>> import numpy as np
    >>> from jax import lax
    >>> a, b, c = (Var((2,), np.dtype("float32")) for _ in range(3))
    >>> first, second = Node(lax.exp_p, (b,), (c,), {}), Node(lax.exp_p, (a,), (b,), {})
    >>> [n.outputs[0] is b for n in stable_topological_order([first, second], {a})]
    [True, False]
    """
    producer = {out: i for i, node in enumerate(nodes) for out in node.outputs}
    waiting = [0] * len(nodes)
    users: dict[int, list[int]] = {}
    effectful = [i for i, node in enumerate(nodes) if node.effects]
    for i, node in enumerate(nodes):
        needs = {producer[v] for v in node.inputs if v not in available and v in producer}
        if node.effects:  # effects keep their order: each waits for the previous one
            previous = [j for j in effectful if j < i]
            needs |= set(previous[-1:])
        waiting[i] = len(needs)
        for j in needs:
            users.setdefault(j, []).append(i)
    ready = [i for i, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    order: list[Node] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(nodes[i])
        for j in users.get(i, ()):
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, j)
    return order if len(order) == len(nodes) else None
