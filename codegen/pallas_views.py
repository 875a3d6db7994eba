"""Structured accesses: a flat kernel-IR ``Index`` recognised as a view of a buffer.

The kernel IR gives every load a flat index into a row-major buffer (Reorganize and Shuffle
operators are folded into it). A vectorised renderer wants the opposite: the array a load reads,
built from the buffer by reshape → slice → reverse → transpose → reshape → broadcast, with no
per-element address arithmetic. ``access_digits`` finds that structure: every iteration axis is
split into mixed-radix *digits*, each with one stride into the buffer (0: a broadcast);
``load_view`` and ``store_view`` turn digits into those steps. Anything that is not such a view
(pad and concatenate reads, overlapping windows) gets ``None`` and the renderer falls back to a
gather.

Exactness never depends on a heuristic: pure affine indices give their digits directly, and any
index with floor-division or modulo atoms is evaluated over the whole iteration space with numpy
and the digits proposed for it are checked against that table, element for element.

Example (the index a reshape(2, 3, 4) → transpose(1, 0, 2) → reshape(6, 4) read leaves):
    >>> from dnnfusion_jax.kernel_ir import Index, LoopVar, delinearize, linearize
    >>> r, i = LoopVar("r", 6), LoopVar("i", 4)
    >>> a, b, c = delinearize(linearize([Index.var(r), Index.var(i)], (6, 4)), (3, 2, 4))
    >>> flat = linearize([b, a, c], (2, 3, 4))          # transpose (1, 0, 2) of a [2, 3, 4] buffer
    >>> base, digits = access_digits(flat, [r, i])
    >>> base, digits
    (0, [[(3, 4), (2, 12)], [(4, 1)]])
    >>> load_view(base, digits, 24)
    [('reshape', (2, 3, 4)), ('transpose', (1, 0, 2)), ('reshape', (6, 4))]
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from dnnfusion_jax.kernel_ir import Div, Index, LoopVar

TABLE_LIMIT = 1 << 21
"""Largest iteration space whose index table is evaluated to look for a view; a larger one with
division or modulo atoms is read by a gather (exact, only slower)."""

Digits = list[list[tuple[int, int]]]
"""Per iteration axis, its digits most significant first, each (extent, stride)."""

Step = tuple
"""("reshape", shape) | ("slice", starts, limits) | ("rev", dims) | ("transpose", perm) |
("broadcast", shape): one array operation, applied in order."""


def evaluate_index(index: Index, axes: Sequence[LoopVar]) -> np.ndarray:
    """``index`` at every point of ``axes`` (row-major), as an int64 array of their shape."""
    position = {var: k for k, var in enumerate(axes)}
    shape = tuple(var.extent for var in axes)

    def value(ix: Index) -> np.ndarray:
        total = np.array(ix.const, dtype=np.int64)
        for atom, coef in ix.terms:
            total = total + coef * atom_value(atom)
        return total

    def atom_value(atom) -> np.ndarray:
        if isinstance(atom, LoopVar):
            axis_shape = [1] * len(shape)
            axis_shape[position[atom]] = atom.extent
            return np.arange(atom.extent, dtype=np.int64).reshape(axis_shape)
        if isinstance(atom, Div):
            return value(atom.index) // atom.divisor
        return (value(atom.index) // atom.divisor) % atom.modulus

    return np.broadcast_to(value(index), shape)


def loop_vars(index: Index) -> set[LoopVar]:
    """Every loop variable ``index`` depends on, also inside division and modulo atoms."""
    found: set[LoopVar] = set()
    for atom, _ in index.terms:
        found |= {atom} if isinstance(atom, LoopVar) else loop_vars(atom.index)
    return found


def access_digits(index: Index, axes: Sequence[LoopVar],
                  limit: int = TABLE_LIMIT) -> tuple[int, Digits] | None:
    """(base, digits) with ``index == base + Σ stride·digit`` over ``axes``, or None."""
    if not loop_vars(index) <= set(axes):
        return None
    if all(isinstance(atom, LoopVar) for atom, _ in index.terms):  # affine: read it off
        coef = dict(index.terms)
        return index.const, [[(var.extent, coef.get(var, 0))] if var.extent > 1 else []
                             for var in axes]
    if math.prod(var.extent for var in axes) > limit:
        return None
    table = evaluate_index(index, axes)
    base = int(table.flat[0])
    digits: Digits = []
    for k, var in enumerate(axes):
        at = [0] * len(axes)
        at[k] = slice(None)
        found = _factor(table[tuple(at)] - base)
        if found is None:
            return None
        digits.append(found)
    if not np.array_equal(_rebuild(base, digits, [v.extent for v in axes]), table):
        return None
    return base, digits


def _factor(profile: np.ndarray) -> list[tuple[int, int]] | None:
    """Mixed-radix digits of one axis, least significant found first (longest linear runs)."""
    extent, digits, block = len(profile), [], 1
    while block < extent:
        stride, run = int(profile[block]), 1
        while block * run < extent and profile[block * run] == run * stride:
            run += 1
        rest = extent // block
        size = max(d for d in range(1, min(run, rest) + 1) if rest % d == 0)
        if size == 1:
            return None
        digits.append((size, stride))
        block *= size
    return digits[::-1]


def _rebuild(base: int, digits: Digits, extents: list[int]) -> np.ndarray:
    total = np.array(base, dtype=np.int64)
    for k, (axis_digits, extent) in enumerate(zip(digits, extents)):
        shape = [1] * len(extents)
        shape[k] = extent
        i = np.arange(extent, dtype=np.int64).reshape(shape)
        below = math.prod(size for size, _ in axis_digits)
        for size, stride in axis_digits:
            below //= size
            total = total + stride * ((i // below) % size)
    return np.broadcast_to(total, extents)


def load_view(base: int, digits: Digits, size: int, lead: int = 0) -> list[Step] | None:
    """Steps that turn a buffer of ``size`` elements (``(lead, size)`` with ``lead`` rows) into the
    array a load reads: one dimension per axis, 1 where the load does not depend on the axis.
    None when the access is not a view (strides that interleave, or reads out of range)."""
    flat = [(axis, k, extent, stride) for axis, axis_digits in enumerate(digits)
            for k, (extent, stride) in enumerate(axis_digits) if stride != 0]
    reversed_digits = []
    for n, (axis, k, extent, stride) in enumerate(flat):
        if stride < 0:  # a reversed axis: read it forwards from its far end, then flip
            base += stride * (extent - 1)
            flat[n] = (axis, k, extent, -stride)
            reversed_digits.append((axis, k))
    if base < 0:
        return None
    by_stride = sorted(flat, key=lambda d: -d[3])
    strides = [d[3] for d in by_stride]
    if len(set(strides)) != len(strides):
        return None
    dims, outer = [], size
    for stride in strides:
        if outer % stride:
            return None
        dims.append(outer // stride)
        outer = stride
    if outer > 1:
        dims.append(outer)  # the span below the smallest stride: one element of it is read
    starts, rest = [], base
    for dim in reversed(dims):
        starts.append(rest % dim)
        rest //= dim
    starts.reverse()
    sizes = [d[2] for d in by_stride] + [1] * (outer > 1)
    if rest or any(s + n > d for s, n, d in zip(starts, sizes, dims)):
        return None
    lead_shape = (lead,) if lead else ()
    offset = len(lead_shape)
    steps: list[Step] = [("reshape", lead_shape + tuple(dims))]
    if starts != [0] * len(dims) or sizes != dims:
        steps.append(("slice", (0,) * offset + tuple(starts),
                      lead_shape + tuple(s + n for s, n in zip(starts, sizes))))
    steps.append(("reshape", lead_shape + tuple(sizes[:len(by_stride)])))
    flipped = tuple(offset + n for n, d in enumerate(by_stride) if d[:2] in reversed_digits)
    if flipped:
        steps.append(("rev", flipped))
    # axis-major order, most significant digit first
    order = sorted(range(len(by_stride)), key=lambda n: by_stride[n][:2])
    if order != list(range(len(order))):
        steps.append(("transpose", tuple(range(offset)) + tuple(offset + n for n in order)))
    # zero-stride digits come back as size-1 dimensions, broadcast where an axis mixes them
    moving = {d[:2] for d in flat}
    mixed = [0 < sum(1 for _, s in ad if s) < len(ad) for ad in digits]
    split, spread, final = [], [], []
    for axis, axis_digits in enumerate(digits):
        for k, (extent, _) in enumerate(axis_digits):
            split.append(extent if (axis, k) in moving else 1)
            spread.append(extent if (axis, k) in moving or mixed[axis] else 1)
        kept = any((axis, k) in moving for k in range(len(axis_digits)))
        final.append(math.prod(e for e, _ in axis_digits) if kept else 1)
    steps.append(("reshape", lead_shape + tuple(split)))
    if any(mixed):
        steps.append(("broadcast", lead_shape + tuple(spread)))
    steps.append(("reshape", lead_shape + tuple(final)))
    return simplify_steps(steps)


def store_view(base: int, digits: Digits, size: int, lead: int = 0) -> list[Step] | None:
    """Steps that turn a stage's full value array into the flat block it fills (one element
    each, every element once); None if the index is not such a permutation."""
    flat = [(axis, k, extent, stride) for axis, axis_digits in enumerate(digits)
            for k, (extent, stride) in enumerate(axis_digits)]
    by_stride = sorted(flat, key=lambda d: -d[3])
    expected = 1
    for _, _, extent, stride in reversed(by_stride):
        if stride != expected:
            return None
        expected *= extent
    if base != 0 or expected != size:
        return None
    lead_shape = (lead,) if lead else ()
    offset = 1 if lead else 0
    order = [flat.index(d) for d in by_stride]
    steps: list[Step] = [("reshape", lead_shape + tuple(d[2] for d in flat))]
    if order != list(range(len(order))):
        steps.append(("transpose", tuple(range(offset)) + tuple(offset + n for n in order)))
    steps.append(("reshape", lead_shape + (size,)))
    return simplify_steps(steps)


def simplify_steps(steps: list[Step]) -> list[Step]:
    """Merges consecutive reshapes (only the last one counts)."""
    merged: list[Step] = []
    for step in steps:
        if merged and step[0] == "reshape" and merged[-1][0] == "reshape":
            merged[-1] = step
        else:
            merged.append(step)
    return merged
