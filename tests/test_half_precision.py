"""bfloat16 and float16 blocks fused into kernels (C and Pallas), as accurate as XLA.

Half precision is a storage dtype of the kernel IR (``codegen/kernel/kernel_ir.py``): loads
widen to f32, everything inside a kernel is f32 (temporaries, reduction accumulators, GEMM
sums), stores narrow to nearest even. Each case checks, for bf16 and f16:

(a) no block is left to XLA for its dtype;
(b) the error against f32 arithmetic on the same (upcast) inputs is no worse than jax.jit's:
    within 1.25x of it, or under 2e-3 scaled by the largest reference magnitude;
(c) no more blocks than the same function in f32.

Pallas runs in interpret mode, and the same blocks lower for CUDA through Triton. The random
programs of ``test_differential.py`` are drawn in half precision at the end.
"""
from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

import dnnfusion_jax as dnnfusion
from codegen.pallas import tuning as pallas_tuning

sys.path.insert(0, str(Path(__file__).parent))
import models as zoo  # noqa: E402
import test_differential as differential  # noqa: E402
from test_pallas_backend import GPU_MEASURED, _lowering_failures  # noqa: E402

HALF = {"bf16": jnp.bfloat16, "f16": jnp.float16}


def mixed_layer_norm(x, scale, bias):
    """bf16 in, f32 statistics, bf16 out (mixed precision)."""
    f32 = jnp.float32
    return zoo.layer_norm(x.astype(f32), scale.astype(f32), bias.astype(f32)).astype(x.dtype)


def mixed_softmax(x):
    return jax.nn.softmax(x.astype(jnp.float32), axis=-1).astype(x.dtype)


CASES = {
    # name: (function, input shapes)
    "elementwise": (lambda x, y: jnp.tanh(x * 2.0 + y) - jnp.exp(-x) * y, [(32, 256), (256,)]),
    "layer_norm": (zoo.layer_norm, [(16, 1024), (1024,), (1024,)]),
    "softmax": (lambda x: jax.nn.softmax(x, axis=-1), [(16, 512)]),
    "mixed_layer_norm": (mixed_layer_norm, [(16, 1024), (1024,), (1024,)]),
    "mixed_softmax": (mixed_softmax, [(16, 512)]),
    "reduction": (lambda x: (jnp.sum(x * x, axis=0), jnp.max(x, axis=-1)), [(64, 256)]),
    "gemm_epilogue": (lambda x, w, b: jax.nn.gelu(x @ w + b), [(8, 64), (64, 32), (32,)]),
}


def _args(shapes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.standard_normal(s), dtype) for s in shapes]


def _f32(tree):
    return jax.tree.map(lambda a: a.astype(jnp.float32)
                        if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def _error(got, reference):
    """The largest difference from the reference over finite reference elements."""
    got, reference = np.asarray(got, np.float32), np.asarray(reference, np.float32)
    finite = np.isfinite(reference)
    return float(np.max(np.abs(got[finite] - reference[finite]), initial=0.0))


def assert_as_accurate_as_xla(fn, args, backend="c", **options):
    """(a), (b) and (c) of the module docstring; returns the fused function."""
    fused = dnnfusion.jit(fn, backend=backend, fallback=False, **options)
    ours, xla, exact = fused(*args), jax.jit(fn)(*args), jax.jit(fn)(*_f32(args))
    summary = fused.explain(*args).summary()
    assert not [r for r in summary["left_to_xla"] if "dtype" in r], summary["left_to_xla"]
    assert summary["internal_error"] is None
    for k, (o, x, e) in enumerate(zip(*(jax.tree.leaves(t) for t in (ours, xla, exact)))):
        assert o.dtype == x.dtype and o.shape == x.shape, (k, o.dtype, x.dtype)
        finite = np.abs(np.asarray(e, np.float32))
        scale = max(1.0, float(np.max(finite[np.isfinite(finite)], initial=0.0)))
        ours_error, xla_error = _error(o, e), _error(x, e)
        assert ours_error <= max(1.25 * xla_error, 2e-3 * scale), \
            f"output {k}: ours {ours_error:.3g}, jax.jit {xla_error:.3g} (scale {scale:.3g})"
    f32_blocks = dnnfusion.explain(dnnfusion.jit(fn, backend=backend), *_f32(args)).summary()
    assert summary["blocks"] <= f32_blocks["blocks"], (summary["blocks"], f32_blocks["blocks"])
    return fused


@pytest.mark.parametrize("dtype", sorted(HALF))
@pytest.mark.parametrize("name", sorted(CASES))
def test_c_kernels_are_as_accurate_as_xla(name, dtype):
    fn, shapes = CASES[name]
    fused = assert_as_accurate_as_xla(fn, _args(shapes, HALF[dtype]))
    args = _args(shapes, HALF[dtype])
    assert not fused.explain(*args).summary()["left_to_xla"]  # GEMM included: every block ours


@pytest.mark.parametrize("dtype", sorted(HALF))
@pytest.mark.parametrize("name", ["elementwise", "mixed_layer_norm", "reduction",
                                  "gemm_epilogue"])
def test_pallas_kernels_are_as_accurate_as_xla(name, dtype):
    fn, shapes = CASES[name]
    assert_as_accurate_as_xla(fn, _args(shapes, HALF[dtype]), backend="pallas")


def test_half_blocks_lower_for_cuda_through_triton(monkeypatch):
    monkeypatch.setitem(pallas_tuning.MEASURED, jax.devices()[0].device_kind, GPU_MEASURED)
    cases = {f"{name}_{dtype}": (fn, _args(shapes, HALF[dtype]))
             for name, (fn, shapes) in CASES.items() for dtype in HALF}
    assert not _lowering_failures(cases)


@pytest.mark.parametrize("dtype", sorted(HALF))
def test_integer_and_bool_values_beside_half_ones(dtype):
    def fn(x, n):
        positive = x > 0
        counted = (n * 3 + jnp.sum(positive.astype(jnp.int32), axis=-1, keepdims=True)) % 7
        return jnp.where(positive, x, counted.astype(x.dtype)), counted, jnp.argmax(x, axis=-1)

    x = _args([(8, 64)], HALF[dtype])[0]
    n = jnp.arange(8, dtype=jnp.int32).reshape(8, 1)
    assert_as_accurate_as_xla(fn, [x, n])
    got, want = dnnfusion.jit(fn)(x, n), jax.jit(fn)(x, n)
    for g, w in zip(got[1:], want[1:]):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("name, backend", [
    (name, backend) for name in ("elementwise", "softmax", "layer_norm", "reduction")
    for backend in ("c", "pallas") if (name, backend) != ("reduction", "pallas")])
def test_inf_and_nan_inputs(name, backend):
    """bf16 (f32's range: no overflow that f32 arithmetic would avoid): NaN and inf come out
    where jax.jit gives them. (Not the row max on Pallas: interpret mode runs the kernel's
    f32 ``reduce_max`` through XLA:CPU, whose f32 row max drops a NaN (inf here) where its
    bf16 one keeps it; C's max propagates NaN as the bf16 one does.)"""
    fn, shapes = CASES[name]
    args = _args(shapes, jnp.bfloat16)
    x = np.array(args[0], np.float32)
    x.reshape(-1)[[1, 2, 3, 40]] = [np.nan, np.inf, -np.inf, 0.0]
    args[0] = jnp.asarray(x, jnp.bfloat16)
    got, want = dnnfusion.jit(fn, backend=backend)(*args), jax.jit(fn)(*args)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        g, w = np.asarray(g, np.float32), np.asarray(w, np.float32)
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
        np.testing.assert_array_equal(np.isinf(g), np.isinf(w))
        finite = np.isfinite(w)
        np.testing.assert_allclose(g[finite], w[finite], rtol=2 ** -6, atol=2 ** -6)


def test_f16_stores_round_overflow_to_inf_and_keep_nan():
    x = jnp.asarray([1.0, 65504.0, 70000.0, -1e6, np.nan, 1e-7, 3e-5, -0.0], jnp.float32)
    fn = lambda x, y: (x * y).astype(jnp.float16)  # noqa: E731
    y = jnp.ones((8,), jnp.float32)
    got, want = dnnfusion.jit(fn)(x, y), jax.jit(fn)(x, y)
    np.testing.assert_array_equal(np.asarray(got).view(np.uint16)[:4],
                                  np.asarray(want).view(np.uint16)[:4])
    np.testing.assert_array_equal(np.asarray(got)[5:], np.asarray(want)[5:])
    assert np.isnan(np.asarray(got)[4])
    assert not dnnfusion.explain(dnnfusion.jit(fn), x, y).summary()["left_to_xla"]


# ----------------------------------------------------------------------------- random programs

@settings(differential.SETTINGS, max_examples=differential.CAMPAIGN or 20)
@given(program=differential.programs(), seed=st.integers(0, 2**32 - 1),
       dtype=st.sampled_from(sorted(HALF)))
def test_random_half_programs_are_as_accurate_as_jax_jit(program, seed, dtype):
    """A random program (``test_differential``) on half inputs: against f32 arithmetic on
    the same inputs, ours is within 1.25x of jax.jit's error plus a few of the dtype's
    epsilons (scaled by the output's magnitude), and no block is left to XLA for its dtype."""
    note("Standalone f32 repro:\n" + differential.repro_script(program, seed))
    f = differential.build_function(program)
    args = [jnp.asarray(a, HALF[dtype]) for a in differential.make_args(program, seed)]
    fused = dnnfusion.jit(f, fallback=False)
    ours, xla, exact = fused(*args), jax.jit(f)(*args), jax.jit(f)(*_f32(args))
    eps = float(jnp.finfo(HALF[dtype]).eps)
    for k, (o, x, e) in enumerate(zip(ours, xla, exact)):
        o, x, e = (np.asarray(v, np.float32) for v in (o, x, e))
        assert o.shape == e.shape
        # an overflow of jax.jit's (or ours) where f32 stays finite is judged on the others
        usable = np.isfinite(e) & (np.isfinite(x) | ~np.isfinite(o))
        scale = max(1.0, float(np.max(np.abs(e[np.isfinite(e)]), initial=0.0)))
        ours_error = float(np.max(np.abs(o[usable] - e[usable]), initial=0.0))
        xla_error = float(np.max(np.abs(x[usable] - e[usable]), initial=0.0))
        assert ours_error <= 1.25 * xla_error + 4 * eps * scale, \
            f"output {k}: ours {ours_error:.3g}, jax.jit {xla_error:.3g} (scale {scale:.3g})"
    reasons = fused.explain(*args).summary()["left_to_xla"]
    assert not [r for r in reasons if "dtype" in r], reasons
