"""Profitability of the graph-level algebra passes: when a guarded rewrite or a GEMM merge pays.

Legality (same value, compatible dimensions, dtypes) lives with each pass; this file only says
whether a legal rewrite is worth doing, in one currency: FLOP-equivalents, one per FLOP and
``BYTE_WEIGHT`` per byte moved (the e-graph extractor's weights, ``egraph_extract.py``).

Guarded rewrites (``guarded.py``): the check reads every guarded operand once (one compare
and one and-reduction per element), and ``lax.cond`` costs a fixed dispatch on top. A guard is
used only where the FLOPs saved exceed ``GUARD_MARGIN`` times the check plus ``COND_FLOPS``.
Measured here (2-core AMD EPYC, XLA:CPU, jax 0.10.2, 2026-12-04, medians of 400 calls), a
``lax.cond`` over four operands (three 1024², one 1024×16) around a small GEMM cost 1.4 µs
more than the GEMM alone; ``COND_FLOPS`` (2 MFLOP, 5-20 µs of XLA's GEMM at 100-400 GFLOP/s)
is set higher on purpose: a region moved into a branch leaves our kernels (GEMMs under
1 MFLOP run inside C kernels with their epilogues), so small chains stay as they are.

GEMM merging (``gemm_merge.py``): merging is exact, but the weights are concatenated on
every call (a read and a write of all of them). Measured on this machine (2-core AMD EPYC,
shared with other jobs, so ±5%; medians of 40-60 interleaved calls), separate ÷ merged:

* under jax.jit alone, three GEMMs of a shared ``x`` (M rows, D×D weights) with a tanh
  epilogue: D = 64: 0.73-0.89 at M ≤ 8, 1.02-1.05 at M = 64-1024, 1.17 at M = 4096;
  D = 256: 0.70-0.88 up to M = 256, 1.02 at M = 1024; D = 768: 0.57-0.96 at every M;
* in our pipeline (C kernels around XLA's GEMMs), ``tanh(x@a), exp(x@b), relu(x@c)``:
  1.05 at 4096×64, 0.97 at 16384×64, 0.87 at 4096×128;
* the LSTM form ``x@Wx + h@Wh`` (I = H, 4H outputs) under jax.jit: 0.52-0.90 at B ≤ 64,
  1.07-1.29 at B = 256, 0.96-1.04 at B = 1024; in our pipeline (``tanh(x@Wx + h@Wh + b)``)
  1.04 at B = 4096, H = 128, and 0.99 at B = 1024, H = 256 (not merged by the rule).

* narrow heads of a large x (three GEMMs of x, M×D, each to N columns; our pipeline, merged ÷
  separate, 2026-12-04): N = 8: 1.53 at 131072×64, 1.58 at 32768×256, 1.33 at 16384×512,
  1.24 at 8192×512 (16 MiB), 1.03 at 4096×256 (4 MiB), 0.9-1.0 at 2048×512; N = 16: 1.24 at
  65536×128, 1.07 at 16384×256; N = 32: 0.98-1.17; N = 64: 0.97-1.02.

So on XLA:CPU a GEMM call costs little beyond its work inside one executable, one wide GEMM is
not faster per FLOP than three narrow ones, and the shared operand's repeated reads come from
cache: the shared form saves only the calls, ``GEMM_CALL_BYTES`` each, which pays for
concatenating a few KiB of weights and no more (projections as wide as their input never merge
here). The exception is a GEMM that is one pass over a large x: few output columns
(``STREAMED_MAX_WIDTH``) and an x of ``STREAMED_MIN_BYTES`` or more, which a second GEMM
reads again from memory; there the merge saves those passes (``shared_reads_saved``). The
sum form also saves a pass over the result (the partial products written, read back and
added), which is real traffic. The rule: merge
when the bytes saved are at least ``MERGE_TRAFFIC_RATIO`` times the bytes the concatenations
(and any slice copied out of the merged result) move, and each GEMM is big enough to be XLA's
(``MERGE_MIN_FLOPS``; smaller ones join our C kernels with their epilogues, which a merge
would split).

Example:
    >>> guard_pays(flops_saved=2 * 1024**3, checked_elements=2 * 1024**2)
    True
    >>> guard_pays(flops_saved=10_000, checked_elements=100)
    False
    >>> merge_pays(saved_bytes=8 << 20, concat_bytes=1 << 20, gemm_flops=10**9)
    True
    >>> merge_pays(saved_bytes=2 * GEMM_CALL_BYTES, concat_bytes=2 * 3 * 64 * 64 * 4,
    ...            gemm_flops=10**8)   # three 64x64 weights: too much to concatenate per call
    False
"""
from __future__ import annotations

from collections.abc import Callable

GuardPays = Callable[[float, int, int], bool]
"""``(flops_saved, checked_elements, itemsize) -> bool``: the guarded passes' cost rule
(``guard_pays``), replaceable (``rewrite/passes_check.py`` makes every legal rewrite)."""

BYTE_WEIGHT = 1.0
"""FLOP-equivalents per byte moved (as the e-graph extractor counts materialised bytes)."""

CHECK_FLOPS_PER_ELEMENT = 2.0
"""A guard's compare (|v| <= bound, which is False for NaN and ±inf) and its and-reduction."""

COND_FLOPS = 2e6
"""A guarded rewrite's fixed cost in FLOP-equivalents: the ``cond`` (1.4 µs measured) and the
kernels its region no longer joins (see the module docstring)."""

GUARD_MARGIN = 4.0
"""A guard must save this many times what it costs: the check is a memory-bound pass while
the FLOPs it saves run at GEMM speed, so a FLOP of check is dearer than a FLOP saved."""

MERGE_TRAFFIC_RATIO = 2.0
"""A GEMM merge must save this many times the bytes its concatenations move (the measured
gains were within noise below that)."""

GEMM_CALL_BYTES = 32 << 10
"""What one XLA:CPU GEMM call costs beyond its work, in bytes of traffic: about 1-2 µs (a
1×64 by 64×64 GEMM pair took 1.2 µs more than one merged GEMM) at ~20 GB/s."""

STREAMED_MAX_WIDTH = 16
"""A GEMM to at most this many output columns is one pass over its other operand (the heads
measurements above: N = 8 and 16 gain, 32 and 64 do not)."""

STREAMED_MIN_BYTES = 16 << 20
"""...and that operand is read again from memory, not cache, from this size on (half the 32 MiB
L3 of the machine measured: the gains start at 16 MiB)."""

MERGE_MIN_FLOPS = 2_000_000
"""GEMMs below this many FLOPs (each) are not merged: C_GEMM_FLOPS-sized GEMMs run inside
our kernels with their epilogues, and a merge there would split those kernels."""


def check_cost(checked_elements: int, itemsize: int = 4) -> float:
    """FLOP-equivalents of a guard that reads ``checked_elements`` values once, plus the cond.

    >>> check_cost(1000) == 1000 * (4 + 2) + COND_FLOPS
    True
    """
    per_element = itemsize * BYTE_WEIGHT + CHECK_FLOPS_PER_ELEMENT
    return checked_elements * per_element + COND_FLOPS


def guard_pays(flops_saved: float, checked_elements: int, itemsize: int = 4) -> bool:
    """Whether a rewrite exact only under a check saves enough FLOPs to pay for the check.

    >>> guard_pays(4 * check_cost(10) + 1, 10), guard_pays(4 * check_cost(10) - 1, 10)
    (True, False)
    """
    return flops_saved > GUARD_MARGIN * check_cost(checked_elements, itemsize)


def merge_pays(saved_bytes: int, concat_bytes: int, gemm_flops: int) -> bool:
    """Whether merging GEMMs pays: ``saved_bytes`` of traffic against ``concat_bytes`` moved by
    the concatenations, each GEMM of ``gemm_flops`` (the smallest of the group).

    >>> merge_pays(saved_bytes=1 << 20, concat_bytes=1 << 20, gemm_flops=10**9)
    False
    """
    return gemm_flops >= MERGE_MIN_FLOPS and saved_bytes >= MERGE_TRAFFIC_RATIO * concat_bytes


def shared_reads_saved(shared_bytes: int, gemms: int, width: int) -> int:
    """Bytes a shared-operand merge of ``gemms`` GEMMs saves: their calls, and the repeated
    passes over the shared operand (``shared_bytes``) when each is a streamed pass (at most
    ``STREAMED_MAX_WIDTH`` output columns, ``width`` being the widest).

    >>> shared_reads_saved(32 << 20, 3, width=8) == 2 * (GEMM_CALL_BYTES + (32 << 20))
    True
    >>> shared_reads_saved(32 << 20, 3, width=64) == 2 * GEMM_CALL_BYTES
    True
    """
    streamed = shared_bytes >= STREAMED_MIN_BYTES and width <= STREAMED_MAX_WIDTH
    return (gemms - 1) * (GEMM_CALL_BYTES + (shared_bytes if streamed else 0))
