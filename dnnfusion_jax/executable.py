"""Running a fusion plan: one compiled kernel per block, called in plan order.

A backend (``fusion/backend.py``) turns a ``Block`` into a ``Kernel``; when it cannot
(``UnsupportedBlock``), the block runs through the xla reference backend instead and the kernel records why. ``Executable`` then
runs the kernels over an environment of values; called under ``jax.jit`` it traces into one
executable.

Example:
    >>> import jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> from dnnfusion_jax.fusion.greedy_planner import GreedyPlanner
    >>> from codegen.xla.backend import XlaBackend
    >>> traced = trace_function(lambda x: jnp.sin(x) * 2.0, [jnp.ones(3)])
    >>> run = compile_plan(GreedyPlanner().plan(traced.graph), XlaBackend())
    >>> [round(float(v), 4) for v in run(jnp.zeros(3))[0]]
    [0.0, 0.0, 0.0]
"""
from __future__ import annotations

from typing import Any

import numpy as np

from codegen.xla.backend import XlaBackend
from dnnfusion_jax.frontend.ir import Var
from dnnfusion_jax.fusion.backend import Backend, Kernel, UnsupportedBlock
from dnnfusion_jax.fusion.plan import Block, FusionPlan


class Executable:
    """The kernels of a plan in order; calling it runs the whole graph on flat inputs."""

    def __init__(self, plan: FusionPlan, kernels: list[Kernel]) -> None:
        self.plan = plan
        self.kernels = kernels
        self._collected = False

    def __call__(self, *inputs: Any) -> list[Any]:
        if not self._collected:  # before XLA's threads may call back into Python
            # imported here: sharded_call imports the IR, whose package imports this module
            from codegen.kernel.sharded_call import collect_before_partitioning
            collect_before_partitioning()
            self._collected = True
        graph = self.plan.graph
        env = dict(graph.constants)
        env.update(zip(graph.inputs, inputs))
        for kernel in self.kernels:
            outs = kernel.run([env[v] for v in kernel.block.inputs])
            env.update(zip(kernel.block.outputs, outs))
        return [_weak_as_traced(env[v], v) for v in graph.outputs]

    def fallbacks(self) -> list[tuple[Block, str]]:
        """Blocks that the chosen backend could not compile, with the reason."""
        return [(k.block, k.fallback_reason) for k in self.kernels if k.fallback_reason]


def _weak_as_traced(value: Any, var: Var) -> Any:
    """``value`` weakly typed where the traced output was (``s * 2.0`` for a Python float
    ``s``): a kernel's result is strongly typed, and the weak type decides the dtype of what
    the caller computes with it (weak f32 + bf16 is bf16, strong f32 + bf16 is f32)."""
    if not var.weak_type or getattr(getattr(value, "aval", None), "weak_type", True):
        return value
    # jax has no public way to set the flag; jnp uses this one (checked with jax 0.10.2)
    from jax._src.lax import lax as lax_internal
    return lax_internal._convert_element_type(value, np.dtype(var.dtype), weak_type=True)


def compile_plan(plan: FusionPlan, backend: Backend,
                 left_to_xla: dict[int, str] | None = None) -> Executable:
    """Compiles every block with ``backend``, falling back to xla block by block;
    ``left_to_xla``: block id → why XLA runs it, whatever the backend could do."""
    reference = backend if isinstance(backend, XlaBackend) else XlaBackend()
    kernels = []
    for block in plan.blocks:
        try:
            if left_to_xla and block.id in left_to_xla:
                raise UnsupportedBlock(left_to_xla[block.id])
            kernels.append(backend.compile_block(block, plan.graph.constants))
        except UnsupportedBlock as why:
            kernel = reference.compile_block(block, plan.graph.constants)
            kernel.fallback_reason = str(why)
            kernels.append(kernel)
    return Executable(plan, kernels)
