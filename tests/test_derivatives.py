"""Derivatives of a dnnfusion function run fused kernels and agree with JAX's.

``jax.grad``/``jax.vjp``/``value_and_grad`` run the fused forward (outputs and residuals) and
the fused backward (``dnnfusion_jax/derivatives.py``); ``jax.jvp``, ``vmap`` of a gradient and
second derivatives keep working through the reference graph.
"""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dnnfusion_jax as dnnfusion
from conftest import assert_tree_allclose

RNG = np.random.default_rng(0)
X = jnp.asarray(RNG.standard_normal((16, 32)), jnp.float32)
W = jnp.asarray(RNG.standard_normal((32, 32)) / 6, jnp.float32)
G = jnp.asarray(RNG.uniform(0.5, 1.5, 32), jnp.float32)
LABELS = jnp.asarray(RNG.integers(0, 32, 16), jnp.int32)


def mlp_loss(x, w, g):
    h = jax.nn.gelu(x @ w) * g
    return jnp.mean(jnp.square(h - 0.5))


def softmax_loss(x, w, g):
    logits = jnp.tanh(x @ w) * g
    return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits) * jax.nn.one_hot(LABELS, 32), -1))


def layer_norm_loss(x, w, g):
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + 1e-5) * g
    return jnp.sum(jnp.sin(y @ w))


LOSSES = {"mlp": mlp_loss, "softmax": softmax_loss, "layer_norm": layer_norm_loss}


def _custom_calls(fn, *args) -> int:
    return len(re.findall(r"custom_call @dnnfusion_c_kernel", jax.jit(fn).lower(*args).as_text()))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_grad_matches_jax_and_runs_fused_backward(name):
    loss = LOSSES[name]
    fused = dnnfusion.jit(loss, backend="c", fallback=False)
    grad = jax.grad(fused, argnums=(0, 1, 2))
    assert_tree_allclose(jax.jit(grad)(X, W, G), jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(X, W, G))
    # the backward adds kernels of its own to the forward's
    forward_kernels = _custom_calls(fused, X, W, G)
    assert forward_kernels >= 1
    assert _custom_calls(grad, X, W, G) > forward_kernels


def test_backward_fuses_fan_in_adds():
    """add_any, the cotangent accumulation of a fan-out, is an add: the whole backward of
    ``sum(tanh(x) * x)`` is one kernel, and so is dnnfusion.jit of the gradient."""
    loss = lambda x: jnp.sum(jnp.tanh(x) * x)  # noqa: E731
    report = dnnfusion.jit(jax.grad(loss), backend="c").explain(X)
    assert report.summary()["blocks"] == 1 and report.summary()["opaque_primitives"] == []
    fused = dnnfusion.jit(loss, backend="c", fallback=False)
    assert_tree_allclose(jax.grad(fused)(X), jax.grad(loss)(X))
    vjp = next(iter(fused._plans.values())).vjp()  # built by the grad above
    assert len(vjp.forward.plan.blocks) == 1 and len(vjp.backward.plan.blocks) == 1
    assert not vjp.backward.executable.fallbacks()


def test_value_and_grad_vjp_and_cotangents():
    fn = lambda x, w: jnp.tanh(x @ w) * 2.0  # noqa: E731
    fused = dnnfusion.jit(fn, fallback=False)
    value, grads = jax.value_and_grad(lambda *a: fused(*a).sum(), argnums=(0, 1))(X, W)
    ref_value, ref_grads = jax.value_and_grad(lambda *a: fn(*a).sum(), argnums=(0, 1))(X, W)
    assert_tree_allclose((value, grads), (ref_value, ref_grads))
    cotangent = jnp.cos(X @ W)
    out, pullback = jax.vjp(fused, X, W)
    ref_out, ref_pullback = jax.vjp(fn, X, W)
    assert_tree_allclose((out, pullback(cotangent)), (ref_out, ref_pullback(cotangent)))


def test_jvp_vmap_and_second_derivatives_keep_working():
    fn = lambda x: jnp.sum(jnp.sin(x) * x, axis=-1)  # noqa: E731
    fused = dnnfusion.jit(fn, fallback=False)
    assert_tree_allclose(jax.jvp(fused, (X,), (jnp.cos(X),)), jax.jvp(fn, (X,), (jnp.cos(X),)))
    scalar = lambda f: lambda v: f(v).sum()  # noqa: E731
    assert_tree_allclose(jax.vmap(jax.grad(scalar(fused)))(X), jax.vmap(jax.grad(scalar(fn)))(X))
    assert_tree_allclose(jax.hessian(scalar(fused))(X[0]), jax.hessian(scalar(fn))(X[0]))
    assert_tree_allclose(jax.jacfwd(fused)(X[:2]), jax.jacfwd(fn)(X[:2]))


def test_integer_inputs_and_outputs_get_float0_tangents():
    def fn(x, labels):
        return jnp.take_along_axis(jax.nn.log_softmax(x), labels[:, None], axis=1).sum(), labels + 1
    fused = dnnfusion.jit(fn, fallback=False)
    loss = lambda f: lambda x, y: f(x, y)[0]  # noqa: E731
    assert_tree_allclose(jax.grad(loss(fused))(X, LABELS), jax.grad(loss(fn))(X, LABELS))
    _, tangents = jax.jvp(lambda x: fused(x, LABELS), (X,), (X,))
    assert tangents[1].dtype == jax.dtypes.float0


def test_nonfinite_inputs_give_the_same_gradients():
    x = X.at[0, 0].set(jnp.inf).at[1, 3].set(jnp.nan).at[2, 5].set(-jnp.inf)
    loss = lambda v: jnp.sum(jnp.exp(-jnp.abs(v)) * jnp.tanh(v))  # noqa: E731
    expected = jax.grad(loss)(x)
    actual = jax.grad(dnnfusion.jit(loss, fallback=False))(x)
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=1e-5, atol=1e-5)


def test_backward_is_built_once_per_signature():
    fused = dnnfusion.jit(lambda x: jnp.sum(jnp.tanh(x)), fallback=False)
    grad = jax.grad(fused)
    grad(X)
    plan = next(iter(fused._plans.values()))
    first = plan.vjp()
    grad(X + 1.0)
    assert plan.vjp() is first and len(fused._plans) == 1
