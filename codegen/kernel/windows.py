"""Pooling and cumulative operators as windowed reductions of the kernel IR.

``reduce_window_sum/max/min`` (average and max pooling: ``flax.linen.avg_pool``,
``hk.max_pool``, ``lax.reduce_window`` with the combiner's identity as its initial value)
reduce, for every output element, a window of the input: ``out[o] = ⊕_k x[o·s + k·d - low]``
per dimension, where a position outside the input is padding and reads as the combiner's
identity (0 for sum, -inf for max, +inf for min), as in XLA. A cumulative operator
(``cumsum``, ``cumprod``, ``cummax``, ``cummin``) is the same thing along one axis, as XLA:CPU
computes it: a window of the whole axis ``n``, padded by ``n - 1`` before it (after it when
``reverse``), so output ``i`` reduces ``x[i + k - (n-1)]`` over ``k < n``, the taps before
the start reading as the identity. That costs ``n`` operations per element, so long axes and
large arrays stay with XLA (``MAX_SCAN_LENGTH``, ``MAX_SCAN_TAPS``).

A base (input) dilation, like a ``pad`` with interior padding, reads a dilated operand:
position ``p`` holds element ``p // step`` when ``p % step == 0`` and nothing otherwise
(``dilated_position``; ``expressions._lower_pad`` uses it too).

This module is the index arithmetic only; ``lowering`` turns it into a reduce stage, as it
does a depthwise convolution's window (``depthwise.py``).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> g = trace_function(lambda x: jnp.cumsum(x, 0), [jnp.ones(5)]).graph
    >>> window = window_of(g.nodes[0])
    >>> window.dimensions, window.padding
    ((5,), ((4, 0),))
    >>> i, k = LoopVar("i", 5), LoopVar("k", 5)
    >>> index, checks = window_read(window, (5,), [Index.var(i)], [k])
    >>> str(index[0]), [(op, str(at), bound) for op, at, bound in checks]
    ('i + k + -4', [('ge', 'i + k + -4', 0)])
"""
from __future__ import annotations

from dataclasses import dataclass

from codegen.kernel.index import Index, LoopVar
from dnnfusion_jax.frontend.ir import Node

WINDOW_COMBINERS = {"reduce_window_sum": "add", "reduce_window_max": "max",
                    "reduce_window_min": "min"}
"""Pooling primitive → combiner."""

SCAN_COMBINERS = {"cumsum": "add", "cumprod": "mul", "cummax": "max", "cummin": "min"}
"""Cumulative primitive → combiner (``cumlogsumexp`` is two windows: ``window_stages``)."""

SCANS = frozenset(SCAN_COMBINERS) | {"cumlogsumexp"}

MAX_SCAN_LENGTH = 256
MAX_SCAN_TAPS = 1 << 20
"""Longest axis, and most window taps (``n`` per element), of a cumulative operator lowered
here: as a windowed reduction it costs ``n`` operations per element, while XLA:CPU rewrites
its reduce_window into a scan. Measured (2-core EPYC, shared, noisy): ``cumsum`` of
f32[16384, 16] took 4-10 ms here against XLA's 1.2-1.6 ms, of f32[8, 4096] 105 ms against
0.22 ms; small ones gain by fusing with their neighbours, large ones stay with XLA."""

Check = tuple[str, Index, int]
"""``(comparison, index, bound)``: ``index <comparison> bound`` must hold."""


@dataclass(frozen=True)
class Window:
    """A reduce_window's geometry, one entry per operand dimension."""

    dimensions: tuple[int, ...]
    strides: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    base_dilation: tuple[int, ...]
    window_dilation: tuple[int, ...]


def window_reason(node: Node) -> str | None:
    """Why ``node`` (a pooling or cumulative primitive) is not lowered (None: it is)."""
    if node.op in SCANS:
        length = node.inputs[0].shape[node.params["axis"]]
        if length > MAX_SCAN_LENGTH or length * node.inputs[0].size > MAX_SCAN_TAPS:
            return (f"{node.op} along {length} of {node.inputs[0].size} elements: quadratic "
                    "as a windowed reduction, XLA's scan is faster")
    return None


def window_of(node: Node) -> Window:
    """The window a pooling or cumulative ``node`` reduces over."""
    shape = node.inputs[0].shape
    ones = (1,) * len(shape)
    if node.op in SCANS:
        axis, n = node.params["axis"], shape[node.params["axis"]]
        dimensions = tuple(n if d == axis else 1 for d in range(len(shape)))
        pad = (0, n - 1) if node.params["reverse"] else (n - 1, 0)
        padding = tuple(pad if d == axis else (0, 0) for d in range(len(shape)))
        return Window(dimensions, ones, padding, ones, ones)
    p = node.params
    return Window(tuple(p["window_dimensions"]), tuple(p["window_strides"]),
                  tuple((int(lo), int(hi)) for lo, hi in p["padding"]),
                  tuple(p["base_dilation"]), tuple(p["window_dilation"]))


def dilated_position(position: Index, size: int, step: int) -> tuple[Index, list[Check]]:
    """The element of a ``size``-element operand that ``position`` of its dilation by ``step``
    (``step - 1`` holes after every element but the last) reads, and the checks under which
    that element exists; only checks that can fail are returned.

    >>> i = LoopVar("i", 8)
    >>> element, checks = dilated_position(Index.var(i) + -1, 3, 2)
    >>> str(element), [(op, str(at), bound) for op, at, bound in checks]
    ('(i + -1)/2', [('ge', 'i + -1', 0), ('eq', '(i + 1)%2', 0), ('lt', '(i + -1)/2', 3)])
    """
    checks: list[Check] = []
    low, _high = position.bounds()
    if low < 0:
        checks.append(("ge", position, 0))
    element = position
    if step > 1:
        remainder = position % step
        if remainder != Index():  # a position provably on an element needs no test
            checks.append(("eq", remainder, 0))
        element = position // step
    if element.upper() >= size:
        checks.append(("lt", element, size))
    return element, checks


def window_read(window: Window, shape: tuple[int, ...], out_index: list[Index],
                taps: list[LoopVar]) -> tuple[list[Index], list[Check]]:
    """The operand index that output ``out_index`` reads at window position ``taps`` (one loop
    per dimension), and the checks under which it is no padding."""
    operand_index, checks = [], []
    for d, size in enumerate(shape):
        position = (out_index[d] * window.strides[d] + Index.var(taps[d]) *
                    window.window_dilation[d] + (-window.padding[d][0]))
        element, more = dilated_position(position, size, window.base_dilation[d])
        operand_index.append(element)
        checks += more
    return operand_index, checks
