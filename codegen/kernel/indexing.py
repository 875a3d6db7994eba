"""Indexed reads and writes in the kernel IR: gather, dynamic slices, scatter-add.

The rest of the lowering reads values at *affine* indices of loop variables. These primitives
read at positions that are values: a class label, an embedding row, a runtime offset. They
become the kernel IR operation ``gather`` (``Expr("gather", (flat,), dtype, (buffer,))``:
element ``flat``, an i64 expression, of a buffer the kernel receives whole), so they take
their operand from memory: the planner never fuses an indexed operand's producer into the
reader's block (``fusion/legality.py``), and the index arithmetic around them fuses freely.

* ``gather`` (lax's general form, batching dimensions included): per output element, the
  start positions are loaded from the indices and clamped into the operand as XLA does
  (``clip`` and ``promise_in_bounds``); ``fill`` mode gives ``fill_value`` (NaN for floats,
  as jax defaults) where a start lies outside.
* ``dynamic_slice``: starts clamped to ``[0, size - slice]``, as lax does;
  ``dynamic_update_slice``: the update read where the output lies inside the clamped window.
* ``scatter-add``, without atomics: each output element is a reduction over the updates that
  may land on it, ``operand + Σ_u (target(u) == i ? update[u] : -0.0)`` (``-0.0`` adds nothing,
  not even a sign). With batching dimensions (``take_along_axis``'s gradient) one update may
  land per element; an embedding gradient, where every token may land on every row, is a
  loop over all tokens per element, which XLA's scatter does better: it stays with XLA above
  ``MAX_SCATTER_UPDATES`` per element.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> g = trace_function(lambda x, i: x[i], [jnp.ones((8, 4)), jnp.zeros(3, jnp.int32)]).graph
    >>> gather = next(n for n in g.nodes if n.op == "gather")
    >>> indexing_reason(gather) is None
    True
"""
from __future__ import annotations

import numpy as np

from codegen.kernel.index import Index, LoopVar, delinearize
from codegen.kernel.kernel_ir import Expr, const, value_dtype
from dnnfusion_jax.fusion.backend import UnsupportedBlock
from dnnfusion_jax.frontend.ir import Node, Var

INDEXED = frozenset({"gather", "dynamic_slice", "dynamic_update_slice", "scatter-add"})
"""The primitives this module lowers."""

MAX_SCATTER_UPDATES = 8
"""Updates a scatter-add output element loops over at most; beyond, XLA's scatter (one pass
over the updates) does less work than a reduction per output element."""


def indexing_reason(node: Node) -> str | None:
    """Why this lowering refuses ``node`` (None: it lowers it)."""
    if node.op != "scatter-add":
        return None
    operand, indices, updates = node.inputs
    dn = node.params["dimension_numbers"]
    if not set(dn.scatter_dims_to_operand_dims) <= set(dn.inserted_window_dims):
        return "scatter-add into windows at runtime positions"
    window_dims = _window_dims(operand.ndim, dn.inserted_window_dims, dn.operand_batching_dims)
    if any(operand.shape[d] != updates.shape[u] for d, u in zip(window_dims, dn.update_window_dims)):
        return "scatter-add of windows smaller than the operand"
    count = scatter_count(node)
    if count > MAX_SCATTER_UPDATES:
        return (f"scatter-add of {count} updates per element: XLA's scatter does less work")
    return None


def scatter_count(node: Node) -> int:
    """How many updates may land on one output element of a scatter-add."""
    dn = node.params["dimension_numbers"]
    return int(np.prod([extent for j, extent in enumerate(node.inputs[1].shape[:-1])
                        if j not in dn.scatter_indices_batching_dims], dtype=np.int64))


def _window_dims(ndim: int, *excluded: tuple[int, ...]) -> list[int]:
    skip = {d for group in excluded for d in group}
    return [d for d in range(ndim) if d not in skip]


class IndexedReads:
    """Expression rules for gather, dynamic_slice and dynamic_update_slice (a mixin of
    ``ExpressionLowering``, whose ``value_at``, ``storage``, ``producer`` and ``literals``
    it uses)."""

    def _lower_gather(self, node: Node, index: list[Index]) -> Expr:
        operand, indices = node.inputs
        dn, sizes = node.params["dimension_numbers"], node.params["slice_sizes"]
        fill = _mode_name(node) == "fill_or_drop"
        batch = [index[d] for d in range(node.out.ndim) if d not in dn.offset_dims]
        windows = _window_dims(operand.ndim, dn.collapsed_slice_dims, dn.operand_batching_dims)
        offsets = dict(zip(windows, (index[d] for d in dn.offset_dims)))
        positions: list[Index | Expr] = []
        checks: list[Expr] = []
        for d in range(operand.ndim):
            offset = offsets.get(d, Index())
            if d in dn.start_index_map:
                k = dn.start_index_map.index(d)
                start = _i64(self.value_at(indices, [*batch, Index.constant(k)]))
                high = operand.shape[d] - sizes[d]
                if fill:
                    checks += [_cmp("ge", start, 0), _cmp("le", start, high)]
                positions.append(_add(_clamp(start, high), offset))
            elif d in dn.operand_batching_dims:
                p = dn.operand_batching_dims.index(d)
                positions.append(batch[dn.start_indices_batching_dims[p]])
            else:
                positions.append(offset)
        value = self._indexed_load(operand, positions)
        if not checks:
            return value
        return Expr("select", (_all(checks), value, const(_fill_value(node), value.dtype)),
                    value.dtype)

    def _lower_dynamic_slice(self, node: Node, index: list[Index]) -> Expr:
        operand, *starts = node.inputs
        sizes = node.params["slice_sizes"]
        positions = [_add(_clamp(_i64(self.value_at(s, [])), extent - size), i)
                     for s, extent, size, i in zip(starts, operand.shape, sizes, index)]
        return self._indexed_load(operand, positions)

    def _lower_dynamic_update_slice(self, node: Node, index: list[Index]) -> Expr:
        operand, update, *starts = node.inputs
        relative, checks = [], []
        for s, extent, size, i in zip(starts, operand.shape, update.shape, index):
            start = _clamp(_i64(self.value_at(s, [])), extent - size)
            offset = Expr("sub", (_index_expr(i), start), "i64")
            checks += [_cmp("ge", offset, 0), _cmp("lt", offset, size)]
            relative.append(_clamp(offset, size - 1))  # read in bounds even where unused
        inside = self._indexed_load(update, relative)
        return Expr("select", (_all(checks), inside, self.value_at(operand, index)), inside.dtype)

    def _indexed_load(self, var: Var, positions: list[Index | Expr]) -> Expr:
        """Element ``positions`` of ``var``, which the kernel receives whole."""
        buffer = self.storage.get(var)
        if buffer is None or var in self.producer:
            raise UnsupportedBlock("an indexed read of a value computed in the same kernel")
        strides = np.cumprod((1, *var.shape[:0:-1]))[::-1]
        static, dynamic = Index(), []
        for position, stride in zip(positions, strides):
            if isinstance(position, Index):
                static = static + position * int(stride)
            else:
                dynamic.append(position if stride == 1 else
                               Expr("mul", (position, const(int(stride), "i64")), "i64"))
        flat = _index_expr(static)
        for term in dynamic:
            flat = Expr("add", (flat, term), "i64")
        return Expr("gather", (flat,), value_dtype(buffer.dtype), (buffer.name,))


def scatter_add_value(lowering, node: Node, out_index: list[Index], loop: LoopVar) -> Expr:
    """The term of output element ``out_index`` at step ``loop`` of a scatter-add's reduction:
    step ``u < N`` is update ``u`` where it lands here (else -0.0), step ``N`` the operand."""
    operand, indices, updates = node.inputs
    dn = node.params["dimension_numbers"]
    clip = _mode_name(node) == "clip"
    looped = [j for j in range(indices.ndim - 1) if j not in dn.scatter_indices_batching_dims]
    count = scatter_count(node)
    digits = iter(delinearize(Index.var(loop) % count, tuple(indices.shape[j] for j in looped)))
    position: list[Index] = []  # of the update, along the indices' batch dimensions
    for j in range(indices.ndim - 1):
        if j in dn.scatter_indices_batching_dims:
            p = dn.scatter_indices_batching_dims.index(j)
            position.append(out_index[dn.operand_batching_dims[p]])
        else:
            position.append(next(digits))
    checks = []
    for k, d in enumerate(dn.scatter_dims_to_operand_dims):
        target = _i64(lowering.value_at(indices, [*position, Index.constant(k)]))
        if clip:
            target = _clamp(target, operand.shape[d] - 1)
        checks.append(Expr("eq", (target, _index_expr(out_index[d])), "bool"))
    update_index: list[Index] = [Index()] * updates.ndim
    scatter_dims = [u for u in range(updates.ndim) if u not in dn.update_window_dims]
    for u, p in zip(scatter_dims, position):
        update_index[u] = p
    windows = _window_dims(operand.ndim, dn.inserted_window_dims, dn.operand_batching_dims)
    for d, u in zip(windows, dn.update_window_dims):
        update_index[u] = out_index[d]
    update = lowering.value_at(updates, update_index)
    dtype = update.dtype
    term = Expr("select", (_all(checks), update, const(-0.0, dtype)), dtype)
    last = _cmp("eq", _index_expr(Index.var(loop)), count)
    return Expr("select", (last, lowering.value_at(operand, out_index), term), dtype)


def _mode_name(node: Node) -> str:
    """"clip", "fill_or_drop" or "promise_in_bounds" (XLA clamps a gather, drops a scatter)."""
    return str(node.params["mode"]).rsplit(".", 1)[-1].lower()


def _fill_value(node: Node):
    """A fill-mode gather's value where a start lies outside: jax's default when unset."""
    value, dtype = node.params.get("fill_value"), np.dtype(node.out.dtype)
    if value is not None:
        return value
    if np.issubdtype(dtype, np.inexact):
        return float("nan")
    if dtype == np.bool_:
        return True
    info = np.iinfo(dtype)
    return int(info.min if np.issubdtype(dtype, np.signedinteger) else info.max)


def _i64(value: Expr) -> Expr:
    return value if value.dtype == "i64" else Expr("convert", (value,), "i64", (value.dtype,))


def _index_expr(index: Index) -> Expr:
    return Expr("index", (), "i64", (index,))


def _add(start: Expr, offset: Index) -> Expr:
    if offset == Index():
        return start
    return Expr("add", (start, _index_expr(offset)), "i64")


def _clamp(value: Expr, high: int) -> Expr:
    """``value`` clamped into ``[0, high]``, as lax clamps starts."""
    low = Expr("max", (value, const(0, "i64")), "i64")
    return Expr("min", (low, const(max(high, 0), "i64")), "i64")


def _cmp(op: str, value: Expr, bound: int) -> Expr:
    return Expr(op, (value, const(bound, "i64")), "bool")


def _all(checks: list[Expr]) -> Expr:
    result = checks[0]
    for check in checks[1:]:
        result = Expr("and", (result, check), "bool")
    return result
