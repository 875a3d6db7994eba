"""A scan's small per-iteration inputs, indexed inside its body instead of sliced by the loop.

``lax.scan`` hands its body one slice of each scanned input (``xs``) per iteration; XLA cuts
each slice out with a ``dynamic-slice`` of its own before the body runs. A fused kernel can
only read a materialised operand, so under ``nn.scan`` every layer's bias and norm scale cost
one more XLA kernel per iteration, where jax.jit fuses the slice into its consumer: a 3-layer
linen encoder ran 17 slice kernels per iteration beside 6 of ours (0.90x of jax.jit).

Here the scan takes such inputs whole, as loop constants, with an iteration counter in its
carry, and the body reads ``stacked[i]`` with ``dynamic_index_in_dim``: the kernel that uses
the slice reads it from the stacked array itself (an indexed read, ``codegen/kernel/
indexing.py``). Only small slices move (``SMALL_SLICE_BYTES``), and none that a GEMM or
convolution reads: XLA cuts those for its own GEMM either way (an LSTM's input step ``x_t``,
moved, became a slice kernel of its own before the GEMM: 4 blocks a step instead of 2).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jax import lax
    >>> def f(x, b):
    ...     return lax.scan(lambda c, b_i: (jnp.tanh(c + b_i), None), x, b)[0]
    >>> scan = jax.make_jaxpr(f)(jnp.ones(8), jnp.ones((3, 8))).jaxpr.eqns[0]
    >>> moved = index_small_slices(scan)
    >>> moved.params["num_consts"], moved.params["num_carry"], len(moved.params["jaxpr"].in_avals)
    (1, 2, 3)
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from jax import lax
from jax.extend.core import ClosedJaxpr, jaxpr_as_fun

SMALL_SLICE_BYTES = 16 * 1024
"""Scanned inputs whose per-iteration slice is at most this size are indexed in the body."""

GEMMS = frozenset({"dot_general", "conv_general_dilated"})


@dataclass
class IndexedScan:
    """A scan whose small scanned inputs became constants indexed by a counter.

    The scan takes ``operands(old)`` (the moved inputs after the constants, the counter's
    initial 0 after the carry) and returns ``[*carry, counter, *ys]``: ``outputs(new)`` drops
    the counter."""

    params: dict[str, Any]
    moved: list[int]  # positions among the scan's operands
    num_carry: int    # the scan's carry before the counter was added

    def operands(self, operands: Sequence[Any], zero: Any) -> list[Any]:
        num_consts = self.params["num_consts"] - len(self.moved)
        carry_end = num_consts + self.num_carry
        kept_xs = [v for i, v in enumerate(operands[carry_end:], carry_end)
                   if i not in self.moved]
        return [*operands[:num_consts], *(operands[i] for i in self.moved),
                *operands[num_consts:carry_end], zero, *kept_xs]

    def outputs(self, outputs: Sequence[Any]) -> list[Any]:
        return [*outputs[:self.num_carry], *outputs[self.num_carry + 1:]]


def index_small_slices(eqn: Any) -> IndexedScan | None:
    """``eqn`` (a ``scan``) with its small scanned inputs indexed inside the body, or None."""
    if eqn.primitive.name != "scan":
        return None
    params = eqn.params
    body: ClosedJaxpr = params["jaxpr"]
    num_consts, num_carry, length = params["num_consts"], params["num_carry"], params["length"]
    xs_start = num_consts + num_carry
    if length == 0:  # nothing to index: the body never runs
        return None
    read_by_gemms = {v for e in body.jaxpr.eqns if e.primitive.name in GEMMS for v in e.invars}
    moved = [i for i, (var, aval) in enumerate(zip(body.jaxpr.invars[xs_start:],
                                                   body.in_avals[xs_start:]), xs_start)
             if _small(aval) and var not in read_by_gemms]
    if not moved:
        return None
    avals = list(body.in_avals)
    stacked = [eqn.invars[i].aval for i in moved]
    kept = [i for i in range(xs_start, len(avals)) if i not in moved]
    reverse = params["reverse"]
    run = jaxpr_as_fun(body)

    def indexed_body(*args: Any) -> list[Any]:
        consts = args[:num_consts]
        whole = args[num_consts:num_consts + len(moved)]
        rest = args[num_consts + len(moved):]
        carry, counter, kept_xs = rest[:num_carry], rest[num_carry], rest[num_carry + 1:]
        step = (length - 1 - counter) if reverse else counter
        xs = dict(zip(kept, kept_xs))
        xs.update((i, lax.dynamic_index_in_dim(w, step, 0, keepdims=False))
                  for i, w in zip(moved, whole))
        outs = run(*consts, *carry, *(xs[i] for i in range(xs_start, len(avals))))
        return [*outs[:num_carry], counter + 1, *outs[num_carry:]]

    counter = jax.ShapeDtypeStruct((), np.int32)
    new_avals = [*avals[:num_consts], *stacked, *avals[num_consts:xs_start], counter,
                 *(avals[i] for i in kept)]
    new_body = jax.make_jaxpr(indexed_body)(*new_avals)
    new_params = dict(params, jaxpr=new_body, num_consts=num_consts + len(moved),
                      num_carry=num_carry + 1)
    if "linear" in params:  # neither the moved inputs nor the counter carry tangents
        linear = list(params["linear"])
        new_params["linear"] = tuple([*linear[:num_consts], *(False for _ in moved),
                                      *linear[num_consts:xs_start], False,
                                      *(linear[i] for i in kept)])
    return IndexedScan(new_params, moved, num_carry)


def _small(aval: Any) -> bool:
    try:
        itemsize = np.dtype(aval.dtype).itemsize
    except TypeError:  # extended dtypes (PRNG keys) stay scanned
        return False
    return math.prod(getattr(aval, "shape", ())) * itemsize <= SMALL_SLICE_BYTES
