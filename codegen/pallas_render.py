"""Renders a kernel IR ``LoopKernel`` as the Python source of one ``pl.pallas_call`` (the Pallas
code generator).

Same IR as the C renderer, other spelling. A C stage is a loop nest computing one element at a
time; here a stage is *array code* over its whole iteration space (the block's rows, then the
stage's loops, then its reduce loops, one array axis each; an axis a value does not depend on
has size 1 and broadcasts):

* a load is a read of the input's block followed by the view the flat index describes
  (reshape, slice, rev, transpose, broadcast: ``pallas_views``); an index that is no view (pad
  and concatenate reads) is a gather on the flattened block, marked in the source;
* an operation is spelled by ``PALLAS_OPS`` (lax functions: XLA semantics, NaN-propagating
  max/min, C-style integer division and remainder), a reduction by ``REDUCERS``;
* temporaries are in-kernel values, never refs; a block output read by a later stage is kept as
  a value too.

The ``rows`` loop is the grid: buffers that every access reads row by row are passed as
``(rows, row size)`` with blocks of ``block_rows`` rows; the others whole. The reshapes around
the call are row-major bitcasts, not copies. When some access mixes rows with other indices (a
transpose across rows) the grid has one step, so that the whole buffer is at hand.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from dnnfusion_jax.trace import trace_function
    >>> from dnnfusion_jax.plan import whole_graph_block
    >>> from dnnfusion_jax.lowering import lower_block
    >>> g = trace_function(lambda x: jnp.exp(x) * 2.0, [jnp.ones((4, 8))]).graph
    >>> source = render_pallas(lower_block(whole_graph_block(g), g.constants, "k"))
    >>> print(source.split("def k(")[0].strip())
    def k_body(in0_ref, out0_ref):
        in0 = in0_ref[...]
        # out0[i1_0 + r0*8] = mul(exp(in0[i1_0 + r0*8]), 2.0)  for rows, i1_0<8
        v0 = lax.exp(in0)
        v1 = lax.mul(v0, np.float32(2.0))
        out0_ref[...] = v1
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from dnnfusion_jax.kernel_ir import (Buffer, Div, Expr, Index, LoopKernel, LoopVar, Stage,
                                     expr_nodes, render_expr)

from .pallas_views import Step, access_digits, load_view, loop_vars, store_view

PALLAS_OPS = {
    # kernel IR operation → spelling; {0} {1} {2} are operands (arrays of equal rank or scalars)
    "neg": "lax.neg({0})", "abs": "lax.abs({0})", "exp": "lax.exp({0})",
    "exp2": "lax.exp2({0})", "log": "lax.log({0})", "log1p": "lax.log1p({0})",
    "expm1": "lax.expm1({0})", "tanh": "lax.tanh({0})", "logistic": "lax.logistic({0})",
    "sqrt": "lax.sqrt({0})", "rsqrt": "lax.rsqrt({0})", "cbrt": "lax.cbrt({0})",
    "sin": "lax.sin({0})", "cos": "lax.cos({0})", "tan": "lax.tan({0})",
    "floor": "lax.floor({0})", "ceil": "lax.ceil({0})",
    "round_away": "lax.round({0}, lax.RoundingMethod.AWAY_FROM_ZERO)",
    "round_even": "lax.round({0}, lax.RoundingMethod.TO_NEAREST_EVEN)",
    "sign": "lax.sign({0})", "erf": "lax.erf({0})", "erfc": "lax.erfc({0})",
    "is_finite": "lax.is_finite({0})", "not": "lax.bitwise_not({0})",
    "square": "lax.square({0})",
    "add": "lax.add({0}, {1})", "sub": "lax.sub({0}, {1})", "mul": "lax.mul({0}, {1})",
    "div": "lax.div({0}, {1})",  # integers: rounds toward zero, as XLA
    "rem": "lax.rem({0}, {1})",  # the sign of the dividend (C fmod), as XLA
    "max": "lax.max({0}, {1})", "min": "lax.min({0}, {1})",  # NaN-propagating, as XLA
    "pow": "lax.pow({0}, {1})", "atan2": "lax.atan2({0}, {1})",
    "and": "lax.bitwise_and({0}, {1})", "or": "lax.bitwise_or({0}, {1})",
    "xor": "lax.bitwise_xor({0}, {1})",
    "eq": "lax.eq({0}, {1})", "ne": "lax.ne({0}, {1})", "lt": "lax.lt({0}, {1})",
    "le": "lax.le({0}, {1})", "gt": "lax.gt({0}, {1})", "ge": "lax.ge({0}, {1})",
    "select": "jnp.where({0}, {1}, {2})",  # lax.select does not broadcast size-1 dimensions
}
"""Kernel IR operation → Pallas (jax.lax) spelling: the primitives ``jax.jit`` itself runs."""

REDUCERS = {"add": "lax.reduce_sum", "mul": "lax.reduce_prod", "max": "lax.reduce_max",
            "min": "lax.reduce_min", "and": "lax.reduce_and", "or": "lax.reduce_or"}
"""Reduce-stage combiner → reduction over array axes."""

JNP_DTYPES = {"f32": "jnp.float32", "f64": "jnp.float64", "i32": "jnp.int32",
              "i64": "jnp.int64", "u32": "jnp.uint32", "u8": "jnp.uint8", "i8": "jnp.int8",
              "bool": "jnp.bool_"}
NP_SCALARS = {"f32": "np.float32", "f64": "np.float64", "i32": "np.int32", "i64": "np.int64",
              "u32": "np.uint32", "u8": "np.uint8", "i8": "np.int8", "bool": "np.bool_"}

INDEX_DTYPES = ("i32", "i64")  # index arithmetic is int32 (buffers stay below 2**31 elements)
COMMENT_WIDTH = 100


class Unrenderable(Exception):
    """The kernel has something this renderer cannot spell exactly; the message says what."""


@dataclass(frozen=True)
class Layout:
    """How a buffer is passed: ``rows`` as (all rows, row size) in blocks of rows, else flat."""

    rows: bool
    size: int  # row size (rows) or total size (flat)


def render_pallas(kernel: LoopKernel, block_rows: int | None = None) -> str:
    """Python source defining ``<name>_body`` (the kernel) and ``<name>(*inputs) -> outputs``
    (the ``pl.pallas_call``); it expects ``jax, jnp, lax, np, pl`` and ``INTERPRET``."""
    return _Renderer(kernel, block_rows).render()


class _Renderer:
    def __init__(self, kernel: LoopKernel, block_rows: int | None) -> None:
        self.kernel = kernel
        for buffer in (*kernel.inputs, *kernel.outputs, *kernel.temps):
            if buffer.size == 0 or buffer.size >= 2 ** 31:
                raise Unrenderable(f"buffer {buffer.name} has {buffer.size} elements")
            if buffer.dtype not in JNP_DTYPES:
                raise Unrenderable(f"dtype {buffer.dtype}")
        # every load of each buffer, per stage (layouts and value lifetimes depend on them)
        self.stage_loads: list[dict[str, list[Index]]] = []
        for stage in kernel.stages:
            loads: dict[str, list[Index]] = {}
            for e in expr_nodes([stage.value]):
                if e.op == "load":
                    loads.setdefault(e.attrs[0], []).append(e.attrs[1])
            self.stage_loads.append(loads)
        self.rows_total = math.prod(v.extent for v in kernel.rows) if kernel.rows else 0
        self.row = LoopVar("r", max(self.rows_total, 1))  # the flat row inside the kernel
        self.single_step = False
        self.layouts = {b.name: self._layout(b) for b in (*kernel.inputs, *kernel.outputs,
                                                          *kernel.temps)}
        self.block_rows = self.rows_total
        if self.rows_total and not self.single_step and block_rows \
                and self.rows_total % block_rows == 0:
            self.block_rows = block_rows
        self.lines: list[str] = []
        self.count = 0
        self.shapes: dict[str, tuple[int, ...]] = {}  # in-kernel array name → static shape

    # -- layouts --------------------------------------------------------------------------
    def _accesses(self, name: str) -> list[Index]:
        """Every index ``name`` is stored at or loaded from."""
        found = [s.index for s in self.kernel.stages if s.target == name]
        for loads in self.stage_loads:
            found += loads.get(name, [])
        return found

    def _layout(self, buffer: Buffer) -> Layout:
        if not self.kernel.rows:
            return Layout(False, buffer.size)
        if buffer.role == "temp":  # one row's worth, indexed by the row-local part only
            return Layout(True, buffer.size)
        accesses = self._accesses(buffer.name)
        if buffer.size % self.rows_total == 0:
            size = buffer.size // self.rows_total
            if all(self._row_local(index, size) is not None for index in accesses):
                return Layout(True, size)
        if any(loop_vars(index) & set(self.kernel.rows) for index in accesses):
            self.single_step = True  # the access needs other rows than its own block's
        return Layout(False, buffer.size)

    def _row_local(self, index: Index, size: int) -> Index | None:
        """The part of ``index`` within the row's ``size`` elements, if the rest is exactly
        ``flat row · size``; None otherwise."""
        stride, strides = self.rows_total, {}
        for var in self.kernel.rows:
            stride //= var.extent
            strides[var] = stride * size
        rows = set(self.kernel.rows)
        local = []
        for atom, coef in index.terms:
            if atom in rows:
                if coef != strides[atom]:
                    return None
            elif isinstance(atom, LoopVar) or not (loop_vars(atom.index) & rows):
                local.append((atom, coef))
            else:
                return None
        if any(var.extent > 1 and all(a != var for a, _ in index.terms) for var in rows):
            return None
        local_index = Index(tuple(local), index.const)
        low, high = local_index.bounds()
        if low < 0 or high >= size:
            return None
        return local_index

    def _global(self, index: Index) -> Index:
        """``index`` with the row variables written as digits of the flat row ``r``."""
        mapping, stride = {}, self.rows_total
        for position, var in enumerate(self.kernel.rows):
            stride //= var.extent
            flat = Index.var(self.row)
            mapping[var] = flat // stride if position == 0 else flat.digit(stride, var.extent)
        return substitute(index, mapping)

    # -- source ---------------------------------------------------------------------------
    def emit(self, text: str) -> None:
        self.lines.append("    " + text)

    def fresh(self, shape: tuple[int, ...], prefix: str = "v") -> str:
        name = f"{prefix}{self.count}"
        self.count += 1
        self.shapes[name] = shape
        return name

    def render(self) -> str:
        k = self.kernel
        refs = [f"{b.name}_ref" for b in (*k.inputs, *k.outputs)]
        self.lines.append(f"def {k.name}_body({', '.join(refs)}):")
        for buffer in k.inputs:
            if self._accesses(buffer.name):
                self.emit(f"{buffer.name} = {buffer.name}_ref[...]")
                self.shapes[buffer.name] = self._block_shape(buffer)
        for position, stage in enumerate(k.stages):
            self._stage(position, stage)
        source = "\n".join(self.lines) + "\n\n\n" + self._call() + "\n"
        return source

    def _block_shape(self, buffer: Buffer) -> tuple[int, ...]:
        layout = self.layouts[buffer.name]
        return (self.block_rows, layout.size) if layout.rows else (layout.size,)

    def _call(self) -> str:
        k = self.kernel
        steps = self.rows_total // self.block_rows if self.rows_total else 1
        specs, args = [], []
        for buffer in k.inputs:
            specs.append(self._spec(buffer))
            args.append(f"{buffer.name}.reshape({_args(self._full_shape(buffer))})")
        out_specs = [self._spec(b) for b in k.outputs]
        out_shapes = [f"jax.ShapeDtypeStruct({_tuple(self._full_shape(b))}, "
                      f"{JNP_DTYPES[b.dtype]})" for b in k.outputs]
        results = [f"outs[{n}].reshape({_args(b.shape)})" for n, b in enumerate(k.outputs)]
        per_step = f"{self.block_rows} rows per step" if self.rows_total else "no rows loop"
        if self.single_step:
            per_step += " (one step: a read crosses rows)"
        return "\n".join([
            f"def {k.name}({', '.join(b.name for b in k.inputs)}):",
            f"    outs = pl.pallas_call(",
            f"        {k.name}_body,",
            f"        grid=({steps},),  # {per_step}",
            f"        in_specs=[{', '.join(specs)}],",
            f"        out_specs=[{', '.join(out_specs)}],",
            f"        out_shape=[{', '.join(out_shapes)}],",
            f"        interpret=INTERPRET,",
            f"    )({', '.join(args)})",
            f"    return [{', '.join(results)}]",
        ])

    def _full_shape(self, buffer: Buffer) -> tuple[int, ...]:
        layout = self.layouts[buffer.name]
        return (self.rows_total, layout.size) if layout.rows else (layout.size,)

    def _spec(self, buffer: Buffer) -> str:
        layout = self.layouts[buffer.name]
        if layout.rows:  # index maps return block indices, not element offsets
            return f"pl.BlockSpec(({self.block_rows}, {layout.size}), lambda g: (g, 0))"
        return f"pl.BlockSpec(({layout.size},), lambda g: (0,))"

    # -- stages -----------------------------------------------------------------------------
    def _stage(self, position: int, stage: Stage) -> None:
        lead = (self.block_rows,) if self.rows_total else ()
        axes = (*stage.loops, *stage.reduce_loops)
        full = lead + tuple(v.extent for v in axes)
        self.axes, self.iotas, self.memo = axes, {}, {}
        head = (f"{stage.target}[{stage.index}] = " if stage.kind == "store" else
                f"{stage.target}[{stage.index}] = {stage.combiner}-reduce over "
                + ", ".join(f"{v}<{v.extent}" for v in stage.reduce_loops) + ": ")
        where = ", ".join((["rows"] if lead else []) + [f"{v}<{v.extent}" for v in stage.loops])
        self.emit(_comment(head + render_expr(stage.value), f"  for {where or '()'}"))
        value, *cached = self._values([stage.value, *(expr for _, _, expr in stage.caches)])
        for (temp, index, _), code in zip(stage.caches, cached):
            self._store(self.kernel.buffer(temp), index, axes, code, full)
        if value not in self.shapes:  # a literal: an array of it (never a captured constant)
            value = self._assign(f"jnp.full({_tuple(full)}, {value})", full)
        kept = full[:len(lead) + len(stage.loops)]
        if stage.kind == "reduce":
            if stage.reduce_loops:
                axes_text = _tuple(tuple(range(len(kept), len(full))))
                value = self._assign(f"{REDUCERS[stage.combiner]}("
                                     f"{self._broadcast(value, full)}, {axes_text})", kept)
            else:  # a reduction over size-1 axes: one combine with the identity
                init = _literal(stage.init, stage.value.dtype)
                value = self._assign(PALLAS_OPS[stage.combiner].format(init, value),
                                     self._shape(value))
        buffer = self.kernel.buffer(stage.target)
        keep = buffer.role == "temp" or any(buffer.name in later
                                            for later in self.stage_loads[position + 1:])
        self._store(buffer, stage.index, stage.loops, value, kept, keep)

    def _store(self, buffer: Buffer, index: Index, loops: tuple[LoopVar, ...], value: str,
               shape: tuple[int, ...], keep: bool = True) -> None:
        """Writes ``value`` (over ``shape``: the row block, then ``loops``) to ``buffer`` at
        ``index``: a temporary (or an output read later) as an in-kernel value, an output to
        its ref."""
        layout = self.layouts[buffer.name]
        local, store_axes = self._buffer_index(buffer, index, loops)
        found = access_digits(local, store_axes)
        steps = found and store_view(*found, layout.size, self.block_rows if layout.rows else 0)
        if not steps:
            raise Unrenderable(f"the store to {buffer.name} at [{index}] is not a "
                               "permutation of its block")
        flat = self._apply(self._broadcast(value, shape), shape, steps)
        if keep:
            self.emit(f"{buffer.name} = {flat}")
            self.shapes[buffer.name] = self._block_shape(buffer)
            flat = buffer.name
        if buffer.role == "output":
            self.emit(f"{buffer.name}_ref[...] = {flat}")

    def _buffer_index(self, buffer: Buffer, index: Index,
                      axes: tuple[LoopVar, ...]) -> tuple[Index, list[LoopVar]]:
        """The index into ``buffer``'s block and the axes it ranges over (the flat row first
        when the block is the whole buffer of a kernel with rows)."""
        layout = self.layouts[buffer.name]
        if layout.rows:
            local = index if buffer.role == "temp" else self._row_local(index, layout.size)
            return local, list(axes)
        if self.rows_total:
            return self._global(index), [self.row, *axes]
        return index, list(axes)

    # -- expressions ------------------------------------------------------------------------
    def _values(self, roots: list[Expr]) -> list[str]:
        """Names of the values of ``roots`` (shared sub-expressions computed once)."""
        names: dict[Expr, str] = {}
        for expr in expr_nodes(roots):
            if expr.op == "const":
                names[expr] = _literal(expr.attrs[0], expr.dtype)
            elif expr.op == "load":
                names[expr] = self._load(expr)
            elif expr.op == "index":
                code, shape = self._index_code(self._global(expr.attrs[0]))
                if expr.dtype not in INDEX_DTYPES:
                    code = f"lax.convert_element_type({code}, {JNP_DTYPES[expr.dtype]})"
                names[expr] = self._assign(code, shape)
            elif expr.op == "convert":
                operand = names[expr.args[0]]
                names[expr] = self._assign(f"lax.convert_element_type({operand}, "
                                           f"{JNP_DTYPES[expr.dtype]})", self._shape(operand))
            elif expr.op in PALLAS_OPS:
                operands = [names[a] for a in expr.args]
                shape = _broadcast_shapes([self._shape(o) for o in operands])
                names[expr] = self._assign(PALLAS_OPS[expr.op].format(*operands), shape)
            else:
                raise Unrenderable(f"no Pallas spelling for {expr.op}")
        return [names[root] for root in roots]

    def _assign(self, code: str, shape: tuple[int, ...]) -> str:
        if code.isidentifier() and self._shape(code) == shape:
            return code  # already a named value: no alias
        name = self.fresh(shape)
        self.emit(f"{name} = {code}")
        return name

    def _shape(self, name: str) -> tuple[int, ...]:
        return self.shapes.get(name, ())  # literals are scalars

    def _rank_shape(self, extents: dict[LoopVar, int]) -> tuple[int, ...]:
        """The in-kernel shape of a value over ``extents``' axes (the row axis: one block)."""
        lead = (self.block_rows if self.row in extents else 1,) if self.rows_total else ()
        return lead + tuple(extents.get(v, 1) for v in self.axes)

    def _load(self, expr: Expr) -> str:
        name, index = expr.attrs
        key = (name, index)
        if key in self.memo:
            return self.memo[key]
        buffer = self.kernel.buffer(name)
        layout = self.layouts[name]
        index, axes = self._buffer_index(buffer, index, self.axes)
        lead = self.block_rows if layout.rows else 0
        found = access_digits(index, axes)
        steps = found and load_view(*found, layout.size, lead)
        if steps:
            code, shape = self._view(name, steps)
        else:
            code, shape = self._gather(name, index, axes, lead)
        self.memo[key] = result = self._assign(code, shape)
        return result

    def _view(self, name: str, steps: list[Step]) -> tuple[str, tuple[int, ...]]:
        shape = self._shape(name)
        return self._apply(name, shape, steps), _final_shape(shape, steps)

    def _apply(self, code: str, shape: tuple[int, ...], steps: list[Step]) -> str:
        for step in steps:
            kind = step[0]
            if kind == "reshape":
                if step[1] != shape:
                    code = f"{code}.reshape({_args(step[1])})"
            elif kind == "slice":
                parts = [":" if (a, b) == (0, n) else f"{a}:{b}"
                         for a, b, n in zip(step[1], step[2], shape)]
                code = f"{code}[{', '.join(parts)}]"
            elif kind == "rev":
                code = f"lax.rev({code}, {_tuple(step[1])})"
            elif kind == "transpose":
                code = f"{code}.transpose({_args(step[1])})"
            else:
                code = f"jnp.broadcast_to({code}, {_tuple(step[1])})"
            shape = _final_shape(shape, [step])
        return code

    def _gather(self, name: str, index: Index, axes: list[LoopVar],
                lead: int) -> tuple[str, tuple[int, ...]]:
        """A read that is no view of the block: flat positions computed in the kernel, clipped
        (a pad or concatenate read is out of range exactly where a select discards it).
        Exact everywhere; on a GPU a candidate for masked loads instead."""
        self.emit(f"# gather: [{index}] is no view of {name} (a GPU fallback candidate)")
        code, shape = self._index_code(index)
        if not lead:  # the block is the flat buffer: positions are the index itself
            shape = self._rank_shape({v: v.extent for v in axes})  # never a scalar result
            positions = f"jnp.broadcast_to({code}, {_tuple(shape)})"
            return f"jnp.take({name}, {positions}, mode=\"clip\")", shape
        # a block of rows: the same positions within every row
        full = tuple(v.extent for v in self.axes)
        count = math.prod(full)
        positions = f"jnp.broadcast_to({code}, {_tuple((1,) + full)}).reshape(1, {count})"
        return (f"jnp.take_along_axis({name}, jnp.broadcast_to({positions}, ({lead}, {count})), "
                f"axis=1, mode=\"clip\").reshape({_args((lead,) + full)})", (lead,) + full)

    def _index_code(self, index: Index) -> tuple[str, tuple[int, ...]]:
        """int32 array code of ``index`` over the stage axes, and its static shape."""
        shape = self._rank_shape({v: v.extent for v in loop_vars(index)})
        if not index.terms:  # a constant: still an array of the stage's rank
            return f"jnp.full({_tuple(shape)}, {index.const}, jnp.int32)", shape
        return self._index_text(index), shape

    def _index_text(self, index: Index) -> str:
        parts = []
        for atom, coef in index.terms:
            if isinstance(atom, LoopVar):
                text = self._iota(atom)
            elif isinstance(atom, Div):
                text = f"({self._index_text(atom.index)}) // {atom.divisor}"
            else:
                inner = self._index_text(atom.index)
                inner = f"({inner}) // {atom.divisor}" if atom.divisor != 1 else f"({inner})"
                text = f"({inner}) % {atom.modulus}"
            parts.append(text if coef == 1 else f"{text} * {coef}")
        if index.const or not parts:
            parts.append(str(index.const))
        return f"({' + '.join(parts)})" if len(parts) > 1 else parts[0]

    def _iota(self, var: LoopVar) -> str:
        if var not in self.iotas:
            shape = self._rank_shape({var: var.extent})
            axis = 0 if var == self.row else (1 if self.rows_total else 0) + self.axes.index(var)
            iota = f"lax.broadcasted_iota(jnp.int32, {_tuple(shape)}, {axis})"
            if var == self.row:  # the global row: the grid step's first row plus the offset
                iota = f"pl.program_id(0) * {self.block_rows} + {iota}"
            self.emit(f"{var.name} = {iota}")
            self.shapes[var.name] = shape
            self.iotas[var] = var.name
        return self.iotas[var]

    def _broadcast(self, name: str, shape: tuple[int, ...]) -> str:
        if self._shape(name) == shape:
            return name
        return f"jnp.broadcast_to({name}, {_tuple(shape)})"


def substitute(index: Index, mapping: dict[LoopVar, Index]) -> Index:
    """``index`` with loop variables replaced (rebuilt with Index's simplifying operations)."""
    result = Index.constant(index.const)
    for atom, coef in index.terms:
        if isinstance(atom, LoopVar):
            term = mapping.get(atom, Index.var(atom))
        elif isinstance(atom, Div):
            term = substitute(atom.index, mapping) // atom.divisor
        else:
            term = substitute(atom.index, mapping).digit(atom.divisor, atom.modulus)
        result = result + term * coef
    return result


def _final_shape(shape: tuple[int, ...], steps: list[Step]) -> tuple[int, ...]:
    for step in steps:
        if step[0] in ("reshape", "broadcast"):
            shape = tuple(step[1])
        elif step[0] == "slice":
            shape = tuple(b - a for a, b in zip(step[1], step[2]))
        elif step[0] == "transpose":
            shape = tuple(shape[p] for p in step[1])
    return shape


def _broadcast_shapes(shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    rank = max((len(s) for s in shapes), default=0)
    result = [1] * rank
    for shape in shapes:
        for d, extent in enumerate(shape):
            result[d] = max(result[d], extent)
    return tuple(result)


def _tuple(values: tuple) -> str:
    return f"({values[0]},)" if len(values) == 1 else f"({', '.join(map(str, values))})"


def _args(values: tuple) -> str:
    """Arguments of ``reshape``/``transpose``: ``2, 3`` (``()`` for a scalar shape)."""
    return ", ".join(map(str, values)) if values else "()"


def _literal(value: Any, dtype: str) -> str:
    """A typed scalar that reads back exactly (inf and NaN by name)."""
    if value in ("min", "max"):
        return f"np.iinfo({NP_SCALARS[dtype]}).{value}"
    if dtype in ("f32", "f64"):
        value = float(value)
        text = ("np.nan" if math.isnan(value) else
                ("-np.inf" if value < 0 else "np.inf") if math.isinf(value) else repr(value))
        return f"{NP_SCALARS[dtype]}({text})"
    if dtype == "bool":
        return f"np.bool_({bool(value)})"
    if dtype in INDEX_DTYPES:  # compared with int32 index arithmetic: keep it weakly typed
        return str(int(value)) if dtype == "i64" else f"np.int32({int(value)})"
    return f"{NP_SCALARS[dtype]}({int(value)})"


def _comment(text: str, suffix: str) -> str:
    room = COMMENT_WIDTH - len(suffix) - 2
    return "# " + (text if len(text) <= room else text[:room - 3] + "...") + suffix
