"""The graph-level algebra after the e-graph: rewrites that need a whole-chain view or a
guard, run deterministically in this order:

1. ``gemm_factor.py``: ``x@a + x@b + x@c`` → ``x@(a+b+c)`` under a guard;
2. ``matrix_chain.py``: chains of 2-D dots in their cheapest order under a guard;
3. ``bn_fold.py``: a per-channel affine after a convolution (batch norm) folded into its
   weights under a guard over the weights;
4. ``gemm_merge.py``: GEMMs sharing an operand merged, exact, no guard.

Factoring comes before merging because it saves FLOPs where merging saves only traffic; both
come after the e-graph, which factors and reassociates by itself what it can prove finite
(or everything with ``finite_math=True``), so that these passes see what it left. Each guarded
rewrite is recorded (``GuardedRewrite``) for ``explain``, and the guards share one check
(``guarded.share_guard_checks``); ``finite_math=True`` drops the guards.

Example:
    >>> import jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> n = 512
    >>> args = [jnp.ones((n, n)), jnp.ones((n, n)), jnp.ones((n, 8))]
    >>> g = trace_function(lambda a, b, v: jnp.tanh((a @ b) @ v), args).graph
    >>> result = run_algebra_passes(g)
    >>> dict(result.fired), [r.rule for r in result.guarded]
    ({'matrix-chain-order': 1}, ['matrix-chain-order'])
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from dnnfusion_jax.frontend.ir import Graph
from dnnfusion_jax.frontend.simplify import eliminate_dead_code
from dnnfusion_jax.rewrite.bn_fold import fold_batch_norms
from dnnfusion_jax.rewrite.gemm_factor import factor_gemm_sums
from dnnfusion_jax.rewrite.gemm_merge import merge_gemms
from dnnfusion_jax.rewrite.guarded import GuardedRewrite, share_guard_checks
from dnnfusion_jax.rewrite.matrix_chain import reorder_chains


@dataclass
class AlgebraResult:
    """The rewritten graph, rule counts (as ``rules_fired`` counts them) and guarded rewrites."""

    graph: Graph
    fired: Counter = field(default_factory=Counter)
    guarded: list[GuardedRewrite] = field(default_factory=list)


def run_algebra_passes(graph: Graph, finite_math: bool = False) -> AlgebraResult:
    """Runs the four passes on ``graph`` (see the module docstring)."""
    if not graph.nodes:
        return AlgebraResult(graph)
    graph, factored = factor_gemm_sums(graph, finite_math)
    graph, chains = reorder_chains(graph, finite_math)
    graph, folds = fold_batch_norms(graph, finite_math)
    graph, fired = merge_gemms(graph)
    guarded = [*factored, *chains, *folds]
    graph = share_guard_checks(graph, [r.predicate for r in guarded if r.predicate is not None])
    fired.update(rewrite.rule for rewrite in guarded)
    if fired:
        graph = eliminate_dead_code(graph)
    return AlgebraResult(graph, fired, guarded)
