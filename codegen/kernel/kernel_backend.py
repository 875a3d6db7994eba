"""What the backends that render the kernel IR (C, Pallas) share: ``KernelBackend``, the
``Backend`` protocol's answers for a backend that lowers a block to a ``LoopKernel``.

Shared: which nodes may join a kernel (``kernel_blocks``: one policy, so both backends fall
back for the same reasons), the GEMM question (``gemm_in_kernel``: legal for this backend,
``gemm_fits``, and worth it, a measured ``gemm_choice`` or else ``unmeasured_gemm_choice``),
and ``compile_block``: refuse what stays with XLA, render, build, and call the built kernel
with the block's inputs it reads (a constant input the lowering inlined is not passed).
A subclass says only what differs: its GEMM limits (``unmeasured_gemm_choice``, and
``gemm_fits`` where a GEMM can be too large), its rendering (``render_block``) and its build
step (``build``).

Example:
    >>> import jax.numpy as jnp, numpy as np
    >>> from codegen.kernel.lowering import lower_block
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> from dnnfusion_jax.fusion.plan import whole_graph_block
    >>> class Listing(KernelBackend):  # a "backend" running the kernel IR's listing
    ...     name = "listing"
    ...     def unmeasured_gemm_choice(self, node):
    ...         return False
    ...     def render_block(self, block, constants):
    ...         kernel = lower_block(block, constants, name="k")
    ...         return str(kernel), kernel
    ...     def build(self, block, source, kernel):
    ...         return lambda args: [np.exp(args[0])]
    >>> g = trace_function(lambda x: jnp.exp(x), [jnp.ones(3)]).graph
    >>> kernel = Listing().compile_block(whole_graph_block(g), g.constants)
    >>> print(kernel.source)
    kernel k(in0: f32[3]) -> (out0: f32[3])
      for i1_0<3: out0[i1_0] = exp(in0[i1_0])
    >>> kernel.run([np.zeros(3)])[0].tolist()
    [1.0, 1.0, 1.0]
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from codegen.kernel.kernel_blocks import kernel_fusible, require_kernel_block
from codegen.kernel.kernel_ir import LoopKernel
from codegen.kernel.sharded_call import ShardBuilder, ShardedKernel, replay_block
from dnnfusion_jax.frontend.ir import Node, Var
from dnnfusion_jax.fusion.backend import GemmPolicy, Kernel, UnsupportedBlock
from dnnfusion_jax.fusion.plan import Block
from dnnfusion_jax.fusion.shard_block import shard_block
from dnnfusion_jax.fusion.shard_factors import BlockFactors

KernelCall = Callable[[Sequence[Any]], Sequence[Any]]
"""A built kernel: its inputs (``LoopKernel.input_vars``' values, in order) → its outputs."""


class KernelBackend(ABC):
    """A ``Backend`` that lowers each block to the kernel IR and renders it; subclasses give
    ``name``, ``unmeasured_gemm_choice``, ``render_block`` and ``build``."""

    name: str
    renders_gemms = True  # a dot_general the backend takes is a stage of its kernel

    gemm_choice: GemmPolicy | None = None
    """Which GEMMs (that fit) are worth running in this backend's kernels; None: the
    backend's ``unmeasured_gemm_choice``. ``profile=True`` sets a measured one
    (``gemm_profitability``)."""

    device_kind: str | None = None
    """The device whose measurements apply (a GPU's kind); None: this machine's CPU."""

    def fusible(self, node: Node) -> str | None:
        """Why ``node`` may not join a kernel with others (None: it may)."""
        return kernel_fusible(node, self.gemm_in_kernel)

    def gemm_in_kernel(self, node: Node) -> bool:
        """Whether this dot_general runs inside a kernel: it fits one (legality) and is worth
        it (``gemm_choice``)."""
        return self.gemm_fits(node) and (self.gemm_choice or self.unmeasured_gemm_choice)(node)

    def gemm_fits(self, node: Node) -> bool:
        """Whether this dot_general can run inside a kernel at all (by default any can: the
        question is speed)."""
        return True

    @abstractmethod
    def unmeasured_gemm_choice(self, node: Node) -> bool:
        """Whether a GEMM is worth a kernel where nothing was measured (a FLOP limit)."""

    def source(self, block: Block, constants: Mapping[Var, Any] = {}) -> tuple[str, LoopKernel]:
        """(source, loop kernel) of ``block``; raises UnsupportedBlock where it stays with
        XLA (``kernel_blocks``) or the backend cannot render it."""
        require_kernel_block(block, self.gemm_in_kernel)
        return self.render_block(block, constants)

    @abstractmethod
    def render_block(self, block: Block,
                     constants: Mapping[Var, Any]) -> tuple[str, LoopKernel]:
        """``block`` lowered to the kernel IR and rendered: (source, loop kernel)."""

    @abstractmethod
    def build(self, block: Block, source: str, kernel: LoopKernel) -> KernelCall:
        """The runnable kernel of ``source``; raises UnsupportedBlock when it cannot be
        built (then the block stays with XLA)."""

    def compile_block(self, block: Block, constants: Mapping[Var, Any] = {}) -> Kernel:
        source, loop_kernel = self.source(block, constants)
        call = self.build(block, source, loop_kernel)
        positions = input_positions(block, loop_kernel)
        # over several devices the partitioner may split the kernel (sharded_call.py)
        sharded = ShardedKernel(call, block, loop_kernel.input_vars,
                                self._shard_builder(block, constants), constants)

        def run(inputs: Sequence[Any]) -> Sequence[Any]:
            return sharded([inputs[p] for p in positions])

        kernel = Kernel(block, self.name, source, run)
        kernel.per_device = sharded.per_device
        return kernel

    def _shard_builder(self, block: Block, constants: Mapping[Var, Any]) -> ShardBuilder:
        """Compiles ``block``, or a phase of it, at per-device extents (``shard_block``), for
        the partitioner. A phase the backend leaves to XLA (a lone reshape) is replayed."""
        def build_shard(sub: Block, factors: BlockFactors,
                        extents: dict[int, int]) -> KernelCall:
            shard, _ = shard_block(sub, factors, extents)
            try:
                source, kernel = self.source(shard, constants)
            except UnsupportedBlock:
                if sub is block:
                    raise
                return lambda args: replay_block(shard, args)
            call = self.build(shard, source, kernel)
            positions = input_positions(shard, kernel)
            return lambda args: call([args[p] for p in positions])
        return build_shard


def input_positions(block: Block, kernel: LoopKernel) -> list[int]:
    """Where each of ``kernel``'s inputs is among ``block``'s inputs (the lowering drops the
    constants it inlined).

    >>> import jax.numpy as jnp, numpy as np
    >>> from codegen.kernel.lowering import lower_block
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> from dnnfusion_jax.fusion.plan import whole_graph_block
    >>> three = np.float32(3.0)
    >>> g = trace_function(lambda x, y: x * y + jnp.asarray(three),
    ...                    [jnp.ones(3), jnp.ones(3)]).graph
    >>> block = whole_graph_block(g)  # inputs x, y and the constant 3.0
    >>> len(block.inputs), input_positions(block, lower_block(block, g.constants))
    (3, [0, 1])
    """
    return [block.inputs.index(var) for var in kernel.input_vars]
