"""The C backend: each fused block lowered to the kernel IR, rendered as C, built by the host's
C compiler (gcc, cc or clang; else ``zig cc`` from the ziglang package: see
``compile_cache.host_compiler``) and called through the XLA FFI, so the whole function stays one ``jax.jit`` executable.

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
from dnnfusion_jax.frontend.ir import Node, Var
from codegen.kernel.lowering import lower_block
from dnnfusion_jax.fusion.plan import Block

from codegen.c.render import render_c
from codegen.compile_cache import build_shared_library
from codegen.c.ffi_runtime import call_kernel, kernel_id_for, load_kernel
from codegen.kernel.kernel_backend import KernelBackend, KernelCall
from codegen.kernel.kernel_blocks import c_takes_gemm
from codegen.kernel.kernel_ir import LoopKernel

HOST_FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math",
              "-std=gnu11", "-lm")
"""gcc flags for host kernels. No -ffast-math: it changes inf/NaN results; the two -fno flags
keep IEEE results and let gcc vectorise calls like floorf (errno and traps block it).
-fopenmp-simd honours ``#pragma omp simd`` without OpenMP's threads (see c_abi.h)."""

def kernel_symbol(source: str) -> str:
    """The C function name of a kernel: unique per source, so many fit in one file."""
    return "dnf_" + hashlib.sha256(source.encode()).hexdigest()[:16]


def c_kernel_source(block: Block,
                    constants: Mapping[Var, Any]) -> tuple[str, str, LoopKernel]:
    """(symbol, C source, loop kernel) of ``block``; raises UnsupportedBlock."""
    loop_kernel = lower_block(block, constants, name="dnf_kernel", tile_transposes=True)
    draft = render_c(loop_kernel)
    symbol = kernel_symbol(draft)
    loop_kernel.name = symbol
    return symbol, draft.replace("dnf_kernel", symbol), loop_kernel


class CBackend(KernelBackend):
    """Compiles blocks to C kernels; ``cache_dir`` overrides the compile cache location,
    ``compiler`` (a name or a command) the host's C compiler (``host_compiler``).
    ``gemm_choice`` None: narrow GEMMs up to ``C_GEMM_FLOPS`` run in C kernels."""

    name = "c"
    platforms = ("cpu",)  # host code behind an FFI handler registered for the CPU

    def __init__(self, cache_dir: str | Path | None = None,
                 compiler: str | Sequence[str] | None = None,
                 flags: Sequence[str] = HOST_FLAGS) -> None:
        self.cache_dir = cache_dir
        self.compiler = compiler
        self.flags = tuple(flags)

    @staticmethod
    def unmeasured_gemm_choice(node: Node) -> bool:
        """Narrow GEMMs up to ``C_GEMM_FLOPS`` are worth a C kernel (``c_takes_gemm``)."""
        return c_takes_gemm(node, node_flops(node))

    def render_block(self, block: Block, constants: Mapping[Var, Any]) -> tuple[str, LoopKernel]:
        _, source, loop_kernel = c_kernel_source(block, constants)
        return source, loop_kernel

    def build(self, block: Block, source: str, kernel: LoopKernel) -> KernelCall:
        """Builds the shared library (or finds it in the compile cache) and loads the kernel
        into the FFI handler's table."""
        library = build_shared_library(source, compiler=self.compiler, flags=self.flags,
                                       cache_dir=self.cache_dir)
        # The same source built by another compiler is another kernel (compared side by side).
        compiler = ([] if self.compiler is None else
                    [self.compiler] if isinstance(self.compiler, str) else list(self.compiler))
        kernel_id = kernel_id_for(source + " ".join([*self.flags, *compiler]))
        load_kernel(library, kernel.name, kernel_id)
        out_avals = [jax.ShapeDtypeStruct(v.shape, np.dtype(v.dtype)) for v in block.outputs]
        expected = [(var, np.dtype(var.dtype)) for var in kernel.input_vars]

        def run(args: Sequence[Any]) -> list[Any]:
            for (var, dtype), arg in zip(expected, args):  # shapes are baked into the C code
                if tuple(np.shape(arg)) != var.shape or np.dtype(arg.dtype) != dtype:
                    raise ValueError(f"C kernel {kernel.name} expects {var.type_str}, got "
                                     f"{arg.dtype}{list(np.shape(arg))}")
            return call_kernel(kernel_id, args, out_avals)

        return run
