"""Pooling, cumulative operators, arg-reductions, split and interior pad as C kernels
(``codegen/kernel/windows.py``, ``window_stages.py``): each against jax.jit (inf, NaN and
ties included; argmax indices exactly), and each in a fused kernel, never left to XLA."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import dnnfusion_jax as dnnfusion
from dnnfusion_jax.frontend.trace import trace_function
from codegen.kernel.lowering import unsupported_reason

NHWC = (2, 9, 8, 3)


def pool(init, op, dims, strides, padding, **kwargs):
    return lambda x: lax.reduce_window(x, init, op, dims, strides, padding, **kwargs)


CASES = {
    # name: (function, input shape, input kind)
    "avg_pool 3x3/2 same": (lambda x: pool(0.0, lax.add, (1, 3, 3, 1), (1, 2, 2, 1), "SAME")(x)
                            / 9, NHWC, "float"),
    "max_pool 2x2/2 valid": (pool(-jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID"),
                             NHWC, "float"),
    "max_pool 3x3/1 same, relu": (lambda x: pool(-jnp.inf, lax.max, (1, 3, 3, 1), (1, 1, 1, 1),
                                                 "SAME")(jax.nn.relu(x)), NHWC, "float"),
    "min_pool asymmetric": (pool(jnp.inf, lax.min, (1, 2, 3, 1), (1, 1, 2, 1),
                                 ((0, 0), (1, 2), (0, 1), (0, 0))), NHWC, "float"),
    "sum_pool dilated": (pool(0.0, lax.add, (3, 2), (2, 1), ((2, 1), (1, 1)),
                              base_dilation=(2, 1), window_dilation=(1, 2)), (7, 6), "float"),
    "max_pool int": (pool(jnp.iinfo(jnp.int32).min, lax.max, (3, 2), (1, 2), "SAME"), (7, 6),
                     "int"),
    "max_pool of tanh": (lambda x: pool(-jnp.inf, lax.max, (1, 2, 2, 1), (1, 1, 1, 1), "SAME")(
        jnp.tanh(x)) * 2, NHWC, "float"),
    "avg_pool gradient": (jax.grad(lambda x: jnp.sum(jnp.sin(pool(
        0.0, lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")(x)))), (2, 8, 8, 3), "float"),
    "cumsum": (lambda x: jnp.cumsum(x, axis=1), (4, 33), "float"),
    "cumsum reverse int": (lambda x: lax.cumsum(x, 0, reverse=True), (9, 5), "int"),
    "cumprod reverse": (lambda x: lax.cumprod(x, 2, reverse=True), (2, 3, 7), "near one"),
    "cummax": (lambda x: lax.cummax(x, 1), (3, 17, 4), "float"),
    "cummin reverse": (lambda x: lax.cummin(x, 0, reverse=True), (12, 5), "float"),
    "cumlogsumexp": (lambda x: lax.cumlogsumexp(x, 1), (3, 10), "float"),
    "cumsum of exp, softmax": (lambda x: jax.nn.softmax(jnp.cumsum(jnp.exp(x), 1), -1),
                               (6, 20), "float"),
    "argmax": (lambda x: jnp.argmax(x, axis=1), (5, 16, 3), "float"),
    "argmin last": (lambda x: jnp.argmin(x, axis=-1), (6, 40), "float"),
    "argmax ties": (lambda x: jnp.argmax(x, axis=0), (9, 7), "ties"),
    "argmin ties": (lambda x: jnp.argmin(x, axis=1), (7, 9), "ties"),
    "argmax int": (lambda x: jnp.argmax(x, axis=1), (6, 11), "int"),
    "argmax then one_hot": (lambda x: jax.nn.one_hot(jnp.argmax(jnp.tanh(x), -1), 8) * 3.0,
                            (10, 8), "float"),
    "split": (lambda x: [jnp.tanh(p) for p in jnp.split(x, [2, 5], axis=1)], (4, 9, 3),
              "float"),
    "split lstm gates": (lambda x: (lambda i, f, g, o: jax.nn.sigmoid(f) * jnp.tanh(g) + i * o)(
        *jnp.split(x, 4, axis=-1)), (3, 32), "float"),
    "pad interior": (lambda x: lax.pad(x, 0.5, ((1, 2, 1), (0, 0, 0))), (5, 4), "float"),
    "pad interior negative": (lambda x: lax.pad(x, -1.0, ((-1, -2, 2), (2, -1, 1))),
                              (6, 5), "float"),
    "strided slice gradient": (jax.grad(lambda x: jnp.sum(jnp.exp(x[1::3, ::2]))), (10, 8),
                               "float"),
}


def make_input(shape, kind, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "int":
        return rng.integers(-20, 20, shape).astype(np.int32)
    if kind == "ties":
        return rng.integers(-2, 3, shape).astype(np.float32)
    if kind == "near one":
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


def with_specials(x):
    x = x.copy()
    positions = np.random.default_rng(1).choice(x.size, 3, replace=False)
    x.flat[positions] = [np.inf, np.nan, -np.inf]
    return x


def check(fn, x):
    fused = dnnfusion.jit(fn, backend="c", fallback=False)
    got, want = jax.tree.leaves(fused(x)), jax.tree.leaves(jax.jit(fn)(x))
    for g, w in zip(got, want):
        assert g.dtype == w.dtype
        if np.issubdtype(w.dtype, np.integer):
            np.testing.assert_array_equal(g, w)
        else:
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, equal_nan=True)
    summary = fused.explain(x).summary()
    assert summary["left_to_xla"] == {} and summary["fallback_blocks"] == [], summary


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_jax_in_a_fused_kernel(name):
    fn, shape, kind = CASES[name]
    check(fn, make_input(shape, kind))


SPECIAL = ["max_pool 2x2/2 valid", "min_pool asymmetric", "avg_pool 3x3/2 same", "cummax",
           "cumsum", "cumlogsumexp", "argmax", "argmin last", "pad interior"]


@pytest.mark.parametrize("name", SPECIAL)
def test_inf_and_nan_match_jax(name):
    fn, shape, kind = CASES[name]
    check(fn, with_specials(make_input(shape, kind)))


def test_argmax_nan_rule_and_signed_zero_ties():
    """NaN is the maximum and the minimum, the first NaN wins; -0 and +0 tie (first wins)."""
    x = np.array([[1.0, np.nan, 3.0, np.nan], [-0.0, 0.0, -1.0, -0.0],
                  [-np.inf, -np.inf, -np.inf, -np.inf], [2.0, np.inf, np.inf, 1.0]], np.float32)
    check(lambda x: (jnp.argmax(x, 1), jnp.argmin(x, 1)), x)


def test_cumlogsumexp_of_infinities():
    x = np.array([[-np.inf, -np.inf, 0.0, np.inf, 1.0], [-np.inf] * 5], np.float32)
    check(lambda x: lax.cumlogsumexp(x, 1), x)


def test_what_stays_with_xla_says_why():
    def reasons(fn, *shapes):
        graph = trace_function(fn, [jnp.ones(s) for s in shapes]).graph
        return [unsupported_reason(n) for n in graph.nodes if unsupported_reason(n)]

    assert "quadratic" in reasons(lambda x: jnp.cumsum(x, 1), (4, 1000))[0]
    assert reasons(lambda x: jnp.cumsum(x, 1), (4, 100)) == []
