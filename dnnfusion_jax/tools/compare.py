"""Comparing dnnfusion with stock XLA fusion on one model: kernels, bytes, time, accuracy.

``compare_xla(fn, *args)`` optimises ``fn`` with ``dnnfusion.jit``, compiles it with plain
``jax.jit``, and returns one dict of figures (the row of the paper's Table 5 for this model):

* ``jaxpr_ops``, ``ops_after_rewrite``, ``blocks``, ``flops_before``, ``flops_after``,
  ``dnnfusion_intermediate_bytes``: from ``dnnfusion.explain``;
* ``xla_kernels``, ``xla_kernels_by_kind``, ``xla_intermediate_bytes``: from XLA's optimised
  HLO of ``jax.jit(fn)`` (see ``dnnfusion_jax.tools.xla_hlo``); ``dnnfusion_xla_kernels``: the
  kernels XLA emits for dnnfusion's own executable (blocks XLA re-fuses or splits);
  ``xla_custom_fusion_ops``: operators inside XLA's kCustom (XNNPACK) fusions, each of which
  counts as one kernel;
* ``xla_fusion_rate`` and ``dnnfusion_fusion_rate``: ``jaxpr_ops`` per kernel;
* ``ms_xla``, ``ms_dnnfusion``: medians of ``repeats`` timed calls after warm-up, interleaved
  (one ``jax.jit`` call, one dnnfusion call, each waited for; the order alternates every
  round); ``speedup`` = ``ms_xla / ms_dnnfusion``;
* ``max_abs_err`` (largest ``|ours - jax.jit|`` over every output leaf), ``max_rel_err``
  (that error over the largest ``|jax.jit|`` of the leaf), ``matches`` (every leaf
  ``allclose`` with rtol = atol = 1e-5, NaN equal to NaN, or, where a rewrite changed the
  rounding, as accurate as jax.jit against a float64 evaluation: ``as_accurate``); a NaN or
  infinity in one result but not the other makes both errors ``inf``;
* ``optimize_s``: dnnfusion's own time (trace, rewrite, plan, compile stages),
  ``xla_compile_s``: jax.jit's lowering and compilation.

Example:
    >>> import jax.numpy as jnp
    >>> row = compare_xla(lambda x: jnp.exp(x) * 2.0 + 1.0, jnp.ones((8, 128)), repeats=3)
    >>> row["jaxpr_ops"], row["xla_kernels"], row["blocks"], row["matches"]
    (3, 1, 1, True)
    >>> row["speedup"] == row["ms_xla"] / row["ms_dnnfusion"]
    True
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from dnnfusion_jax.api import jit
from dnnfusion_jax.tools.xla_hlo import count_kernels

RTOL = ATOL = 1e-5
TIME_BUDGET_S = 2.0
MIN_REPEATS, MAX_REPEATS = 5, 1000

ROW_KEYS = ("name", "jaxpr_ops", "ops_after_rewrite", "xla_kernels", "blocks",
            "dnnfusion_xla_kernels", "xla_fusion_rate", "dnnfusion_fusion_rate",
            "flops_before", "flops_after", "xla_intermediate_bytes",
            "dnnfusion_intermediate_bytes", "ms_xla", "ms_dnnfusion", "speedup", "repeats",
            "max_abs_err", "max_rel_err", "matches", "optimize_s", "xla_compile_s", "backend",
            "xla_kernels_by_kind", "xla_custom_fusion_ops", "xla_loop_kernels",
            "loop_body_blocks", "internal_error")
"""The keys of ``compare_xla``'s result, in order."""


def compare_xla(fn: Callable, *args: Any, backend: str = "auto", repeats: int | None = None,
                name: str | None = None) -> dict[str, Any]:
    """Figures of ``dnnfusion.jit(fn)`` next to ``jax.jit(fn)`` on ``args`` (keys ``ROW_KEYS``).

    ``repeats`` (default: as many as fit in about 2 s of timing, at least 5) is the number of
    timed calls of each.
    """
    name = name or getattr(fn, "__name__", type(fn).__name__)
    reference = jax.jit(fn)
    start = time.perf_counter()
    xla = count_kernels(reference.lower(*args).compile().as_text())
    xla_compile_s = time.perf_counter() - start

    ours = jit(fn, backend=backend)
    summary = ours.explain(*args).summary()
    own_xla = count_kernels(ours.lower(*args).compile().as_text())

    expected = jax.block_until_ready(reference(*args))
    actual = jax.block_until_ready(ours(*args))
    abs_err, rel_err, matches = output_errors(actual, expected)
    matches = matches or (abs_err < float("inf") and as_accurate(fn, args, actual, expected))
    ms_xla, ms_ours, repeats = time_interleaved(reference, ours, args, repeats)

    # blocks inside loop bodies count, as XLA's kernels inside while bodies do
    jaxpr_ops, blocks = summary["jaxpr_ops"], summary["blocks"] + _body_blocks(summary)
    return {
        "name": name, "jaxpr_ops": jaxpr_ops, "ops_after_rewrite": summary["ops_after_rewrite"],
        "xla_kernels": xla.count, "blocks": blocks, "dnnfusion_xla_kernels": own_xla.count,
        "xla_fusion_rate": jaxpr_ops / max(xla.count, 1),
        "dnnfusion_fusion_rate": jaxpr_ops / max(blocks, 1),
        "flops_before": summary["flops_before"], "flops_after": summary["flops_after"],
        "xla_intermediate_bytes": xla.intermediate_bytes,
        "dnnfusion_intermediate_bytes": summary["intermediate_bytes"],
        "ms_xla": ms_xla, "ms_dnnfusion": ms_ours, "speedup": ms_xla / ms_ours,
        "repeats": repeats, "max_abs_err": abs_err, "max_rel_err": rel_err, "matches": matches,
        "optimize_s": sum(v for k, v in summary.items() if k.endswith("_s")),
        "xla_compile_s": xla_compile_s, "backend": summary["backend"],
        "xla_kernels_by_kind": xla.by_kind, "xla_custom_fusion_ops": xla.custom_fusion_ops,
        "xla_loop_kernels": xla.loop_kernels, "loop_body_blocks": _body_blocks(summary),
        "internal_error": summary["internal_error"],
    }


def _body_blocks(summary: dict) -> int:
    return sum(body["blocks"] for body in summary.get("loops", []))


def time_interleaved(first: Callable, second: Callable, args: tuple,
                     repeats: int | None = None) -> tuple[float, float, int]:
    """Median milliseconds of ``first(*args)`` and ``second(*args)``, timed alternately.

    Both are called once to warm up; without ``repeats``, that warm-up pair sets how many
    rounds fit in ``TIME_BUDGET_S`` (between ``MIN_REPEATS`` and ``MAX_REPEATS``).

    Example:
        >>> import jax.numpy as jnp
        >>> f = jax.jit(lambda x: x + 1)
        >>> a, b, n = time_interleaved(f, f, (jnp.ones(4),), repeats=3)
        >>> n, a > 0, b > 0
        (3, True, True)
    """
    pair_s = _timed(first, args) + _timed(second, args)
    if repeats is None:
        repeats = int(min(max(TIME_BUDGET_S // max(pair_s, 1e-9), MIN_REPEATS), MAX_REPEATS))
    first_s, second_s = [], []
    for round_ in range(repeats):
        if round_ % 2:
            second_s.append(_timed(second, args))
            first_s.append(_timed(first, args))
        else:
            first_s.append(_timed(first, args))
            second_s.append(_timed(second, args))
    return statistics.median(first_s) * 1e3, statistics.median(second_s) * 1e3, repeats


def output_errors(actual: Any, expected: Any) -> tuple[float, float, bool]:
    """``(max_abs_err, max_rel_err, matches)`` over all output leaves (NaN-aware).

    Example:
        >>> import numpy as np
        >>> output_errors([np.array([1.0, np.nan])], [np.array([1.5, np.nan])])
        (0.5, 0.3333333333333333, False)
    """
    actual_leaves = jax.tree_util.tree_leaves(actual)
    expected_leaves = jax.tree_util.tree_leaves(expected)
    if len(actual_leaves) != len(expected_leaves):
        return float("inf"), float("inf"), False
    worst_abs = worst_rel = 0.0
    matches = True
    for a, e in zip(actual_leaves, expected_leaves):
        a, e = np.asarray(a), np.asarray(e)
        if a.shape != e.shape:
            return float("inf"), float("inf"), False
        a, e = a.astype(np.float64), e.astype(np.float64)
        matches &= bool(np.allclose(a, e, rtol=RTOL, atol=ATOL, equal_nan=True))
        finite_a, finite_e = np.isfinite(a), np.isfinite(e)
        same_special = (finite_a == finite_e) & np.where(finite_a, True, (a == e) | (
            np.isnan(a) & np.isnan(e)))
        if not same_special.all():
            return float("inf"), float("inf"), False
        both = finite_a & finite_e
        difference = np.subtract(a, e, out=np.zeros_like(a), where=both)  # no inf - inf
        error = float(np.max(np.abs(difference), initial=0.0))
        scale = float(np.max(np.abs(e)[both], initial=0.0))
        worst_abs = max(worst_abs, error)
        worst_rel = max(worst_rel, error / scale if scale else (0.0 if error == 0 else
                                                                 float("inf")))
    return worst_abs, worst_rel, matches


ULPS = 4
"""How many float32 ulps (of the output's largest magnitude) ours may lose to jax.jit against
float64 before ``as_accurate`` calls it a mismatch."""


def as_accurate(fn: Callable, args: tuple, actual: Any, expected: Any) -> bool:
    """Whether ``actual`` (ours) is as close as ``expected`` (jax.jit's) to ``fn`` evaluated in
    float64 on the same inputs, up to ``ULPS`` ulps: the oracle for rewrites that reassociate
    (a matrix chain's order), where rtol against jax.jit would blame rounding, not a bug.

    Example:
        >>> import numpy as np
        >>> x = np.float32([1e8, 1.0, -1e8])
        >>> fn = lambda x: x.sum()
        >>> as_accurate(fn, (x,), np.float32(1.0), np.float32(0.0))
        True
    """
    with jax.enable_x64(True):
        exact = jax.jit(fn)(*jax.tree_util.tree_map(_as_float64, args))
    for ours, xla, truth in zip(*map(jax.tree_util.tree_leaves, (actual, expected, exact))):
        ours, xla, truth = (np.asarray(v, np.float64) for v in (ours, xla, truth))
        if ours.shape != truth.shape:
            return False
        finite = np.isfinite(truth) & np.isfinite(ours) & np.isfinite(xla)
        scale = float(np.max(np.abs(truth[finite]), initial=1.0))
        ulp = ULPS * float(np.spacing(np.float32(scale)))
        if float(np.max(np.abs(ours - truth)[finite], initial=0.0)) > \
                float(np.max(np.abs(xla - truth)[finite], initial=0.0)) + ulp:
            return False
    return True


def _as_float64(leaf: Any) -> Any:
    leaf = np.asarray(leaf)
    return leaf.astype(np.float64) if np.issubdtype(leaf.dtype, np.floating) else leaf


def _timed(fn: Callable, args: tuple) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start
