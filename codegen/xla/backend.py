"""The reference backend: a block's nodes replayed as the original lax primitives.

XLA sees exactly the operations the user's function traced to (after rewriting), so results
agree with ``jax.jit`` bit for bit when no rewrite fired. The "source" of a kernel is the
block's operation listing, shown by ``debug=True``.

Example:
    >>> import jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> from dnnfusion_jax.fusion.greedy_planner import GreedyPlanner
    >>> g = trace_function(lambda x: jnp.exp(x) + x, [jnp.ones(2)]).graph
    >>> kernel = XlaBackend().compile_block(GreedyPlanner().plan(g).blocks[0])
    >>> [float(v) for v in kernel.run([jnp.zeros(2)])[0]]  # one value per block input
    [1.0, 1.0]
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dnnfusion_jax.frontend.evaluate import evaluate_nodes
from dnnfusion_jax.frontend.ir import Node, Var
from dnnfusion_jax.fusion.backend import Kernel
from dnnfusion_jax.fusion.plan import Block


class XlaBackend:
    """Runs every block as plain lax operations (never raises UnsupportedBlock)."""

    name = "xla"
    platforms = None  # XLA runs the blocks itself, wherever the program runs
    renders_gemms = False
    gemm_choice = None
    device_kind = None  # runs where jax.jit runs; measured as this machine's

    def fusible(self, node: Node) -> None:
        """Every node may join a block: XLA runs whatever the block holds."""
        return None

    def gemm_in_kernel(self, node: Node) -> bool:
        return False

    def unmeasured_gemm_choice(self, node: Node) -> bool:
        return False

    def compile_block(self, block: Block, constants: Mapping[Var, Any] = {}) -> Kernel:
        def run(inputs: Sequence[Any]) -> list[Any]:
            env = evaluate_nodes(block.nodes, dict(zip(block.inputs, inputs)))
            return [env[v] for v in block.outputs]

        return Kernel(block, self.name, block_listing(block), run)


def block_listing(block: Block) -> str:
    """A jaxpr-like text of the block: its inputs, one line per node, its outputs."""
    lines = [f"block {block.id} ({block.mapping_type.label}) "
             f"({', '.join(repr(v) for v in block.inputs)}) {{"]
    lines += [f"  {node!r}" for node in block.nodes]
    lines.append(f"  return {', '.join(f'%{v.id}' for v in block.outputs)}")
    lines.append("}")
    return "\n".join(lines)
