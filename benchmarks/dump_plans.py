"""Dump what the optimiser decides for every test model and zoo model: the rewritten graph,
the fusion plan of the C and Pallas backends, and every kernel's source (or the reason its
block stays with XLA). A refactoring that must not change behaviour is checked by diffing
the dump taken before it with the dump taken after it.

Saturation gets no time limit here (only its node and iteration budgets), so the dump does
not depend on how busy the machine is.

Run: python3 benchmarks/dump_plans.py OUT_DIR [names...]   (one file per model)
"""
from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import jax.numpy as jnp

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from dnnfusion_jax.options import BACKENDS, PLANNERS, make_options, resolve_rules  # noqa: E402
from dnnfusion_jax.frontend.simplify import simplify  # noqa: E402
from dnnfusion_jax.frontend.trace import trace_function  # noqa: E402
from dnnfusion_jax.rewrite.stage import rewrite_graph  # noqa: E402
from dnnfusion_jax.rewrite.egraph_saturate import SaturationBudget  # noqa: E402
from dnnfusion_jax.fusion.backend import UnsupportedBlock  # noqa: E402
from codegen.c.backend import c_kernel_source  # noqa: E402


def models():
    """(name, builder) for every test model and every zoo model's example."""
    import importlib

    import models as test_models
    from examples import ZOO
    for name, build in sorted(test_models.MODELS.items()):
        yield f"test-{name}", build
    for name in ZOO:
        yield f"zoo-{name}", importlib.import_module(f"examples.{name}").example


def dump(build) -> str:
    fn, args = build()
    options = make_options()
    graph, _ = simplify(trace_function(fn, list(args)).graph)
    budget = dataclasses.replace(SaturationBudget(), seconds=float("inf"))
    graph, stats = rewrite_graph(graph, resolve_rules(None), budget, options.finite_math)
    parts = [f"# rewritten graph ({stats.iterations} iterations, {stats.egraph_nodes} e-nodes)",
             repr(graph)]
    for backend_name in ("c", "pallas"):
        backend = BACKENDS[backend_name]()
        plan = PLANNERS["dnnfusion"](backend, options).plan(graph)
        parts.append(f"# {backend_name} plan: {len(plan.blocks)} blocks")
        for block in plan.blocks:
            parts.append(repr(block))
            try:
                if backend_name == "c":
                    source = c_kernel_source(block, graph.constants)[1]
                else:
                    source = backend.source(block, graph.constants)[0]
            except UnsupportedBlock as why:
                source = f"stays with XLA: {why}"
            parts.append(source)
    return "\n".join(parts) + "\n"


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    wanted = sys.argv[2:]
    for name, build in models():
        if wanted and not any(w in name for w in wanted):
            continue
        (out / f"{name}.txt").write_text(dump(build))
        print(name, flush=True)


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    main()
