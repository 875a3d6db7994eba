"""Depthwise convolutions as C kernels (``codegen/kernel/depthwise.py``): every layout, stride,
padding, dilation and channel multiplier against jax.jit, inf and NaN included; the planner
fuses their epilogue but never their input's producer; dense convolutions stay with XLA."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dnnfusion_jax as dnnfusion
from codegen.kernel.depthwise import depthwise_reason
from dnnfusion_jax.frontend.trace import trace_function

CASES = {
    # name: (input shape, weight shape, conv keyword arguments)
    "nhwc 3x3 same": ((2, 9, 9, 8), (3, 3, 1, 8), dict(
        window_strides=(1, 1), padding="SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))),
    "nhwc 5x5 stride 2": ((1, 11, 12, 16), (5, 5, 1, 16), dict(
        window_strides=(2, 2), padding="SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))),
    "nchw valid dilated": ((1, 6, 10, 10), (6, 1, 3, 3), dict(
        window_strides=(1, 1), padding="VALID", rhs_dilation=(2, 2))),
    "asymmetric padding": ((1, 7, 7, 4), (3, 3, 1, 4), dict(
        window_strides=(2, 2), padding=((0, 1), (1, 0)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))),
    "channel multiplier 2": ((1, 8, 8, 4), (3, 3, 1, 8), dict(
        window_strides=(1, 1), padding="SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))),
    "1d": ((2, 20, 6), (7, 1, 6), dict(
        window_strides=(1,), padding="SAME", dimension_numbers=("NWC", "WIO", "NWC"))),
    "3d": ((1, 4, 6, 6, 8), (3, 3, 3, 1, 8), dict(
        window_strides=(1, 1, 1), padding="SAME",
        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))),
}


def depthwise(x_shape, w_shape, kwargs):
    dims = kwargs.get("dimension_numbers") or ("NCHW", "OIHW", "NCHW")
    groups = x_shape[dims[0].index("C")]
    return lambda x, w: jax.lax.conv_general_dilated(x, w, feature_group_count=groups, **kwargs)


def inputs(x_shape, w_shape, seed=0, specials=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    if specials:
        x.flat[[3, 50, 97]] = [np.inf, np.nan, -np.inf]
        w.flat[0] = np.inf  # at the padded border 0 * inf is NaN, in XLA as here
    return x, w


@pytest.mark.parametrize("specials", [False, True], ids=["finite", "inf-nan"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_depthwise_convolution_matches_jax(name, specials):
    x_shape, w_shape, kwargs = CASES[name]
    fn = depthwise(x_shape, w_shape, kwargs)
    x, w = inputs(x_shape, w_shape, specials=specials)
    fused = dnnfusion.jit(fn, backend="c", fallback=False)
    np.testing.assert_allclose(fused(x, w), jax.jit(fn)(x, w), rtol=1e-5, atol=1e-5,
                               equal_nan=True)
    summary = fused.explain(x, w).summary()
    assert summary["blocks"] == 1 and not summary["fallback_blocks"]


def mobile_block(x, w_expand, w_depth, scale, shift):
    """1x1 expansion (a GEMM: XLA), swish, depthwise 3x3, batch-norm affine, swish."""
    y = jax.nn.silu(jnp.einsum("nhwc,cd->nhwd", x, w_expand))
    y = jax.lax.conv_general_dilated(y, w_depth, (1, 1), "SAME", feature_group_count=y.shape[-1],
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jax.nn.silu(y * scale + shift)


def test_the_epilogue_joins_the_convolution_and_its_input_producer_does_not():
    rng = np.random.default_rng(1)
    args = [rng.standard_normal(s).astype(np.float32)
            for s in [(1, 10, 10, 8), (8, 16), (3, 3, 1, 16), (16,), (16,)]]
    fused = dnnfusion.jit(mobile_block, backend="c", fallback=False)
    np.testing.assert_allclose(fused(*args), jax.jit(mobile_block)(*args), rtol=1e-5, atol=1e-5)
    blocks = fused.explain(*args).plan.blocks
    conv = next(b for b in blocks if any(n.op == "conv_general_dilated" for n in b.nodes))
    ops = [n.op for n in conv.nodes]
    assert "logistic" in ops[ops.index("conv_general_dilated"):]  # the swish after it
    assert "logistic" not in ops[:ops.index("conv_general_dilated")]  # not the one before


def test_dense_and_grouped_convolutions_stay_with_xla():
    dense = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME")  # noqa: E731
    grouped = lambda x, w: jax.lax.conv_general_dilated(  # noqa: E731
        x, w, (1, 1), "SAME", feature_group_count=2)
    for fn, w_shape in [(dense, (4, 8, 3, 3)), (grouped, (4, 4, 3, 3))]:
        g = trace_function(fn, [jnp.ones((1, 8, 6, 6)), jnp.ones(w_shape)]).graph
        assert "not a depthwise convolution" in depthwise_reason(g.nodes[0])
        x, w = inputs((1, 8, 6, 6), w_shape)
        fused = dnnfusion.jit(fn, backend="c")
        np.testing.assert_allclose(fused(x, w), jax.jit(fn)(x, w), rtol=1e-5, atol=1e-5)
        reasons = " ".join(b["reason"] for b in fused.explain(x, w).summary()["fallback_blocks"])
        assert "XLA's convolution is faster" in reasons


def test_the_pallas_backend_renders_the_same_windowed_reduction():
    """Pallas consumes the same kernel IR (interpret mode off GPU)."""
    x_shape, w_shape, kwargs = CASES["channel multiplier 2"]
    fn = depthwise(x_shape, w_shape, kwargs)
    x, w = inputs(x_shape, w_shape, specials=True)
    fused = dnnfusion.jit(fn, backend="pallas", fallback=False)
    np.testing.assert_allclose(fused(x, w), jax.jit(fn)(x, w), rtol=1e-5, atol=1e-5,
                               equal_nan=True)
    assert not fused.explain(x, w).summary()["fallback_blocks"]
