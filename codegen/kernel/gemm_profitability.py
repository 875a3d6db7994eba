"""Is a GEMM worth running inside a generated kernel, or is XLA's GEMM faster? Measured.

A backend that can render dot_general (C, Pallas) may take a GEMM into its kernel, with the
prologue and epilogue fused around it. Without measurements each backend answers with a FLOP
limit per device kind (``C_GEMM_FLOPS``; ``pallas_tuning``). With ``profile=True`` the
answer is measured instead: the GEMM runs inside kernels when the backend's kernel of the GEMM
alone is no slower than XLA's GEMM on the same device, so fusing around it can only save
memory traffic and launches. The timings go to the planner's ``ProfilingDatabase`` (keyed by
device, backend and the GEMM's shape signature: each shape is timed once per device), and past
the budget of timings per plan the FLOP limit answers.

Whether a GEMM *can* run inside a kernel (legality: a Pallas program's tile holds its panel) is
the backend's question, asked before this one.

Example:
    >>> import tempfile, jax.numpy as jnp
    >>> from pathlib import Path
    >>> from codegen.c.backend import CBackend
    >>> from codegen.xla.backend import XlaBackend
    >>> from dnnfusion_jax.fusion.profitability import ProfilingDatabase
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> g = trace_function(lambda a, b: a @ b, [jnp.ones((8, 8)), jnp.ones((8, 8))]).graph
    >>> database = ProfilingDatabase(Path(tempfile.mkdtemp()) / "profile.json")
    >>> choice = MeasuredGemmChoice(CBackend(), XlaBackend(), database, fallback=lambda n: False)
    >>> isinstance(choice(g.nodes[0]), bool), len(database.entries)  # C's and XLA's timings
    (True, 2)
"""
from __future__ import annotations

import copy

from dnnfusion_jax.fusion.backend import Backend, GemmPolicy, UnsupportedBlock
from dnnfusion_jax.frontend.ir import Node
from codegen.kernel.lowering import unsupported_reason
from dnnfusion_jax.ops.mapping_types import node_mapping_type
from dnnfusion_jax.fusion.plan import Block
from dnnfusion_jax.fusion.profitability import ProfilingDatabase, Timings, device_key

class MeasuredGemmChoice:
    """A ``GemmPolicy`` that times the GEMM in ``backend``'s kernel and in ``reference`` (XLA)
    on this device, once per shape; ``fallback`` answers past ``budget`` timings."""

    def __init__(self, backend: Backend, reference: Backend, database: ProfilingDatabase,
                 fallback: GemmPolicy, budget: int = 16) -> None:
        # the backend times the GEMM in its kernel whatever its own policy says
        self.backend = copy.copy(backend)
        self.backend.gemm_choice = lambda node: True
        self.reference = reference
        self.fallback = fallback
        self.timings = Timings(database, device_key(backend), budget)

    def __call__(self, node: Node) -> bool:
        if unsupported_reason(node):  # no kernel to time (a dtype, an empty array...)
            return False
        inputs = tuple(dict.fromkeys(node.inputs))  # a @ a reads one buffer
        block = Block(0, [node], node_mapping_type(node), inputs, tuple(node.outputs))
        if self.timings.missing(block, [self.backend, self.reference]) > self.timings.left:
            return self.fallback(node)  # time both or neither
        try:
            ours = self.timings.latency(block, {}, self.backend)
        except UnsupportedBlock:  # the backend's own refusal: XLA's GEMM it is
            return False
        theirs = self.timings.latency(block, {}, self.reference)
        return ours <= theirs
