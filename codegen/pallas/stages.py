"""One Pallas call per stage, for a kernel whose stages cannot share one grid.

A kernel with rows runs every stage of a row block in one program. One without rows (or one
whose stages read outputs another row wrote) would have to run its whole iteration space in a
single program, which a GPU cannot hold once it is large: one of its 100+ cores would do all
the work. Split, every stage becomes a kernel of its own: a reduce stage's kept loops become
its rows (the grid walks them), a store stage walks all of its points. What a later stage
reads from an earlier one (temporaries, outputs) goes through memory between the calls; the
rest of the block stays fused.

Example (the division of a softmax whose row sums were taken over a merged loop):
    >>> from codegen.kernel.index import Index, LoopVar
    >>> from codegen.kernel.kernel_ir import Buffer, Expr, LoopKernel, Stage
    >>> i, j, k = LoopVar("i", 12), LoopVar("j", 128), LoopVar("k", 128)
    >>> x = lambda index: Expr("load", (), "f32", ("in0", index))
    >>> sums = Stage("reduce", "t0", Index.var(i), x(Index.var(i) * 128 + Index.var(j)), (i,),
    ...              (j,), "add", 0.0)
    >>> divide = Stage("store", "out0", Index.var(i) * 128 + Index.var(k), Expr("div", (
    ...     x(Index.var(i) * 128 + Index.var(k)), Expr("load", (), "f32", ("t0", Index.var(i)))),
    ...     "f32"), (i, k))
    >>> kernel = LoopKernel("b", [Buffer("in0", (12, 128), "f32", "input")],
    ...                     [Buffer("out0", (12, 128), "f32", "output")],
    ...                     [Buffer("t0", (12,), "f32", "temp")], (), [sums, divide])
    >>> [(p.name, [b.name for b in p.inputs], [b.name for b in p.outputs], p.rows)
    ...  for p in split_stages(kernel)]    # doctest: +NORMALIZE_WHITESPACE
    [('b_s0', ['in0'], ['t0'], (LoopVar(name='i', extent=12),)),
     ('b_s1', ['in0', 't0'], ['out0'], ())]
"""
from __future__ import annotations

from dataclasses import replace

from codegen.kernel.kernel_ir import Buffer, LoopKernel, expr_nodes

from codegen.pallas.render import Unrenderable


def split_stages(kernel: LoopKernel) -> list[LoopKernel]:
    """One kernel per stage of ``kernel`` (see the module docstring); raises Unrenderable when
    two stages store into one buffer (a joined store: its parts would need one array)."""
    targets = [s.target for s in kernel.stages]
    if len(set(targets)) != len(targets):
        raise Unrenderable("two stages store into one buffer: no stage-by-stage split")
    parts = []
    for n, stage in enumerate(kernel.stages):
        loaded = dict.fromkeys(e.attrs[0] for e in expr_nodes([stage.value]) if e.op == "load")
        stored = dict.fromkeys([stage.target, *(temp for temp, _, _ in stage.caches)])
        inputs = [_as(kernel.buffer(name), "input") for name in loaded]
        outputs = [_as(kernel.buffer(name), "output") for name in stored]
        if stage.kind == "reduce":  # the kept loops are the rows: the grid walks them
            part, rows = replace(stage, loops=(), order=()), stage.loops
        else:
            part, rows = stage, ()
        parts.append(LoopKernel(f"{kernel.name}_s{n}", inputs, outputs, [], rows, [part]))
    return parts


def _as(buffer: Buffer, role: str) -> Buffer:
    return replace(buffer, role=role)


def render_calls(kernel: LoopKernel, parts: list[LoopKernel], sources: list[str]) -> str:
    """The source of ``kernel``'s function: each part's source, then a function calling the
    parts in order and returning ``kernel``'s outputs."""
    lines = [f"def {kernel.name}({', '.join(b.name for b in kernel.inputs)}):",
             "    # one call per stage: they share no grid (no rows, or reads across rows)"]
    for part in parts:
        results = ", ".join(b.name for b in part.outputs)
        lines.append(f"    {results}, = {part.name}({', '.join(b.name for b in part.inputs)})")
    lines.append(f"    return [{', '.join(b.name for b in kernel.outputs)}]")
    return "\n\n".join(s.rstrip("\n") for s in sources) + "\n\n\n" + "\n".join(lines) + "\n"
