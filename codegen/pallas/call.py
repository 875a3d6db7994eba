"""The ``pl.pallas_call`` around a rendered kernel body: flat whole-buffer specs (offsets are
global), the grid of programs, output shapes (scratch slots after the outputs, dropped after
the call) and the warps per program.

Example:
    >>> from codegen.kernel.index import Index, LoopVar
    >>> from codegen.kernel.kernel_ir import Buffer, Expr, LoopKernel, Stage
    >>> from codegen.pallas.grid import grid_shape
    >>> i = LoopVar("i", 8)
    >>> x = Expr("load", (), "f32", ("in0", Index.var(i)))
    >>> k = LoopKernel("k", [Buffer("in0", (8,), "f32", "input")],
    ...                [Buffer("out0", (8,), "f32", "output")], [], (),
    ...                [Stage("store", "out0", Index.var(i), x, (i,))])
    >>> print(call_source(k, grid_shape(k), block=8, scratch=[]))
    def k(in0):
        outs = pl.pallas_call(
            k_body,
            grid=(1,),  # 8 of 8 points (i<8) per program
            in_specs=[pl.BlockSpec((8,), lambda g: (0,))],
            out_specs=[pl.BlockSpec((8,), lambda g: (0,))],
            out_shape=[jax.ShapeDtypeStruct((8,), jnp.float32)],
            compiler_params=plgpu.CompilerParams(num_warps=4),
            interpret=INTERPRET,
        )(in0.reshape(8))
        return [outs[0].reshape(8)]
"""
from __future__ import annotations

from codegen.kernel.kernel_ir import Buffer, LoopKernel
from codegen.pallas.grid import GridShape
from codegen.pallas.spelling import JNP_DTYPES, shape_args


def call_source(kernel: LoopKernel, grid: GridShape, block: int,
                scratch: list[tuple[Buffer, int]]) -> str:
    """The function ``<name>(*inputs) -> outputs`` calling ``<name>_body`` on a grid of
    ``block`` points per program; ``scratch``: each temporary kept in memory, with the
    elements of its flat argument."""
    k = kernel
    steps = -(-grid.points // block)
    spec = "pl.BlockSpec(({},), lambda g: (0,))"  # whole and flat: offsets are global
    in_specs = [spec.format(b.size) for b in k.inputs]
    out_specs = [spec.format(b.size) for b in k.outputs] + [spec.format(n) for _, n in scratch]
    out_shapes = [f"jax.ShapeDtypeStruct(({b.size},), {JNP_DTYPES[b.dtype]})"
                  for b in k.outputs]
    out_shapes += [f"jax.ShapeDtypeStruct(({n},), {JNP_DTYPES[t.dtype]})" for t, n in scratch]
    results = [f"outs[{n}].reshape({shape_args(b.shape)})" for n, b in enumerate(k.outputs)]
    walked = ", ".join(f"{v}<{v.extent}" for v in grid.walked) or "one point"
    note = " (one program: a stage reads other rows' outputs)" if grid.one_program else ""
    names = ", ".join(t.name for t, _ in scratch)
    return "\n".join([
        f"def {k.name}({', '.join(b.name for b in k.inputs)}):",
        "    outs = pl.pallas_call(",
        f"        {k.name}_body,",
        f"        grid=({steps},),  # {block} of {grid.points} points "
        f"({walked}) per program{note}",
        f"        in_specs=[{', '.join(in_specs)}],",
        *([f"        # outputs, then scratch for {names} (dropped)"] if scratch else []),
        f"        out_specs=[{', '.join(out_specs)}],",
        f"        out_shape=[{(',' + chr(10) + ' ' * 19).join(out_shapes)}],",
        f"        compiler_params=plgpu.CompilerParams("
        f"num_warps={num_warps(block * grid.point_elements)}),",
        "        interpret=INTERPRET,",
        f"    )({', '.join(f'{b.name}.reshape({b.size})' for b in k.inputs)})",
        f"    return [{', '.join(results)}]",
    ])


def num_warps(elements: int) -> int:
    """Warps per program on a GPU for a tile of ``elements``: more for bigger tiles (Triton's
    default is 4).

    >>> num_warps(2048), num_warps(4096), num_warps(65536)
    (4, 8, 16)
    """
    return 4 if elements <= 2048 else 8 if elements <= 8192 else 16
