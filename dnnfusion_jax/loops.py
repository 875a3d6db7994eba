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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
from jax.extend.core import ClosedJaxpr, jaxpr_as_fun

from dnnfusion_jax.frontend.ir import Graph, Node
from dnnfusion_jax.frontend.loop_invariants import LOOP_INVARIANTS, split_invariants
from dnnfusion_jax.frontend.trace import import_call

LOOP_BODIES: dict[str, dict[str, str]] = {
    # loop or branch primitive → {parameter holding its body (or bodies): name in reports}
    "scan": {"jaxpr": "body"},
    "while": {"cond_jaxpr": "cond", "body_jaxpr": "body"},
    "cond": {"branches": "branch"},
}

BodyOptimizer = Callable[[Callable, list, str, tuple[int, ...]], Any]
"""``(function, input avals, name, carried outputs) → OptimizedFunction``: the pipeline,
applied to a body whose outputs at the carried positions are the loop's next state."""

IN_PLACE_BYTES = 4096
"""A block of a loop body whose results all go to the loop's buffers (its state, the slice of
a scan's stacked output), at least this many bytes, is left to XLA, which writes them in
place: a kernel's result is a new buffer that XLA copies there on every iteration, one copy
per result. An LSTM's backward wrote 131 kB of weight-gradient sums per step into a kernel,
then copied them (0.83x of jax.jit; about 1.0x left to XLA); its forward, saving residuals for
the gradient, wrote 6 kB of them from its cell's kernel (one GEMM and the gates) in ten
results: its gradient went from 0.441 to 0.403 ms (jax.jit 0.374) once XLA wrote them, and
elementwise blocks alone were not enough."""


@dataclass
class BodyReport:
    """One body: ``loop`` names it (``"scan 3 body"``: node 3 of the outer graph),
    ``optimized`` is its ``OptimizedFunction``, and
    ``reason`` says why the loop runs the body as traced (None: it runs the optimised one);
    ``jaxpr`` is the body the loop now holds (how the report finds the loop's block)."""

    loop: str
    optimized: Any
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
    """``graph`` with the bodies of its loops and branches optimised; one report per body.
    Loop-invariant work that the optimisation made (a GEMM merge's weight concatenation, a
    guard's check of the weights) is then hoisted before the loop (``_hoist_invariants``)."""
    nodes, reports = [], []
    constants = dict(graph.constants)
    for index, node in enumerate(graph.nodes):
        bodies = LOOP_BODIES.get(node.op)
        if bodies is None:
            nodes.append(node)
            continue
        params = dict(node.params)
        reported: dict[str, BodyReport] = {}
        for param, label in bodies.items():
            value = node.params[param]
            several = isinstance(value, (tuple, list))
            rebuilt = []
            for position, body in enumerate(value if several else (value,)):
                loop = f"{node.op} {index} {label}" + (f" {position}" if several else "")
                carried = _carried_outputs(node, param, body)
                new_body, report = _optimize_body(body, optimize_body, f"{name}/{loop}", loop,
                                                  carried)
                report.jaxpr = new_body
                rebuilt.append(new_body)
                reports.append(report)
                reported[param] = report
            params[param] = tuple(rebuilt) if several else rebuilt[0]
        node = Node(node.primitive, node.inputs, node.outputs, params, node.effects)
        nodes.append(_hoist_invariants(node, nodes, constants, reported))
    return graph.replace(nodes, constants=constants), reports


def _hoist_invariants(loop: Node, nodes: list[Node], constants: dict,
                      reports: dict[str, BodyReport]) -> Node:
    """``loop`` with the invariant work of its optimised body moved into ``nodes`` (before
    it), as ``frontend/loop_invariants.py`` moved the traced body's; ``constants`` and the
    body's report follow."""
    split = split_invariants(loop.op, loop.params)
    if split is None:
        return loop
    hoisted, hoisted_constants, residuals = import_call(split.hoisted,
                                                        loop.inputs[split.constants])
    nodes.extend(hoisted)
    constants.update(hoisted_constants)
    body_param = LOOP_INVARIANTS[loop.op][0]
    if body_param in reports:
        reports[body_param].jaxpr = split.params[body_param]
    return Node(loop.primitive, tuple(split.operands(list(loop.inputs), residuals)),
                loop.outputs, split.params, loop.effects)


def _optimize_body(body: ClosedJaxpr, optimize_body: BodyOptimizer, name: str,
                   loop: str, carried: tuple[int, ...]) -> tuple[ClosedJaxpr, BodyReport]:
    optimized = optimize_body(jaxpr_as_fun(body), list(body.in_avals), name, carried)
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


def _carried_outputs(node: Node, param: str, body: ClosedJaxpr) -> tuple[int, ...]:
    """Positions of ``body``'s outputs that XLA writes into the loop's own buffers: the next
    state, and a scan's per-iteration outputs (a slice of the stacked result)."""
    if node.op == "scan" or param == "body_jaxpr":
        return tuple(range(len(body.out_avals)))
    return ()  # a while's condition, a branch


def in_place_updates(plan: Any, carried: Sequence[int]) -> dict[int, str]:
    """Block id → why XLA runs it: blocks of a loop body whose outputs all go to the loop's
    buffers, at least ``IN_PLACE_BYTES`` of them (which says why).

    Example:
        >>> import jax.numpy as jnp
        >>> from dnnfusion_jax.frontend.trace import trace_function
        >>> from dnnfusion_jax.fusion.greedy_planner import GreedyPlanner
        >>> graph = trace_function(lambda acc, g: acc + g * 0.5,
        ...                        [jnp.ones((64, 64)), jnp.ones((64, 64))]).graph
        >>> in_place_updates(GreedyPlanner().plan(graph), carried=(0,))
        {0: "writes 16.38 kB into the loop's buffers, which XLA does in place"}
    """
    state = {var for i, var in enumerate(plan.graph.outputs) if i in set(carried)}
    reasons = {}
    for block in plan.blocks:
        written = sum(var.nbytes for var in block.outputs)
        if block.outputs and set(block.outputs) <= state and written >= IN_PLACE_BYTES:
            reasons[block.id] = (f"writes {written / 1e3:.2f} kB into the loop's buffers, "
                                 "which XLA does in place")
    return reasons


def hoisted_kernel(node: Node) -> bool:
    """Whether ``node`` is one of our C kernels hoisted out of a loop body (an ``ffi_call`` to
    the C backend's target): not an unknown primitive, whatever the type table says."""
    from codegen.c.ffi_runtime import TARGET_NAME  # codegen imports this package's core
    return node.op == "ffi_call" and node.params.get("target_name") == TARGET_NAME


def loop_bodies_of(node: Node) -> list[ClosedJaxpr]:
    """The bodies ``node`` holds, if it is a loop or branch (``LOOP_BODIES``)."""
    bodies = []
    for param in LOOP_BODIES.get(node.op, {}):
        value = node.params[param]
        bodies.extend(value if isinstance(value, (tuple, list)) else (value,))
    return bodies


def _runs_a_kernel(optimized: Any) -> bool:
    return any(kernel.backend != "xla" for kernel in optimized.executable.kernels)
