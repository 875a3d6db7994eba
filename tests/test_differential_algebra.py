"""A differential campaign for the graph-level algebra (``rewrite/algebra_passes.py``): random
programs built from the shapes it rewrites — matrix chains (some leaves transposed), sums of
GEMMs sharing an operand, GEMMs sharing an operand as separate results, an LSTM's
``x@Wx + h@Wh``, a convolution followed by a per-channel affine — with random elementwise work
around them, run with default options (``finite_math=False``) and every guarded rewrite and
merge made wherever it is legal (``every_algebra_rewrite``: the cost rules would leave such
small programs alone), against ``jax.jit``.

The oracle (issue 19): with inf, -inf, NaN, 0 or a huge value injected into the inputs, every
result has jax.jit's inf/NaN pattern; finite values agree with jax.jit at rtol = atol = 1e-5,
or, where a rewrite reassociated them, are no less accurate than jax.jit's against a float64
evaluation of the program (``tools/compare.as_accurate``): a fixed rtol is the wrong oracle
for reassociation.

CI runs a fixed 20 + 20 examples; ``DNNFUSION_DIFFERENTIAL_EXAMPLES`` sets a longer campaign.
"""
from __future__ import annotations

import contextlib
import functools
import os
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import dnnfusion_jax as dnnfusion
from dnnfusion_jax.rewrite import (algebra_passes, bn_fold, gemm_factor, gemm_merge,
                                   matrix_chain)
from dnnfusion_jax.tools.compare import as_accurate

RTOL = ATOL = 1e-5
CAMPAIGN = int(os.environ.get("DNNFUSION_DIFFERENTIAL_EXAMPLES", "0"))
SETTINGS = settings(max_examples=CAMPAIGN or 20, deadline=None, derandomize=not CAMPAIGN,
                    database=None, suppress_health_check=[HealthCheck.too_slow])
FIRED: Counter = Counter()
"""Algebra rewrites made over this module's examples (``test_the_campaign_makes_rewrites``)."""
ALGEBRA_RULES = ("matrix-chain-order", "dot-factor-guarded", "bn-fold", "gemm-merge-shared",
                 "gemm-merge-sum")
EPILOGUES = {"none": lambda y: y, "tanh": jnp.tanh, "neg": lambda y: -y,
             "relu": jax.nn.relu, "scale": lambda y: y * 0.5 + 1.0}


@contextlib.contextmanager
def every_algebra_rewrite():
    """Every legal guarded rewrite and merge is made (the cost rules answer yes)."""
    always = lambda *_: True  # noqa: E731
    passes = {"factor_gemm_sums": gemm_factor.factor_gemm_sums,
              "reorder_chains": matrix_chain.reorder_chains,
              "fold_batch_norms": bn_fold.fold_batch_norms, "merge_gemms": gemm_merge.merge_gemms}
    saved = {name: getattr(algebra_passes, name) for name in passes}
    try:
        for name, run in passes.items():
            setattr(algebra_passes, name, functools.partial(run, pays=always))
        yield
    finally:
        for name, run in saved.items():
            setattr(algebra_passes, name, run)


# --- programs: (kind, sizes, flags, epilogue) → (function, input shapes) -----------------------

def chain(sizes, flags):
    """``m0 @ m1 @ ... `` left to right, leaf i transposed where ``flags[i]``."""
    shapes = [(b, a) if t else (a, b) for a, b, t in zip(sizes, sizes[1:], flags)]

    def fn(*ms):
        out = ms[0].T if flags[0] else ms[0]
        for m, t in zip(ms[1:], flags[1:]):
            out = out @ (m.T if t else m)
        return out
    return fn, shapes


def gemm_sum(sizes, flags):
    m, k, n = sizes[:3]
    count = 2 + flags[0]
    return (lambda x, *ws: functools.reduce(jnp.add, [x @ w for w in ws]),
            [(m, k)] + [(k, n)] * count)


def shared(sizes, flags):
    m, k = sizes[:2]
    widths = sizes[2:4 + flags[0]]
    return (lambda x, *ws: jnp.concatenate([jnp.tanh(x @ w) for w in ws], axis=1),
            [(m, k)] + [(k, n) for n in widths])


def lstm(sizes, flags):
    b, i, h = sizes[:3]
    return lambda x, hh, wx, wh: x @ wx + hh @ wh, [(b, i), (b, h), (i, 4 * h), (h, 4 * h)]


def conv_affine(sizes, flags):
    n, c, o = sizes[0], sizes[1], sizes[2]
    ops = ["sub", "mul", "add"] if flags[0] else ["mul", "add", "mul"]

    def fn(x, w, p, q, r):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        for op, v in zip(ops, (p, q, r)):
            y = {"sub": jnp.subtract, "mul": jnp.multiply, "add": jnp.add}[op](y, v)
        return y
    return fn, [(n, 5, 5, c), (3, 3, c, o), (o,), (o,), (o,)]


KINDS = {"chain": chain, "gemm_sum": gemm_sum, "shared": shared, "lstm": lstm,
         "conv_affine": conv_affine}


@st.composite
def algebra_programs(draw):
    kind = draw(st.sampled_from(sorted(KINDS)))
    length = 4 if kind == "chain" and draw(st.booleans()) else 3
    sizes = draw(st.lists(st.sampled_from([1, 2, 3, 8, 17, 32]), min_size=length + 1,
                          max_size=length + 1))
    flags = draw(st.lists(st.booleans(), min_size=length, max_size=length))
    epilogue = draw(st.sampled_from(sorted(EPILOGUES)))
    return kind, tuple(sizes), tuple(int(f) for f in flags), epilogue


specials = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 10**6),
                              st.sampled_from([np.inf, -np.inf, np.nan, 0.0, 3e30])),
                    min_size=1, max_size=2)


def build(program):
    kind, sizes, flags, epilogue = program
    fn, shapes = KINDS[kind](sizes, flags)
    return (lambda *args: EPILOGUES[epilogue](fn(*args))), shapes


def check_with_algebra(program, seed: int, injected=(), report=note) -> None:
    report(f"program={program!r}, seed={seed}, injected={injected!r}")
    f, shapes = build(program)
    rng = np.random.default_rng(seed)
    args = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    for which, position, value in injected:
        a = args[which % len(args)]
        a.flat[position % a.size] = value
    expected = jax.jit(f)(*args)
    with every_algebra_rewrite():
        fused = dnnfusion.jit(f, fallback=False)
        got = fused(*args)
        fired = dnnfusion.explain(fused, *args).summary()["rules_fired"]
    FIRED.update({rule: n for rule, n in fired.items() if rule in ALGEBRA_RULES})
    g, e = np.asarray(got), np.asarray(expected)
    assert g.shape == e.shape and g.dtype == e.dtype, (g.shape, e.shape)
    for special in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(special(g), special(e), err_msg=f"{special.__name__}, "
                                      f"rewrites {fired}")
    finite = np.isfinite(e)
    if not np.allclose(g[finite], e[finite], rtol=RTOL, atol=ATOL):
        assert as_accurate(f, tuple(args), got, expected), fired


@SETTINGS
@given(program=algebra_programs(), seed=st.integers(0, 2**32 - 1))
def test_random_algebra_programs_with_every_rewrite(program, seed):
    check_with_algebra(program, seed)


@SETTINGS
@given(program=algebra_programs(), seed=st.integers(0, 2**32 - 1), injected=specials)
def test_random_algebra_programs_with_every_rewrite_and_specials(program, seed, injected):
    check_with_algebra(program, seed, injected)


def test_the_campaign_makes_every_rewrite():
    """Not degenerate: each kind of rewrite is made on the generator's programs."""
    for kind, sizes, flags in [("chain", (32, 32, 32, 2), (0, 1, 0)),
                               ("gemm_sum", (8, 17, 3, 1), (1, 0, 0)),
                               ("shared", (17, 8, 3, 2), (0, 0, 0)),
                               ("lstm", (8, 3, 2, 1), (0, 0, 0)),
                               ("conv_affine", (2, 3, 8, 1), (1, 0, 0))]:
        check_with_algebra((kind, sizes, flags, "tanh"), seed=0, report=print)
    assert all(FIRED[rule] for rule in ALGEBRA_RULES), FIRED
