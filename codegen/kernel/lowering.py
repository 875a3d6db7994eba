"""Lowers a fused block to the kernel IR (``kernel_ir.LoopKernel``), once for every backend.

Each value the block must produce gets a loop nest (a *stage*); everything else is inlined as
an expression evaluated at the index the consumer asks for (``expressions.py``):

* elementwise operators become expression nodes (size-1 operands are read at index 0);
* Reorganize and Shuffle operators (reshape, squeeze, transpose, rev) and
  broadcasts are index transforms, never copies; slice is an offset and stride; pad and
  concatenate are predicated reads (only the chosen operand is read);
* a reduction is the one value that is materialised inside the kernel: a reduce stage writes
  it into a temporary that later stages read (softmax is max-stage, sum-stage, store-stage).

When all stages share leading dimensions that every read of a temporary keeps (a softmax over
the last axis shares all the others), those dimensions become the parallel ``rows`` loop and
temporaries shrink to one row: a row is then read from memory while it is still in cache.
Inside the rows loop, an expensive value several stages read is computed once per element
and kept in a row-local temporary (``row_cache``): softmax evaluates ``exp`` once.
Reductions run in memory order (``reduce_order``), and a value a store stage computes from
only some of its loops is computed once per point of those loops (``hoist``).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> from dnnfusion_jax.fusion.plan import whole_graph_block
    >>> g = trace_function(jax.nn.softmax, [jnp.ones((4, 8))]).graph
    >>> kernel = lower_block(whole_graph_block(g), g.constants)
    >>> [stage.kind for stage in kernel.stages], [str(v) for v in kernel.rows]
    (['reduce', 'reduce', 'store'], ['r0'])
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from codegen.kernel.depthwise import CONV, depthwise_reason, window_loops, window_tap
from codegen.kernel.expressions import LOWERABLE as EXPRESSIONS
from codegen.kernel.expressions import (DTYPES, ExpressionLowering, NotRowLocal, kernel_dtype,
                                        numpy_name, storage_dtype)
from codegen.kernel.hoist import hoist_invariants
from codegen.kernel.index import Index, LoopVar, linearize
from codegen.kernel.indexing import (INDEXED, indexing_reason, scatter_add_value,
                                     scatter_count)
from codegen.kernel.select_scatter import (SELECT_AND_SCATTER, SelectScatterStages,
                                           select_scatter_reason)
from codegen.kernel.kernel_ir import Buffer, Expr, LoopKernel, Stage, expr_nodes
from codegen.kernel.reduce_order import MAX_CHUNKS, merge_contiguous_loops, split_reduction
from codegen.kernel.row_cache import plan_row_caches
from codegen.kernel.rows import row_candidates
from codegen.kernel.window_stages import ARG_REDUCTIONS, WINDOWED, WindowStages, identity
from codegen.kernel.windows import window_reason
from dnnfusion_jax.frontend.ir import Node, Var
from dnnfusion_jax.fusion.backend import UnsupportedBlock
from dnnfusion_jax.fusion.plan import Block

REDUCTIONS = {"reduce_sum": "add", "reduce_max": "max", "reduce_min": "min",
              "reduce_prod": "mul", "reduce_and": "and", "reduce_or": "or"}
"""lax reduction primitive → combiner."""

DOT = "dot_general"
SCATTER_ADD = "scatter-add"

STAGED = (frozenset(REDUCTIONS) | frozenset(WINDOWED) | frozenset(ARG_REDUCTIONS)
          | {CONV, DOT, SCATTER_ADD, SELECT_AND_SCATTER})
"""Primitives computed by a reduce stage of their own, into a buffer later stages load."""

LOWERABLE = EXPRESSIONS | STAGED
"""Every primitive this lowering handles; a block with any other stays in XLA."""

HALF_EXACT = frozenset({"nextafter"})
"""Primitives whose half-precision result is not their f32 result rounded: stay in XLA."""

MAX_EXPRESSION_NODES = 4000   # beyond this, inlining has duplicated too much: let XLA run it
MAX_ROW_TEMP_ELEMENTS = 4096  # a row-local temporary lives on the thread's stack
MAX_PARTIAL_ELEMENTS = 1 << 20  # a memory-order reduction's partial sums, without rows (heap)


def unsupported_reason(node: Node) -> str | None:
    """Why ``node`` cannot be part of a lowered kernel, or None if it can."""
    if node.op not in LOWERABLE:
        return f"primitive {node.op} has no kernel lowering"
    if node.effects:
        return f"{node.op} has side effects"
    if any(0 in var.shape for var in (*node.inputs, *node.outputs)):
        return f"{node.op} of an empty array (XLA needs no kernel for it)"
    for var in (*node.inputs, *node.outputs):
        if numpy_name(var.dtype) not in DTYPES:
            return f"dtype {var.dtype} is not supported by the kernel lowering"
    if node.op in HALF_EXACT and any(storage_dtype(v) != kernel_dtype(v) for v in node.outputs):
        return f"{node.op} in {node.out.dtype} (computed in float32 it would differ)"
    if node.op == "reshape" and node.params.get("dimensions") is not None:
        return "reshape with dimensions"
    if node.op == "round" and int(node.params.get("rounding_method", 0)) not in (0, 1):
        return "unknown rounding method"
    if node.op == CONV:
        return depthwise_reason(node)
    if node.op in REDUCTIONS and not node.params["axes"]:
        return f"{node.op} over no axes (the operand itself; simplify removes it)"
    if node.op in ARG_REDUCTIONS and len(node.params["axes"]) != 1:
        return f"{node.op} over {len(node.params['axes'])} axes"
    if node.op in WINDOWED:
        return window_reason(node)
    if node.op in INDEXED:
        return indexing_reason(node)
    if node.op == SELECT_AND_SCATTER:
        return select_scatter_reason(node)
    return None


def lower_block(block: Block, constants: Mapping[Var, Any], name: str = "kernel",
                tile_transposes: bool = False) -> LoopKernel:
    """The loop kernel of ``block``; raises UnsupportedBlock when it cannot be lowered.

    ``tile_transposes``: a block with a layout transpose (one that moves the last axis) and
    no reduction gets no rows loop, so that a renderer which tiles a stage's own loops (C)
    can; a renderer that maps rows to a grid (Pallas) keeps them."""
    for node in block.nodes:
        reason = unsupported_reason(node)
        if reason:
            raise UnsupportedBlock(reason)
    for rows in row_candidates(block, {*REDUCTIONS, *ARG_REDUCTIONS}, tile_transposes):
        try:
            return _BlockLowering(block, constants, name, rows).lower()
        except NotRowLocal:
            continue
    raise AssertionError("lowering without rows cannot fail on row locality")


class _BlockLowering(WindowStages, SelectScatterStages, ExpressionLowering):
    """Builds the stages of one block for one choice of rows (the values they compute come
    from ``ExpressionLowering``)."""

    staged = STAGED

    def __init__(self, block: Block, constants: Mapping[Var, Any], name: str,
                 rows: tuple[int, ...], cached: Mapping[Var, int] | None = None) -> None:
        self.block = block
        self.constants = constants
        self.cached = dict(cached or {})  # var -> number of the stage that caches it
        self.reads: dict[Var, list[tuple[int, tuple[Index, ...]]]] = {}
        self._caches: list[tuple[str, Index, Expr]] = []  # of the stage being built
        self._cache_buffers: dict[Var, Buffer] = {}
        self.name = name
        self.producer = {out: node for node in block.nodes for out in node.outputs}
        self.rows = tuple(LoopVar(f"r{d}", extent) for d, extent in enumerate(rows))
        self.literals: dict[Var, Any] = {}
        self.inputs: list[Buffer] = []
        self.storage: dict[Var, Buffer] = {}
        for var in block.inputs:
            if var in constants and np.ndim(constants[var]) == 0:
                self.literals[var] = np.asarray(constants[var]).item()
            else:
                buffer = Buffer(f"in{len(self.inputs)}", var.shape, storage_dtype(var), "input")
                self.inputs.append(buffer)
                self.storage[var] = buffer
        self.outputs = [Buffer(f"out{k}", var.shape, storage_dtype(var), "output")
                        for k, var in enumerate(block.outputs)]
        self.storage.update(zip(block.outputs, self.outputs))
        self.temps: list[Buffer] = []
        self.stages: list[Stage] = []
        self._memo: dict[tuple[Var, tuple[Index, ...]], Expr] = {}
        self._loop_count = 0

    # -- stages ------------------------------------------------------------------------------
    def lower(self) -> LoopKernel:
        """The kernel; lowered twice when row-local caching applies (the first lowering
        tells which stages read which values)."""
        kernel = self._lower_stages()
        if self.cached or not self.rows:
            return kernel
        plan = plan_row_caches(self.block.nodes, self.producer, self.reads, self.stages,
                               self.rows, STAGED)
        if not plan:
            return kernel
        rows = tuple(v.extent for v in self.rows)
        return _BlockLowering(self.block, self.constants, self.name, rows, plan)._lower_stages()

    def _lower_stages(self) -> LoopKernel:
        for node in self.block.nodes:
            if node.op in REDUCTIONS:
                self._reduce_stage(node)
            elif node.op == CONV:
                self._depthwise_stage(node)
            elif node.op in WINDOWED:
                self._window_stage(node)
            elif node.op in ARG_REDUCTIONS:
                self._arg_stages(node)
            elif node.op == DOT:
                self._dot_stage(node)
            elif node.op == SCATTER_ADD:
                self._scatter_add_stage(node)
            elif node.op == SELECT_AND_SCATTER:
                self._select_scatter_stages(node)
        # a staged output is reduced into its buffer, unless that narrows (bf16, f16): then
        # into an f32 temporary (``_result_storage``) that a store stage narrows
        stored = [(var, buffer) for var, buffer in zip(self.block.outputs, self.outputs)
                  if self.producer[var].op not in STAGED or self.storage[var] is not buffer]
        for group in _store_groups(stored, len(self.rows), self.producer):
            if len(group) == 1:
                self._store_stage(*group[0])
            else:
                self._joint_store_stage(group)
        # merged copies: the row-cache plan reads self.stages with the unmerged loops
        stages = [merge_contiguous_loops(s) if s.kind == "reduce" else s for s in self.stages]
        limit = MAX_ROW_TEMP_ELEMENTS if self.rows else MAX_PARTIAL_ELEMENTS
        stages = [t for s in stages for t in hoist_invariants(s, self._new_temp, limit)]
        input_vars = tuple(var for var in self.block.inputs if var not in self.literals)
        kernel = LoopKernel(self.name, self.inputs, self.outputs, self.temps, self.rows, stages,
                            input_vars)
        sizes = [len(expr_nodes([stage.value])) for stage in self.stages]
        if max(sizes, default=0) > MAX_EXPRESSION_NODES:
            raise UnsupportedBlock(f"inlined expression too large ({max(sizes)} nodes)")
        return kernel

    def _loops(self, shape: tuple[int, ...]) -> list[LoopVar]:
        self._loop_count += 1
        return [LoopVar(f"i{self._loop_count}_{d}", extent) for d, extent in enumerate(shape)]

    def _store_stage(self, var: Var, buffer: Buffer) -> None:
        """Stores ``var``: one stage over all of it, or, for a stored concatenate, a joined
        loop: one stage per operand over that operand's part of the output, so that each
        element reads only the operand it comes from (the predicated form reads every
        operand, clamped, and selects one)."""
        k = len(self.rows)
        node = self.producer[var]
        axis, parts = 0, [var]
        if node.op == "concatenate" and node.params["dimension"] >= k:
            axis, parts = node.params["dimension"], list(node.inputs)
        starts = [0]  # where each part begins along the concatenated axis
        for part in parts[:-1]:
            starts.append(starts[-1] + part.shape[axis])
        for part, start in zip(parts, starts):
            loops = self._loops(part.shape[k:])
            index = self._row_indices() + [Index.var(v) for v in loops]
            target = list(index)
            if start:
                target[axis] = index[axis] + start
            value = self.value_at(part, index)
            self.stages.append(Stage("store", buffer.name, linearize(target, var.shape), value,
                                     tuple(v for v in loops if v.extent > 1),
                                     caches=self._take_caches()))

    def _joint_store_stage(self, group: list[tuple[Var, Buffer]]) -> None:
        """Stores outputs of one shape in one pass: at every point the first is the stage's
        value and the others are stored beside it (as caches are), so what they share is
        computed once (a forward that saves ``tanh(x)`` for its backward next to the result
        computed ``tanh`` once per output, and read the inputs once per output, before)."""
        (first, buffer), *others = group
        loops = self._loops(first.shape[len(self.rows):])
        index = self._row_indices() + [Index.var(v) for v in loops]
        values = [self.value_at(var, index) for var, _ in group]
        target = linearize(index, first.shape)
        extra = tuple((other.name, target, value)
                      for (_, other), value in zip(others, values[1:]))
        self.stages.append(Stage("store", buffer.name, target, values[0],
                                 tuple(v for v in loops if v.extent > 1),
                                 caches=self._take_caches() + extra))

    def _reduce_stage(self, node: Node) -> None:
        kept_loops, reduced, operand_index = self._reduction_loops(node.inputs[0],
                                                                   node.params["axes"])
        value = self.value_at(node.inputs[0], operand_index)
        self._add_reduction(node.out, REDUCTIONS[node.op], value, kept_loops, reduced)

    def _reduction_loops(self, operand: Var, axes) -> tuple[list[LoopVar], list[LoopVar],
                                                             list[Index]]:
        """Kept loops (past the rows), one loop per reduced axis, and the operand's index."""
        axes = sorted(axes)
        kept_axes = [a for a in range(operand.ndim) if a not in axes]
        k = len(self.rows)
        kept_loops = self._loops(tuple(operand.shape[a] for a in kept_axes[k:]))
        # one loop per reduced axis: indices stay affine; reduce_order merges contiguous ones
        names = [f"j{self._loop_count}"] if len(axes) == 1 else \
            [f"j{self._loop_count}_{a}" for a in axes]
        reduced = [LoopVar(name, operand.shape[a]) for name, a in zip(names, axes)]
        kept_index = self._row_indices() + [Index.var(v) for v in kept_loops]
        operand_index: list[Index] = [Index()] * operand.ndim
        for axis, index in zip(kept_axes, kept_index):
            operand_index[axis] = index
        for axis, var in zip(axes, reduced):
            operand_index[axis] = Index.var(var)
        return kept_loops, reduced, operand_index

    def _depthwise_stage(self, node: Node) -> None:
        """A depthwise convolution (``depthwise.py``): for every output element, the sum over
        the window of input times weight, padding read as zero."""
        result, dtype = node.out, kernel_dtype(node.out)
        k = len(self.rows)
        kept_loops = self._loops(result.shape[k:])
        window = window_loops(node, f"w{self._loop_count}")
        out_index = self._row_indices() + [Index.var(v) for v in kept_loops]
        tap = window_tap(node, out_index, window)
        x = self.value_at(node.inputs[0], tap.lhs)
        inside = self._inside(tap.inside)
        if inside is not None:
            x = Expr("select", (inside, x, Expr("const", (), dtype, (0,))), dtype)
        value = Expr("mul", (x, self.value_at(node.inputs[1], tap.rhs)), dtype)
        self._add_reduction(result, "add", value, kept_loops, window)

    def _dot_stage(self, node: Node) -> None:
        """A contraction (dot_general): for every output element (batch dimensions, then the
        free ones of lhs, then of rhs), the sum over the contracted dimensions of lhs times
        rhs, both in the result's dtype. Which GEMMs a backend takes is its policy
        (``codegen/kernel/kernel_blocks.py``, ``gemm_profitability``); large ones stay with XLA."""
        lhs, rhs = node.inputs
        result, dtype = node.out, kernel_dtype(node.out)
        (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = node.params["dimension_numbers"]
        kept_loops = self._loops(result.shape[len(self.rows):])
        out_index = iter(self._row_indices() + [Index.var(v) for v in kept_loops])
        contracted = [LoopVar(f"c{self._loop_count}_{n}", lhs.shape[d])
                      for n, d in enumerate(lhs_contract)]
        lhs_index: list[Index] = [Index()] * lhs.ndim
        rhs_index: list[Index] = [Index()] * rhs.ndim
        for a, b in zip(lhs_batch, rhs_batch):
            lhs_index[a] = rhs_index[b] = next(out_index)
        for a in range(lhs.ndim):
            if a not in lhs_contract and a not in lhs_batch:
                lhs_index[a] = next(out_index)
        for b in range(rhs.ndim):
            if b not in rhs_contract and b not in rhs_batch:
                rhs_index[b] = next(out_index)
        for var, a, b in zip(contracted, lhs_contract, rhs_contract):
            lhs_index[a] = rhs_index[b] = Index.var(var)
        x, y = (self._converted(self.value_at(v, i), dtype)
                for v, i in ((lhs, lhs_index), (rhs, rhs_index)))
        self._add_reduction(result, "add", Expr("mul", (x, y), dtype), kept_loops, contracted)

    def _scatter_add_stage(self, node: Node) -> None:
        """A scatter-add (``indexing.py``): per output element, the operand plus the updates
        that land on it, summed from -0.0 so that an element no update reaches is the operand
        exactly (its sign of zero included)."""
        kept_loops = self._loops(node.out.shape[len(self.rows):])
        out_index = self._row_indices() + [Index.var(v) for v in kept_loops]
        loop = LoopVar(f"u{self._loop_count}", scatter_count(node) + 1)
        value = scatter_add_value(self, node, out_index, loop)
        self._add_reduction(node.out, "add", value, kept_loops, [loop], init=-0.0)

    def _add_reduction(self, result: Var, combiner: str, value: Expr,
                       kept_loops: list[LoopVar], reduced: list[LoopVar],
                       init: Any = None) -> None:
        """The stages that reduce ``value`` over ``reduced`` into ``result``'s storage
        (from ``init``, by default the combiner's identity)."""
        buffer, target = self._result_storage(result, kept_loops)
        stage = Stage("reduce", buffer.name, target, value,
                      tuple(v for v in kept_loops if v.extent > 1),
                      tuple(v for v in reduced if v.extent > 1), combiner,
                      identity(combiner, kernel_dtype(result)) if init is None else init,
                      self._take_caches())
        memory = {b.name for b in (*self.inputs, *self.outputs)}
        if self.rows:
            chunks, limit = 1, MAX_ROW_TEMP_ELEMENTS
        else:
            chunks, limit = MAX_CHUNKS, MAX_PARTIAL_ELEMENTS
        self.stages.extend(split_reduction(stage, memory, self._partial_temp(result),
                                           chunks, limit))

    def _result_storage(self, result: Var, kept_loops: list[LoopVar]) -> tuple[Buffer, Index]:
        """Where a stage over ``kept_loops`` (past the rows) writes ``result``: the block
        output, or a new temporary (one row of it inside the rows loop)."""
        k = len(self.rows)
        kept_index = self._row_indices() + [Index.var(v) for v in kept_loops]
        if result in self.storage and self.storage[result].dtype == kernel_dtype(result):
            return self.storage[result], linearize(kept_index, result.shape)  # an output
        local_shape = result.shape[k:]
        if int(np.prod(local_shape)) > MAX_ROW_TEMP_ELEMENTS and self.rows:
            raise NotRowLocal()
        shape = local_shape if self.rows else result.shape
        buffer = Buffer(f"t{len(self.temps)}", shape, kernel_dtype(result), "temp")
        self.temps.append(buffer)
        self.storage[result] = buffer
        return buffer, linearize(kept_index[k:] if self.rows else kept_index, shape)

    def _partial_temp(self, result: Var):
        return lambda shape: self._new_temp(shape, kernel_dtype(result))

    def _new_temp(self, shape: tuple[int, ...], dtype: str) -> str:
        buffer = Buffer(f"t{len(self.temps)}", shape, dtype, "temp")
        self.temps.append(buffer)
        return buffer.name

    def _take_caches(self) -> tuple[tuple[str, Index, Expr], ...]:
        caches, self._caches = tuple(self._caches), []
        return caches


def _store_groups(stored: list[tuple[Var, Buffer]], rows: int,
                  producer: Mapping[Var, Node]) -> list[list[tuple[Var, Buffer]]]:
    """The stored outputs grouped by shape, in order; a stored concatenate (a joined loop per
    operand) keeps a stage of its own."""
    groups: dict[Any, list[tuple[Var, Buffer]]] = {}
    for var, buffer in stored:
        node = producer[var]
        joined = node.op == "concatenate" and node.params["dimension"] >= rows
        groups.setdefault(var if joined else var.shape, []).append((var, buffer))
    return list(groups.values())
