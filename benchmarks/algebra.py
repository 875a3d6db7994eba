"""Algebra that pays by default (issue 19), side by side with jax.jit: ms and speed-up.

Workloads: a matrix chain ``(A@B)@v`` (n = 1024, k = 16; reordered under a guard), a sum of
GEMMs sharing x (``x@a + x@b + x@c``; factored under a guard), GEMMs sharing x as separate
outputs with their activations, narrow heads of a large x, and attention with separate
Q/K/V projections (merged only where the cost model says it pays: on this CPU the narrow
heads), attention scores with the scale split over q and k, for a whole sequence and for one
decoding step against cached keys (one scaling, e-graph rule ``dot-scale-fold-lhs``), a
1x1 convolution with batch norm (folded into the weights under a guard), LSTM steps (the
gates' ``x@Wx + h@Wh`` merged where it pays), and the same workloads with an inf in
an input (the slow path of a guarded rewrite: the original graph after the check).

Method: as ``kernels.py`` (inputs on the device, calls of jax.jit and dnnfusion interleaved,
medians). Each row is checked: exact rewrites (merging) against jax.jit at rtol = atol =
1e-5; guarded rewrites against a float64 evaluation of the original (error no larger than
jax.jit's plus 4 ulps of the result's scale); inf rows for jax.jit's inf/NaN pattern and
finite values.

Run: python3 benchmarks/algebra.py [--repeats N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import dnnfusion_jax as dnnfusion  # noqa: E402
from kernels import interleaved_ms  # noqa: E402


def chain(a, b, v):
    return (a @ b) @ v


def gemm_sum(x, a, b, c):
    return x @ a + x @ b + x @ c


def shared_outputs(x, a, b, c):
    """Three Dense layers of one x, each with its activation (which takes its slice in)."""
    return jnp.tanh(x @ a), jnp.exp(x @ b), jax.nn.relu(x @ c)


def narrow_heads(x, a, b, c):
    """Three narrow heads of one trunk (multi-task, or policy and value): each GEMM is one
    pass over a large x, which a merge reads once."""
    return jnp.tanh(x @ a), x @ b, jax.nn.relu(x @ c)


def attention(x, wq, wk, wv, wo):
    """Single-head attention as three Dense layers of one x (Flax/Haiku/Equinox style)."""
    q, k, v = x @ wq, x @ wk, x @ wv
    scores = jnp.einsum("bqd,bkd->bqk", q, k) / np.sqrt(q.shape[-1]).astype(np.float32)
    return jax.nn.softmax(scores, axis=-1) @ v @ wo


def scaled_scores(q, k):
    """Attention scores with the 1/sqrt(d) scale split over q and k (one scaling suffices)."""
    c = np.float32(64 ** -0.25)
    return (q * c) @ (k * c).T


def decode_scores(q, k):
    """One decoding step's attention scores against a cache of keys, the scale split over q and
    k as Whisper's attention writes it (one scaling of the small q suffices)."""
    c = np.float32(64 ** -0.25)
    return jnp.einsum("bqd,bkd->bqk", q * c, k * c)


def conv_bn(x, w, mean, var, gamma, beta):
    """A 1x1 convolution, batch norm in inference (as Flax's BatchNorm computes it) and ReLU."""
    y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jax.nn.relu((y - mean) * (jax.lax.rsqrt(var + 1e-5) * gamma) + beta)


def lstm_step(x, h, c, wx, wh, b):
    gates = x @ wx + h @ wh + b
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    return jax.nn.sigmoid(o) * jnp.tanh(c), c


def workloads():
    rng = np.random.default_rng(0)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    n, k = 1024, 16
    yield "matrix chain (A@B)@v, n=1024 k=16", chain, [f(n, n), f(n, n), f(n, k)], "guarded", 2
    d = 512
    yield "x@a + x@b + x@c, 1024x512", gemm_sum, [f(1024, d), f(d, d), f(d, d), f(d, d)], \
        "guarded", 0
    yield "tanh(x@a), exp(x@b), relu(x@c), 4096x64", shared_outputs, \
        [f(4096, 64), f(64, 64), f(64, 64), f(64, 64)], "exact", 0
    dense = lambda d_in, d_out: f(d_in, d_out) / np.float32(np.sqrt(d_in))  # noqa: E731
    yield "tanh(x@a), x@b, relu(x@c), narrow heads 32768x256 -> 8", narrow_heads, \
        [f(32768, 256), dense(256, 8), dense(256, 8), dense(256, 8)], "exact", 0
    yield "attention, separate Q/K/V, 8x512x64", attention, \
        [f(8, 512, 64), dense(64, 64), dense(64, 64), dense(64, 64), dense(64, 64)], "exact", 0
    yield "(q*c)@(k*c).T, 2048x64", scaled_scores, [f(2048, 64), f(2048, 64)], "reassoc", 0
    yield "decode scores (q*c)@(k*c).T, 32 x 1 x 2048 keys", decode_scores, \
        [f(32, 1, 64), f(32, 2048, 64)], "reassoc", 1
    positive = lambda *s: np.abs(f(*s)) + np.float32(0.5)  # noqa: E731
    yield "1x1 conv + batch norm + relu, 32x56x56x64", conv_bn, \
        [f(32, 56, 56, 64), dense(64, 64).reshape(1, 1, 64, 64), f(64), positive(64), f(64),
         f(64)], "guarded", 1
    yield "LSTM step, batch 4096, hidden 128", lstm_step, \
        [f(4096, 128), f(4096, 128), f(4096, 128), f(128, 512), f(128, 512), f(512)], "reassoc", 1
    yield "LSTM step, batch 64, hidden 256", lstm_step, \
        [f(64, 256), f(64, 256), f(64, 256), f(256, 1024), f(256, 1024), f(1024)], "reassoc", 1


ACCURACY_OF = {lstm_step: lambda x, h, c, wx, wh, b: x @ wx + h @ wh + b}
"""Where a merged sum is judged: the sum itself, whose scale the ulps are of (the gates'
sigmoid and tanh squash it, so ulps of the step's outputs would be the wrong unit)."""


def _leaves(tree):
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(tree)]


def verdict(kind, fn, args, ours, jit):
    """'ok' or what failed: jax.jit's inf/NaN pattern always; finite values equal to jax.jit's
    (rtol = atol = 1e-5) for exact rewrites and for the guarded ones' slow path; for a guarded
    fast path and for a merged sum ("reassoc"), error against float64 no larger than jax.jit's
    plus 4 ulps of the result's scale."""
    ours, jit = _leaves(ours), _leaves(jit)
    for o, j in zip(ours, jit):
        special = ~np.isfinite(j)
        if not (np.array_equal(np.isnan(o), np.isnan(j))
                and np.array_equal(o[special & ~np.isnan(j)], j[special & ~np.isnan(j)])):
            return "inf/NaN pattern differs"
    slow_path = kind == "guarded" and not all(np.isfinite(a).all() for a in args)
    if kind == "exact" or slow_path:
        same = all(np.allclose(o[np.isfinite(j)], j[np.isfinite(j)], rtol=1e-5, atol=1e-5)
                   for o, j in zip(ours, jit))
        if same:
            return "ok"
        if slow_path:
            return "differs from jax.jit"
        # an ill-conditioned result (cancellation) where fusion's own summation order moves
        # small values by more than 1e-5: judged as the reassociations are, against float64
    with jax.enable_x64(True):
        exact = _leaves(jax.jit(fn)(*(np.asarray(a, np.float64) for a in args)))
    worst = 0.0
    for o, j, e in zip(ours, jit, exact):
        finite = np.isfinite(e)
        scale = np.max(np.abs(e[finite]))
        ours_err = np.max(np.abs(o[finite] - e[finite]))
        jit_err = np.max(np.abs(j[finite] - e[finite]))
        if ours_err > jit_err + 4 * np.finfo(np.float32).eps * scale:
            return f"less accurate than jax.jit ({ours_err:.2g} vs {jit_err:.2g})"
        worst = max(worst, ours_err / scale)
    return f"ok vs float64 ({worst:.1e} scaled)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    options = parser.parse_args()
    print(f"jax {jax.__version__}, {os.cpu_count()} CPUs; medians of {options.repeats} "
          "interleaved calls")
    print("| workload | jax.jit ms | dnnfusion ms | ratio | rewrites | check |")
    print("|---|--:|--:|--:|---|---|")
    for name, fn, args, kind, inf_at in workloads():
        fused, reference = dnnfusion.jit(fn), jax.jit(fn)
        summary = fused.explain(*args).summary()
        fired = ", ".join(f"{rule} x{count}" for rule, count in summary["rules_fired"].items()
                          if rule.startswith(("gemm-merge", "dot-factor-guarded", "bn-fold",
                                              "matrix-chain", "dot-scale-fold")))
        for label, inputs in ((name, args), (name + ", inf in an input", _with_inf(args, inf_at))):
            inputs = [jax.device_put(a) for a in inputs]
            jit_ms, our_ms = (statistics.median(t) for t in
                              interleaved_ms([reference, fused], [inputs, inputs],
                                             options.repeats))
            check = verdict(kind, fn, inputs, fused(*inputs), reference(*inputs))
            judged = ACCURACY_OF.get(fn)
            if judged is not None and check != "inf/NaN pattern differs":
                # the step's own inf/NaN pattern holds; its accuracy is judged on the sum
                check = verdict(kind, judged, inputs, dnnfusion.jit(judged)(*inputs),
                                jax.jit(judged)(*inputs))
            print(f"| {label} | {jit_ms:.3f} | {our_ms:.3f} | {jit_ms / our_ms:.2f}x | "
                  f"{fired or '-'} | {check} |", flush=True)


def _with_inf(args, which):
    args = [np.array(a) for a in args]
    args[which].flat[args[which].size // 3] = np.inf
    return args


if __name__ == "__main__":
    main()
