"""Batch-norm folding under a guard (``dnnfusion_jax/rewrite/bn_fold.py``), on Flax's own
``nn.Conv`` and ``nn.BatchNorm`` in inference.

Goal (issue 19): with default options the batch norm after a convolution is folded into its
weights on raw (argument) weights, the check reads the weights and statistics only; inf,
-inf and NaN in any input, and statistics that would flush a folded weight to zero, give
jax.jit's results; finite inputs are no less accurate than jax.jit against float64.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dnnfusion_jax as dnnfusion
from dnnfusion_jax.frontend.trace import import_jaxpr
from dnnfusion_jax.rewrite import algebra_passes, bn_fold
from conftest import RTOL
from test_algebra_passes import (_assert_as_accurate, _assert_same_specials, _float64, _inject,
                                 _ops)

RNG = np.random.default_rng(1919)


class ConvBN(nn.Module):
    """A ResNet stem's pattern: convolution without bias, batch norm, ReLU."""

    features: int
    kernel: int = 1

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(self.features, (self.kernel, self.kernel), use_bias=False)(x)
        return nn.relu(nn.BatchNorm(use_running_average=True)(x))


def _model(shape, features, kernel=1):
    """The module's apply and its variables as leaves (raw arguments), statistics random."""
    model = ConvBN(features, kernel)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, *shape[1:]), jnp.float32))
    stats = variables["batch_stats"]["BatchNorm_0"]
    params = variables["params"]
    leaves = [np.asarray(params["Conv_0"]["kernel"]),
              RNG.standard_normal(features).astype(np.float32),          # mean
              (RNG.random(features) + 0.5).astype(np.float32),           # var
              RNG.standard_normal(features).astype(np.float32),          # scale
              RNG.standard_normal(features).astype(np.float32)]          # bias
    assert set(stats) == {"mean", "var"}

    def apply(x, kernel, mean, var, scale, bias):
        return model.apply({"params": {"Conv_0": {"kernel": kernel},
                                       "BatchNorm_0": {"scale": scale, "bias": bias}},
                            "batch_stats": {"BatchNorm_0": {"mean": mean, "var": var}}}, x)
    x = RNG.standard_normal(shape).astype(np.float32)
    return apply, [x, *leaves]


def _full_size_ops(graph, shape):
    """The fast branch's primitives that write a value of the activations' ``shape``."""
    [cond] = [node for node in graph.nodes if node.op == "cond"]
    fast, _ = import_jaxpr(cond.params["branches"][-1])
    return [node.op for node in fast.nodes if node.out.shape == shape]


@pytest.fixture
def fold_always(monkeypatch):
    """Legality alone, on small shapes: every legal fold is made."""
    monkeypatch.setattr(algebra_passes, "fold_batch_norms",
                        functools.partial(bn_fold.fold_batch_norms, pays=lambda *_: True))


def test_flax_batch_norm_is_folded_by_default_on_raw_weights():
    apply, args = _model((32, 56, 56, 64), 64)
    report = dnnfusion.explain(apply, *args)
    [rewrite] = report.optimized.rewrite_stats.guarded
    assert rewrite.rule == "bn-fold" and rewrite.guarded
    # the check reads the kernel and the affine's vectors, never the activations
    assert rewrite.check_elements == 64 * 64 + 3 * 64   # kernel; mean, scale, bias
    assert rewrite.operands[0] == "argument 1 f32[1,1,64,64]"
    # over the activations the fast branch runs the convolution, one add and the ReLU
    assert _full_size_ops(report.graph, (32, 56, 56, 64)) == ["conv_general_dilated", "add",
                                                              "max"]
    ours, jit = dnnfusion.jit(apply)(*args), jax.jit(apply)(*args)
    _assert_as_accurate(ours, jit, _float64(apply, args))


def test_small_batch_norm_is_not_worth_its_guard():
    apply, args = _model((2, 8, 8, 16), 16)
    assert "bn-fold" not in dnnfusion.explain(apply, *args).summary()["rules_fired"]


@pytest.mark.parametrize("kernel", [1, 3])
def test_inf_and_nan_anywhere_give_jax_jits_results(fold_always, kernel):
    """inf in the activations takes the fast path (the check does not read them) and must
    still give jax.jit's pattern; inf in the weights or statistics takes the original."""
    apply, args = _model((2, 8, 8, 16), 24, kernel)
    fused, reference = dnnfusion.jit(apply, fallback=False), jax.jit(apply)
    assert "bn-fold" in fused.explain(*args).summary()["rules_fired"]
    _assert_as_accurate(fused(*args), reference(*args), _float64(apply, args))
    for which in range(len(args)):
        for value in (np.inf, -np.inf, np.nan):
            bad = _inject(args, which, value)
            _assert_same_specials(fused(*bad), reference(*bad))


def test_a_scale_that_would_flush_folded_weights_takes_the_original(fold_always):
    """scale 1e-37 folds kernel entries (~0.1) to subnormals, which XLA:CPU flushes to zero,
    while the outputs (~1e-37) stay normal: the check sends such statistics down the original
    graph, which keeps their values."""
    apply, args = _model((2, 8, 8, 16), 16)
    args[2] = np.zeros(16, np.float32)                  # mean
    args[4] = np.full(16, 1e-37, np.float32)            # scale
    args[5] = np.zeros(16, np.float32)                  # bias
    ours, jit = dnnfusion.jit(apply, fallback=False)(*args), jax.jit(apply)(*args)
    assert np.count_nonzero(np.asarray(jit)) > 0
    np.testing.assert_allclose(ours, jit, rtol=RTOL, atol=0)  # values ~1e-37: no atol


def test_a_convolution_read_elsewhere_is_not_folded(fold_always):
    def fn(x, w, mean, scale):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return (y - mean) * scale, y
    args = [RNG.standard_normal(s).astype(np.float32) for s in ((2, 8, 8, 4), (3, 3, 4, 8),
                                                               (8,), (8,))]
    assert "bn-fold" not in dnnfusion.explain(fn, *args).summary()["rules_fired"]


def test_finite_math_folds_without_a_check(fold_always):
    apply, args = _model((2, 8, 8, 16), 16)
    graph = dnnfusion.explain(dnnfusion.jit(apply, finite_math=True), *args).graph
    assert "cond" not in _ops(graph)
    assert [n.op for n in graph.nodes if n.out.shape == (2, 8, 8, 16)] == [
        "conv_general_dilated", "add", "max"]
