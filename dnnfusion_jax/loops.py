"""Loop and branch bodies optimised by the same pipeline, so fused kernels run inside loops.

A ``scan``, ``while`` (its ``cond_jaxpr`` and ``body_jaxpr``) or ``cond``/``switch`` (each
branch) is one Opaque node of the outer plan: XLA runs the loop. Its bodies are functions of
their own, and each goes through the whole pipeline (trace, rewrite, plan, compile; nested
loops recursively); the loop is then rebuilt around the optimised body, a jaxpr that calls the
body's kernels, so XLA's while loop calls our kernels on every iteration. Work that does not
depend on the carry left the body when it was traced (``frontend/loop_invariants.py``).

A body that cannot be optimised (an internal error, no kernel to run, result types that would
change) stays as traced; ``BodyReport.reason`` says why. That is never an error.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jax import lax
    >>> from dnnfusion_jax.pipeline import optimize
    >>> from dnnfusion_jax.options import make_options
    >>> def f(x):
    ...     return lax.fori_loop(0, 4, lambda i, c: jnp.tanh(c) * 0.5 + c, x)
    >>> opt = optimize(f, [jnp.ones(8)], {}, make_options())
    >>> [(body.loop, len(body.optimized.plan.blocks), body.reason) for body in opt.loop_bodies]
    [('scan 0 body', 1, None)]
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
from jax.extend.core import ClosedJaxpr, jaxpr_as_fun

from dnnfusion_jax.frontend.ir import Graph, Node

LOOP_BODIES: dict[str, dict[str, str]] = {
    # loop or branch primitive → {parameter holding its body (or bodies): name in reports}
    "scan": {"jaxpr": "body"},
    "while": {"cond_jaxpr": "cond", "body_jaxpr": "body"},
    "cond": {"branches": "branch"},
}

BodyOptimizer = Callable[[Callable, list, str], Any]
"""``(function, input avals, name) → OptimizedFunction``: the pipeline, applied to a body."""


@dataclass
class BodyReport:
    """One body: ``loop`` names it (``"scan 3 body"``: node 3 of the outer graph),
    ``optimized`` is its ``OptimizedFunction`` (None where optimising was not tried), and
    ``reason`` says why the loop runs the body as traced (None: it runs the optimised one);
    ``jaxpr`` is the body the loop now holds (how the report finds the loop's block)."""

    loop: str
    optimized: Any | None
    reason: str | None = None
    jaxpr: ClosedJaxpr | None = None

    def summary(self) -> dict[str, Any]:
        """Blocks, fused kernels and equations of this body (``Report.summary()["loops"]``)."""
        opt = self.optimized
        return {"loop": self.loop, "jaxpr_ops": opt.traced.jaxpr_ops,
                "blocks": len(opt.plan.blocks),
                "fused_kernels": sum(k.backend != "xla" for k in opt.executable.kernels),
                "runs": "as traced: " + self.reason if self.reason else "optimised"}


def optimize_bodies(graph: Graph, optimize_body: BodyOptimizer,
                    name: str) -> tuple[Graph, list[BodyReport]]:
    """``graph`` with the bodies of its loops and branches optimised; one report per body."""
    nodes, reports = [], []
    for index, node in enumerate(graph.nodes):
        bodies = LOOP_BODIES.get(node.op)
        if bodies is None:
            nodes.append(node)
            continue
        params = dict(node.params)
        for param, label in bodies.items():
            value = node.params[param]
            several = isinstance(value, (tuple, list))
            rebuilt = []
            for position, body in enumerate(value if several else (value,)):
                loop = f"{node.op} {index} {label}" + (f" {position}" if several else "")
                new_body, report = _optimize_body(body, optimize_body, f"{name}/{loop}", loop)
                report.jaxpr = new_body
                rebuilt.append(new_body)
                reports.append(report)
            params[param] = tuple(rebuilt) if several else rebuilt[0]
        nodes.append(Node(node.primitive, node.inputs, node.outputs, params, node.effects))
    return graph.replace(nodes), reports


def _optimize_body(body: ClosedJaxpr, optimize_body: BodyOptimizer, name: str,
                   loop: str) -> tuple[ClosedJaxpr, BodyReport]:
    optimized = optimize_body(jaxpr_as_fun(body), list(body.in_avals), name)
    if optimized.internal_error:
        return body, BodyReport(loop, optimized, f"optimising it failed: "
                                                 f"{optimized.internal_error}")
    if optimized.backend == "xla" or not _runs_a_kernel(optimized):
        return body, BodyReport(loop, optimized, "no fused kernel in it: XLA runs it as traced")

    def run(*args: Any) -> list[Any]:
        return optimized.executable(*optimized.traced.consts, *args)
    rebuilt = jax.make_jaxpr(run)(*body.in_avals)
    if list(rebuilt.out_avals) != list(body.out_avals):  # a loop's carry keeps its type
        return body, BodyReport(loop, optimized, "its kernels' result types differ from the "
                                                 "body's: XLA runs it as traced")
    return rebuilt, BodyReport(loop, optimized)


def loop_bodies_of(node: Node) -> list[ClosedJaxpr]:
    """The bodies ``node`` holds, if it is a loop or branch (``LOOP_BODIES``)."""
    bodies = []
    for param in LOOP_BODIES.get(node.op, {}):
        value = node.params[param]
        bodies.extend(value if isinstance(value, (tuple, list)) else (value,))
    return bodies


def _runs_a_kernel(optimized: Any) -> bool:
    return any(kernel.backend != "xla" for kernel in optimized.executable.kernels)
