"""Gather, dynamic slices and scatter-add run in fused C kernels and agree with jax.jit.

Out-of-bounds and negative indices, each gather/scatter mode, batching dimensions
(``take_along_axis``), NaN and infinite values; the large scatter (an embedding gradient)
stays with XLA, with its reason.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import dnnfusion_jax as dnnfusion

RNG = np.random.default_rng(1)
X = jnp.asarray(RNG.standard_normal((6, 10)), jnp.float32).at[0, 3].set(jnp.nan).at[2, 1].set(-jnp.inf)
LABELS = jnp.asarray([3, 0, 9, -1, 12, -11], jnp.int32)  # negative and out of range too
TABLE = jnp.asarray(RNG.standard_normal((20, 8)), jnp.float32)
TOKENS = jnp.asarray([[1, 19, 4], [0, 4, 7]], jnp.int32)
INTS = jnp.asarray(RNG.integers(-50, 50, (6, 10)), jnp.int32)


def _fused_alike(fn, *args):
    """The result matches jax.jit (to an ulp of a transcendental; NaN where it has NaN) and
    nothing is left to XLA."""
    fused = dnnfusion.jit(fn, backend="c", fallback=False)
    summary = fused.explain(*args).summary()
    assert summary["left_to_xla"] == {}, summary["left_to_xla"]
    expected, actual = jax.jit(fn)(*args), fused(*args)
    for a, e in zip(jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(expected)):
        a, e = np.asarray(a), np.asarray(e)
        np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-7)
        zeros = e == 0  # and the sign of every zero
        np.testing.assert_array_equal(np.signbit(a[zeros]), np.signbit(e[zeros]))


GATHERS = {
    "take_along_axis fill": lambda x, i: jnp.take_along_axis(x, i[:, None], axis=1, mode="fill"),
    "take_along_axis clip": lambda x, i: jnp.take_along_axis(x, i[:, None], axis=1, mode="clip"),
    "take_along_axis default": lambda x, i: jnp.take_along_axis(jnp.tanh(x), i[:, None] % 10, axis=1),
    "rows promise_in_bounds": lambda x, i: x[jnp.abs(i) % 6] * 2.0,
    "take fill value": lambda x, i: jnp.take(x, i, axis=1, mode="fill", fill_value=-7.0),
    "integer operand fill": lambda x, i: jnp.take(INTS, i, axis=0, mode="fill") + 1,
}


@pytest.mark.parametrize("name", sorted(GATHERS))
def test_gathers(name):
    _fused_alike(GATHERS[name], X, LABELS)


def test_embedding_lookup_and_its_epilogue_fuse():
    fn = lambda table, tokens: jax.nn.gelu(table[tokens] * 3.0)  # noqa: E731
    _fused_alike(fn, TABLE, TOKENS)


@pytest.mark.parametrize("start", [(0, 0), (2, 3), (5, 9), (-4, 100)])
def test_dynamic_slice_clamps_its_start(start):
    fn = lambda x, a, b: jnp.exp(lax.dynamic_slice(x, (a, b), (3, 4)))  # noqa: E731
    _fused_alike(fn, X, jnp.int32(start[0]), jnp.int32(start[1]))


@pytest.mark.parametrize("start", [(0, 0), (4, 8), (-2, 50)])
def test_dynamic_update_slice(start):
    fn = lambda x, u, a, b: lax.dynamic_update_slice(x * 2.0, u, (a, b)) + 1.0  # noqa: E731
    _fused_alike(fn, X, jnp.full((3, 4), -0.0), jnp.int32(start[0]), jnp.int32(start[1]))


SCATTERS = {
    # take_along_axis's gradient: batching dimensions, one update per element
    "batched": lambda x, i, u: jnp.zeros_like(x).at[jnp.arange(6), i].add(u, mode="drop"),
    "clip": lambda x, i, u: x.at[jnp.arange(6), i].add(u * 2.0, mode="clip"),
    "repeated rows": lambda x, i, u: x.at[jnp.abs(i[:3]) % 6].add(jnp.tanh(x[:3])),
    "negative zero operand": lambda x, i, u: jnp.full_like(x, -0.0).at[jnp.arange(6), i].add(u),
}


@pytest.mark.parametrize("name", sorted(SCATTERS))
def test_scatter_adds(name):
    updates = jnp.asarray(RNG.standard_normal(6), jnp.float32).at[1].set(jnp.inf)
    _fused_alike(SCATTERS[name], X, LABELS, updates)


def test_cross_entropy_and_its_gradient_fuse_completely():
    import optax
    labels = jnp.abs(LABELS) % 10
    loss = lambda x: optax.softmax_cross_entropy_with_integer_labels(x, labels).mean()  # noqa: E731
    x = jnp.nan_to_num(X)
    for fn in (loss, jax.grad(loss)):
        fused = dnnfusion.jit(fn, backend="c", fallback=False)
        assert fused.explain(x).summary()["left_to_xla"] == {}
        np.testing.assert_allclose(fused(x), jax.jit(fn)(x), rtol=1e-5, atol=1e-6)


def test_embedding_gradient_scatter_stays_with_xla():
    tokens = jnp.asarray(RNG.integers(0, 20, (4, 16)), jnp.int32)
    fn = jax.grad(lambda table: jnp.sum(jnp.sin(table[tokens])))
    fused = dnnfusion.jit(fn, backend="c", fallback=False)
    reasons = " ".join(fused.explain(TABLE).summary()["left_to_xla"])
    assert "XLA's scatter does less work" in reasons
    np.testing.assert_allclose(fused(TABLE), jax.jit(fn)(TABLE), rtol=1e-5, atol=1e-6)


def test_pallas_leaves_indexed_reads_to_xla():
    fn = lambda x, i: jnp.take_along_axis(jnp.exp(x), i[:, None] % 10, axis=1) * 2.0  # noqa: E731
    fused = dnnfusion.jit(fn, backend="pallas", fallback=False)
    np.testing.assert_array_equal(fused(X, LABELS), jax.jit(fn)(X, LABELS))
    assert any("indexed reads" in r for r in fused.explain(X, LABELS).summary()["left_to_xla"])
