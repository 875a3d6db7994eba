"""The rewrite stage: IR → e-graph → budgeted saturation → fusion-aware extraction → IR.

``resolve_rules`` turns the ``rules`` option into Rule objects: None means the library's
defaults (``egraph_rules.default_rules()``); otherwise a Rule, a path to a rule file, the
string "default", or a sequence of those (so ``["default", my_rule]`` adds to the defaults and
``[my_rule]`` replaces them).

Example:
    >>> import jax.numpy as jnp
    >>> from dnnfusion_jax.trace import trace_function
    >>> g = trace_function(lambda x: jnp.exp(x) * jnp.exp(2.0 * x), [jnp.ones(8)]).graph
    >>> g2, stats = rewrite_graph(g)
    >>> [n.op for n in g2.nodes], stats.fired["exp-mul"] >= 1
    (['mul', 'add', 'exp'], True)
"""
from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cost import node_bytes, node_flops, total_flops
from .egraph_extract import decode, extract
from .egraph_saturate import SaturationBudget, saturate
from .egraph_translate import to_egraph
from .ir import Graph
from .rules_api import Rule, load_rules_file
from .simplify import eliminate_dead_code


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


_FILE_RULES: dict[tuple, list[Rule]] = {}


def resolve_rules(rules: Any = None) -> tuple[Rule, ...]:
    """The Rule objects the ``rules`` option names (see the module docstring)."""
    from egraph_rules import default_rules
    if rules is None:
        return tuple(default_rules())
    items = [rules] if isinstance(rules, (Rule, str, os.PathLike)) else list(rules)
    resolved: list[Rule] = []
    for item in items:
        if isinstance(item, Rule):
            resolved.append(item)
        elif item == "default":
            resolved += default_rules()
        elif isinstance(item, (str, os.PathLike)):
            path = Path(item)
            key = (str(path.resolve()), path.stat().st_mtime if path.exists() else None)
            if key not in _FILE_RULES:
                _FILE_RULES[key] = load_rules_file(path)
            resolved += _FILE_RULES[key]
        else:
            raise TypeError(f"rules: expected a Rule, a rule file path or 'default', got {item!r}")
    names = [r.name for r in resolved]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"rules: duplicate rule names {duplicates}")
    return tuple(resolved)


def _opaque_cost(translation):
    def cost(node, children):
        original = translation.apps[node.param]
        return 1.0 + node_flops(original) + sum(v.nbytes for v in original.outputs
                                                 if v.shape is not None)
    return cost


def rewrite_graph(graph: Graph, rules: Sequence[Rule] | None = None,
                  budget: SaturationBudget | None = None,
                  finite_math: bool = False) -> tuple[Graph, RewriteStats]:
    """Rewrites ``graph`` by equality saturation; returns the extracted graph and stats.

    The input graph is returned unchanged unless the extracted one saves FLOPs or, at equal
    FLOPs, operators: an equal-cost graph is only commutativity reordering the user's terms,
    which can split a chain the planner would have fused (x*r*g → (x*g)*r in RMS norm).
    """
    rules = tuple(resolve_rules() if rules is None else rules)
    budget = budget or SaturationBudget()
    stats = RewriteStats()
    if not graph.nodes:
        return graph, stats
    start = time.perf_counter()
    translation = to_egraph(graph)
    stats.timings["egraph_build_s"] = time.perf_counter() - start

    result = saturate(translation.egraph, rules, budget, finite_math)
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


__all__ = ["rewrite_graph", "resolve_rules", "RewriteStats", "SaturationBudget", "node_bytes"]
