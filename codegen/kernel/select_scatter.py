"""The gradient of max (and min) pooling, ``select_and_scatter_add``, as four reduce stages.

XLA's semantics (checked against jax.jit on CPU): for every window ``w`` of the operand (the
pooling's windows: strides and padding), select one position by scanning the window in
row-major order, keeping the current choice ``c`` over a candidate ``x`` while
``select(c, x)`` (``ge`` for max pooling) holds; then add ``source[w]`` at that position,
onto zeros. A padded position takes part in the scan as -inf (+inf for ``le``); when it is
chosen, nothing is added. Without NaNs the choice is the first position of the window's
maximum. A NaN fails every comparison, so the scan moves onto it and, from it, onto the next
position: the choice is the first maximum *after the last NaN*, or that NaN when nothing
follows it.

Stages, per window (a temporary of the source's shape each):

1. ``last``: the last NaN's tap number, ``-1`` when none (an integer max);
2. ``best``: the extreme over the taps after ``last`` (no NaN among them), padding included;
3. ``first``: the first tap after ``last`` holding ``best`` (an integer min; ``K`` when none,
   so the choice is ``last``);

and per operand element ``i``: 4. the sum, over the windows containing ``i`` (one tap loop per
dimension, the window ``w = (i + low - k) / stride`` where that divides), of ``source[w]``
where ``w`` chose tap ``k``, -0.0 elsewhere (adding nothing, not even a sign), from 0.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> from dnnfusion_jax.fusion.plan import whole_graph_block
    >>> from codegen.kernel.lowering import lower_block
    >>> pool = lambda x: jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (3,), (2,), "SAME")
    >>> g = trace_function(jax.grad(lambda x: pool(x).sum()), [jnp.ones(8)]).graph
    >>> block = whole_graph_block(g)
    >>> [n.op for n in block.nodes][-1]
    'select_and_scatter_add'
    >>> [stage.combiner for stage in lower_block(block, g.constants).stages][-4:]
    ['max', 'max', 'min', 'add']
"""
from __future__ import annotations

import numpy as np

from codegen.kernel.index import Index, LoopVar, linearize
from codegen.kernel.kernel_ir import Expr, const
from codegen.kernel.window_stages import identity
from codegen.kernel.windows import Window, dilated_position, window_read
from dnnfusion_jax.frontend.ir import Node

SELECT_AND_SCATTER = "select_and_scatter_add"

EXTREMES = {"ge": "max", "gt": "max", "le": "min", "lt": "min"}
"""The select primitive → the extreme its scan finds (``gt``/``lt`` pick the last of ties)."""


def select_scatter_reason(node: Node) -> str | None:
    """Why this lowering refuses a select_and_scatter_add (None: it lowers it)."""
    select = getattr(node.params["select_prim"], "name", str(node.params["select_prim"]))
    if select not in ("ge", "le"):
        return f"select_and_scatter_add selecting by {select}"
    return None


class SelectScatterStages:
    """The stages of ``select_and_scatter_add`` (a mixin of ``lowering._BlockLowering``,
    which provides ``_add_reduction``, ``_loops``, ``_intermediate``, ``_read_intermediate``
    and the expression lowering)."""

    def _select_scatter_stages(self, node: Node) -> None:
        source, operand = node.inputs[0], self._materialised(node.inputs[1])
        select = getattr(node.params["select_prim"], "name", str(node.params["select_prim"]))
        extreme = EXTREMES[select]
        ones = (1,) * operand.ndim
        window = Window(tuple(node.params["window_dimensions"]),
                        tuple(node.params["window_strides"]),
                        tuple((int(lo), int(hi)) for lo, hi in node.params["padding"]),
                        ones, ones)
        taps_total = int(np.prod(window.dimensions))
        floating = np.issubdtype(np.dtype(operand.dtype), np.floating)

        def window_taps():
            """Loops over windows and taps; the operand at the tap, valid, the tap number."""
            kept = self._loops(source.shape[len(self.rows):])
            taps = [LoopVar(f"w{self._loop_count}_{d}", n)
                    for d, n in enumerate(window.dimensions)]
            out_index = self._row_indices() + [Index.var(v) for v in kept]
            at, checks = window_read(window, operand.shape, out_index, taps)
            tap = Expr("index", (), "i32", (linearize([Index.var(t) for t in taps],
                                                     window.dimensions),))
            x, inside = self.value_at(operand, at), self._all(checks)
            if inside is not None:  # padding scans as the extreme's identity
                x = _where(inside, x, const(identity(extreme, x.dtype), x.dtype))
            return kept, taps, x, tap

        last = self._intermediate(node, source.shape, np.dtype("int32"))
        kept, taps, x, tap = window_taps()
        is_nan = Expr("ne", (x, x), "bool") if floating else const(False, "bool")
        self._add_reduction(last, "max", _where(is_nan, tap, const(-1, "i32")), kept, taps)

        best = self._intermediate(node, source.shape, operand.dtype)
        kept, taps, x, tap = window_taps()
        after = Expr("gt", (tap, self._read_intermediate(last, kept)), "bool")
        none = const(identity(extreme, x.dtype), x.dtype)
        self._add_reduction(best, extreme, _where(after, x, none), kept, taps)

        first = self._intermediate(node, source.shape, np.dtype("int32"))
        kept, taps, x, tap = window_taps()
        after = Expr("gt", (tap, self._read_intermediate(last, kept)), "bool")
        holds = _and(after, Expr("eq", (x, self._read_intermediate(best, kept)), "bool"))
        self._add_reduction(first, "min", _where(holds, tap, const(taps_total, "i32")),
                            kept, taps)

        # 4: every operand element gathers the windows that chose it
        kept = self._loops(operand.shape[len(self.rows):])
        taps = [LoopVar(f"w{self._loop_count}_{d}", n) for d, n in enumerate(window.dimensions)]
        out_index = self._row_indices() + [Index.var(v) for v in kept]
        window_index, checks = [], []
        for d in range(operand.ndim):
            position = out_index[d] + Index.var(taps[d]) * -1 + window.padding[d][0]
            element, more = dilated_position(position, source.shape[d], window.strides[d])
            window_index.append(element)
            checks += more
        tap = Expr("index", (), "i32", (linearize([Index.var(t) for t in taps],
                                                 window.dimensions),))
        first_tap = self.value_at(first, window_index)
        chosen = _where(Expr("eq", (first_tap, const(taps_total, "i32")), "bool"),
                        self.value_at(last, window_index), first_tap)
        picked = Expr("eq", (chosen, tap), "bool")
        inside = self._all(checks)
        if inside is not None:
            picked = _and(inside, picked)
        value = self.value_at(source, window_index)
        term = _where(picked, value, const(-0.0, value.dtype))
        self._add_reduction(node.out, "add", term, kept, taps)


def _and(a: Expr, b: Expr) -> Expr:
    return Expr("and", (a, b), "bool")


def _where(condition: Expr, a: Expr, b: Expr) -> Expr:
    return Expr("select", (condition, a, b), a.dtype)
