"""Guarded rewrites: a faster form of a region that is exact only for in-range operands, run
under a check, with the original region as the fallback.

A region (a few nodes with one output, read only inside it but for that output) and its
operands are replaced by::

    ok  = all(|a| <= bound) & all(|b| <= bound) & ...     # False for NaN and ±inf too
    out = lax.cond(ok, fast, original, a, b, ...)

so finite inputs of bounded magnitude take the fast path, and any inf, NaN or huge input gets
exactly the original region's result (the same primitives, replayed). The bound is the rule's:
small enough that no intermediate of either form can overflow, so the two forms differ by
rounding only. The check is ordinary graph nodes (compares and and-reductions, which the
planner fuses like any other); the ``cond`` is an Opaque node whose branches are jaxprs (built
with ``jax.make_jaxpr`` and imported as ``trace.py`` imports any equation), run by XLA.

With ``finite_math=True`` the fast form replaces the region without a check.

Each guarded rewrite is recorded as a ``GuardedRewrite`` (what ``explain`` lists).

Example:
    >>> import jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> g = trace_function(lambda a, b: jnp.exp(a) * jnp.exp(b), [jnp.ones(3)] * 2).graph
    >>> fast = lambda a, b: jnp.exp(a + b)
    >>> g2 = splice_guarded(g, g.nodes, list(g.inputs), g.outputs[0], fast, bound=80.0)
    >>> sorted({n.op for n in g2.nodes} & {"cond", "exp"})
    ['cond']
    >>> from dnnfusion_jax.frontend.evaluate import evaluate_graph
    >>> [out] = evaluate_graph(g2, jnp.ones(3), jnp.array([1.0, jnp.inf, 0.0]))
    >>> [round(float(v), 3) for v in out]
    [7.389, inf, 2.718]
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
from jax import lax

from dnnfusion_jax.frontend.evaluate import evaluate_nodes
from dnnfusion_jax.frontend.ir import Graph, Node, Var
from dnnfusion_jax.rewrite.splice import splice


@dataclass(frozen=True)
class GuardedRewrite:
    """One rewrite that runs under a check: what ``explain`` lists.

    ``operands``: the checked values (``%id:f32[...]``); ``bound``: the magnitude each must
    stay within (``|v| <= bound``, which also rules out ±inf and NaN); ``check_elements``: the
    values the check reads; ``check_cost``: its cost in FLOP-equivalents (``algebra_cost``);
    ``flops_saved``: FLOPs of the original region minus those of the fast form; ``guarded``:
    False when ``finite_math=True`` dropped the check.

    Example:
        >>> print(GuardedRewrite("matrix-chain-order", "(A@B)@v -> A@(B@v)", ("%1:f32[4,4]",),
        ...                      1e10, 16, 2000096.0, 96))  # doctest: +NORMALIZE_WHITESPACE
        matrix-chain-order: (A@B)@v -> A@(B@v) on %1:f32[4,4]; check |v| <= 1e+10 over 16
        values (cost 2e+06), saves 96 FLOPs
    """

    rule: str
    law: str
    operands: tuple[str, ...]
    bound: float
    check_elements: int
    check_cost: float
    flops_saved: int
    guarded: bool = True

    def __str__(self) -> str:
        check = (f"check |v| <= {self.bound:.3g} over {self.check_elements} values "
                 f"(cost {self.check_cost:.3g})" if self.guarded else "no check (finite_math)")
        return (f"{self.rule}: {self.law} on {', '.join(self.operands)}; {check}, "
                f"saves {self.flops_saved} FLOPs")


def describe(graph: Graph, var: Var) -> str:
    """How ``explain`` names a checked operand: the argument it is, else the value.

    >>> import jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> g = trace_function(lambda x: jnp.exp(x), [jnp.ones((2, 3))]).graph
    >>> describe(g, g.inputs[0]), describe(g, g.outputs[0]).endswith("f32[2,3]")
    ('argument 0 f32[2,3]', True)
    """
    if var in graph.inputs[graph.num_consts:]:
        return f"argument {graph.inputs.index(var) - graph.num_consts} {var.type_str}"
    return repr(var)


def in_range(operands: Sequence[Any], bound: float) -> Any:
    """One boolean: every element of every operand has ``|v| <= bound`` (NaN and ±inf fail).

    >>> bool(in_range([jnp.ones(3), jnp.array([2.0, -1.0])], 2.0))
    True
    >>> bool(in_range([jnp.array([1.0, jnp.nan])], 2.0))
    False
    """
    ok = None
    for value in operands:
        this = jnp.all(jnp.abs(value) <= jnp.asarray(bound, value.dtype))
        ok = this if ok is None else ok & this
    return ok


def splice_guarded(graph: Graph, region: Sequence[Node], operands: Sequence[Var], output: Var,
                   fast: Callable[..., Any], bound: float, finite_math: bool = False,
                   check: Callable[[Sequence[Var], Sequence[Any]], Any] | None = None,
                   replay: Sequence[Node] | None = None) -> Graph | None:
    """``graph`` with ``region`` (whose only value read outside is ``output``) replaced by
    ``fast(*operands)`` under the check ``in_range(operands, bound)``, falling back to the
    region itself; without the check when ``finite_math``. None if that would make a cycle.

    ``check(operands, values)``: a guard of the rule's own instead (over some of the operands,
    with conditions beyond the bound); ``replay``: the nodes the fallback evaluates, when it
    must recompute values that stay in the graph for other readers (a broadcast of a vector
    that the region reads at full size, passed in small)."""
    region_ids = {id(node) for node in region}
    region = [node for node in graph.nodes if id(node) in region_ids]  # in graph order
    replayed = region if replay is None else list(replay)
    region_inputs = {v for node in replayed for v in node.inputs}
    consts = {v: graph.constants[v] for v in region_inputs if v in graph.constants}

    def original(*values: Any) -> Any:
        env = evaluate_nodes(replayed, {**consts, **dict(zip(operands, values))})
        return env[output]

    def guarded(*values: Any) -> list[Any]:
        if finite_math:
            return [fast(*values)]
        ok = in_range(values, bound) if check is None else check(operands, values)
        return [lax.cond(ok, fast, original, *values)]

    return splice(graph, region, operands, [output], guarded)
