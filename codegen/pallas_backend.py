"""The Pallas backend: each fused block lowered to the kernel IR (the same lowering as the C
backend), rendered as one ``pl.pallas_call`` and run inside the surrounding ``jax.jit``.

On a GPU the call is compiled by Pallas for the device; anywhere else it runs with
``interpret=True``, which is for correctness, not speed (one grid step with the largest blocks).
Blocks stay with XLA for the same reasons as in the C backend (GEMMs and convolutions, a lone
reshape, anything the lowering cannot express), plus anything the renderer cannot spell
exactly and any kernel Pallas refuses to trace (each is traced once when compiled);
``explain()`` lists each with its reason.

Block sizes: ``block_rows(kernel, device_kind)`` picks the rows per grid step. The default is
``default_block_rows``: every row in one step when interpreting, otherwise the largest power of
two dividing the row count whose blocks stay under ``GPU_BLOCK_BYTES``. Pass your own
``block_rows`` (for instance one that reads sizes measured per device kind) to override it;
returning None keeps the default.

Example:
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from dnnfusion_jax.trace import trace_function
    >>> from dnnfusion_jax.plan import whole_graph_block
    >>> g = trace_function(jax.nn.softmax, [jnp.ones((4, 64))]).graph
    >>> kernel = PallasBackend().compile_block(whole_graph_block(g), g.constants)
    >>> x = np.arange(256, dtype=np.float32).reshape(4, 64) / 64
    >>> bool(np.allclose(kernel.run([x])[0], jax.nn.softmax(x), rtol=1e-5, atol=1e-6))
    True
    >>> "pl.pallas_call(" in kernel.source
    True
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl

from dnnfusion_jax.executable import Kernel, UnsupportedBlock
from dnnfusion_jax.ir import Node, Var
from dnnfusion_jax.kernel_ir import LoopKernel
from dnnfusion_jax.lowering import NUMPY_DTYPES, lower_block
from dnnfusion_jax.plan import Block

from .kernel_blocks import kernel_fusible, require_kernel_block
from .pallas_render import Unrenderable, render_pallas

GPU_BLOCK_BYTES = 1 << 16
"""Default budget of one grid step's blocks on a GPU (all buffers of a block of rows): small
enough for registers and shared memory of a Triton program. Not measured: no GPU was at hand."""

BlockRows = Callable[[LoopKernel, str], "int | None"]


def interpreting() -> bool:
    """True where Pallas cannot compile for the default device (CPU): run interpret mode."""
    return jax.default_backend() != "gpu"


def default_block_rows(kernel: LoopKernel, device_kind: str, interpret: bool) -> int:
    """Rows per grid step: all of them when interpreting; on a GPU the largest power of two
    dividing the row count whose blocks fit ``GPU_BLOCK_BYTES`` (at least 1).

    >>> from dnnfusion_jax.kernel_ir import Buffer, LoopKernel, LoopVar
    >>> k = LoopKernel("k", [Buffer("in0", (96, 256), "f32", "input")],
    ...                [Buffer("out0", (96, 256), "f32", "output")], [], (LoopVar("r0", 96),), [])
    >>> default_block_rows(k, "cpu", True), default_block_rows(k, "NVIDIA H200", False)
    (96, 32)
    """
    rows = math.prod(v.extent for v in kernel.rows) if kernel.rows else 1
    if interpret or rows == 1:
        return rows
    row_bytes = sum(b.size // rows * np.dtype(NUMPY_DTYPES[b.dtype]).itemsize
                    for b in (*kernel.inputs, *kernel.outputs) if b.size % rows == 0)
    best = 1
    while rows % (best * 2) == 0 and best * 2 * row_bytes <= GPU_BLOCK_BYTES:
        best *= 2
    return best


NAMESPACE = {"jax": jax, "jnp": jnp, "lax": lax, "np": np, "pl": pl}
"""What generated source may refer to (plus ``INTERPRET``)."""


def kernel_name(block: Block) -> str:
    return f"block{block.id}"


def build_kernel(source: str, name: str, interpret: bool) -> Callable[..., list[Any]]:
    """Executes generated source and returns its ``name`` function (the pallas_call)."""
    namespace = dict(NAMESPACE, INTERPRET=interpret)
    exec(compile(source, f"<pallas {name} "
                 f"{hashlib.sha256(source.encode()).hexdigest()[:12]}>", "exec"), namespace)
    return namespace[name]


class PallasBackend:
    """Compiles blocks to Pallas kernels (interpret mode where no GPU is the default device)."""

    name = "pallas"

    def __init__(self, interpret: bool | None = None, block_rows: BlockRows | None = None):
        self.interpret = interpreting() if interpret is None else interpret
        self.block_rows = block_rows

    def fusible(self, node: Node) -> str | None:
        """Why ``node`` may not join a Pallas kernel with others (None: it may)."""
        return kernel_fusible(node)

    def source(self, block: Block, constants: Mapping[Var, Any] = {}) -> tuple[str, LoopKernel]:
        """(Python source, loop kernel) of ``block``; raises UnsupportedBlock."""
        require_kernel_block(block)
        loop_kernel = lower_block(block, constants, name=kernel_name(block))
        device_kind = jax.devices()[0].device_kind
        rows = self.block_rows(loop_kernel, device_kind) if self.block_rows else None
        if rows is None:
            rows = default_block_rows(loop_kernel, device_kind, self.interpret)
        try:
            return render_pallas(loop_kernel, rows), loop_kernel
        except Unrenderable as why:
            raise UnsupportedBlock(f"Pallas renderer: {why}") from None

    def compile_block(self, block: Block, constants: Mapping[Var, Any] = {}) -> Kernel:
        source, loop_kernel = self.source(block, constants)
        call = build_kernel(source, loop_kernel.name, self.interpret)
        positions = [block.inputs.index(var) for var in loop_kernel.notes["input_vars"]]
        # trace it once now: a kernel Pallas rejects, or one whose results are not the block's
        # shapes and dtypes, falls back here, block by block, instead of failing the whole jit
        avals = [jax.ShapeDtypeStruct(block.inputs[p].shape, block.inputs[p].dtype)
                 for p in positions]
        try:
            results = jax.eval_shape(call, *avals)
        except Exception as error:  # noqa: BLE001 - any tracing failure means "not this way"
            raise UnsupportedBlock(f"Pallas rejected the kernel: {type(error).__name__}: "
                                   f"{str(error).splitlines()[0][:200]}") from None
        got = [(tuple(r.shape), np.dtype(r.dtype)) for r in results]
        want = [(tuple(v.shape), np.dtype(v.dtype)) for v in block.outputs]
        if got != want:
            raise UnsupportedBlock(f"Pallas renderer: results {got} are not the block's {want}")

        def run(inputs: Sequence[Any]) -> list[Any]:
            return call(*(inputs[p] for p in positions))

        return Kernel(block, self.name, source, run)
