"""Per-element expressions of a block's values: what the lowering inlines into each stage.

``ExpressionLowering`` answers "the value of ``var`` at this index" for the stages that
``lowering.py`` builds, as a kernel IR ``Expr``:

* an elementwise primitive with a kernel IR operation (the registry's ``kernel`` column,
  ``ELEMENTWISE_LOWERING``) becomes that operation on its operands' values, size-1 operands
  read at index 0;
* a primitive with a ``_lower_<name>`` method is expanded by it: index transforms (reshape,
  squeeze, transpose, rev, broadcasts, slice and each output of split: the operand read at
  another index; pad (interior padding too) and concatenate: predicated reads), and elementwise primitives that are several IR operations
  (integer_pow by square-and-multiply, clamp, select_n, round, conversions);
* a value held in a buffer (a block input, a reduction's result, a row cache) is a load.

Values are memoised per index, so a value several consumers read at one index is one ``Expr``.

Example:
    >>> ELEMENTWISE_LOWERING["tanh"], "integer_pow" in EXPANDED, "integer_pow" in LOWERABLE
    ('tanh', True, True)
"""
from __future__ import annotations

from typing import Any

import numpy as np

from codegen.kernel.index import Index, delinearize, linearize
from codegen.kernel.indexing import IndexedReads
from codegen.kernel.kernel_ir import Buffer, Expr, const, value_dtype
from codegen.kernel.windows import dilated_position
from dnnfusion_jax.frontend.ir import Node, Var
from dnnfusion_jax.ops.registry import PRIMITIVES

DTYPES = {"float32": "f32", "float64": "f64", "int32": "i32", "int64": "i64",
          "uint32": "u32", "uint8": "u8", "int8": "i8", "bool": "bool",
          "bfloat16": "bf16", "float16": "f16"}
"""numpy dtype name → kernel IR storage dtype; anything else keeps the block in XLA.
``bf16``/``f16`` are storage only: their values are computed in f32 (``kernel_ir``)."""
NUMPY_DTYPES = {ir: name for name, ir in DTYPES.items()}
"""kernel IR dtype → numpy dtype name."""

ELEMENTWISE_LOWERING = {name: row.kernel for name, row in PRIMITIVES.items() if row.kernel}
"""lax primitive → kernel IR operation, for the ones that map one to one (the registry's)."""


class NotRowLocal(Exception):
    """A stage reads a temporary outside its own row: try fewer row dimensions."""


def numpy_name(dtype: Any) -> str | None:
    """numpy's name for ``dtype``; None for extended dtypes (PRNG keys) numpy cannot hold.

    >>> import jax; numpy_name("float32"), numpy_name(jax.random.key(0).dtype)
    ('float32', None)
    """
    try:
        return np.dtype(dtype).name
    except TypeError:
        return None


def storage_dtype(var: Var) -> str:
    """The kernel IR dtype a buffer holding ``var`` stores.

    >>> import jax.numpy as jnp; storage_dtype(Var((2,), jnp.dtype("bfloat16")))
    'bf16'
    """
    return DTYPES[np.dtype(var.dtype).name]


def kernel_dtype(var: Var) -> str:
    """The kernel IR dtype ``var``'s values are computed in (f32 for bf16 and f16).

    >>> import jax.numpy as jnp; kernel_dtype(Var((2,), jnp.dtype("bfloat16")))
    'f32'
    """
    return value_dtype(storage_dtype(var))


def _broadcast_index(index: list[Index], operand: Var) -> list[Index]:
    """An elementwise operand's index: scalars take none, size-1 dimensions read index 0."""
    if operand.ndim == 0:
        return []
    return [Index() if extent == 1 else i for i, extent in zip(index, operand.shape)]


class ExpressionLowering(IndexedReads):
    """The expression half of a block's lowering (``lowering._BlockLowering`` is the stage
    half and sets every attribute used here: the block's producers, storage, literals, rows,
    cached values and ``staged`` primitives, which are loaded from their stage's buffer)."""

    staged: frozenset[str] = frozenset()

    @staticmethod
    def _converted(value: Expr, dtype: str) -> Expr:
        return value if value.dtype == dtype else Expr("convert", (value,), dtype, (value.dtype,))

    def _row_indices(self) -> list[Index]:
        return [Index.var(row) for row in self.rows]

    def value_at(self, var: Var, index: list[Index]) -> Expr:
        """The expression for element ``index`` of ``var`` (memoised: shared subexpressions)."""
        key = (var, tuple(index))
        found = self._memo.get(key)
        if found is None:
            self.reads.setdefault(var, []).append((len(self.stages), key[1]))
            found = self._memo[key] = self._cached_or_compute(var, index)
        return found

    def _cached_or_compute(self, var: Var, index: list[Index]) -> Expr:
        """A cached value is computed by the stage that caches it and loaded by later ones."""
        stage = self.cached.get(var)
        if stage is None:
            return self._compute(var, index)
        k = len(self.rows)
        buffer = self._cache_buffers.get(var)
        if buffer is None:
            buffer = Buffer(f"t{len(self.temps)}", var.shape[k:], kernel_dtype(var), "temp")
            self.temps.append(buffer)
            self._cache_buffers[var] = buffer
        local = linearize(index[k:], var.shape[k:])
        if len(self.stages) > stage:
            return Expr("load", (), kernel_dtype(var), (buffer.name, local))
        value = self._compute(var, index)
        self._caches.append((buffer.name, local, value))
        return value

    def _compute(self, var: Var, index: list[Index]) -> Expr:
        dtype = kernel_dtype(var)
        if var in self.literals:
            return const(self.literals[var], dtype)
        buffer = self.storage.get(var)
        if buffer is not None and (buffer.role != "output" or var not in self.producer
                                   or self.producer[var].op in self.staged):
            return Expr("load", (), dtype, (buffer.name, self._buffer_index(var, buffer, index)))
        node = self.producer[var]
        rule = getattr(self, f"_lower_{node.op}", None)
        if rule is not None:  # a node of several outputs (split) is told which one
            return rule(node, index) if len(node.outputs) == 1 else rule(node, index, var)
        return Expr(ELEMENTWISE_LOWERING[node.op], tuple(self._operands(node, index)), dtype)

    def _buffer_index(self, var: Var, buffer: Buffer, index: list[Index]) -> Index:
        if var not in self.producer:  # a block input: every element is ready
            return linearize(index, var.shape)
        # a reduction computed in this kernel: inside the rows loop only this row exists
        k = len(self.rows)
        if list(index[:k]) != self._row_indices():
            raise NotRowLocal()
        if buffer.role == "temp" and self.rows:
            return linearize(index[k:], var.shape[k:])
        return linearize(index, var.shape)

    # index transforms
    def _lower_broadcast_in_dim(self, node: Node, index: list[Index]) -> Expr:
        operand = node.inputs[0]
        dims = node.params["broadcast_dimensions"]
        inner = [index[d] if operand.shape[j] != 1 else Index() for j, d in enumerate(dims)]
        return self.value_at(operand, inner)

    def _lower_reshape(self, node: Node, index: list[Index]) -> Expr:
        operand = node.inputs[0]
        flat = linearize(index, node.out.shape)
        return self.value_at(operand, delinearize(flat, operand.shape))

    _lower_squeeze = _lower_reshape

    def _lower_copy(self, node: Node, index: list[Index]) -> Expr:
        return self.value_at(node.inputs[0], index)

    def _lower_transpose(self, node: Node, index: list[Index]) -> Expr:
        inner: list[Index] = [Index()] * len(index)
        for out_dim, in_dim in enumerate(node.params["permutation"]):
            inner[in_dim] = index[out_dim]
        return self.value_at(node.inputs[0], inner)

    def _lower_rev(self, node: Node, index: list[Index]) -> Expr:
        shape = node.out.shape
        inner = [index[d] * -1 + (shape[d] - 1) if d in node.params["dimensions"] else index[d]
                 for d in range(len(index))]
        return self.value_at(node.inputs[0], inner)

    def _lower_slice(self, node: Node, index: list[Index]) -> Expr:
        strides = node.params["strides"] or (1,) * len(index)
        inner = [i * s + int(start) for i, s, start in
                 zip(index, strides, node.params["start_indices"])]
        return self.value_at(node.inputs[0], inner)

    def _lower_pad(self, node: Node, index: list[Index]) -> Expr:
        """A predicated read: with interior padding (the gradient of a strided slice or of
        average pooling) the operand is dilated and ``dilated_position`` says which output
        positions hold an element; negative low/high padding crops."""
        operand, padding = node.inputs
        inner, checks = [], []
        for i, size, (low, _high, interior) in zip(index, operand.shape,
                                                    node.params["padding_config"]):
            element, more = dilated_position(i + (-int(low)), size, int(interior) + 1)
            inner.append(element)
            checks += more
        value = self.value_at(operand, inner)
        inside = self._all(checks)
        if inside is None:
            return value
        return Expr("select", (inside, value, self.value_at(padding, [])),
                    kernel_dtype(node.out))

    def _lower_split(self, node: Node, index: list[Index], output: Var) -> Expr:
        """Output ``output`` of a split: the operand read at that part's offset (a slice)."""
        axis = node.params["axis"]
        position = next(p for p, var in enumerate(node.outputs) if var is output)
        start = sum(int(size) for size in node.params["sizes"][:position])
        inner = list(index)
        inner[axis] = index[axis] + start
        return self.value_at(node.inputs[0], inner)

    def _lower_concatenate(self, node: Node, index: list[Index]) -> Expr:
        axis = node.params["dimension"]
        offsets = np.cumsum([0] + [x.shape[axis] for x in node.inputs])
        result = None
        for operand, start in reversed(list(zip(node.inputs, offsets[:-1]))):
            inner = list(index)
            inner[axis] = index[axis] + (-int(start))
            piece = self.value_at(operand, inner)
            if result is None:
                result = piece
            else:
                end = int(start) + operand.shape[axis]
                result = Expr("select", (self._compare("lt", index[axis], end), piece, result),
                              kernel_dtype(node.out))
        return result

    def _lower_iota(self, node: Node, index: list[Index]) -> Expr:
        return Expr("index", (), kernel_dtype(node.out), (index[node.params["dimension"]],))

    def _inside(self, positions: list[tuple[Index, int]]) -> Expr | None:
        """That every ``(index, size)`` lies in ``[0, size)``, testing only the bounds an index
        can cross (pad, a convolution's padded window); None when none can."""
        checks = []
        for index, size in positions:
            low, high = index.bounds()
            if low < 0:
                checks.append(("ge", index, 0))
            if high >= size:
                checks.append(("lt", index, size))
        return self._all(checks)

    def _all(self, checks: list[tuple[str, Index, int]]) -> Expr | None:
        """That every ``(comparison, index, bound)`` holds (None when there are none)."""
        if not checks:
            return None
        inside = self._compare(*checks[0])
        for check in checks[1:]:
            inside = Expr("and", (inside, self._compare(*check)), "bool")
        return inside

    def _compare(self, op: str, index: Index, bound: int) -> Expr:
        return Expr(op, (Expr("index", (), "i64", (index,)), Expr("const", (), "i64", (bound,))),
                    "bool")

    # elementwise operators that are not one IR operation
    def _operands(self, node: Node, index: list[Index]) -> list[Expr]:
        return [self.value_at(x, _broadcast_index(index, x)) for x in node.inputs]

    def _lower_convert_element_type(self, node: Node, index: list[Index]) -> Expr:
        (operand,) = self._operands(node, index)
        return self._converted(operand, kernel_dtype(node.out))

    def _lower_square(self, node: Node, index: list[Index]) -> Expr:
        (x,) = self._operands(node, index)
        return Expr("mul", (x, x), x.dtype)

    def _lower_integer_pow(self, node: Node, index: list[Index]) -> Expr:
        (x,) = self._operands(node, index)
        exponent = int(node.params["y"])
        result, power, remaining = None, x, abs(exponent)
        while remaining:  # square-and-multiply, as XLA expands integer_pow
            if remaining & 1:
                result = power if result is None else Expr("mul", (result, power), x.dtype)
            remaining >>= 1
            if remaining:
                power = Expr("mul", (power, power), x.dtype)
        one = Expr("const", (), x.dtype, (1,))
        if result is None:
            return one
        return Expr("div", (one, result), x.dtype) if exponent < 0 else result

    def _lower_select_n(self, node: Node, index: list[Index]) -> Expr:
        predicate, *cases = self._operands(node, index)
        result = cases[-1]
        for position in range(len(cases) - 2, -1, -1):
            # case i is chosen when predicate == i; bool predicates have two cases
            if predicate.dtype == "bool":
                chosen = Expr("not", (predicate,), "bool")
            else:
                chosen = Expr("eq", (predicate, Expr("const", (), predicate.dtype, (position,))),
                              "bool")
            result = Expr("select", (chosen, cases[position], result), result.dtype)
        return result

    def _lower_clamp(self, node: Node, index: list[Index]) -> Expr:
        low, x, high = self._operands(node, index)
        return Expr("min", (Expr("max", (x, low), x.dtype), high), x.dtype)

    def _lower_round(self, node: Node, index: list[Index]) -> Expr:
        (x,) = self._operands(node, index)
        method = int(node.params.get("rounding_method", 0))
        return Expr("round_even" if method == 1 else "round_away", (x,), x.dtype)




EXPANDED = frozenset(name[len("_lower_"):] for name in dir(ExpressionLowering)
                     if name.startswith("_lower_"))
"""Primitives a ``_lower_<name>`` method expands (index transforms, multi-operation ones)."""

LOWERABLE = frozenset(ELEMENTWISE_LOWERING) | EXPANDED
"""Every primitive an expression can compute (the stage builder adds its staged ones)."""
