"""Max- and min-pooling gradients (select_and_scatter_add) run fused and agree with jax.jit.

Ties (the first position wins), NaNs (XLA's scan moves past them), infinities, padding,
overlapping and disjoint windows.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import dnnfusion_jax as dnnfusion

RNG = np.random.default_rng(3)


def _input(shape, nans=()):
    x = jnp.asarray(np.round(RNG.standard_normal(shape) * 2) / 2, jnp.float32)  # many ties
    for position in nans:
        x = x.at[position].set(jnp.nan)
    return x.at[(0,) * len(shape)].set(jnp.inf)


def _pool_grad(kind, window, strides, padding):
    init, op = (-jnp.inf, lax.max) if kind == "max" else (jnp.inf, lax.min)

    def loss(x):
        pooled = lax.reduce_window(x, init, op, window, strides, padding)
        weights = jnp.cos(jnp.arange(pooled.size, dtype=jnp.float32)).reshape(pooled.shape)
        return jnp.sum(pooled * weights)
    return jax.grad(loss)


CASES = {
    "3x3 stride 2 same": ((1, 9, 9, 2), (1, 3, 3, 1), (1, 2, 2, 1), "SAME", ()),
    "2x2 stride 2 valid": ((2, 8, 8, 3), (1, 2, 2, 1), (1, 2, 2, 1), "VALID", ()),
    "3x3 stride 1 nans": ((1, 7, 7, 1), (1, 3, 3, 1), (1, 1, 1, 1), "SAME",
                          ((0, 1, 1, 0), (0, 4, 5, 0), (0, 4, 6, 0))),
    "1d with nan at a window's end": ((12,), (4,), (3,), "VALID", ((3,), (7,))),
    # a NaN followed by padding: the scan moves onto the padding, and nothing is added
    "1d nan before padding": ((10,), (3,), (3,), "SAME", ((9,), (4,))),
    "1d padding first": ((11,), (4,), (3,), ((2, 1),), ((0,), (5,))),
}


@pytest.mark.parametrize("kind", ["max", "min"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_pooling_gradient_matches_and_is_fused(kind, name):
    shape, window, strides, padding, nans = CASES[name]
    x = _input(shape, nans)
    grad = _pool_grad(kind, window, strides, padding)
    fused = dnnfusion.jit(grad, backend="c", fallback=False)
    summary = fused.explain(x).summary()
    assert summary["left_to_xla"] == {} and summary["opaque_primitives"] == []
    actual, expected = np.asarray(fused(x)), np.asarray(jax.jit(grad)(x))
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6)


def test_flax_max_pool_training_gradient():
    flax = pytest.importorskip("flax")
    nn = flax.linen
    x = _input((2, 8, 8, 4), ((0, 2, 3, 1),))
    loss = lambda x: jnp.sum(jnp.tanh(nn.max_pool(jax.nn.relu(x), (3, 3), (2, 2), "SAME")))  # noqa: E731
    grad = jax.grad(loss)
    fused = dnnfusion.jit(grad, backend="c", fallback=False)
    assert fused.explain(x).summary()["left_to_xla"] == {}
    np.testing.assert_allclose(fused(x), jax.jit(grad)(x), rtol=1e-6, atol=1e-6)
