"""Soundness check of the graph-level algebra passes (``algebra_passes.py``), as
``rules_check`` checks the e-graph's rules: ``rules check`` runs both.

For each pass (``PASSES``), ``check_pass`` draws programs of the shape it rewrites with random
dimensions (chains of 2-D dots with transposed leaves; sums of GEMMs sharing an operand on
either side; GEMMs sharing an operand as separate results; an LSTM's ``x@Wx + h@Wh``; a
convolution followed by adds, subtracts, multiplies and negations by per-channel vectors),
traces each, and applies the pass with its cost rule answering yes, so the rewrite is made
wherever it is legal, guard included (``finite_math=False``). The rewritten graph and the
original are evaluated primitive by primitive on the same float32 inputs: plain normal values
for a third of the samples, special values (0, -0, ±1, ±inf, NaN) mixed in for another third,
tiny and huge magnitudes (1e-30 ... 3e38) for the last (``rules_check``'s pools).

A sample passes when every result agrees with the original's as ``rules_check.compare``
allows for a rule: within 1e-5 (NaN where NaN, an inf of the same sign), or within rounding of
the float64 evaluation of the program, or where the original float32 result was itself wrong
(it overflowed where float64 did not: a rewrite may be more accurate, never less). So a guard
that lets an operand through whose fast form differs (an inf that meets a 0 in another order,
a sum that overflows in one order only, a weight flushed to zero) is caught on the samples
that contain one.

Example:
    >>> result = check_pass("matrix-chain-order", trials=6)
    >>> result.ok, result.samples    # a chain that no order improves is not rewritten
    (True, 5)
"""
from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce

import jax
import jax.numpy as jnp
import numpy as np

from dnnfusion_jax.frontend.evaluate import evaluate_graph
from dnnfusion_jax.frontend.trace import trace_function
from dnnfusion_jax.rewrite.bn_fold import fold_batch_norms
from dnnfusion_jax.rewrite.gemm_factor import factor_gemm_sums
from dnnfusion_jax.rewrite.gemm_merge import merge_gemms
from dnnfusion_jax.rewrite.matrix_chain import reorder_chains
from dnnfusion_jax.rewrite.rules_check import RANGE_VALUES, SPECIAL_VALUES, compare

DIMS = (1, 2, 3, 5, 8)
Program = tuple[Callable, list[tuple[int, ...]]]


def _chain(rng: np.random.Generator) -> Program:
    length = int(rng.integers(3, 5))
    dims = [int(d) for d in rng.choice(DIMS, size=length + 1)]
    flips = [bool(t) for t in rng.integers(0, 2, size=length)]

    def fn(*ms):
        return reduce(lambda acc, mt: acc @ (mt[0].T if mt[1] else mt[0]),
                      zip(ms[1:], flips[1:]), ms[0].T if flips[0] else ms[0])
    return fn, [(b, a) if t else (a, b) for a, b, t in zip(dims, dims[1:], flips)]


def _gemm_sum(rng: np.random.Generator) -> Program:
    m, k, n = (int(d) for d in rng.choice(DIMS, size=3))
    count, right = int(rng.integers(2, 4)), bool(rng.integers(0, 2))
    if right:  # a@x + b@x
        return (lambda x, *ws: reduce(jnp.add, [w @ x for w in ws]),
                [(k, n)] + [(m, k)] * count)
    return lambda x, *ws: reduce(jnp.add, [x @ w for w in ws]), [(m, k)] + [(k, n)] * count


def _shared(rng: np.random.Generator) -> Program:
    m, k, a, b = (int(d) for d in rng.choice(DIMS, size=4))
    return lambda x, wa, wb: (jnp.tanh(x @ wa), x @ wb), [(m, k), (k, a), (k, b)]


def _lstm_sum(rng: np.random.Generator) -> Program:
    b, i, h = (int(d) for d in rng.choice(DIMS, size=3))
    return lambda x, hh, wx, wh: x @ wx + hh @ wh, [(b, i), (b, h), (i, h), (h, h)]


def _conv_affine(rng: np.random.Generator) -> Program:
    n, c, o = (int(d) for d in rng.choice(DIMS, size=3))
    ops = [str(op) for op in rng.choice(["sub", "rsub", "mul", "add", "neg"], size=3)]
    ops[int(rng.integers(3))] = "mul"  # a scale to fold
    binary = {"sub": jnp.subtract, "rsub": lambda y, v: v - y, "mul": jnp.multiply,
              "add": jnp.add, "neg": lambda y, v: -y}

    def fn(x, w, *vectors):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        for op, v in zip(ops, vectors):
            y = binary[op](y, v)
        return jax.nn.relu(y)
    return fn, [(n, 4, 4, c), (3, 3, c, o)] + [(o,)] * 3


ALWAYS = lambda *_: True  # noqa: E731
PASSES: dict[str, tuple[Callable, Callable]] = {
    # rule name → (program builder, the pass making every legal rewrite)
    "matrix-chain-order": (_chain, lambda g: reorder_chains(g, pays=ALWAYS)[0]),
    "dot-factor-guarded": (_gemm_sum, lambda g: factor_gemm_sums(g, pays=ALWAYS)[0]),
    "bn-fold": (_conv_affine, lambda g: fold_batch_norms(g, pays=ALWAYS)[0]),
    "gemm-merge-shared": (_shared, lambda g: merge_gemms(g, pays=ALWAYS)[0]),
    "gemm-merge-sum": (_lstm_sum, lambda g: merge_gemms(g, pays=ALWAYS)[0]),
}
"""The graph-level rewrites ``rules check`` covers, by the name ``rules_fired`` counts."""


@dataclass
class PassResult:
    """One pass's verdict, as ``rules_check.CheckResult`` gives a rule's."""

    name: str
    ok: bool
    samples: int
    message: str


def _inputs(shapes, edge: str, rng: np.random.Generator) -> list[np.ndarray]:
    values = []
    for shape in shapes:
        x = rng.standard_normal(shape) * (10.0 ** rng.integers(-1, 2))
        if edge != "plain":
            pool = SPECIAL_VALUES if edge == "special" else RANGE_VALUES
            flat = x.reshape(-1)
            for i in range(flat.size):
                if rng.random() < 0.15:
                    flat[i] = pool[int(rng.integers(len(pool)))]
        values.append(np.asarray(x, np.float32))
    return values


def check_pass(name: str, trials: int = 45, seed: int = 0) -> PassResult:
    """Checks pass ``name`` of ``PASSES`` on ``trials`` programs (plain, special and range
    values in turn); a sample counts when the pass rewrote its program."""
    build, rewrite = PASSES[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()) + seed)
    accepted = 0
    for trial in range(trials):
        edge = ("plain", "special", "range")[trial % 3]
        fn, shapes = build(rng)
        args = _inputs(shapes, edge, rng)
        traced = trace_function(fn, args)
        rewritten = rewrite(traced.graph)
        if rewritten is traced.graph:
            continue
        accepted += 1
        with np.errstate(all="ignore"):
            original = evaluate_graph(traced.graph, *traced.consts, *args)
            ours = evaluate_graph(rewritten, *traced.consts, *args)
            with jax.enable_x64(True):
                exact = jax.tree_util.tree_leaves(
                    jax.jit(fn)(*(np.asarray(a, np.float64) for a in args)))
        for k, (o, r, e) in enumerate(zip(original, ours, exact)):
            o, r, e = (np.asarray(v, np.float64) for v in (o, r, e))
            scale = max([1.0, *(float(np.max(np.abs(v[np.isfinite(v)]), initial=0.0))
                                for v in (*args, e))])
            ok = compare(o, r, e, scale)
            if not ok.all():
                where = np.argwhere(~ok)
                i = tuple(int(j) for j in where[0]) if where.size else ()
                return PassResult(name, False, accepted, (
                    f"{name}: counterexample ({edge} values, input shapes {shapes}): result {k}"
                    f" at {i}: original {float(o[i])!r} (exact {float(e[i])!r}), rewritten "
                    f"{float(r[i])!r}"))
    if accepted < max(1, trials // 4):
        return PassResult(name, False, accepted, f"{name}: rewrote only {accepted} of {trials} "
                          "programs")
    return PassResult(name, True, accepted, f"{name} (graph pass): ok ({accepted} samples)")
