"""Loop-invariant hoisting: a value a store stage computes from only some of its loops is
computed once per point of those loops, into a temporary, by a stage of its own.

The lowering inlines everything at the index a consumer asks for, so group norm's normalising
stage evaluates ``rsqrt(var[c // 8] / n + eps)`` for every pixel and channel, with a gathered
load ``var[c // 8]``, although it depends on the channel alone: 256 values recomputed 1024
times each. Hoisting turns it into ``for c: h[c] = rsqrt(...)`` before the stage and a
contiguous load ``h[c]`` inside it. A value is hoisted when

* it is a maximal sub-expression of a store stage whose loops are a strict subset of the
  stage's loops, and the stage runs at least ``MIN_REUSE`` times as many points;
* it does real work: an operation other than a constant or a load with an affine index
  (those cost no more than loading the hoisted copy);
* its temporary fits ``max_elements`` (row-local temporaries live on the thread's stack).

Example:
    >>> from codegen.kernel.index import Index, LoopVar
    >>> from codegen.kernel.kernel_ir import Expr, Stage, render_expr
    >>> i, c = LoopVar("i", 64), LoopVar("c", 16)
    >>> x = Expr("load", (), "f32", ("in0", Index.var(i) * 16 + Index.var(c)))
    >>> s = Expr("rsqrt", (Expr("load", (), "f32", ("in1", Index.var(c))),), "f32")
    >>> store = Stage("store", "out0", Index.var(i) * 16 + Index.var(c),
    ...               Expr("mul", (x, s), "f32"), (i, c))
    >>> hoisted, main = hoist_invariants(store, lambda shape, dtype: "t0", 4096)
    >>> print(render_expr(hoisted.value), "|", render_expr(main.value))
    rsqrt(in1[c]) | mul(in0[i*16 + c], t0[c])
"""
from __future__ import annotations

import math
from collections.abc import Callable

from codegen.kernel.index import Div, Index, LoopVar, Mod, linearize
from codegen.kernel.kernel_ir import Expr, Stage, expr_nodes

MIN_REUSE = 4  # the stage must evaluate a hoisted value at least this many times per copy


def _index_loops(index: Index) -> set[LoopVar]:
    found: set[LoopVar] = set()
    for atom, _ in index.terms:
        if isinstance(atom, LoopVar):
            found.add(atom)
        else:
            found |= _index_loops(atom.index)
    return found


def _trivial(expr: Expr) -> bool:
    """Costs no more than a load of a hoisted copy: constants and affine loads."""
    if expr.op == "const":
        return True
    return expr.op == "load" and not any(isinstance(a, (Div, Mod)) for a, _ in
                                         expr.attrs[1].terms)


def hoist_invariants(stage: Stage, new_temp: Callable[[tuple[int, ...], str], str],
                     max_elements: int) -> list[Stage]:
    """The stages that compute ``stage``'s hoistable values, then ``stage`` loading them.
    ``new_temp(shape, dtype)`` names a fresh temporary."""
    if stage.kind != "store" or stage.caches or len(stage.loops) < 2:
        return [stage]
    loops = set(stage.loops)
    nodes = expr_nodes([stage.value])
    uses: dict[Expr, frozenset[LoopVar]] = {}
    grows: set[Expr] = set()  # read by an operation that depends on more loops
    for expr in nodes:
        found: set[LoopVar] = set()
        if expr.op == "load":
            found = _index_loops(expr.attrs[1])
        elif expr.op == "index":
            found = _index_loops(expr.attrs[0])
        for arg in expr.args:
            found |= uses[arg]
        uses[expr] = frozenset(found & loops)
        grows.update(arg for arg in expr.args if uses[arg] != uses[expr])
    work = math.prod(v.extent for v in stage.loops)
    hoisted: list[Stage] = []
    replace: dict[Expr, Expr] = {}
    for expr in nodes:
        kept = tuple(v for v in stage.loops if v in uses[expr])
        size = math.prod(v.extent for v in kept)
        if expr not in grows or _trivial(expr) or size > max_elements \
                or work < MIN_REUSE * size:
            continue
        shape = tuple(v.extent for v in kept)
        temp = new_temp(shape, expr.dtype)
        index = linearize([Index.var(v) for v in kept], shape)
        hoisted.append(Stage("store", temp, index, expr, kept))
        replace[expr] = Expr("load", (), expr.dtype, (temp, index))
    if not hoisted:
        return [stage]
    memo: dict[Expr, Expr] = {}
    for expr in nodes:
        memo[expr] = replace.get(expr) or Expr(expr.op, tuple(memo[a] for a in expr.args),
                                               expr.dtype, expr.attrs)
    main = Stage(stage.kind, stage.target, stage.index, memo[stage.value], stage.loops)
    return [*hoisted, main]
