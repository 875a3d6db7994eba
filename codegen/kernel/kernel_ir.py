"""The kernel IR: one fused block as loop nests over a per-element expression DAG.

Every code generator (C and Pallas) renders this IR; only the spelling of an operation and of a
loop differs between them (``printer.py`` holds what they share). A ``LoopKernel`` has

* ``rows``: an optional shared, parallel outer iteration space. Every stage runs inside it, so a
  row of a softmax is read from memory once per stage while it is still in cache;
* ``stages`` in order, each a loop nest that either *stores* an expression into an output
  buffer or *reduces* an expression over some loops into a small temporary (or an output);
* expressions (``Expr``) that load from buffers at integer index expressions (``Index``).
  Reorganize and Shuffle operators never appear: they are folded into the index expressions.

The index algebra (``Index``, ``LoopVar``: reshapes and transposes as index arithmetic that
cancels) is ``index.py``.

Storage dtypes and value dtypes: a ``Buffer``'s dtype is how its elements are *stored*; an
``Expr``'s dtype is how its value is *computed*. They differ only for the half-precision
storage dtypes ``bf16`` and ``f16`` (``STORAGE_ONLY``): no expression has them. A load from a
``bf16``/``f16`` buffer is an ``f32`` value (the renderer widens, exactly), arithmetic,
temporaries and reduction accumulators are ``f32``, and a store into a ``bf16``/``f16`` buffer
(only block outputs are: the lowering reduces into an ``f32`` temporary first) narrows, rounding
to nearest even with NaN kept NaN and overflow to inf, as XLA's ``convert`` does. A
``convert_element_type`` to or from half precision is then no operation at all: the value keeps
``f32`` until it is stored, more accurate than XLA's rounding after every operator.

Example:
    >>> i = LoopVar("i", 4)
    >>> x = Expr("load", (), "f32", ("x", Index.var(i)))
    >>> render_expr(Expr("exp", (x,), "f32"))
    'exp(x[i])'
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from codegen.kernel.index import Index, LoopVar
from dnnfusion_jax.frontend.ir import Var


# ---------------------------------------------------------------------------------------------
# Expressions

STORAGE_ONLY = {"bf16": "f32", "f16": "f32"}
"""Storage dtypes whose values are computed in another dtype (see the module docstring)."""


def value_dtype(dtype: str) -> str:
    """The dtype an element of a buffer of ``dtype`` is computed in.

    >>> value_dtype("bf16"), value_dtype("f16"), value_dtype("i32")
    ('f32', 'f32', 'i32')
    """
    return STORAGE_ONLY.get(dtype, dtype)


@dataclass(frozen=True)
class Expr:
    """One scalar operation in a stage. Structurally equal expressions are one value (CSE).

    ``op`` is an elementwise operation (``add``, ``exp``, ``select``...: each renderer's
    spelling table names them; semantics are XLA's: NaN-propagating max/min, IEEE
    comparisons) or one of: ``load`` (attrs: buffer name, Index), ``const`` (attrs: value;
    build it with ``const``), ``index`` (attrs: Index, the value of an integer index),
    ``convert`` (attrs: source dtype).
    """

    op: str
    args: tuple[Expr, ...]
    dtype: str
    attrs: tuple[Any, ...] = ()


NEGATIVE_ZERO = "-0"
"""The second attribute of a ``const`` -0.0: in Python -0.0 == 0.0 (and their hashes agree),
so without it ``x * -0.0`` and ``x * 0.0`` would be one value to CSE, and 1/(x * -0.0) is
-1/(x * 0.0)."""


def const(value: Any, dtype: str) -> Expr:
    """A constant expression (renderers spell ``attrs[0]``).

    >>> const(-0.0, "f32") == const(0.0, "f32"), const(2.0, "f32") == const(2.0, "f32")
    (False, True)
    """
    negative_zero = isinstance(value, (float, np.floating)) and value == 0 and np.signbit(value)
    return Expr("const", (), dtype, (value, NEGATIVE_ZERO) if negative_zero else (value,))


@dataclass(frozen=True)
class Buffer:
    """A kernel argument or a temporary: a named dense row-major array. ``dtype`` is the
    storage dtype (``bf16``/``f16`` only for inputs and outputs; temporaries hold values)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    role: str  # "input", "output" or "temp"

    @property
    def size(self) -> int:
        size = 1
        for extent in self.shape:
            size *= extent
        return size


@dataclass
class Stage:
    """One loop nest inside the rows loop.

    store:  ``target[index] = value`` for every point of ``loops``.
    reduce: ``target[index] = combine over reduce_loops of value``; ``loops`` are the kept
            (outer) loops, ``reduce_loops`` the reduced (inner) ones, ``init`` the identity.

    ``order`` is the loop nest of a reduce stage from outermost to innermost, every loop of
    ``loops`` and ``reduce_loops`` once; empty means the kept loops outside the reduced ones.
    When a reduced loop is outside a kept one (memory order: a column sum reads each row once),
    the stage first sets every target element to ``init`` and then combines into it in place,
    point by point in nest order (``reduce_order.py`` decides; the order is fixed, so results
    are deterministic).

    ``caches`` are row-local caching: ``(temp, index, expr)`` entries, each an expensive value
    this stage computes anyway (``expr`` is a sub-expression of ``value``) and also stores,
    at every point of the stage, into the row-local temporary ``temp[index]``, so that later
    stages of the same row load it instead of computing it again (softmax: the sum stage
    stores ``exp(x - max)``, the normalising stage loads it; one ``exp`` per element).
    A store stage's ``caches`` may also be the block's other outputs of the stage's shape,
    stored at the stage's own index: one pass computes all of them (``lowering``).
    """

    kind: str
    target: str
    index: Index
    value: Expr
    loops: tuple[LoopVar, ...]
    reduce_loops: tuple[LoopVar, ...] = ()
    combiner: str | None = None
    init: Any = None
    caches: tuple[tuple[str, Index, Expr], ...] = ()
    order: tuple[LoopVar, ...] = ()

    @property
    def nest(self) -> tuple[LoopVar, ...]:
        """Every loop of the stage, outermost first."""
        return self.order or (*self.loops, *self.reduce_loops)

    @property
    def kept_outside(self) -> bool:
        """Whether every kept loop is outside every reduced loop (one accumulator per target
        element, completed before the next one starts)."""
        return self.nest[:len(self.loops)] == self.loops or not self.reduce_loops


@dataclass
class LoopKernel:
    """A whole fused block: buffers, the shared rows loop, and the stages in order.

    ``temps`` are indexed by the row-local part only: inside the rows loop they hold one row.
    ``input_vars``: the block's values the ``inputs`` hold, in order (the lowering inlines
    small constants, so a block input may have no buffer); the backends pass these.
    """

    name: str
    inputs: list[Buffer]
    outputs: list[Buffer]
    temps: list[Buffer]
    rows: tuple[LoopVar, ...]
    stages: list[Stage]
    input_vars: tuple[Var, ...] = ()

    def buffer(self, name: str) -> Buffer:
        for buffer in (*self.inputs, *self.outputs, *self.temps):
            if buffer.name == name:
                return buffer
        raise KeyError(name)

    def __str__(self) -> str:
        lines = [f"kernel {self.name}(" + ", ".join(
            f"{b.name}: {b.dtype}{list(b.shape)}" for b in self.inputs) + ") -> (" + ", ".join(
            f"{b.name}: {b.dtype}{list(b.shape)}" for b in self.outputs) + ")"]
        for temp in self.temps:
            lines.append(f"  temp {temp.name}: {temp.dtype}{list(temp.shape)}")
        if self.rows:
            lines.append("  parallel rows " + ", ".join(f"{v}<{v.extent}" for v in self.rows))
        for stage in self.stages:
            loops = ", ".join(f"{v}<{v.extent}" for v in stage.loops)
            if stage.kind == "store":
                lines.append(f"  for {loops or '()'}: {stage.target}[{stage.index}] = "
                             f"{render_expr(stage.value)}")
            else:
                red = ", ".join(f"{v}<{v.extent}" for v in stage.reduce_loops)
                if stage.order:
                    red += " in order " + ", ".join(str(v) for v in stage.order)
                lines.append(f"  for {loops or '()'}: {stage.target}[{stage.index}] = "
                             f"{stage.combiner}-reduce over {red}: {render_expr(stage.value)}")
            for temp, index, value in stage.caches:
                lines.append(f"    and cache {temp}[{index}] = {render_expr(value)}")
        return "\n".join(lines)


def render_expr(expr: Expr) -> str:
    """A readable one-line form of an expression (for debug listings and golden tests)."""
    if expr.op == "load":
        return f"{expr.attrs[0]}[{expr.attrs[1]}]"
    if expr.op == "const":
        return repr(expr.attrs[0])
    if expr.op == "index":
        return f"({expr.attrs[0]})"
    return f"{expr.op}(" + ", ".join(render_expr(a) for a in expr.args) + ")"


def expr_nodes(roots: list[Expr]) -> list[Expr]:
    """Every distinct sub-expression of ``roots``, operands before users (iterative walk)."""
    order: list[Expr] = []
    seen: set[Expr] = set()
    stack: list[tuple[Expr, bool]] = [(root, False) for root in reversed(roots)]
    while stack:
        expr, expanded = stack.pop()
        if expr in seen:
            continue
        if expanded:
            seen.add(expr)
            order.append(expr)
            continue
        stack.append((expr, True))
        stack.extend((arg, False) for arg in reversed(expr.args) if arg not in seen)
    return order
