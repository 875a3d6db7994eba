"""Factoring a sum of GEMMs that share an operand, under a guard: ``x@a + x@b + x@c`` →
``x@(a+b+c)`` (and ``a@x + b@x`` → ``(a+b)@x``): one GEMM instead of three.

Exact for finite values within range, and only then (``inf*0 + inf*1`` is NaN where
``inf*(0+1)`` is inf; ``a+b`` can overflow where ``x@a + x@b`` does not). So it runs under
``guarded.py``'s check, every operand finite with ``|v| <= bound``, where
``bound = sqrt(max / (2·n·K))`` for n terms contracting over K elements: then no product, dot,
weight sum or sum of dots can overflow in either form. The e-graph has the same law as a rule
(``dot-factor-rhs``), which fires by default only on operands proved finite; this pass takes
the sums of raw inputs that the e-graph leaves, when ``algebra_cost.guard_pays`` says the GEMMs
saved pay for reading the operands once.

A sum is a tree of ``add`` nodes of one shape (no broadcasting) whose inner sums are read only
by the next add, and whose every term is a dot_general read only by the sum, all with the same
dimension numbers and precision, sharing one operand on the same side.

Example:
    >>> import jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> n = 256
    >>> args = [jnp.ones((n, n))] * 4
    >>> g = trace_function(lambda x, a, b, c: x @ a + x @ b + x @ c, args).graph
    >>> g2, rewrites = factor_gemm_sums(g)
    >>> rewrites[0].law, rewrites[0].flops_saved
    ('x@w1 + x@w2 + x@w3 -> x@(w1 + w2 + w3)', 67108864)
"""
from __future__ import annotations

import math

import numpy as np

from dnnfusion_jax.frontend.ir import Graph, Node, Var
from dnnfusion_jax.ops.cost import node_flops
from dnnfusion_jax.rewrite.algebra_cost import GuardPays, guard_pays
from dnnfusion_jax.rewrite.gemm_merge import dot_as, dot_signature
from dnnfusion_jax.rewrite.guarded import GuardedRewrite, splice_guarded

_FLOATS = (np.dtype("float32"), np.dtype("float64"))


def _terms(root: Node, producers: dict[Var, Node], readers: dict[Var, int]
           ) -> tuple[list[Var], list[Node]]:
    """The terms of the add tree under ``root`` and its add nodes (one shape throughout)."""
    adds, terms, stack = [root], [], list(reversed(root.inputs))
    while stack:
        var = stack.pop()
        inner = producers.get(var)
        if (inner is not None and inner.op == "add" and not inner.effects
                and readers.get(var, 0) == 1 and all(v.shape == root.out.shape
                                                     for v in inner.inputs)):
            adds.append(inner)
            stack.extend(reversed(inner.inputs))
        else:
            terms.append(var)
    return terms, adds


def _shared(dots: list[Node]) -> tuple[int, Var] | None:
    """(side, shared operand) when every dot reads the same value on one side, the others are
    of one shape and dtype, and dimension numbers and precision agree; else None."""
    first = dots[0]
    for side in (0, 1):
        shared = first.inputs[side]
        others = [d.inputs[1 - side] for d in dots]
        if (all(d.inputs[side] is shared for d in dots)
                and all(o.shape == others[0].shape and o.dtype == others[0].dtype
                        and o is not shared for o in others)
                and len(set(map(id, others))) == len(others)
                and all(dot_signature(d) == dot_signature(first) for d in dots)):
            return side, shared
    return None


def factor_gemm_sums(graph: Graph, finite_math: bool = False, pays: GuardPays = guard_pays
                     ) -> tuple[Graph, list[GuardedRewrite]]:
    """Every sum of GEMMs sharing an operand that ``pays`` (``algebra_cost.guard_pays``),
    factored under a guard (none with ``finite_math``); returns the graph and the rewrites."""
    rewrites: list[GuardedRewrite] = []
    while (plan := _next_plan(graph, finite_math, pays)) is not None:
        root, dots, adds, side, shared, saved = plan
        weights = [d.inputs[1 - side] for d in dots]
        operands = [shared, *weights]
        (lc, rc), _ = dots[0].params["dimension_numbers"]
        depth = int(np.prod([dots[0].inputs[0].shape[d] for d in lc], dtype=np.int64))
        fmax = float(np.finfo(root.out.dtype).max)
        bound = math.sqrt(fmax / (2.0 * len(dots) * max(depth, 1)))
        params = dict(dots[0].params)

        def fast(x, *ws, side=side, params=params):
            total = ws[0]
            for w in ws[1:]:
                total = total + w
            return dot_as(x, total, params) if side == 0 else dot_as(total, x, params)

        spliced = splice_guarded(graph, [*dots, *adds], operands, root.out, fast, bound,
                                 finite_math)
        assert spliced is not None, "a sum's terms are computed before it"
        graph, predicate = spliced
        names = [f"w{i + 1}" for i in range(len(dots))]
        law = (" + ".join(f"x@{w}" for w in names) + f" -> x@({' + '.join(names)})"
               if side == 0 else
               " + ".join(f"{w}@x" for w in names) + f" -> ({' + '.join(names)})@x")
        rewrites.append(GuardedRewrite.made("dot-factor-guarded", law, graph, operands, bound,
                                            saved, finite_math, predicate))
    return graph, rewrites


def _next_plan(graph: Graph, finite_math: bool, pays: GuardPays) -> tuple | None:
    readers = graph.read_counts()
    producers = graph.producers()
    for root in reversed(graph.nodes):
        if (root.op != "add" or root.effects
                or np.dtype(root.out.dtype) not in _FLOATS
                or any(v.shape != root.out.shape for v in root.inputs)):
            continue
        terms, adds = _terms(root, producers, readers)
        dots = [producers.get(t) for t in terms]
        # operands of the result's own type: summing bf16 weights would round them
        if any(d is None or d.op != "dot_general" or d.effects or readers.get(t, 0) != 1
               or any(v.dtype != root.out.dtype for v in (d.out, *d.inputs))
               for d, t in zip(dots, terms)):
            continue
        found = _shared(dots)
        if found is None:
            continue
        side, shared = found
        weights = [d.inputs[1 - side] for d in dots]
        fast_flops = node_flops(dots[0]) + (len(weights) - 1) * weights[0].size
        saved = sum(node_flops(d) for d in dots) + sum(node_flops(a) for a in adds) - fast_flops
        elements = shared.size + sum(w.size for w in weights)
        itemsize = np.dtype(root.out.dtype).itemsize
        if saved > 0 and (finite_math or pays(saved, elements, itemsize)):
            return root, dots, adds, side, shared, saved
    return None
