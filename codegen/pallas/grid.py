"""How a kernel's iteration space splits among the programs of a Pallas grid.

The grid walks the kernel's rows (``kernel.rows``), a power-of-two block of them per program;
a kernel of a single store stage walks every point of that stage instead (its loops join the
rows), so an elementwise block is split evenly however its loops are shaped. Each grid point
holds a tile per stage (kept × reduced lanes, each padded to a power of two; a GEMM stage a row
of each operand). A stage that reads an output another point wrote makes the kernel one
program (or one call per stage, ``pallas_stages``). The backend picks the block from this.

Example:
    >>> from codegen.kernel.kernel_ir import Buffer, Expr, Stage
    >>> r, i = LoopVar("r", 6), LoopVar("i", 100)
    >>> x = Expr("load", (), "f32", ("in0", Index.var(r) * 100 + Index.var(i)))
    >>> k = LoopKernel("k", [Buffer("in0", (6, 100), "f32", "input")],
    ...                [Buffer("out0", (6, 100), "f32", "output")], [], (r,),
    ...                [Stage("store", "out0", Index.var(r) * 100 + Index.var(i), x, (i,))])
    >>> grid_shape(k)   # one store stage: the grid walks all 600 points
    GridShape(walked=(LoopVar(name='r', extent=6), LoopVar(name='i', extent=100)), \
points=600, point_elements=1, one_program=False)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from codegen.kernel.guarded_loads import expr_vars, index_vars
from codegen.kernel.index import Index, LoopVar
from codegen.kernel.kernel_ir import LoopKernel, Stage, expr_nodes


def next_power_of_two(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


@dataclass(frozen=True)
class GridShape:
    """What a kernel's grid walks: ``walked`` loop variables (flat, row-major: ``points`` in
    all), ``point_elements`` tile elements per point (the largest stage's padded kept × reduced
    extents), and ``one_program`` when a stage reads an output another point wrote."""

    walked: tuple[LoopVar, ...]
    points: int
    point_elements: int
    one_program: bool


def grid_shape(kernel: LoopKernel) -> GridShape:
    """How ``kernel``'s iteration space splits among programs (see the module docstring)."""
    stages = kernel.stages
    # one store stage, its other outputs (if any) stored beside it at the same index
    if len(stages) == 1 and stages[0].kind == "store" and all(
            index == stages[0].index for _, index, _ in stages[0].caches):
        walked = (*kernel.rows, *stages[0].loops)
        return GridShape(walked, math.prod(v.extent for v in walked), 1, False)
    elements = max(_stage_elements(stage, kernel.rows) for stage in stages)
    rows = math.prod(v.extent for v in kernel.rows)
    return GridShape(kernel.rows, rows, elements, _reads_across_rows(kernel, rows))


def _stage_elements(stage: Stage, rows: tuple[LoopVar, ...]) -> int:
    """Tile elements a stage holds per grid point: its kept × reduced lanes, or for a GEMM
    (``pallas_render``: one ``tl.dot``) a row of each operand, the other's panel being shared by
    every point of the program."""
    kept, reduced = _padded(stage.loops), _padded(stage.reduce_loops)
    return kept + reduced if is_contraction(stage, rows) else kept * reduced


def is_contraction(stage: Stage, rows: tuple[LoopVar, ...]) -> bool:
    """``sum over reduced of x * y``, x reading no kept loop and y no row."""
    if (stage.kind != "reduce" or stage.combiner != "add" or stage.caches
            or stage.value.op != "mul" or not stage.loops or not stage.reduce_loops):
        return False
    reads = [expr_vars(arg) for arg in stage.value.args]
    inner = set(stage.reduce_loops)
    return any(a <= set(rows) | inner and b <= set(stage.loops) | inner
               for a, b in (reads, reads[::-1]))


def _padded(loops: tuple[LoopVar, ...]) -> int:
    return next_power_of_two(math.prod(v.extent for v in loops)) if loops else 1


def _reads_across_rows(kernel: LoopKernel, rows: int) -> bool:
    """Whether a stage loads an output at an index outside the rows its own point stores
    (then one program must compute every row). Temporaries are row-local by construction."""
    if not kernel.rows:
        return False
    stored = {s.target for s in kernel.stages}
    for buffer in kernel.outputs:
        if buffer.name not in stored:
            continue
        loads = [e.attrs[1] for s in kernel.stages for e in expr_nodes([s.value])
                 if e.op == "load" and e.attrs[0] == buffer.name]
        if not loads:
            continue
        stores = [s.index for s in kernel.stages if s.target == buffer.name]
        if buffer.size % rows or any(_row_local(kernel.rows, index, buffer.size // rows) is None
                                     for index in (*loads, *stores)):
            return True
    return False


def _row_local(rows: tuple[LoopVar, ...], index: Index, size: int) -> Index | None:
    """The part of ``index`` inside its row's ``size`` elements when the rest is exactly
    ``flat row · size``; None otherwise."""
    stride, strides = math.prod(v.extent for v in rows), {}
    for var in rows:
        stride //= var.extent
        strides[var] = stride * size
    local = []
    for atom, coef in index.terms:
        if atom in strides:
            if coef != strides[atom]:
                return None
        elif isinstance(atom, LoopVar) or not (index_vars(atom.index) & set(rows)):
            local.append((atom, coef))
        else:
            return None
    if any(var.extent > 1 and all(a != var for a, _ in index.terms) for var in rows):
        return None
    local_index = Index(tuple(local), index.const)
    low, high = local_index.bounds()
    return local_index if 0 <= low and high < size else None
