"""The rewrite stage: IR → e-graph → budgeted saturation → fusion-aware extraction → IR,
then the graph-level algebra (``algebra_passes.py``: guarded rewrites, GEMM merging).

The rules come from the caller (``options.resolve_rules`` turns the ``rules`` option into
them; ``egraph_rules.default_rules()`` is the library).

Example:
    >>> import jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> g = trace_function(lambda x: jnp.exp(x) * jnp.exp(2.0 * x), [jnp.ones(8)]).graph
    >>> from egraph_rules import default_rules
    >>> g2, stats = rewrite_graph(g, default_rules())
    >>> [n.op for n in g2.nodes], stats.fired["exp-mul"] >= 1
    (['mul', 'add', 'exp'], True)
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from dnnfusion_jax.ops.cost import node_bytes, node_flops, total_flops
from dnnfusion_jax.rewrite.algebra_passes import run_algebra_passes
from dnnfusion_jax.rewrite.guarded import GuardedRewrite
from dnnfusion_jax.rewrite.egraph_extract import decode, extract
from dnnfusion_jax.rewrite.egraph_saturate import SaturationBudget, saturate
from dnnfusion_jax.rewrite.egraph_translate import to_egraph
from dnnfusion_jax.frontend.ir import Graph
from dnnfusion_jax.rewrite.rules_api import Rule
from dnnfusion_jax.frontend.simplify import eliminate_dead_code


@dataclass
class RewriteStats:
    """What the e-graph stage did: sizes, why saturation stopped, rule matches, times."""

    fired: Counter = field(default_factory=Counter)
    egraph_nodes: int = 0
    egraph_classes: int = 0
    iterations: int = 0
    stop: str = "not run"
    timings: dict[str, float] = field(default_factory=dict)
    kept_original: bool = False
    guarded: list[GuardedRewrite] = field(default_factory=list)
    """Rewrites that run under a check (``algebra_passes.py``), for ``explain`` to list."""


def _opaque_cost(translation):
    def cost(node, children):
        original = translation.apps[node.param]
        return 1.0 + node_flops(original) + sum(v.nbytes for v in original.outputs
                                                 if v.shape is not None)
    return cost


def rewrite_graph(graph: Graph, rules: Sequence[Rule],
                  budget: SaturationBudget | None = None,
                  finite_math: bool = False,
                  trusted: frozenset[str] = frozenset()) -> tuple[Graph, RewriteStats]:
    """Rewrites ``graph`` by equality saturation; returns the extracted graph and stats.
    ``trusted``: names of rules known to keep shapes (see ``egraph_saturate.saturate``).

    The e-graph's result is kept only if it saves FLOPs or, at equal FLOPs, operators (else the
    input graph goes on): an equal-cost graph is only commutativity reordering the user's terms,
    which can split a chain the planner would have fused (x*r*g → (x*g)*r in RMS norm). Then
    the graph-level algebra runs (``algebra_passes.py``: guarded GEMM factoring and
    matrix-chain order, GEMM merging), its guarded rewrites listed in ``stats.guarded``.
    """
    graph, stats = _egraph_rewrite(graph, rules, budget, finite_math, trusted)
    start = time.perf_counter()
    algebra = run_algebra_passes(graph, finite_math)
    stats.timings["algebra_s"] = time.perf_counter() - start
    stats.fired.update(algebra.fired)
    stats.guarded = algebra.guarded
    return algebra.graph, stats


def _egraph_rewrite(graph: Graph, rules: Sequence[Rule], budget: SaturationBudget | None,
                    finite_math: bool, trusted: frozenset[str]) -> tuple[Graph, RewriteStats]:
    rules = tuple(rules)
    budget = budget or SaturationBudget()
    stats = RewriteStats()
    if not graph.nodes:
        return graph, stats
    start = time.perf_counter()
    translation = to_egraph(graph)
    stats.timings["egraph_build_s"] = time.perf_counter() - start

    result = saturate(translation.egraph, rules, budget, finite_math, trusted)
    stats.timings["saturate_s"] = result.seconds
    stats.fired.update(result.matches)
    stats.iterations, stats.stop, stats.egraph_nodes = result.iterations, result.stop, result.enodes

    start = time.perf_counter()
    decoded = decode(translation.egraph.freeze())
    stats.egraph_classes = len(decoded.nodes)
    roots = translation.roots(decoded)
    choice = extract(decoded, roots, _opaque_cost(translation))
    rewritten = eliminate_dead_code(translation.to_graph(decoded, choice, roots))
    stats.timings["extract_s"] = time.perf_counter() - start
    size = lambda g: (total_flops(g.nodes), len(g.nodes))  # noqa: E731
    if size(rewritten) >= size(graph):
        stats.kept_original = True
        return graph, stats
    return rewritten, stats


__all__ = ["rewrite_graph", "RewriteStats", "SaturationBudget", "node_bytes"]
