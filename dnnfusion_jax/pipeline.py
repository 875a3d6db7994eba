"""The optimiser pipeline for one input signature: trace → rewrite → plan → compile.

``optimize`` runs the stages, times them, prints them under ``debug``, and returns an
``OptimizedFunction`` that runs the compiled plan on flat inputs (under ``jax.jit`` this traces
into one executable). Its derivatives run fused kernels too: a forward that also saves the
residuals and a backward, both optimised here on first use (``derivatives.py``).

Example:
    >>> import jax.numpy as jnp
    >>> from dnnfusion_jax.options import make_options
    >>> opt = optimize(lambda x: jnp.tanh(x) * 2.0, [jnp.ones(4)], {}, make_options())
    >>> len(opt.plan.blocks)
    1
    >>> [float(v) for v in opt([jnp.zeros(4)])[0]]
    [0.0, 0.0, 0.0, 0.0]
"""
from __future__ import annotations

import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax

from dnnfusion_jax.derivatives import FusedVjp, call_differentiable
from dnnfusion_jax.executable import Executable, compile_plan
from dnnfusion_jax.files import warn_once
from dnnfusion_jax.frontend.ir import Graph
from dnnfusion_jax.loops import BodyReport, in_place_updates, optimize_bodies
from dnnfusion_jax.options import (BACKENDS, PLANNERS, Options, library_rule_names,
                                   program_platform, resolve_rules)
from dnnfusion_jax.fusion.backend import ToolMissing
from dnnfusion_jax.fusion.plan import FusionPlan
from dnnfusion_jax.rewrite.stage import RewriteStats, rewrite_graph
from dnnfusion_jax.frontend.simplify import simplify
from dnnfusion_jax.frontend.trace import TracedFunction, trace_function
from dnnfusion_jax.fusion.unfused_planner import UnfusedPlanner


@dataclass
class OptimizedFunction:
    """A function optimised at one signature, ready to run on the flattened arguments."""

    name: str
    options: Options
    traced: TracedFunction
    graph: Graph
    rules_fired: dict[str, int]
    plan: FusionPlan
    executable: Executable
    backend: str
    timings: dict[str, float] = field(default_factory=dict)
    internal_error: str | None = None
    rewrite_stats: RewriteStats = field(default_factory=RewriteStats)
    fused_derivatives: bool = True
    loop_bodies: list[BodyReport] = field(default_factory=list)
    _vjp: FusedVjp | None = field(default=None, repr=False)

    @property
    def cacheable(self) -> bool:
        """False when closed-over constants are tracers of an enclosing transformation."""
        return not any(isinstance(c, jax.core.Tracer) for c in self.traced.consts)

    @property
    def out_avals(self) -> list[Any]:
        """The abstract values of the flat outputs."""
        return list(self.traced.closed_jaxpr.out_avals)

    def __call__(self, leaves: Sequence[Any]) -> list[Any]:
        """Runs the plan on the flat arguments.

        Derivatives are those of the traced jaxpr itself, so the user's ``custom_jvp``,
        ``custom_vjp`` and ``stop_gradient`` keep their meaning under ``jax.grad``; first
        derivatives run a fused forward and backward (``fused_derivatives``), higher ones
        and those of a function left to XLA the reference graph.
        """
        fused = self.fused_derivatives and self.backend != "xla"
        return call_differentiable(self.executable, self.traced.reference(),
                                   [*self.traced.consts, *leaves],
                                   self.vjp if fused else None)

    def vjp(self) -> FusedVjp:
        """The fused forward and backward of this signature, optimised on first use."""
        if self._vjp is None:
            jaxpr = self.traced.closed_jaxpr
            in_avals = [v.aval for v in jaxpr.jaxpr.constvars] + list(jaxpr.in_avals)

            def optimizer(fun: Callable, avals: list, name: str) -> OptimizedFunction:
                return optimize(fun, avals, {}, self.options, name, fused_derivatives=False)
            self._vjp = FusedVjp(self.traced.reference(), in_avals, self.out_avals, optimizer,
                                 self.name)
        return self._vjp


def optimize(fun: Callable, args: Sequence[Any], kwargs: dict, options: Options,
             name: str | None = None, fused_derivatives: bool = True,
             carried: Sequence[int] = ()) -> OptimizedFunction:
    """Traces ``fun(*args, **kwargs)`` and optimises it; ``args`` may hold tracers.

    ``carried``: positions of outputs that a loop feeds back as its state (``fun`` is a loop
    body); XLA updates those in place where a kernel's result would be copied.
    ``fused_derivatives``: whether its first derivatives are optimised too (False for the
    forward and backward functions themselves: their derivatives use the reference).

    Errors from tracing the user's function propagate unchanged. An internal error in a later
    stage is raised when ``options.fallback`` is False; otherwise it is reported as a warning
    and the function runs unfused through XLA.
    """
    name = name or getattr(fun, "__name__", type(fun).__name__)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    traced = trace_function(fun, args, kwargs)
    timings["trace_s"] = time.perf_counter() - start
    _debug(options, f"jaxpr of {name}", traced.closed_jaxpr)
    try:
        optimized = _optimize_graph(name, traced, options, timings, carried)
        optimized.fused_derivatives = fused_derivatives
        return optimized
    except Exception as error:  # an optimiser bug must not cost the user a wrong result or a crash
        if not options.fallback:
            raise
        message = f"{type(error).__name__}: {error}"
        if not isinstance(error, ToolMissing):  # that one has warned once per process
            warnings.warn(f"dnnfusion: optimising {name} failed ({message}); running it "
                          "unfused through XLA. Pass fallback=False to raise instead.",
                          RuntimeWarning, stacklevel=3)
        plan = UnfusedPlanner().plan(traced.graph)
        executable = compile_plan(plan, BACKENDS["xla"]())
        # Only the trace stands: what the failed stages did (rewrites, timings) was discarded.
        kept = {"trace_s": timings["trace_s"]}
        return OptimizedFunction(name, options, traced, traced.graph, {}, plan, executable, "xla",
                                 kept, internal_error=message,
                                 rewrite_stats=RewriteStats(stop="not run"),
                                 fused_derivatives=False)


def _optimize_graph(name: str, traced: TracedFunction, options: Options,
                    timings: dict[str, float], carried: Sequence[int] = ()) -> OptimizedFunction:
    start = time.perf_counter()
    graph, bodies = optimize_bodies(traced.graph, lambda fun, avals, label, carried: optimize(
        fun, avals, {}, options, label, fused_derivatives=False, carried=carried), name)
    if bodies:
        timings["loop_bodies_s"] = time.perf_counter() - start
    fired, stats = Counter(), RewriteStats()
    if options.rewrite:
        start = time.perf_counter()
        graph, fired = simplify(graph)
        graph, stats = _rewrite(name, graph, options)
        fired.update(stats.fired)
        timings["rewrite_s"] = time.perf_counter() - start
        timings.update(stats.timings)
        _debug(options, "e-graph", f"{stats.egraph_nodes} e-nodes in {stats.egraph_classes} "
               f"classes after {stats.iterations} iterations (stopped: {stats.stop})")
    _debug(options, "IR after rewriting", graph)

    backend = options.resolved_backend()
    code_generator = BACKENDS[backend]()
    platform = program_platform()
    if code_generator.platforms is not None and platform not in code_generator.platforms:
        warn_once(f"dnnfusion: backend={backend!r} builds kernels for "
                  f"{' and '.join(code_generator.platforms)}, but programs here run on "
                  f"{platform}; their blocks run unfused in XLA. Use backend='auto', or run on "
                  f"a {code_generator.platforms[0]} device (jax.default_device).")
        backend, code_generator = "xla", BACKENDS["xla"]()
    start = time.perf_counter()
    plan = PLANNERS[options.planner](code_generator, options).plan(graph)
    timings["plan_s"] = time.perf_counter() - start
    _debug(options, f"fusion blocks ({options.planner} planner)",
           "\n".join(f"  {block!r}" for block in plan.blocks))

    start = time.perf_counter()
    executable = compile_plan(plan, code_generator, in_place_updates(plan, carried))
    timings["compile_s"] = time.perf_counter() - start
    _debug(options, f"generated code ({backend})",
           "\n".join(kernel.source for kernel in executable.kernels))
    return OptimizedFunction(name, options, traced, graph, dict(fired), plan, executable,
                             backend, timings, rewrite_stats=stats, loop_bodies=bodies)


def _rewrite(name: str, graph: Graph, options: Options) -> tuple[Graph, RewriteStats]:
    """The e-graph stage; an internal failure keeps the simplified graph (or raises)."""
    try:
        return rewrite_graph(graph, resolve_rules(options.rules), options.saturation,
                             options.finite_math, library_rule_names())
    except Exception as error:
        if not options.fallback:
            raise
        warnings.warn(f"dnnfusion: e-graph rewriting of {name} failed "
                      f"({type(error).__name__}: {error}); continuing without it.",
                      RuntimeWarning, stacklevel=4)
        return graph, RewriteStats(stop=f"error: {type(error).__name__}")


def _debug(options: Options, stage: str, content: Any) -> None:
    if options.debug:
        print(f"==== dnnfusion: {stage} ====\n{content}", flush=True)
