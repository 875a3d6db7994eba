"""The stages of pooling, cumulative and arg-reduction primitives (a part of the lowering).

``WindowStages`` is mixed into ``lowering._BlockLowering`` and builds, through its
``_add_reduction``, the reduce stages of

* pooling and cumulative operators (``windows.py``: the window's index arithmetic): the
  combiner over the window, padding read as the combiner's identity; ``cumlogsumexp`` is two
  windows, the running maximum ``m`` then ``Σ exp(x - m)``, and ``m + log(Σ)`` stored;
* ``argmax``/``argmin``: the extreme value ``m`` over the axis (max and min propagate NaN),
  then the smallest index ``k`` with ``x[k] == m``, or, when ``m`` is NaN, with ``x[k]`` NaN:
  XLA's rule (NaN is the extreme; ties go to the first index).

A stage's intermediate value (``m``) gets a ``Var`` of its own whose producer is the node, so
that later stages read it as they read any value computed in the kernel: within the row.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> from dnnfusion_jax.fusion.plan import whole_graph_block
    >>> from codegen.kernel.lowering import lower_block
    >>> g = trace_function(lambda x: jnp.argmax(x, 1), [jnp.ones((4, 8))]).graph
    >>> kernel = lower_block(whole_graph_block(g), g.constants)
    >>> [(stage.combiner, stage.target) for stage in kernel.stages]
    [('max', 't0'), ('min', 'out0')]
"""
from __future__ import annotations

from typing import Any

import numpy as np

from codegen.kernel.expressions import kernel_dtype
from codegen.kernel.index import Index, LoopVar
from codegen.kernel.kernel_ir import Expr, Stage, const
from codegen.kernel.row_cache import value_cost
from codegen.kernel.windows import SCAN_COMBINERS, WINDOW_COMBINERS, window_of, window_read
from dnnfusion_jax.frontend.ir import Node, Var

ARG_REDUCTIONS = {"argmax": "max", "argmin": "min"}
"""lax arg-reduction primitive → the combiner of its first stage (the extreme value)."""

LOGSUMEXP = "cumlogsumexp"

MIN_MATERIALISED_COST = 2  # one cheap operation per tap costs less than a store and a load

WINDOWED = {**WINDOW_COMBINERS, **SCAN_COMBINERS, LOGSUMEXP: None}
"""Pooling and cumulative primitives → combiner (None: several stages)."""


def identity(combiner: str, dtype: str) -> Any:
    """The identity of ``combiner`` on ``dtype`` (``"min"``/``"max"``: the integer's limit)."""
    floating = dtype.startswith("f")
    if combiner == "add" or combiner == "or":
        return 0
    if combiner in ("mul", "and"):
        return 1
    if combiner == "max":
        return -np.inf if floating else "min"
    return np.inf if floating else "max"


class WindowStages:
    """Stage builders for ``lowering._BlockLowering`` (which provides ``_add_reduction``,
    ``_reduction_loops``, ``_result_storage``, ``_loops`` and the expression lowering)."""

    def _window_stage(self, node: Node) -> None:
        """Pooling or a cumulative operator: for every output element the combiner over the
        window, padding read as the combiner's identity."""
        if node.op == LOGSUMEXP:
            return self._logsumexp_stages(node)
        combiner = WINDOWED[node.op]
        kept_loops, taps, x, inside = self._window_taps(node)
        self._add_reduction(node.out, combiner, _padded(x, inside, combiner), kept_loops, taps)

    def _window_taps(self, node: Node) -> tuple[list[LoopVar], list[LoopVar], Expr,
                                                 Expr | None]:
        """Kept loops, window loops, the operand at a tap, and whether the tap is no padding
        (None: it never is)."""
        operand, window = self._materialised(node.inputs[0]), window_of(node)
        kept_loops = self._loops(node.out.shape[len(self.rows):])
        taps = [LoopVar(f"w{self._loop_count}_{d}", extent)
                for d, extent in enumerate(window.dimensions)]
        out_index = self._row_indices() + [Index.var(v) for v in kept_loops]
        operand_index, checks = window_read(window, operand.shape, out_index, taps)
        return kept_loops, taps, self.value_at(operand, operand_index), self._all(checks)

    def _materialised(self, var: Var) -> Var:
        """``var``, stored into a temporary by a stage of its own first when it is computed
        here at a cost of ``MIN_MATERIALISED_COST`` or more: a window reads each element once
        per tap, and inlined, ``tanh`` before a cumulative sum would run ``n`` times per
        element. Inside rows the temporary holds one row; a window that reads across rows
        then makes the lowering try fewer rows."""
        if var in self.storage or var in self.literals or var not in self.producer:
            return var
        if value_cost(var, self.producer, set(), self.staged) < MIN_MATERIALISED_COST:
            return var
        loops = self._loops(var.shape[len(self.rows):])
        value = self.value_at(var, self._row_indices() + [Index.var(v) for v in loops])
        buffer, target = self._result_storage(var, loops)  # later reads load it
        self.stages.append(Stage("store", buffer.name, target, value,
                                 tuple(v for v in loops if v.extent > 1),
                                 caches=self._take_caches()))
        return var

    def _logsumexp_stages(self, node: Node) -> None:
        """``m`` = the running maximum, ``s`` = the running sum of ``exp(x - m)``, then
        ``m + log(s)``, or ``m`` itself where it is ±inf (all -inf, or some +inf) or NaN."""
        result, dtype = node.out, kernel_dtype(node.out)
        m_var = self._intermediate(node, result.shape, result.dtype)
        kept_loops, taps, x, inside = self._window_taps(node)
        self._add_reduction(m_var, "max", _padded(x, inside, "max"), kept_loops, taps)
        s_var = self._intermediate(node, result.shape, result.dtype)
        kept_loops, taps, x, inside = self._window_taps(node)
        m = self._read_intermediate(m_var, kept_loops)
        finite = Expr("is_finite", (m,), "bool")
        shift = Expr("select", (finite, m, const(0.0, dtype)), dtype)  # never inf - inf
        term = Expr("exp", (Expr("sub", (x, shift), dtype),), dtype)
        self._add_reduction(s_var, "add", _padded(term, inside, "add"), kept_loops, taps)
        kept_loops = self._loops(result.shape[len(self.rows):])
        m = self._read_intermediate(m_var, kept_loops)
        total = Expr("add", (m, Expr("log", (self._read_intermediate(s_var, kept_loops),),
                                     dtype)), dtype)
        value = Expr("select", (Expr("is_finite", (m,), "bool"), total, m), dtype)
        buffer, target = self._result_storage(result, kept_loops)
        self.stages.append(Stage("store", buffer.name, target, value,
                                 tuple(v for v in kept_loops if v.extent > 1),
                                 caches=self._take_caches()))

    def _arg_stages(self, node: Node) -> None:
        """argmax/argmin: the extreme value, then the first index that holds it."""
        operand, result = node.inputs[0], node.out
        dtype, index_dtype = kernel_dtype(operand), kernel_dtype(result)
        extreme = self._intermediate(node, result.shape, operand.dtype)
        kept_loops, reduced, operand_index = self._reduction_loops(operand, node.params["axes"])
        self._add_reduction(extreme, ARG_REDUCTIONS[node.op],
                            self.value_at(operand, operand_index), kept_loops, reduced)
        kept_loops, reduced, operand_index = self._reduction_loops(operand, node.params["axes"])
        x = self.value_at(operand, operand_index)
        found = Expr("eq", (x, self._read_intermediate(extreme, kept_loops)), "bool")
        if dtype.startswith("f"):  # m is NaN exactly when some x is: then x != x finds it
            found = Expr("or", (found, Expr("ne", (x, x), "bool")), "bool")
        (axis,) = node.params["axes"]
        position = Expr("index", (), index_dtype, (Index.var(reduced[0]),))
        value = Expr("select", (found, position, const(operand.shape[axis], index_dtype)),
                     index_dtype)
        self._add_reduction(result, "min", value, kept_loops, reduced)

    def _intermediate(self, node: Node, shape: tuple[int, ...], dtype: Any) -> Var:
        """A value one of ``node``'s stages computes for a later one, in a temporary."""
        var = Var(shape, dtype)
        self.producer[var] = node  # computed in this kernel: read within the row
        return var

    def _read_intermediate(self, var: Var, kept_loops: list[LoopVar]) -> Expr:
        return self.value_at(var, self._row_indices() + [Index.var(v) for v in kept_loops])


def _padded(value: Expr, inside: Expr | None, combiner: str) -> Expr:
    """``value`` where ``inside`` holds, the combiner's identity on padding."""
    if inside is None:
        return value
    return Expr("select", (inside, value, const(identity(combiner, value.dtype), value.dtype)),
                value.dtype)
