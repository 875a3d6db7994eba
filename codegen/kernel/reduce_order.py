"""Reductions in memory order: the loop nest of a reduce stage, and contiguous loop merging.

A reduction keeps some loops (one target element each) and reduces others. Written naively,
kept loops go outside and each target element is completed before the next starts. When a
kept loop has a *smaller* memory stride than a reduced loop that is not what memory wants:
group norm on NHWC keeps the group (stride 8 floats) and reduces h, w (strides of whole rows)
and the channel in the group (stride 1), so each group strides through the whole image reading
8 floats per KiB, 32 times over. Memory order is the nest sorted by stride (``memory_order``):
h, w, group, channel. Evaluated in that order the kept loop sits inside reduced ones, so the
reduction splits in two stages (``split_reduction``):

* stage A combines into a *partial* temporary in place, in memory order. The partial is
  indexed by the kept loops plus the reduced loops inside the innermost kept one (here the
  channel in the group: 8 lanes per group), so the innermost loop is a kept loop over
  contiguous memory and vectorises. Without a parallel rows loop the outermost reduced loop is
  also cut into ``chunk`` pieces that become a kept, parallel loop of stage A;
* stage B reduces the partial over those lanes (and chunks) into the real target, kept outside
  as before. The partial is small and in cache.

Both orders are fixed, so results do not depend on threads; NaN-propagating max and inf
arithmetic give the same result in any order. ``merge_contiguous_loops`` then fuses adjacent
loops of one kind whose every index uses them as one contiguous range (h, w → hw), so the
index stays affine and the inner loop long.

Example:
    >>> from codegen.kernel.index import Index, LoopVar
    >>> from codegen.kernel.kernel_ir import Expr, Stage
    >>> a, b = LoopVar("a", 64), LoopVar("b", 256)   # column sums of x: f32[64, 256]
    >>> x = Expr("load", (), "f32", ("in0", Index.var(a) * 256 + Index.var(b)))
    >>> stage = Stage("reduce", "t0", Index.var(b), x, (b,), (a,), "add", 0)
    >>> [v.name for v in memory_order(stage, {"in0"})]
    ['a', 'b']
    >>> (split,) = split_reduction(stage, {"in0"}, lambda shape: "p0", chunk_limit=1)
    >>> [v.name for v in split.nest], split.kept_outside
    (['a', 'b'], False)
"""
from __future__ import annotations

import math
from collections.abc import Callable, Collection

from codegen.kernel.index import Div, Index, LoopVar, Mod, linearize, substitute
from codegen.kernel.kernel_ir import Expr, Stage, expr_nodes

MAX_CHUNKS = 64          # pieces of the outer reduced loop when stage A must be parallel
MIN_CHUNK_WORK = 1 << 14  # points per chunk below which a chunk is not worth a thread


def stage_indices(stage: Stage) -> list[Index]:
    """Every index a stage evaluates: its target, caches, loads and index values."""
    indices = [stage.index, *(index for _, index, _ in stage.caches)]
    roots = [stage.value, *(value for _, _, value in stage.caches)]
    for expr in expr_nodes(roots):
        if expr.op == "load":
            indices.append(expr.attrs[1])
        elif expr.op == "index":
            indices.append(expr.attrs[0])
    return indices


def _atom_loops(index: Index) -> set[LoopVar]:
    """Loops that appear inside a division or modulo of ``index``."""
    found: set[LoopVar] = set()
    for atom, _ in index.terms:
        if isinstance(atom, (Div, Mod)):
            found |= {a for a, _ in atom.index.terms if isinstance(a, LoopVar)}
            found |= _atom_loops(atom.index)
    return found


def loop_strides(stage: Stage, memory: Collection[str]) -> dict[LoopVar, int] | None:
    """Each loop's largest stride over the loads of ``memory`` buffers (0 when unread);
    None when a loop hides inside a division or modulo (its stride is not a constant)."""
    strides = {v: 0 for v in stage.nest}
    roots = [stage.value, *(value for _, _, value in stage.caches)]
    for expr in expr_nodes(roots):
        if expr.op != "load" or expr.attrs[0] not in memory:
            continue
        index = expr.attrs[1]
        if _atom_loops(index) & strides.keys():
            return None
        for atom, coef in index.terms:
            if atom in strides:
                strides[atom] = max(strides[atom], abs(coef))
    return strides


def memory_order(stage: Stage, memory: Collection[str]) -> tuple[LoopVar, ...]:
    """The stage's loops sorted by stride, largest outside (stable: ties keep the nest)."""
    strides = loop_strides(stage, memory)
    if strides is None:
        return stage.nest
    return tuple(sorted(stage.nest, key=lambda v: -strides[v]))


def split_reduction(stage: Stage, memory: Collection[str], new_temp: Callable[[tuple], str],
                    chunk_limit: int = MAX_CHUNKS, max_partial: int = 1 << 20) -> list[Stage]:
    """``stage`` in memory order: itself with its reduced loops sorted when its kept loops are
    outside already, else stage A (into a partial from ``new_temp(shape)``) and stage B.

    ``chunk_limit`` > 1 cuts the outer reduced loop into up to that many parallel chunks;
    ``max_partial`` bounds the partial's elements (beyond it the stage stays as it is).
    """
    if stage.kind != "reduce" or not stage.reduce_loops:
        return [stage]
    if chunk_limit > 1:  # chunk the whole contiguous outer range (row caches, which need the
        # loops as first lowered, exist only with rows, and then chunk_limit is 1)
        sorted_loops = tuple(v for v in memory_order(stage, memory) if v not in stage.loops)
        stage = merge_contiguous_loops(_replace(stage, reduce_loops=sorted_loops))
    order = memory_order(stage, memory)
    kept = set(stage.loops)
    positions = [p for p, v in enumerate(order) if v in kept]
    if not positions or positions[0] == 0 and positions[-1] == len(positions) - 1:
        inner = tuple(v for v in order if v not in kept)  # kept outside: sort reduced loops
        return [_replace(stage, reduce_loops=inner)]
    lanes = tuple(v for v in order[positions[-1] + 1:])  # reduced loops inside the last kept
    outer = tuple(v for v in order[:positions[-1]] if v not in kept)
    partial_loops = tuple(v for v in order if v in kept or v in lanes)
    size = math.prod(v.extent for v in partial_loops)
    work = size * math.prod(v.extent for v in outer)
    chunks = _chunks(outer[0].extent, work, chunk_limit) if outer else 1
    if size * chunks > max_partial:
        return [stage]
    if chunks == 1 and not lanes:  # the kept loops are innermost: combine into the target
        return [_replace(stage, reduce_loops=outer, order=order)]
    a_order, head = list(order), ()
    if chunks > 1:  # outer[0] = chunk * piece + step: chunk is kept and outermost
        first = outer[0]
        chunk = LoopVar(f"{first.name}_c", chunks)
        step = LoopVar(f"{first.name}_s", first.extent // chunks)
        replacement = Index.var(chunk) * step.extent + Index.var(step)
        stage = _map_stage(stage, lambda i: substitute(i, {first: replacement}))
        steps = (step,) if step.extent > 1 else ()
        a_order = [chunk, *(v for u in order for v in (steps if u == first else (u,)))]
        outer = (*steps, *outer[1:])
        head = (chunk,)
    shape = tuple(v.extent for v in (*head, *partial_loops))
    partial = new_temp(shape)
    slot = linearize([Index.var(v) for v in (*head, *partial_loops)], shape)
    stage_a = Stage("reduce", partial, slot, stage.value, (*head, *partial_loops), outer,
                    stage.combiner, stage.init, stage.caches, tuple(a_order))
    load = Expr("load", (), stage.value.dtype, (partial, slot))
    stage_b = Stage("reduce", stage.target, stage.index, load, stage.loops, (*head, *lanes),
                    stage.combiner, stage.init)
    return [stage_a, stage_b]


def _chunks(extent: int, work: int, limit: int) -> int:
    """The largest divisor of ``extent`` up to ``limit`` that leaves each chunk enough work."""
    for count in range(min(limit, extent), 1, -1):
        if extent % count == 0 and work // count >= MIN_CHUNK_WORK:
            return count
    return 1


def merge_contiguous_loops(stage: Stage) -> Stage:
    """Fuses adjacent loops of one kind (kept or reduced) where every index of the stage reads
    them as one range: outer stride = inner extent × inner stride, neither inside a division."""
    changed = True
    while changed:
        changed = False
        nest, indices = stage.nest, stage_indices(stage)
        hidden = set().union(*(_atom_loops(i) for i in indices))
        for outer, inner in zip(nest, nest[1:]):
            same_kind = (outer in stage.loops) == (inner in stage.loops)
            if not same_kind or outer in hidden or inner in hidden:
                continue
            if all(_coef(i, outer) == inner.extent * _coef(i, inner) for i in indices):
                stage = _merge(stage, outer, inner)
                changed = True
                break
    return stage


def _coef(index: Index, var: LoopVar) -> int:
    return sum(c for a, c in index.terms if a == var)


def _merge(stage: Stage, outer: LoopVar, inner: LoopVar) -> Stage:
    merged = LoopVar(f"{outer.name}m", outer.extent * inner.extent)

    def rewrite(index: Index) -> Index:
        step = _coef(index, inner)
        kept = Index(tuple((a, c) for a, c in index.terms if a not in (outer, inner)),
                     index.const)
        return kept + Index.var(merged) * step

    def swap(loops: tuple[LoopVar, ...]) -> tuple[LoopVar, ...]:
        return tuple(merged if v == outer else v for v in loops if v != inner)

    stage = _map_stage(stage, rewrite)
    return _replace(stage, loops=swap(stage.loops), reduce_loops=swap(stage.reduce_loops),
                    order=swap(stage.order))


def _map_stage(stage: Stage, fn: Callable[[Index], Index]) -> Stage:
    """The stage with ``fn`` applied to every index it evaluates."""
    memo: dict[Expr, Expr] = {}
    for expr in expr_nodes([stage.value, *(value for _, _, value in stage.caches)]):
        args = tuple(memo[a] for a in expr.args)
        attrs = expr.attrs
        if expr.op == "load":
            attrs = (attrs[0], fn(attrs[1]))
        elif expr.op == "index":
            attrs = (fn(attrs[0]),)
        memo[expr] = Expr(expr.op, args, expr.dtype, attrs)
    caches = tuple((temp, fn(index), memo[value]) for temp, index, value in stage.caches)
    return _replace(stage, index=fn(stage.index), value=memo[stage.value], caches=caches)


def _replace(stage: Stage, **changes) -> Stage:
    fields = dict(kind=stage.kind, target=stage.target, index=stage.index, value=stage.value,
                  loops=stage.loops, reduce_loops=stage.reduce_loops, combiner=stage.combiner,
                  init=stage.init, caches=stage.caches, order=stage.order)
    fields.update(changes)
    return Stage(**fields)
