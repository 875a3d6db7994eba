"""The C backend: each fused block lowered to the kernel IR, rendered as C, built by gcc and
called through the XLA FFI, so the whole function stays one ``jax.jit`` executable.

Blocks XLA runs as well or better stay with XLA, each with its reason in ``explain()``:
GEMMs and convolutions (XLA's are fast: fuse around them), a lone reshape (a free bitcast in
XLA), and anything the lowering cannot express (``lowering.unsupported_reason``).

Example:
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> from dnnfusion_jax.fusion.plan import whole_graph_block
    >>> g = trace_function(jax.nn.softmax, [jnp.ones((4, 64))]).graph
    >>> kernel = CBackend().compile_block(whole_graph_block(g), g.constants)
    >>> x = np.arange(256, dtype=np.float32).reshape(4, 64) / 64
    >>> bool(np.allclose(kernel.run([x])[0], jax.nn.softmax(x), rtol=1e-5, atol=1e-6))
    True
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from dnnfusion_jax.ops.cost import node_flops
from dnnfusion_jax.fusion.backend import GemmPolicy, Kernel
from dnnfusion_jax.frontend.ir import Node, Var
from codegen.kernel.lowering import lower_block
from dnnfusion_jax.fusion.plan import Block

from codegen.c.render import render_c
from codegen.compile_cache import build_shared_library
from codegen.c.ffi_runtime import call_kernel, kernel_id_for, load_kernel
from codegen.kernel.kernel_blocks import C_GEMM_FLOPS, kernel_fusible, require_kernel_block

HOST_FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math",
              "-std=gnu11", "-lm")
"""gcc flags for host kernels. No -ffast-math: it changes inf/NaN results; the two -fno flags
keep IEEE results and let gcc vectorise calls like floorf (errno and traps block it).
-fopenmp-simd honours ``#pragma omp simd`` without OpenMP's threads (see c_abi.h)."""

def kernel_symbol(source: str) -> str:
    """The C function name of a kernel: unique per source, so many fit in one file."""
    return "dnf_" + hashlib.sha256(source.encode()).hexdigest()[:16]


def c_kernel_source(block: Block, constants: Mapping[Var, Any]) -> tuple[str, str, Any]:
    """(symbol, C source, loop kernel) of ``block``; raises UnsupportedBlock."""
    loop_kernel = lower_block(block, constants, name="dnf_kernel", tile_transposes=True)
    draft = render_c(loop_kernel)
    symbol = kernel_symbol(draft)
    loop_kernel.name = symbol
    return symbol, draft.replace("dnf_kernel", symbol), loop_kernel


class CBackend:
    """Compiles blocks to C kernels; ``cache_dir`` overrides the compile cache location."""

    name = "c"
    renders_gemms = True

    def __init__(self, cache_dir: str | Path | None = None, compiler: str = "gcc",
                 flags: Sequence[str] = HOST_FLAGS) -> None:
        self.cache_dir = cache_dir
        self.compiler = compiler
        self.flags = tuple(flags)

    gemm_choice: GemmPolicy | None = None
    """Which GEMMs are worth running in C kernels; None: those up to ``C_GEMM_FLOPS``.
    ``profile=True`` sets a measured one (``gemm_profitability``)."""

    def fusible(self, node: Node) -> str | None:
        """Why ``node`` may not join a C kernel with others (None: it may)."""
        return kernel_fusible(node, self.gemm_in_kernel)

    def gemm_in_kernel(self, node: Node) -> bool:
        """Whether this dot_general joins a C kernel (any GEMM can: the question is speed)."""
        return (self.gemm_choice or self.unmeasured_gemm_choice)(node)

    @staticmethod
    def unmeasured_gemm_choice(node: Node) -> bool:
        """GEMMs up to ``C_GEMM_FLOPS`` are worth a C kernel."""
        return node_flops(node) <= C_GEMM_FLOPS

    def compile_block(self, block: Block, constants: Mapping[Var, Any] = {}) -> Kernel:
        require_kernel_block(block, self.gemm_in_kernel)
        symbol, source, loop_kernel = c_kernel_source(block, constants)
        library = build_shared_library(source, compiler=self.compiler, flags=self.flags,
                                       cache_dir=self.cache_dir)
        kernel_id = kernel_id_for(source + " ".join(self.flags))
        load_kernel(library, symbol, kernel_id)
        positions = [block.inputs.index(var) for var in loop_kernel.notes["input_vars"]]
        out_avals = [jax.ShapeDtypeStruct(v.shape, np.dtype(v.dtype)) for v in block.outputs]

        expected = [(block.inputs[p], np.dtype(block.inputs[p].dtype)) for p in positions]

        def run(inputs: Sequence[Any]) -> list[Any]:
            args = [inputs[p] for p in positions]
            for (var, dtype), arg in zip(expected, args):  # shapes are baked into the C code
                if tuple(np.shape(arg)) != var.shape or np.dtype(arg.dtype) != dtype:
                    raise ValueError(f"C kernel {symbol} expects {var.type_str}, got "
                                     f"{arg.dtype}{list(np.shape(arg))}")
            return call_kernel(kernel_id, args, out_avals)

        return Kernel(block, self.name, source, run)
