"""The Pallas backend: each fused block lowered to the kernel IR (the same lowering as the C
backend), rendered as one ``pl.pallas_call`` and run inside the surrounding ``jax.jit``.

On a GPU the call is compiled by Pallas through Triton; anywhere else the same source runs
with ``interpret=True``, which is for correctness, not speed (one program, the largest tiles).
Blocks stay with XLA for the same reasons as in the C backend (convolutions, a lone reshape,
anything the lowering cannot express; GEMMs past the device kind's limit, ``pallas_tuning``,
or timed slower than XLA's with ``profile=True``),
plus anything the renderer cannot spell and any kernel Pallas refuses to trace (each is traced
once when compiled); ``explain()`` lists each with its reason.

Tiles: ``block_points(kernel, device_kind)`` picks the grid points (rows, or the points of a
one-stage kernel) per program, a power of two. The default is ``default_block``: every point in
one program when interpreting, otherwise the most points whose tile stays within the device
kind's measured budget (``pallas_tuning``), or its default when none was measured. A kernel
whose stages share no grid and would not fit one program runs one call per stage
(``pallas_stages``). Pass your own ``block_points`` (or ``tile``) to override these; a
``block_points`` returning None keeps the default. On a GPU each kernel is also compiled when
its block is, so one that Triton rejects falls back to XLA too.

Example:
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> from dnnfusion_jax.fusion.plan import whole_graph_block
    >>> g = trace_function(jax.nn.softmax, [jnp.ones((4, 64))]).graph
    >>> kernel = PallasBackend().compile_block(whole_graph_block(g), g.constants)
    >>> x = np.arange(256, dtype=np.float32).reshape(4, 64) / 64
    >>> bool(np.allclose(kernel.run([x])[0], jax.nn.softmax(x), rtol=1e-5, atol=1e-6))
    True
    >>> "pl.pallas_call(" in kernel.source
    True
"""
from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from dnnfusion_jax.fusion.backend import UnsupportedBlock
from dnnfusion_jax.frontend.ir import Graph, Node, Var
from codegen.kernel.indexing import INDEXED
from codegen.kernel.kernel_ir import LoopKernel
from codegen.kernel.lowering import lower_block
from dnnfusion_jax.fusion.plan import Block

from codegen.pallas import math as pallas_math
from codegen.kernel.kernel_backend import KernelBackend, KernelCall
from codegen.pallas.grid import GridShape, grid_shape, next_power_of_two
from codegen.pallas.render import Unrenderable, render_pallas
from codegen.pallas.stages import render_calls, split_stages
from codegen.pallas.tuning import INTERPRET_GEMM_FLOPS, Settings, gemm_fits, gemm_within, settings

GPU_MAX_TILE_ELEMENTS = 1 << 16
"""Largest tile one program may hold (a row of 64K floats: 16 warps, 128 registers a thread);
a kernel needing more, a row of a huge reduction, stays with XLA. On purpose: the alternative,
one program looping over the row in chunks, would run such a reduction on one of the GPU's
streaming multiprocessors, where XLA splits it across all of them."""

BlockPoints = Callable[[LoopKernel, str], "int | None"]


def interpreting() -> bool:
    """True where Pallas cannot compile for the default device (CPU): run interpret mode."""
    return jax.default_backend() != "gpu"


def default_block(shape: GridShape, tile: int | None) -> int:
    """Grid points per program: the most, a power of two, whose tile fits ``tile`` elements;
    all of them when there is no bound (interpret mode) or one program must see every row.

    >>> rows = GridShape(walked=(), points=96, point_elements=256, one_program=False)
    >>> default_block(rows, None), default_block(rows, 4096)
    (128, 16)
    """
    whole = next_power_of_two(shape.points)
    if tile is None or shape.one_program:
        return whole
    block = 1
    while block < whole and block * 2 * shape.point_elements <= tile:
        block *= 2
    return block


def needs_split(kernel: LoopKernel, tile: int) -> bool:
    """Whether ``kernel`` runs one call per stage (``pallas_stages``): it has several stages
    and no grid to share among them (no rows, or reads across rows) and one program would
    hold more than ``tile`` elements."""
    shape = grid_shape(kernel)
    whole = next_power_of_two(shape.points) * shape.point_elements
    return len(kernel.stages) > 1 and (not kernel.rows or shape.one_program) and whole > tile


def namespace(interpret: bool) -> dict[str, Any]:
    """What generated source may refer to: modules, ``INTERPRET``, and ``BARRIER`` (a block
    barrier on a GPU; interpret mode runs a program's array code in order, so nothing)."""
    return {"jax": jax, "jnp": jnp, "lax": lax, "np": np, "pl": pl, "plgpu": plgpu,
            "pm": pallas_math, "INTERPRET": interpret,
            "BARRIER": (lambda: None) if interpret else plgpu.debug_barrier}


def kernel_name(block: Block) -> str:
    return f"block{block.id}"


def build_kernel(source: str, name: str, interpret: bool) -> Callable[..., list[Any]]:
    """Executes generated source and returns its ``name`` function (the pallas_call)."""
    names = namespace(interpret)
    exec(compile(source, f"<pallas {name} "
                 f"{hashlib.sha256(source.encode()).hexdigest()[:12]}>", "exec"), names)
    return names[name]


def lower_for_cuda(call: Callable[..., Any], avals: Sequence[jax.ShapeDtypeStruct]) -> str:
    """Lowers a kernel built with ``interpret=False`` for an NVIDIA GPU through Triton, on any
    machine (Pallas lowers to Triton IR without a device): the GPU's rules (power-of-two
    arrays, primitives with a Triton lowering) checked without one. Returns the StableHLO
    text; raises what the lowering raises."""
    return jax.jit(call).trace(*avals).lower(lowering_platforms=("cuda",)).as_text()


def cuda_lowerings(graph: Graph) -> Iterator[tuple[Block, str | Exception]]:
    """Every block of ``graph``'s plan as a GPU would get it (its default tiles, settings of
    the default device's kind), lowered for CUDA through Triton on this machine: with the
    StableHLO text, the ``UnsupportedBlock`` saying why it stays with XLA, or the error the
    lowering raised."""
    from dnnfusion_jax.fusion.dnnfusion_planner import DnnFusionPlanner
    backend = PallasBackend(interpret=False)
    for block in DnnFusionPlanner(fusible=backend.fusible).plan(graph).blocks:
        try:
            source, kernel = backend.source(block, graph.constants)
        except UnsupportedBlock as why:
            yield block, why
            continue
        call = build_kernel(source, kernel.name, interpret=False)
        avals = [jax.ShapeDtypeStruct(v.shape, v.dtype) for v in kernel.input_vars]
        try:
            yield block, lower_for_cuda(call, avals)
        except Exception as error:  # noqa: BLE001 - the caller reports what failed
            yield block, error


class PallasBackend(KernelBackend):
    """Compiles blocks to Pallas kernels (interpret mode where no GPU is the default device).
    ``gemm_choice`` None: GEMMs that fit a program and are up to the device kind's
    ``gemm_flops`` run in Pallas kernels."""

    name = "pallas"
    platforms = ("gpu", "cpu")  # Triton on a GPU; interpret mode on a CPU, for checking

    def __init__(self, interpret: bool | None = None, block_points: BlockPoints | None = None,
                 tile: int | None = None):
        self.interpret = interpreting() if interpret is None else interpret
        self.block_points = block_points
        self.tile = tile  # elements per program; None: the device kind's (unbounded interpreted)

    @functools.cached_property
    def device(self) -> tuple[str, Settings]:
        """The default device's kind and its settings (``pallas_tuning``), read once: the
        planner asks about every node."""
        kind = jax.devices()[0].device_kind
        return kind, settings(kind)

    @property
    def device_kind(self) -> str | None:
        """The GPU's kind, the key of its measurements; None interpreted (this CPU's)."""
        return None if self.interpret else self.device[0]

    def fusible(self, node: Node) -> str | None:
        """As every kernel backend, and indexed reads stay with XLA: the Pallas renderer
        maps loads to blocks of the grid, and a gather's positions are runtime values."""
        if node.op in INDEXED:
            return f"{node.op}: indexed reads run in XLA on this backend (no GPU gather yet)"
        return super().fusible(node)

    def gemm_fits(self, node: Node) -> bool:
        """Whether this dot_general's panel fits a program's tile."""
        return gemm_fits(node, self.tile_for())

    def unmeasured_gemm_choice(self, node: Node) -> bool:
        """GEMMs up to the device kind's ``gemm_flops`` (``INTERPRET_GEMM_FLOPS``
        interpreted) are worth a Pallas kernel."""
        return gemm_within(node, INTERPRET_GEMM_FLOPS if self.interpret
                           else self.device[1].gemm_flops)

    def tile_for(self) -> int | None:
        """Elements one program may hold (None: unbounded, interpreted)."""
        return self.tile or (None if self.interpret else self.device[1].tile_elements)

    def render_block(self, block: Block, constants: Mapping[Var, Any]) -> tuple[str, LoopKernel]:
        if any(node.op in INDEXED for node in block.nodes):
            raise UnsupportedBlock("indexed reads run in XLA on this backend (no GPU gather yet)")
        loop_kernel = lower_block(block, constants, name=kernel_name(block))
        device_kind, tile = self.device[0], self.tile_for()
        try:
            if tile and needs_split(loop_kernel, tile):
                parts = split_stages(loop_kernel)
                sources = [self._render(part, device_kind, tile) for part in parts]
                return render_calls(loop_kernel, parts, sources), loop_kernel
            return self._render(loop_kernel, device_kind, tile), loop_kernel
        except Unrenderable as why:
            raise UnsupportedBlock(f"Pallas renderer: {why}") from None

    def _render(self, kernel: LoopKernel, device_kind: str, tile: int | None) -> str:
        shape = grid_shape(kernel)
        block = self.block_points(kernel, device_kind) if self.block_points else None
        if block is None:
            block = default_block(shape, tile)
        whole = next_power_of_two(shape.points)
        elements = (whole if shape.one_program else min(block, whole)) * shape.point_elements
        if not self.interpret and elements > GPU_MAX_TILE_ELEMENTS:
            raise Unrenderable(f"a program's tile would hold {elements} elements (at most "
                               f"{GPU_MAX_TILE_ELEMENTS} on a GPU)")
        return render_pallas(kernel, block)

    def build(self, block: Block, source: str, kernel: LoopKernel) -> KernelCall:
        """Executes the source and traces the call once now: a kernel Pallas rejects, or one
        whose results are not the block's shapes and dtypes, falls back here, block by block,
        instead of failing the whole jit."""
        call = build_kernel(source, kernel.name, self.interpret)
        avals = [jax.ShapeDtypeStruct(v.shape, v.dtype) for v in kernel.input_vars]
        try:
            results = jax.eval_shape(call, *avals)
            if not self.interpret:  # Triton's own checks, and its compiler's
                jax.jit(call).lower(*avals).compile()
        except Exception as error:  # noqa: BLE001 - any tracing failure means "not this way"
            raise UnsupportedBlock(f"Pallas rejected the kernel: {type(error).__name__}: "
                                   f"{str(error).splitlines()[0][:200]}") from None
        got = [(tuple(r.shape), np.dtype(r.dtype)) for r in results]
        want = [(tuple(v.shape), np.dtype(v.dtype)) for v in block.outputs]
        if got != want:
            raise UnsupportedBlock(f"Pallas renderer: results {got} are not the block's {want}")
        return lambda args: call(*args)
