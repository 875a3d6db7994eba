"""Renders a kernel IR ``LoopKernel`` as one C function (the C code generator).

The function has the fixed ABI of ``abi.h``, ``void NAME(const void *const *in, void *const
*out, const dnf_runtime *rt)``: the buffers in order, shapes baked in. Loops follow the IR: the
rows loop (if any) is the parallel loop and the stages run inside it; otherwise each stage
parallelises its own outer loop. A parallel loop's body becomes a static function of a range
``[begin, end)`` handed to ``rt->parallel_for`` (``writer.py``; under the FFI, XLA's thread
pool runs it). Reductions accumulate in ``LANES`` independent lanes, which gcc vectorises
without ``-ffast-math`` (the summation order is written out, not licensed by a flag); a layout
transpose walks tiles. Operations are spelled by ``C_OPS``, one entry per kernel IR operation,
with helpers from ``prelude.h``. The expression walk and the index printer are shared with
Pallas (``codegen/kernel/printer.py``).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> from dnnfusion_jax.fusion.greedy_planner import GreedyPlanner
    >>> from codegen.kernel.lowering import lower_block
    >>> g = trace_function(lambda x: jnp.exp(x) * 2.0, [jnp.ones((2, 8))]).graph
    >>> source = render_c(lower_block(GreedyPlanner().plan(g).blocks[0], g.constants))
    >>> "out0[" in source and "dnf_expf(" in source
    True
"""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path


from codegen.kernel.guarded_loads import affine_coefficient, uniform_loads
from codegen.kernel.index import Index, LoopVar
from codegen.kernel.kernel_ir import Expr, LoopKernel, Stage, expr_nodes
from codegen.kernel.printer import ExprWalker, IndexPrinter

from codegen.c.spelling import C_TYPES, convert, literal, narrowed, spell, widened
from codegen.c.writer import CWriter

C_ABI = Path(__file__).with_name("abi.h").read_text()
PRELUDE = C_ABI + Path(__file__).with_name("prelude.h").read_text()
LANES = 16               # independent accumulators per reduction: one AVX-512 vector of f32
TILE = 16                 # a transposing loop pair walks 16 × 16 tiles (64-byte lines of f32)

class CIndex(IndexPrinter):
    """C's spelling of an ``Index``: all arithmetic in ``long``, ``/`` and ``%`` parenthesised.

    >>> from codegen.kernel.index import Index, LoopVar
    >>> render_index(Index.var(LoopVar("i", 64)).digit(4, 8) * 2 + 1, {})
    '(((i) / 4) % 8) * 2 + 1'
    """

    def div(self, inner: str, divisor: int) -> str:
        return f"(({inner}) / {divisor})"

    def mod(self, inner: str, divisor: int, modulus: int) -> str:
        divided = f"({inner}) / {divisor}" if divisor != 1 else f"({inner})"
        return f"(({divided}) % {modulus})"


render_index = CIndex()
"""C text of an integer index expression: ``render_index(index, names)``."""


def _load_index(w: CWriter, load: Expr, names: dict[LoopVar, str],
                uniform_in: LoopVar | None = None) -> str:
    """A load's index, clamped into its buffer where its bounds leave it. Concatenate and pad
    are predicated reads: every branch of the ``select`` is evaluated (branch-free, so loops
    vectorise) and the unselected ones may point outside their buffer; their values are
    discarded, but an unclamped read past the end can fault (seen in Faster R-CNN).

    ``uniform_in``: the innermost loop, when the load is selected for all of its run or for
    none (``guarded_loads``); then only the rest of the index is clamped, to leave room for the
    run, and the load stays contiguous instead of becoming a gather."""
    name, index = load.attrs
    text = render_index(index, names)
    last = max(w.sizes[name], 1) - 1
    low, high = index.bounds()
    if low >= 0 and high <= last:
        return text
    coef = affine_coefficient(index, uniform_in) if uniform_in is not None else None
    if coef is not None and coef > 0 and coef * (uniform_in.extent - 1) <= last:
        rest = index + Index(((uniform_in, -coef),))
        step = render_index(Index(((uniform_in, coef),)), names)
        span = coef * (uniform_in.extent - 1)
        return f"dnf_clamp_index({render_index(rest, names)}, {last - span}) + {step}"
    return f"dnf_clamp_index({text}, {last})"


def render_c(kernel: LoopKernel) -> str:
    """The complete C translation unit of ``kernel`` (ABI and prelude included)."""
    # The kernel's buffers (heap temps too; row temps live in the body) in a context struct,
    # and as the locals a parallel body declares from it.
    buffers = [*kernel.inputs, *kernel.outputs, *([] if kernel.rows else kernel.temps)]
    fields, context = [], []
    for buffer in buffers:
        pointer = ("const " if buffer in kernel.inputs else "") + C_TYPES[buffer.dtype] + " *"
        fields.append(f"{pointer}{buffer.name};")
        context.append(f"{pointer}restrict {buffer.name} = c->{buffer.name};")
    sizes = {b.name: b.size for b in (*kernel.inputs, *kernel.outputs, *kernel.temps)}
    dtypes = {b.name: b.dtype for b in (*kernel.inputs, *kernel.outputs, *kernel.temps)}
    w = CWriter(kernel.name, sizes, context, dtypes)
    for k, buffer in enumerate(kernel.inputs):
        w.line(f"const {C_TYPES[buffer.dtype]} *restrict {buffer.name} = "
               f"(const {C_TYPES[buffer.dtype]} *)in_[{k}];")
    for k, buffer in enumerate(kernel.outputs):
        w.line(f"{C_TYPES[buffer.dtype]} *restrict {buffer.name} = "
               f"({C_TYPES[buffer.dtype]} *)out_[{k}];")
    if not kernel.rows:
        for temp in kernel.temps:
            w.line(f"{C_TYPES[temp.dtype]} *{temp.name} = ({C_TYPES[temp.dtype]} *)"
                   f"malloc(sizeof({C_TYPES[temp.dtype]}) * {max(temp.size, 1)});")
    w.line(f"dnf_context c = {{{', '.join(b.name for b in buffers)}}};")
    w.line("(void)c; (void)rt;  /* unread by a kernel without parallel loops */")
    if kernel.rows:
        rows = math.prod(v.extent for v in kernel.rows)
        work = rows * max((_stage_work(s) for s in kernel.stages), default=1)
        w.open_parallel("r", rows, work, before=lambda first: _row_digits(kernel.rows, first))
        for temp in kernel.temps:
            w.line(f"{C_TYPES[temp.dtype]} {temp.name}[{max(temp.size, 1)}] "
                   "__attribute__((aligned(64)));")
        for stage in kernel.stages:
            _render_stage(w, stage, parallel=False)
        _advance_row_digits(w, kernel.rows)
        w.close()
    else:
        for stage in kernel.stages:
            _render_stage(w, stage, parallel=True)
        for temp in kernel.temps:
            w.line(f"free({temp.name});")
    body = "\n".join(w.lines)
    return (f"{PRELUDE}\n"
            f"typedef struct {{ {' '.join(fields)} void *scratch; }} dnf_context;\n\n"
            + "\n".join(w.functions)
            + f"\nvoid {kernel.name}(const void *const *in_, void *const *out_, "
              f"const dnf_runtime *rt) {{\n{body}\n}}\n")


def _row_digits(rows: tuple[LoopVar, ...], first: str) -> list[str]:
    """The row variables at flat row ``first``: divisions once per range, not once per row
    (short rows made those divisions the cost: a 64-channel pad ran at 0.44x of XLA)."""
    if len(rows) == 1:
        return [f"long {rows[0].name} = {first};"]
    lines, stride = [], math.prod(v.extent for v in rows)
    for var in rows:
        stride //= var.extent
        lines.append(f"long {var.name} = ({first} / {stride}) % {var.extent};")
    return lines


def _advance_row_digits(w: CWriter, rows: tuple[LoopVar, ...]) -> None:
    """Steps the row variables to the next flat row, like an odometer (the outermost may step
    past its extent after the last row; nothing reads it then)."""
    text = f"++{rows[0].name};"
    for var in rows[1:]:
        text = f"if (++{var.name} == {var.extent}) {{ {var.name} = 0; {text} }}"
    w.line(text)


def _stage_work(stage: Stage) -> int:
    return math.prod(v.extent for v in (*stage.loops, *stage.reduce_loops))


class _CValues(ExprWalker):
    """One ``const`` local per shared sub-expression, named ``v<position>``. ``inner``: the
    innermost loop around these expressions (None: no loop); its uniform loads stay
    contiguous (``_load_index``)."""

    def __init__(self, w: CWriter, names: dict[LoopVar, str], roots: list[Expr],
                 inner: LoopVar | None) -> None:
        self.w, self.names, self.inner = w, names, inner
        self.uniform = uniform_loads(roots, inner) if inner is not None else set()

    def constant(self, expr: Expr) -> str:
        return literal(expr.attrs[0], expr.dtype)

    def load(self, expr: Expr) -> str:
        uniform_in = self.inner if expr in self.uniform else None
        name = expr.attrs[0]
        return widened(self.w.dtypes.get(name, expr.dtype),
                       f"{name}[{_load_index(self.w, expr, self.names, uniform_in)}]")

    def gather(self, expr: Expr, position: str) -> str:
        name = expr.attrs[0]
        return widened(self.w.dtypes.get(name, expr.dtype), f"{name}[{position}]")

    def index(self, expr: Expr) -> str:
        return f"(({C_TYPES[expr.dtype]})({render_index(expr.attrs[0], self.names)}))"

    def convert(self, expr: Expr, operand: str) -> str:
        return convert(expr, operand)

    def operation(self, expr: Expr, operands: list[str]) -> str:
        return spell(expr, operands)

    def bind(self, expr: Expr, code: str, operands: list[str], position: int) -> str:
        self.w.line(f"const {C_TYPES[expr.dtype]} v{position} = {code};")
        return f"v{position}"


def _open_loops(w: CWriter, loops: tuple[LoopVar, ...], parallel: bool, work: int,
                innermost_simd: bool) -> int:
    for depth, var in enumerate(loops):
        if depth == 0 and parallel:
            w.open_parallel(var.name, var.extent, work)
            continue
        if depth == len(loops) - 1 and innermost_simd:
            w.line("#pragma GCC ivdep")
        w.open(f"for (long {var.name} = 0; {var.name} < {var.extent}; {var.name}++)")
    return len(loops)


def _render_stage(w: CWriter, stage: Stage, parallel: bool) -> None:
    w.line("{")  # each stage in its own scope: locals never clash
    w.depth += 1
    if stage.kind == "store":
        tiled = _transposing_pair(stage)
        if tiled is None:
            opened = _open_loops(w, stage.loops, parallel, _stage_work(stage), True)
        else:
            opened = _open_tiled_loops(w, stage, tiled, parallel)
        value = _render_point(w, stage, {})
        w.line(_store(w, stage.target, render_index(stage.index, {}), value))
    elif stage.kept_outside:
        opened = _open_loops(w, stage.loops, parallel, _stage_work(stage), False)
        _render_reduction(w, stage, parallel and not stage.loops)
    else:
        opened = _render_in_place(w, stage, parallel)
    for _ in range(opened):
        w.close()
    w.close()


def _transposing_pair(stage: Stage) -> tuple[LoopVar, LoopVar] | None:
    """``(u, v)``: the innermost loop ``v`` and another loop ``u`` when some load reads along
    ``u`` and strides along ``v`` (a layout transpose). Walked in order, every element of such
    a load is a different cache line; tiles of TILE × TILE reuse each line TILE times (a
    2048×2048 transpose: 11.7 ms untiled, as slow as XLA's; 2.2 ms tiled). A store stage's
    points are independent, so its loops may run in any order."""
    if len(stage.loops) < 2 or stage.loops[-1].extent < TILE:
        return None
    v = stage.loops[-1]
    for load in (e for e in expr_nodes([stage.value]) if e.op == "load"):
        index = load.attrs[1]
        stride = affine_coefficient(index, v)
        if stride is None or abs(stride) < TILE:
            continue
        for u in stage.loops[:-1]:
            if u.extent >= TILE and affine_coefficient(index, u) == 1:
                return u, v
    return None


def _open_tiled_loops(w: CWriter, stage: Stage, pair: tuple[LoopVar, LoopVar],
                      parallel: bool) -> int:
    """The stage's loops with the transposing pair walked in TILE × TILE tiles; returns the
    number of loops opened."""
    u, v = pair
    outer = tuple(var for var in stage.loops if var not in pair)
    opened = _open_loops(w, outer, parallel, _stage_work(stage), False)
    tiles = [(var, -(-var.extent // TILE)) for var in pair]
    for depth, (var, count) in enumerate(tiles):
        if depth == 0 and parallel and not outer:
            w.open_parallel(f"{var.name}_t", count, _stage_work(stage))
        else:
            w.open(f"for (long {var.name}_t = 0; {var.name}_t < {count}; {var.name}_t++)")
    for var in pair:
        if var is v:
            w.line("#pragma GCC ivdep")
        end = f"{var.name}_t * {TILE} + {TILE}"
        w.open(f"for (long {var.name} = {var.name}_t * {TILE}; {var.name} < "
               f"({end} < {var.extent} ? {end} : {var.extent}); {var.name}++)")
    return opened + 4


def _render_in_place(w: CWriter, stage: Stage, parallel: bool) -> int:
    """A reduction in memory order (some kept loop inside a reduced one): every target element
    starts at the identity, then each point combines into its element in place. Only a kept
    outermost loop may run in parallel; a kept innermost loop touches a distinct element per
    iteration, so it vectorises (contiguous when the lowering put it innermost)."""
    target = f"{stage.target}[{render_index(stage.index, {})}]"
    init = literal(stage.init, stage.value.dtype)
    opened = _open_loops(w, stage.loops, parallel, _stage_work(stage), True)
    w.line(f"{target} = {init};")
    for _ in range(opened):
        w.close()
    nest, kept = stage.nest, set(stage.loops)
    parallel = parallel and nest[0] in kept
    for depth, var in enumerate(nest):
        if depth == 0 and parallel:
            w.open_parallel(var.name, var.extent, _stage_work(stage))
            continue
        if depth == len(nest) - 1 and var in kept:
            w.line("#pragma omp simd")
        w.open(f"for (long {var.name} = 0; {var.name} < {var.extent}; {var.name}++)")
    value = _render_point(w, stage, {})
    w.line(f"{target} = {_combine(stage, value, target, lanes=True)};")
    if not _signed_zero_ties(stage):
        return len(nest)
    for _ in nest:
        w.close()
    _zero_sign_in_place(w, stage, target)
    return 0


def _zero_sign_in_place(w: CWriter, stage: Stage, target: str) -> None:
    """``_zero_sign`` for an in-place reduction: its elements' zeros, when some are zero."""
    w.line("int zero_result = 0;")
    for loop in stage.loops:
        w.open(f"for (long {loop.name} = 0; {loop.name} < {loop.extent}; {loop.name}++)")
    w.line(f"zero_result |= {target} == 0;")
    for _ in stage.loops:
        w.close()
    w.open("if (zero_result)")
    _zero_sign(w, stage, target, stage.nest)
    w.close()


def _render_point(w: CWriter, stage: Stage, names: dict[LoopVar, str]) -> str:
    """The stage's value at one point, after storing its row-local caches there."""
    roots = [stage.value, *(value for _, _, value in stage.caches)]
    inner = stage.nest[-1] if stage.nest else None
    value, *cached = _CValues(w, names, roots, inner).walk(roots)
    for (temp, index, _), text in zip(stage.caches, cached):
        w.line(_store(w, temp, render_index(index, names), text))
    return value


def _store(w: CWriter, name: str, index: str, value: str) -> str:
    """``name[index] = value;``, narrowed to the buffer's storage dtype (bf16, f16)."""
    return f"{name}[{index}] = {narrowed(w.dtypes.get(name, ''), value)};"


def _combine(stage: Stage, value: str, acc: str, lanes: bool = False) -> str:
    """The combiner applied to a new value and an accumulator, in that order: dnf_maxf and
    dnf_minf test their first operand for NaN, which then stays off the loop-carried chain.
    ``lanes``: in lanes (a lane reduction's lanes, tree and chunks, or in-place combines),
    where a float max/min leaves ties between -0 and +0 to ``_zero_sign``."""
    dtype = stage.value.dtype
    if _signed_zero_ties(stage):  # dnf_max[f]/dnf_min[f], or their lane forms
        form = f"dnf_lane_{stage.combiner}" if lanes else f"dnf_{stage.combiner}"
        return f"{form}{'f' if dtype == 'f32' else ''}({value}, {acc})"
    return spell(Expr(stage.combiner, (stage.value, stage.value), dtype), [value, acc])


def _signed_zero_ties(stage: Stage) -> bool:
    return stage.combiner in ("max", "min") and stage.value.dtype in ("f32", "f64")


def _zero_sign(w: CWriter, stage: Stage, result: str, loops: tuple[LoopVar, ...]) -> None:
    """After lane combines, which let a tie of -0 and +0 go either way: a ``result`` that came
    out zero is combined again, exactly, with every zero among its points (+0 for max when any
    was +0, -0 for min when any was -0). One more pass over ``loops``; callers run it only when
    some result is zero."""
    _each_point(w, stage, loops, lambda value: f"if ({value} == 0 && {result} == 0) "
                f"{result} = {_combine(stage, value, result)};")


def _each_point(w: CWriter, stage: Stage, loops: tuple[LoopVar, ...],
                statement: Callable[[str], str]) -> None:
    """A serial loop nest over ``loops`` running ``statement(value)`` at each point."""
    for loop in loops:
        w.open(f"for (long {loop.name} = 0; {loop.name} < {loop.extent}; {loop.name}++)")
    w.line(statement(_render_point(w, stage, {})))
    for _ in loops:
        w.close()


def _render_reduction(w: CWriter, stage: Stage, parallel: bool) -> None:
    ctype, dtype = C_TYPES[stage.value.dtype], stage.value.dtype
    init = literal(stage.init, dtype)
    target = f"{stage.target}[{render_index(stage.index, {})}]"
    if not stage.reduce_loops:  # a reduction over size-1 axes is a copy
        value = _render_point(w, stage, {})
        w.line(f"{target} = {_combine(stage, value, init)};")
        return
    *outer, var = stage.reduce_loops  # lanes run along the innermost reduced loop
    if var.extent < 2 * LANES:
        w.line(f"{ctype} acc = {init};")
        _each_point(w, stage, stage.reduce_loops,
                    lambda value: f"acc = {_combine(stage, value, 'acc')};")
        w.line(f"{target} = acc;")
        return
    chunks = 64 if parallel and not outer and var.extent >= 64 * LANES * 4 else 1
    w.line(f"{ctype} part[{chunks}];")
    # A reduction to one value runs in fixed chunks, combined in order: the result never
    # depends on how the chunks are spread over threads.
    w.open_parallel("chunk", chunks, _stage_work(stage) if chunks > 1 else 0,
                    scratch=(ctype, "part"))
    w.line(f"const long begin = {var.extent} * chunk / {chunks}, "
           f"end = {var.extent} * (chunk + 1) / {chunks};")
    w.line(f"{ctype} lane[{LANES}];")
    w.line(f"for (int l = 0; l < {LANES}; l++) lane[l] = {init};")
    for loop in outer:
        w.open(f"for (long {loop.name} = 0; {loop.name} < {loop.extent}; {loop.name}++)")
    w.line("long j0 = begin;")
    w.open(f"for (; j0 + {LANES} <= end; j0 += {LANES})")
    # gcc unrolls this short loop before its loop vectoriser sees it, and its straight-line
    # vectoriser gives up on the NaN-propagating max (scalar compares and branches): ask for
    # the loop vectoriser explicitly (the lanes are independent by construction)
    w.line("#pragma omp simd")
    w.open(f"for (int l = 0; l < {LANES}; l++)")
    w.line(f"const long {var.name}_v = j0 + l;")
    value = _render_point(w, stage, {var: f"{var.name}_v"})
    w.line(f"lane[l] = {_combine(stage, value, 'lane[l]', lanes=True)};")
    w.close()
    w.close()
    w.open(f"for (long {var.name} = j0; {var.name} < end; {var.name}++)")
    value = _render_point(w, stage, {})
    w.line(f"lane[0] = {_combine(stage, value, 'lane[0]', lanes=True)};")
    w.close()
    for _ in outer:
        w.close()
    for width in (8, 4, 2, 1):  # a fixed tree: the result never depends on thread timing
        w.line(f"for (int l = 0; l < {width}; l++) lane[l] = "
               f"{_combine(stage, f'lane[l + {width}]', 'lane[l]', lanes=True)};")
    w.line("part[chunk] = lane[0];")
    w.close()
    w.line(f"{ctype} acc = part[0];")
    w.line(f"for (int c = 1; c < {chunks}; c++) "
           f"acc = {_combine(stage, 'part[c]', 'acc', lanes=True)};")
    if _signed_zero_ties(stage):
        w.open("if (acc == 0)")
        _zero_sign(w, stage, "acc", stage.reduce_loops)
        w.close()
    w.line(f"{target} = acc;")
