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
    >>> g2, predicate = splice_guarded(g, g.nodes, list(g.inputs), g.outputs[0], fast, 80.0)
    >>> sorted({n.op for n in g2.nodes} & {"cond", "exp"})
    ['cond']
    >>> from dnnfusion_jax.frontend.evaluate import evaluate_graph
    >>> [out] = evaluate_graph(g2, jnp.ones(3), jnp.array([1.0, jnp.inf, 0.0]))
    >>> [round(float(v), 3) for v in out]
    [7.389, inf, 2.718]
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax.numpy as jnp
from jax import lax

from dnnfusion_jax.frontend.evaluate import evaluate_nodes
from dnnfusion_jax.frontend.ir import Graph, Node, Var
from dnnfusion_jax.rewrite.algebra_cost import check_cost
from dnnfusion_jax.rewrite.splice import splice, stable_topological_order


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
    predicate: Var | None = field(default=None, compare=False, repr=False)
    """The ``cond``'s predicate in the graph (``share_guard_checks``); None without a check."""

    @classmethod
    def made(cls, rule: str, law: str, graph: Graph, checked: Sequence[Var], bound: float,
             flops_saved: int, finite_math: bool, predicate: Var | None) -> GuardedRewrite:
        """The record of a rewrite just spliced into ``graph`` whose check reads ``checked``:
        the operands named as ``explain`` names them, the values read and their cost."""
        elements = sum(v.size for v in checked)
        itemsize = max(v.itemsize for v in checked)
        return cls(rule, law, tuple(describe(graph, v) for v in checked), bound, elements,
                   check_cost(elements, itemsize), flops_saved, guarded=not finite_math,
                   predicate=predicate)

    def __str__(self) -> str:
        check = (f"check |v| <= {self.bound:.3g} over {self.check_elements} values "
                 f"(cost {self.check_cost:.3g})" if self.guarded else "no check (finite_math)")
        return (f"{self.rule}: {self.law} on {', '.join(self.operands)}; {check}, "
                f"saves {self.flops_saved} FLOPs")


def describe(graph: Graph, var: Var) -> str:
    """How ``explain`` names a checked operand: the argument it is (possibly reshaped or
    broadcast), else the value.

    >>> import jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> g = trace_function(lambda x: jnp.exp(x), [jnp.ones((2, 3))]).graph
    >>> describe(g, g.inputs[0]), describe(g, g.outputs[0]).endswith("f32[2,3]")
    ('argument 0 f32[2,3]', True)
    >>> g = trace_function(lambda x, m: x - m.reshape(1, 3),
    ...                    [jnp.ones((2, 3)), jnp.ones(3)]).graph
    >>> describe(g, g.nodes[0].out)
    'argument 1 f32[3] as f32[1,3]'
    """
    if var in graph.inputs[graph.num_consts:]:
        return f"argument {graph.inputs.index(var) - graph.num_consts} {var.type_str}"
    producer = graph.producers().get(var)
    if producer is not None and producer.op in ("broadcast_in_dim", "reshape") \
            and len(producer.inputs) == 1:  # a batch norm's vectors, shaped for broadcasting
        inner = describe(graph, producer.inputs[0])
        if inner.startswith("argument"):
            return f"{inner} as {var.type_str}"
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
                   replay: Sequence[Node] | None = None) -> tuple[Graph, Var | None] | None:
    """``graph`` with ``region`` (whose only value read outside is ``output``) replaced by
    ``fast(*operands)`` under the check ``in_range(operands, bound)``, falling back to the
    region itself; without the check when ``finite_math``. Returns the graph and the ``cond``'s
    predicate (None without a check), or None if the replacement would make a cycle.

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

    spliced = splice(graph, region, operands, [output], guarded)
    if spliced is None:
        return None
    if finite_math:
        return spliced, None
    defined = {v for node in graph.nodes for v in node.outputs}
    [cond] = [node for node in spliced.nodes  # ours: the one cond whose results are new
              if node.op == "cond" and not defined.intersection(node.outputs)]
    return spliced, cond.inputs[0]


def share_guard_checks(graph: Graph, predicates: Sequence[Var]) -> Graph:
    """``graph`` with the guarded rewrites' checks joined: every ``cond`` whose predicate is in
    ``predicates`` takes the AND of them all, so that the checks meet in one kernel (the
    planner fuses sibling reductions) and an operand shared by two rewrites is read by one
    kernel. A predicate computed from another guard's result keeps its own check. Exact: each
    region's fallback is its original, and any operand out of range sends every region down
    its original, which costs only time, on inputs that are out of range anyway.

    >>> import jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> from dnnfusion_jax.rewrite.matrix_chain import reorder_chains
    >>> n = 512
    >>> args = [jnp.ones((n, n))] * 4 + [jnp.ones((n, 2))]
    >>> two = lambda a, b, c, d, v: (a @ b) @ v + (c @ d) @ v
    >>> g, rewrites = reorder_chains(trace_function(two, args).graph)
    >>> shared = share_guard_checks(g, [r.predicate for r in rewrites])
    >>> len({node.inputs[0] for node in shared.nodes if node.op == "cond"})
    1
    """
    producers, guards = graph.producers(), set(predicates)
    conds = {id(n) for n in graph.nodes if n.op == "cond" and n.inputs[0] in guards}

    def after_a_guard(var: Var) -> bool:
        seen, stack = set(), [var]
        while stack:
            node = producers.get(stack.pop())
            if node is None or id(node) in seen:
                continue
            if id(node) in conds:
                return True
            seen.add(id(node))
            stack.extend(node.inputs)
        return False

    shared = [p for p in dict.fromkeys(predicates) if p in producers and not after_a_guard(p)]
    if len(shared) < 2:
        return graph
    joined, nodes = shared[0], []
    for p in shared[1:]:  # a cond's index is 0 (original) or 1 (fast): AND is the minimum
        out = Var(joined.shape, joined.dtype)
        nodes.append(Node(lax.min_p, (joined, p), (out,), {}))
        joined = out
    rewired = [Node(n.primitive, (joined, *n.inputs[1:]), n.outputs, n.params, n.effects)
               if id(n) in conds and n.inputs[0] in shared else n for n in graph.nodes]
    order = stable_topological_order([*rewired, *nodes],
                                     set(graph.inputs) | set(graph.constants))
    assert order is not None, "the shared predicates precede every guard"
    return graph.replace(order)
