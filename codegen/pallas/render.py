"""Renders a kernel IR ``LoopKernel`` as the Python source of one ``pl.pallas_call``, written
as Triton wants a GPU kernel (the Pallas code generator; interpret mode runs the same source).

Same IR as the C renderer, other spelling. Where C runs a loop nest one element at a time, a
Pallas stage is *array code* over a tile:

* **Grid.** The grid walks the kernel's rows, ``block`` of them per program, or every point of
  a one-stage kernel (``grid.py``); the backend chooses ``block``.
* **Tiles of powers of two.** A stage is array code over (the program's rows, its kept loops
  flattened, its reduced loops flattened), each axis padded to a power of two (Triton's rule
  for every array); a loop variable is a digit of its axis. Lanes past an extent are masked:
  never loaded, stored or reduced (a reduction sees its identity there).
* **Pointers.** Buffers are passed flat and every access is a masked ``plgpu.load`` or
  ``plgpu.store`` at the offsets its ``Index`` gives: Reorganize and Shuffle operators are index
  arithmetic in the kernel, never copies; a read that can leave its buffer (pad, concatenate)
  is masked where it does, and its select discards those lanes. A masked store points its
  masked-off lanes one past the end of the buffer: a GPU never touches them, but interpret mode
  writes every lane (the old value where masked), and a padded lane's offset can be a real
  lane's (lanes 5-7 of a row of 5 are the next row's 0-2), whose value it would then undo.
* **Values between stages** stay in registers when a later stage reads them lane for lane as
  they were computed or loaded (softmax's row maximum and exponentials, layer norm's row).
  Any other read goes through memory: temporaries live in global scratch, one slot per row
  (extra outputs of the call, dropped after it), and the reading stage starts with
  ``BARRIER()``: a block barrier on a GPU (the program's threads see each other's writes),
  nothing in interpret mode. A kernel that reads an output it wrote in another row's place
  runs as one program.
* **Operations** are ``lax`` functions (XLA semantics: NaN-propagating max/min, C-style integer
  division); those Triton lacks (erf, erfc, round) come from ``math.py`` as ``pm.*``. A
  GEMM stage (from a dot_general the backend took into the kernel) is one ``lax.dot_general``
  of two tiles, Triton's ``tl.dot``, when each tile side is 16 or more.

The source expects ``jax, jnp, lax, np, pl, plgpu, pm``, ``INTERPRET`` and ``BARRIER``
(``backend.namespace``); its spelling tables are ``spelling.py``. The expression walk and the
index printer are shared with C (``codegen/kernel/printer.py``); ``call.py`` writes the
``pl.pallas_call`` around the body and ``held.py`` decides which values stay in registers.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> from dnnfusion_jax.fusion.plan import whole_graph_block
    >>> from codegen.kernel.lowering import lower_block
    >>> g = trace_function(lambda x: jnp.exp(x) * 2.0, [jnp.ones((4, 6))]).graph
    >>> source = render_pallas(lower_block(whole_graph_block(g), g.constants, "k"), block=16)
    >>> print(source.split("def k(")[0].strip())
    def k_body(in0_ref, out0_ref):
        # out0[i1_0 + r0*6] = mul(exp(in0[i1_0 + r0*6]), 2.0)  for rows, i1_0<6
        r = pl.program_id(0) * 16 + lax.broadcasted_iota(jnp.int32, (16,), 0)
        v0 = plgpu.load(in0_ref.at[r], mask=r < 24, other=np.float32(0.0))
        v1 = lax.exp(v0)
        v2 = lax.mul(v1, np.float32(2.0))
        plgpu.store(out0_ref.at[jnp.where(r < 24, r, 24)], v2, mask=r < 24)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from codegen.kernel.guarded_loads import index_vars
from codegen.kernel.index import Index, LoopVar, substitute
from codegen.kernel.kernel_ir import STORAGE_ONLY, Buffer, Expr, LoopKernel, Stage, render_expr

from codegen.kernel.printer import ExprWalker, IndexPrinter
from codegen.pallas.call import call_source
from codegen.pallas.held import Held, Lanes, reading
from codegen.pallas.grid import grid_shape, is_contraction, next_power_of_two
from codegen.pallas.spelling import (INDEX_DTYPES, JNP_DTYPES, PALLAS_OPS, REDUCERS, comment, literal,
                              shape_args, shape_tuple)


class Unrenderable(Exception):
    """The kernel has something this renderer cannot spell exactly; the message says what."""


def render_pallas(kernel: LoopKernel, block: int | None = None) -> str:
    """Python source defining ``<name>_body`` (the kernel) and ``<name>(*inputs) -> outputs``
    (the ``pl.pallas_call``). ``block``: grid points per program, a power of two (default:
    every point in one program, interpret mode's choice)."""
    first = _Renderer(kernel, block)
    first.render()  # finds what later stages read back from memory; the second pass knows it
    return _Renderer(kernel, block, first.memory()).render()


@dataclass(frozen=True)
class _Memory:
    """What a first pass found: the temporaries some stage reads back from memory (the others
    need no scratch and no store), and the stages that read back (they wait on BARRIER())."""

    read_back: frozenset[str]
    barriers: frozenset[int]


@dataclass
class _Axis:
    """One array axis of a stage tile: ``var`` walks ``extent`` values padded to ``size``."""

    var: LoopVar
    extent: int
    size: int
    position: int = 0


class _Renderer(ExprWalker):
    def __init__(self, kernel: LoopKernel, block: int | None,
                 memory: _Memory | None = None) -> None:
        self.kernel = kernel
        self.known = memory  # None: the first pass, which stores every temporary
        for buffer in (*kernel.inputs, *kernel.outputs, *kernel.temps):
            if buffer.size >= 2 ** 31:  # int32 offsets (empty arrays stop at the lowering)
                raise Unrenderable(f"buffer {buffer.name} has {buffer.size} elements")
            if buffer.dtype not in JNP_DTYPES:
                raise Unrenderable(f"dtype {buffer.dtype}")
        self.grid = grid_shape(kernel)
        whole = next_power_of_two(self.grid.points)
        if block is None or self.grid.one_program:
            block = whole
        if block & (block - 1):
            raise Unrenderable(f"block of {block} points is no power of two")
        self.block = min(block, whole)
        self.steps = -(-self.grid.points // self.block)
        self.point = LoopVar("r", self.grid.points)  # the flat grid point
        self.walked: dict[LoopVar, Index] = {}
        stride = self.grid.points
        for var in self.grid.walked:
            stride //= var.extent
            self.walked[var] = Index.var(self.point).digit(stride, var.extent)
        self.lines: list[str] = []
        self.count = 0
        self.written: set[str] = set()  # buffers stored by earlier stages
        self.read_back: set[str] = set()  # of those, the ones a later stage loads from memory
        self.barriers: set[int] = set()  # the stages that load them
        self.stored: dict[str, list[Held]] = {}  # buffer → values held in registers
        in_memory = memory.read_back if memory else {t.name for t in kernel.temps}
        self.scratch = [t for t in kernel.temps if t.name in in_memory]
        self.varies: dict[str, frozenset[LoopVar]] = {}  # value name → axes it varies along

    # -- source ---------------------------------------------------------------------------
    def emit(self, text: str) -> None:
        self.lines.append("    " + text)

    def fresh(self, prefix: str = "v") -> str:
        name = f"{prefix}{self.count}"
        self.count += 1
        return name

    def render(self) -> str:
        k = self.kernel
        refs = [f"{b.name}_ref" for b in (*k.inputs, *k.outputs, *self.scratch)]
        self.lines.append(f"def {k.name}_body({', '.join(refs)}):")
        for position, stage in enumerate(k.stages):
            self._stage(position, stage)
        slots = [(t, self._argument_size(t)) for t in self.scratch]
        call = call_source(k, self.grid, self.block, slots)
        return "\n".join(self.lines) + "\n\n\n" + call + "\n"

    def memory(self) -> _Memory:
        return _Memory(frozenset(self.read_back), frozenset(self.barriers))

    def _argument_size(self, buffer: Buffer) -> int:
        """Elements of ``buffer``'s flat argument; a temporary's scratch has one slot of its
        size per grid point."""
        if buffer.role != "temp":
            return buffer.size
        return buffer.size * (self.grid.points if self.kernel.rows else 1)

    # -- stages -----------------------------------------------------------------------------
    def _stage(self, position: int, stage: Stage) -> None:
        head = (f"{stage.target}[{stage.index}] = " if stage.kind == "store" else
                f"{stage.target}[{stage.index}] = {stage.combiner}-reduce over "
                + ", ".join(f"{v}<{v.extent}" for v in stage.reduce_loops) + ": ")
        where = ", ".join((["rows"] if self.kernel.rows else [])
                          + [f"{v}<{v.extent}" for v in stage.loops])
        self.emit(comment(head + render_expr(stage.value), f"  for {where or '()'}"))
        self.position = position
        if self.known and position in self.known.barriers:
            self.emit("BARRIER()  # what earlier stages stored is read below")
        self._open_axes(position, stage)
        value = self._contraction(stage)
        if value is None:
            value, *cached = self.walk([stage.value, *(e for _, _, e in stage.caches)])
            for (temp, index, _), code in zip(stage.caches, cached):
                self._store(temp, index, code, frozenset(self.axes))
            if stage.kind == "reduce":
                value = self._reduce(stage, value)
        self._store(stage.target, stage.index, value,
                    frozenset(a for a in self.axes if a != self.reduced))

    def _contraction(self, stage: Stage) -> str | None:
        """A GEMM stage (``sum over j of x[rows, j] * y[k, j]``, from a dot_general) as one
        ``lax.dot_general`` of the two tiles (Triton's ``tl.dot``); None when the
        stage is no such product or a tile side is under 16 (then it is a multiply and a
        reduction like any other). IEEE float32 (``Precision.HIGHEST``), as XLA:CPU: Triton's
        default would round inputs to TF32. Padded lanes of ``j`` are zeroed in both tiles
        (a masked load reads 0, but a prologue may turn 0 into inf, and inf * 0 is NaN)."""
        value = stage.value
        if not is_contraction(stage, self.kernel.rows):
            return None
        row, kept, reduced = self.axes.values()  # a contraction has kept and reduced loops
        if min(row.size, kept.size, reduced.size) < 16:
            return None
        x, y = self.walk(list(value.args))
        sides = {self._varies(x), self._varies(y)}
        if sides == {frozenset({kept.var, reduced.var}), frozenset({row.var, reduced.var})}:
            if self._varies(x) != frozenset({row.var, reduced.var}):
                x, y = y, x
        else:
            return None
        ok = self._ok(reduced)
        if ok:
            x = self._assign(f"jnp.where({ok}, {x}, {literal(0, value.dtype)})", self._varies(x))
            y = self._assign(f"jnp.where({ok}, {y}, {literal(0, value.dtype)})", self._varies(y))
        product = (f"lax.dot_general({x}.reshape({row.size}, {reduced.size}), "
                   f"{y}.reshape({kept.size}, {reduced.size}), (((1,), (1,)), ((), ())), "
                   f"precision=lax.Precision.HIGHEST, "
                   f"preferred_element_type={JNP_DTYPES[value.dtype]})")
        self.emit(f"# a GEMM: (rows x {reduced.var.name}) times ({kept.var.name} x "
                  f"{reduced.var.name}) transposed, one tl.dot")
        result = self._assign(product, frozenset({row.var, kept.var}))
        return self._assign(f"{result}.reshape({row.size}, {kept.size}, 1)",
                            frozenset({row.var, kept.var}))

    def _open_axes(self, position: int, stage: Stage) -> None:
        """Declares the stage's axis iotas and maps every loop variable to an Index of them."""
        self.mapping: dict[LoopVar, Index] = dict(self.walked)
        self.axes: dict[LoopVar, _Axis] = {}
        self.reduced: LoopVar | None = None
        groups = [("r", ())]  # the grid point, then the kept and the reduced loops
        kept = tuple(v for v in stage.loops if v not in self.walked)
        if kept:
            groups.append((f"k{position}", kept))
        if stage.reduce_loops:
            groups.append((f"j{position}", stage.reduce_loops))
        for axis_position, (name, loops) in enumerate(groups):
            if name == "r":
                var, size = self.point, self.block
            else:
                var = LoopVar(name, math.prod(v.extent for v in loops))
                size = next_power_of_two(var.extent)
            self.axes[var] = _Axis(var, var.extent, size, axis_position)
            if name.startswith("j"):
                self.reduced = var
            stride = var.extent
            for loop in loops:
                stride //= loop.extent
                self.mapping[loop] = Index.var(var).digit(stride, loop.extent)
        self.loads: dict[tuple[str, Index], str] = {}
        for axis in self.axes.values():
            shape = self._shape({axis.var})
            iota = f"lax.broadcasted_iota(jnp.int32, {shape_tuple(shape)}, {axis.position})"
            if axis.var.name == "r":
                iota = f"pl.program_id(0) * {self.block} + {iota}"
            self.emit(f"{axis.var.name} = {iota}")

    def _shape(self, axes: set[LoopVar]) -> tuple[int, ...]:
        """The tile shape of a value that varies along ``axes`` (size 1 along the others)."""
        return tuple(a.size if a.var in axes else 1 for a in self.axes.values())

    def _ok(self, axis: _Axis) -> str | None:
        """The condition of ``axis``'s in-range lanes (None: every lane is in range)."""
        covered = axis.size * (self.steps if axis.var.name == "r" else 1)
        if covered == axis.extent:
            return None
        return f"{axis.var.name} < {axis.extent}"

    def _reduce(self, stage: Stage, value: str) -> str:
        init = literal(stage.init, stage.value.dtype)
        if self.reduced is None:  # a reduction over size-1 loops: one combine with the identity
            return self._assign(PALLAS_OPS[stage.combiner].format(init, value),
                                self._varies(value))
        everywhere = frozenset(self.axes)
        ok = self._ok(self.axes[self.reduced])
        if ok:  # padding lanes hold the identity
            value = self._assign(f"jnp.where({ok}, {value}, {init})", everywhere)
        value = self._assign(self._broadcast(value, everywhere), everywhere)
        axis = self.axes[self.reduced].position
        kept = everywhere - {self.reduced}
        return self._assign(f"lax.expand_dims({REDUCERS[stage.combiner]}({value}, ({axis},)), "
                            f"({axis},))", kept)

    # -- memory -----------------------------------------------------------------------------
    def _offsets(self, name: str, index: Index) -> Index:
        """The flat offset into ``name``'s argument of ``index`` at the stage's lanes."""
        buffer = self.kernel.buffer(name)
        offsets = substitute(index, self.mapping)
        if buffer.role == "temp" and self.kernel.rows:  # the grid point's own slot
            offsets = offsets + Index.var(self.point) * buffer.size
        return offsets

    def _mask(self, offsets: Index, size: int) -> str | None:
        """In-range lanes of an access: every padded axis it walks, and its own bounds when
        they can leave the buffer (pad and concatenate reads)."""
        used = index_vars(offsets)
        parts = [ok for axis in self.axes.values() if axis.var in used
                 for ok in [self._ok(axis)] if ok]
        low, high = offsets.bounds()
        if low < 0 or high >= size:
            text = index_text(offsets)
            parts += [f"{text} >= 0", f"{text} < {size}"]
        if len(parts) > 1:
            return " & ".join(f"({p})" for p in parts)
        return parts[0] if parts else None

    def _load(self, expr: Expr) -> str:
        name, index = expr.attrs
        if (name, index) in self.loads:
            return self.loads[(name, index)]
        buffer = self.kernel.buffer(name)
        offsets = self._offsets(name, index)
        kept = self._kept_value(name, offsets)
        if kept:
            self.loads[(name, index)] = kept
            return kept
        if name in self.written:
            self.read_back.add(name)
            self.barriers.add(self.position)
        mask = self._mask(offsets, self._argument_size(buffer))
        at = self._index_code(offsets)
        masked = f", mask={mask}, other={literal(0, buffer.dtype)}" if mask else ""
        loaded = f"plgpu.load({name}_ref.at[{at}]{masked})"
        if buffer.dtype != expr.dtype:  # bf16, f16: computed in f32 (kernel_ir)
            loaded += f".astype({JNP_DTYPES[expr.dtype]})"
        self.loads[(name, index)] = result = self._assign(loaded, frozenset(index_vars(offsets)))
        self._remember(name, offsets, result)  # a later stage reading the same lanes reuses it
        return result

    def _store(self, name: str, index: Index, value: str, axes: frozenset[LoopVar]) -> None:
        """Stores ``value`` at every lane of ``axes`` (the stage's kept axes; for a cache,
        all of them)."""
        buffer = self.kernel.buffer(name)
        offsets = self._offsets(name, index)
        size = self._argument_size(buffer)
        mask = self._mask(offsets, size)
        at = self._index_code(offsets, axes)
        masked = f", mask={mask}" if mask else ""
        if mask:  # masked-off lanes point past the end (see "Pointers" above)
            at = f"jnp.where({mask}, {at}, {size})"
        if buffer.role != "temp" or buffer in self.scratch:  # else read from registers only
            stored = self._broadcast(value, axes)
            if buffer.dtype in STORAGE_ONLY:  # narrowed to nearest even, as XLA's convert
                stored += f".astype({JNP_DTYPES[buffer.dtype]})"
            self.emit(f"plgpu.store({name}_ref.at[{at}], {stored}{masked})")
        self.written.add(name)
        self._remember(name, offsets, value)

    def _remember(self, name: str, offsets: Index, value: str) -> None:
        """Notes that ``value`` holds ``name`` at ``offsets`` over this stage's lanes."""
        if value in self.varies:
            self.stored.setdefault(name, []).append(
                Held(offsets, value, self.varies[value], self._lanes()))

    def _lanes(self) -> Lanes:
        return {var: (a.position, a.extent, a.size) for var, a in self.axes.items()}

    def _kept_value(self, name: str, offsets: Index) -> str | None:
        """A value an earlier stage stored to ``name`` (or loaded from it) that holds, lane for
        lane, what a load at ``offsets`` would read (``held.reading``), used in registers (no
        scratch, no barrier), reshaped to this stage's rank."""
        for held in self.stored.get(name, ()):
            mapping = reading(held, offsets, self._lanes(), self.point)
            if mapping is None:
                continue
            here = frozenset(mapping[v] for v in held.varies)
            shape = self._shape(here)
            code = held.value if held.shape() == shape else \
                f"{held.value}.reshape({shape_args(shape)})"
            alias = self.fresh()
            self.emit(f"{alias} = {code}  # {name} at these lanes, as held above")
            self.varies[alias] = here
            return alias
        return None

    # -- expressions ------------------------------------------------------------------------
    # ExprWalker's hooks: walk(roots) names the values of roots, shared sub-expressions once
    def constant(self, expr: Expr) -> str:
        return literal(expr.attrs[0], expr.dtype)

    def load(self, expr: Expr) -> str:
        return self._load(expr)

    def index(self, expr: Expr) -> str:
        index = substitute(expr.attrs[0], self.mapping)
        code = self._index_code(index)
        if expr.dtype not in INDEX_DTYPES:
            code = f"lax.convert_element_type({code}, {JNP_DTYPES[expr.dtype]})"
        return self._assign(code, frozenset(index_vars(index)))

    def convert(self, expr: Expr, operand: str) -> str:
        return f"lax.convert_element_type({operand}, {JNP_DTYPES[expr.dtype]})"

    def operation(self, expr: Expr, operands: list[str]) -> str:
        if expr.op not in PALLAS_OPS:
            raise Unrenderable(f"no Pallas spelling for {expr.op}")
        return PALLAS_OPS[expr.op].format(*operands)

    def bind(self, expr: Expr, code: str, operands: list[str], position: int) -> str:
        if expr.op in ("load", "index"):  # named already: their lanes are not their operands'
            return code
        return self._assign(code, frozenset().union(*map(self._varies, operands)))

    def _assign(self, code: str, varies: frozenset[LoopVar]) -> str:
        """A name for ``code``'s value, an array of the tile's rank varying along ``varies``
        (size 1 along the other axes)."""
        if code.isidentifier() and self._varies(code) == varies:
            return code  # already a named value: no alias
        name = self.fresh()
        self.emit(f"{name} = {code}")
        self.varies[name] = varies
        return name

    def _varies(self, value: str) -> frozenset[LoopVar]:
        return self.varies.get(value, frozenset())  # literals are scalars

    def _broadcast(self, value: str, axes: frozenset[LoopVar]) -> str:
        """``value`` over the tile of ``axes`` (as it is when it varies along all of them)."""
        if self._varies(value) == axes and value in self.varies:
            return value
        return f"jnp.broadcast_to({value}, {shape_tuple(self._shape(axes))})"

    def _index_code(self, index: Index, axes: frozenset[LoopVar] | None = None) -> str:
        """int32 array code of ``index`` over the stage's lanes (over the tile of ``axes``
        when given; otherwise varying only where it does, at the tile's rank)."""
        if not index.terms:  # a constant: still an array
            shape = self._shape(set(axes or ()))
            return f"jnp.full({shape_tuple(shape)}, {index.const}, jnp.int32)"
        text = index_text(index)
        if axes is not None and frozenset(index_vars(index)) != axes:
            return f"jnp.broadcast_to({text}, {shape_tuple(self._shape(set(axes)))})"
        return text


class PallasIndex(IndexPrinter):
    """An ``Index`` as int32 array code: ``lax.div`` and ``lax.rem`` (its values are never
    negative where they are read, so truncating and floor division agree), sums in
    parentheses.

    >>> from codegen.kernel.index import LoopVar
    >>> index_text(Index.var(LoopVar("r", 64)).digit(4, 8) * 2 + 1)
    '(lax.rem(lax.div(r, 4), 8) * 2 + 1)'
    """

    def div(self, inner: str, divisor: int) -> str:
        return f"lax.div({inner}, {divisor})"

    def mod(self, inner: str, divisor: int, modulus: int) -> str:
        return f"lax.rem({self.div(inner, divisor) if divisor != 1 else inner}, {modulus})"

    def sum(self, parts: list[str]) -> str:
        return f"({' + '.join(parts)})" if len(parts) > 1 else parts[0]


index_text = PallasIndex()
"""Pallas text of an integer index expression: ``index_text(index)``."""
